/* Process supervision for `lunaroute-control up` (DESIGN §3, §7).
 *
 * One thread, one poll(): SIGCHLD/SIGINT/SIGTERM/SIGHUP are blocked and read from a
 * signalfd, and the config file's directory is watched with inotify on the same poll, so no
 * handler ever runs and every reaction happens in the main loop with its full context. The
 * children get a clean signal mask and default dispositions through posix_spawn attributes.
 *
 * With `external`, HAProxy and the agent are not ours (other containers): nothing is
 * spawned, stopped or signalled; the same checked reload drives them through the sockets
 * of the shared run directory only. */
#include "supervise.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "admin_client.h"
#include "buf.h"
#include "config.h"
#include "log.h"
#include "render.h"
#include "sha256.h"
#include "validate.h"

extern char **environ;

#define STOP_GRACE_SECS       10.0
#define BACKOFF_MIN           0.1
#define BACKOFF_MAX           5.0
#define BACKOFF_RESET_UPTIME  30.0
#define TICK_SECS             1.0  /* config file polling, when inotify is not used */
#define IDLE_SECS             60.0 /* nothing to wait for: wake up now and then anyway */
#define DEBOUNCE_SECS         0.15 /* quiet time after the last event of a burst */
#define DEBOUNCE_MAX_SECS     1.0  /* a burst that does not end is handled after this */
#define EXTERNAL_RETRY_SECS   5.0  /* external mode: retry an unreachable agent / HAProxy */
#define AGENT_RELOAD_TIMEOUT  5.0  /* POST /v1/reload, answered once the agent re-read its file */
#define MASTER_CLI_TIMEOUT    2.0
#define HAPROXY_SOCK_PATH_MAX 97   /* HAProxy's limit for a `stats socket` path */
#define HAPROXY_RELOAD_WAIT   15.0 /* for the master to report the reload in `show proc` */

/* One inotify watch on a directory, for events on one name in it (any name when `any`). */
struct watch {
    int wd; /* -1: none */
    bool any;
    char dir[PATH_MAX];
    char name[NAME_MAX + 1];
};

struct sup {
    struct lr_config *cfg;
    const char *config_path;
    bool external;         /* HAProxy and the agent run elsewhere: drive them through sockets */
    bool poll_config;      /* notice config file changes by polling (no inotify) */
    int sigfd;             /* signalfd of sigs */
    int ino_fd;            /* inotify instance, -1 when polling */
    struct watch watch[2]; /* the config path's directory; its symlink target's, if elsewhere */
    double change_first, change_at; /* debounce of a burst of events (monotonic; 0 = none) */
    bool have_cfg_digest;
    char cfg_digest[LR_SHA256_HEX_LEN + 1]; /* of the file as last loaded */
    bool haproxy_stale; /* external: HAProxy's files changed but it was not reloaded */
    double retry_at;    /* external: when to retry the agent / HAProxy (0 = never) */
    char run_dir[PATH_MAX];
    char agent_bin[PATH_MAX];
    char haproxy_bin[PATH_MAX];
    char **env; /* children's environment: ours + credentials; every entry owned */
    pid_t agent, haproxy;
    double agent_started;    /* monotonic */
    double agent_restart_at; /* monotonic; 0 = no restart pending */
    double backoff;          /* last restart delay; 0 = none yet */
    bool agent_restart_now;  /* we stopped it on purpose (new credentials) */
    bool agent_stale;        /* the running agent may not have the last rendered agent.json */
    bool have_cfg_stat;
    struct stat cfg_stat;
    sigset_t sigs;
};

/* ---- small helpers ------------------------------------------------------------------- */

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double supervise_next_backoff(double cur, double uptime_secs)
{
    if (cur <= 0 || uptime_secs >= BACKOFF_RESET_UPTIME)
        return BACKOFF_MIN;
    double next = cur * 2;
    return next > BACKOFF_MAX ? BACKOFF_MAX : next;
}

int supervise_find_program(const char *env_override, const char *name, char *out, size_t len)
{
    const char *o = env_override ? getenv(env_override) : NULL;
    if (o && *o) {
        if (access(o, X_OK) < 0 || (size_t)snprintf(out, len, "%s", o) >= len)
            return -1;
        return 0;
    }
    if (strchr(name, '/')) {
        if (access(name, X_OK) < 0 || (size_t)snprintf(out, len, "%s", name) >= len)
            return -1;
        return 0;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t dl = end ? (size_t)(end - path) : strlen(path);
        int n = dl ? snprintf(out, len, "%.*s/%s", (int)dl, path, name)
                   : snprintf(out, len, "./%s", name);
        struct stat st;
        if (n > 0 && (size_t)n < len && stat(out, &st) == 0 && S_ISREG(st.st_mode) &&
            access(out, X_OK) == 0)
            return 0;
        path += dl;
        if (*path == ':')
            path++;
    }
    return -1;
}

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(buf, len, "changed state (0x%x)", (unsigned)status);
}

static int join(char *buf, size_t len, const char *dir, const char *name)
{
    int n = snprintf(buf, len, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int write_pid_file(const char *dir, const char *name, pid_t pid)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    if (join(path, sizeof(path), dir, name) < 0 || join(tmp, sizeof(tmp), dir, ".pid.tmp") < 0)
        return -ENAMETOOLONG;
    FILE *f = fopen(tmp, "we");
    if (!f)
        return -errno;
    fprintf(f, "%ld\n", (long)pid);
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return -e;
    }
    return 0;
}

static void remove_in(const char *dir, const char *name)
{
    char path[PATH_MAX];
    if (join(path, sizeof(path), dir, name) == 0)
        unlink(path);
}

/* pid of a live lunaroute-control recorded in <dir>/control.pid, or 0. */
static pid_t running_control(const char *dir)
{
    char path[PATH_MAX];
    if (join(path, sizeof(path), dir, "control.pid") < 0)
        return 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    if (pid <= 0 || pid == (long)getpid() || (kill((pid_t)pid, 0) < 0 && errno == ESRCH))
        return 0;
    /* the pid may have been reused: check that it is one of us */
    char comm_path[64], comm[64] = "";
    snprintf(comm_path, sizeof(comm_path), "/proc/%ld/comm", pid);
    f = fopen(comm_path, "re");
    if (f) {
        if (!fgets(comm, sizeof(comm), f))
            comm[0] = 0;
        fclose(f);
    }
    return strncmp(comm, "lunaroute-cont", 14) == 0 ? (pid_t)pid : 0;
}

static char *read_file(const char *dir, const char *name)
{
    char path[PATH_MAX];
    if (join(path, sizeof(path), dir, name) < 0)
        return NULL;
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *s = malloc(cap);
    while (s) {
        size_t n = fread(s + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
        if (cap - len - 1 == 0) {
            char *t = realloc(s, cap * 2);
            if (!t) {
                free(s);
                s = NULL;
                break;
            }
            s = t;
            cap *= 2;
        }
    }
    fclose(f);
    if (s)
        s[len] = 0;
    return s;
}

static bool same_text(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* ---- the children's environment ------------------------------------------------------ */

static void env_free(char **env)
{
    if (!env)
        return;
    for (char **e = env; *e; e++) {
        explicit_bzero(*e, strlen(*e)); /* some entries carry credentials */
        free(*e);
    }
    free(env);
}

/* Our environment, minus any variable a credential overrides, plus NAME=value for each
 * configured credential. The values are never logged. NULL on allocation failure. */
static char **env_build(const struct lr_config *c)
{
    size_t nbase = 0, nsec = config_secret_count(c);
    while (environ && environ[nbase])
        nbase++;
    char **env = calloc(nbase + nsec + 1, sizeof(*env));
    if (!env)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < nbase; i++) {
        bool overridden = false;
        for (size_t k = 0; k < nsec && !overridden; k++) {
            const char *name, *value;
            config_secret_get(c, k, &name, &value);
            size_t nl = strlen(name);
            overridden = strncmp(environ[i], name, nl) == 0 && environ[i][nl] == '=';
        }
        if (overridden)
            continue;
        if (!(env[n++] = strdup(environ[i])))
            goto fail;
    }
    for (size_t k = 0; k < nsec; k++) {
        const char *name, *value;
        config_secret_get(c, k, &name, &value);
        if (!name || !*name || !value)
            continue;
        size_t len = strlen(name) + strlen(value) + 2;
        if (!(env[n] = malloc(len)))
            goto fail;
        snprintf(env[n++], len, "%s=%s", name, value);
    }
    return env;
fail:
    env_free(env);
    return NULL;
}

/* Whether two configs hand the children different credentials (compared, never shown). */
static bool secrets_differ(const struct lr_config *a, const struct lr_config *b)
{
    size_t n = config_secret_count(a);
    if (n != config_secret_count(b))
        return true;
    for (size_t i = 0; i < n; i++) {
        const char *an, *av, *bn, *bv;
        config_secret_get(a, i, &an, &av);
        config_secret_get(b, i, &bn, &bv);
        if (strcmp(an ? an : "", bn ? bn : "") || strcmp(av ? av : "", bv ? bv : ""))
            return true;
    }
    return false;
}

/* ---- children ------------------------------------------------------------------------ */

static int spawn(struct sup *s, const char *bin, char *const argv[], pid_t *pid)
{
    posix_spawnattr_t attr;
    int rc = posix_spawnattr_init(&attr);
    if (rc)
        return -rc;
    sigset_t none, deflt;
    sigemptyset(&none);
    sigemptyset(&deflt);
    sigaddset(&deflt, SIGCHLD);
    sigaddset(&deflt, SIGINT);
    sigaddset(&deflt, SIGTERM);
    sigaddset(&deflt, SIGHUP);
    sigaddset(&deflt, SIGPIPE);
    sigaddset(&deflt, SIGUSR1);
    sigaddset(&deflt, SIGUSR2);
    rc = posix_spawnattr_setsigmask(&attr, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&attr, &deflt);
    if (!rc)
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawn(pid, bin, NULL, &attr, argv, s->env);
    posix_spawnattr_destroy(&attr);
    return -rc;
}

static int start_agent(struct sup *s)
{
    char settings[PATH_MAX];
    if (join(settings, sizeof(settings), s->run_dir, "agent.json") < 0)
        return -ENAMETOOLONG;
    char *argv[] = {s->agent_bin, "--settings", settings, NULL};
    pid_t pid;
    int rc = spawn(s, s->agent_bin, argv, &pid);
    if (rc < 0) {
        lr_err("cannot start agent %s: %s", s->agent_bin, strerror(-rc));
        return rc;
    }
    s->agent = pid;
    s->agent_started = now_mono();
    s->agent_restart_at = 0;
    lr_info("started agent pid %ld (%s)", (long)pid, s->agent_bin);
    rc = write_pid_file(s->run_dir, "agent.pid", pid);
    if (rc < 0)
        lr_warn("cannot write %s/agent.pid: %s", s->run_dir, strerror(-rc));
    return 0;
}

static int start_haproxy(struct sup *s)
{
    char cfg[PATH_MAX], pidf[PATH_MAX], msock[PATH_MAX];
    if (join(cfg, sizeof(cfg), s->run_dir, "haproxy.cfg") < 0 ||
        join(pidf, sizeof(pidf), s->run_dir, "haproxy.pid") < 0 ||
        join(msock, sizeof(msock), s->run_dir, "haproxy-master.sock,mode,600") < 0)
        return -ENAMETOOLONG;
    char *argv[] = {s->haproxy_bin, "-W", "-S", msock, "-f", cfg, "-p", pidf, NULL};
    pid_t pid;
    int rc = spawn(s, s->haproxy_bin, argv, &pid);
    if (rc < 0) {
        lr_err("cannot start haproxy %s: %s", s->haproxy_bin, strerror(-rc));
        return rc;
    }
    s->haproxy = pid;
    lr_info("started haproxy master pid %ld (%s)", (long)pid, s->haproxy_bin);
    return 0;
}

/* One child's exit, as reaped by the main loop. Returns true when the supervisor must stop
 * (HAProxy is gone). */
static bool on_child_exit(struct sup *s, pid_t pid, int status)
{
    char why[128];
    describe_status(status, why, sizeof(why));
    if (pid == s->agent) {
        s->agent = 0;
        double now = now_mono();
        if (s->agent_restart_now) {
            s->agent_restart_now = false;
            s->agent_restart_at = now;
            lr_info("agent pid %ld %s; restarting it with the new environment", (long)pid, why);
            return false;
        }
        s->backoff = supervise_next_backoff(s->backoff, now - s->agent_started);
        s->agent_restart_at = now + s->backoff;
        lr_warn("agent pid %ld %s after %.1fs; restarting in %.1fs", (long)pid, why,
                now - s->agent_started, s->backoff);
        return false;
    }
    if (pid == s->haproxy) {
        s->haproxy = 0;
        lr_err("haproxy master pid %ld %s; stopping", (long)pid, why);
        return true;
    }
    lr_debug("reaped pid %ld (%s)", (long)pid, why);
    return false;
}

/* Reaps every exited child. Returns true when HAProxy exited. */
static bool reap(struct sup *s)
{
    bool fatal = false;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            break;
        if (on_child_exit(s, pid, status))
            fatal = true;
    }
    return fatal;
}

enum wake { WAKE_TIMEOUT = 0, WAKE_SIGNAL, WAKE_WATCH };

/* Waits at most `secs` for one of our signals (its number into *sig) or, with `watch`, for
 * inotify events. A signal wins over events that arrived at the same time. */
static enum wake wait_event(struct sup *s, double secs, bool watch, int *sig)
{
    if (secs < 0)
        secs = 0;
    struct pollfd pfd[2] = {{.fd = s->sigfd, .events = POLLIN},
                            {.fd = watch ? s->ino_fd : -1, .events = POLLIN}};
    int ms = secs > 3600 ? 3600 * 1000 : (int)(secs * 1000.0 + 0.999);
    if (poll(pfd, 2, ms) <= 0)
        return WAKE_TIMEOUT; /* EINTR included: the caller recomputes its deadlines */
    if (pfd[0].revents & POLLIN) {
        struct signalfd_siginfo si;
        if (read(s->sigfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
            return WAKE_TIMEOUT;
        *sig = (int)si.ssi_signo;
        return WAKE_SIGNAL;
    }
    return pfd[1].revents ? WAKE_WATCH : WAKE_TIMEOUT;
}

/* SIGTERM to the agent, SIGUSR1 (soft stop) to the HAProxy master; after the grace period
 * SIGKILL to whoever is left. */
static void stop_children(struct sup *s)
{
    if (s->agent > 0) {
        lr_info("stopping agent pid %ld", (long)s->agent);
        kill(s->agent, SIGTERM);
    }
    if (s->haproxy > 0) {
        lr_info("stopping haproxy master pid %ld (soft stop)", (long)s->haproxy);
        kill(s->haproxy, SIGUSR1);
    }
    s->agent_restart_at = 0;
    s->agent_restart_now = false;
    double deadline = now_mono() + STOP_GRACE_SECS;
    while (s->agent > 0 || s->haproxy > 0) {
        double left = deadline - now_mono();
        if (left <= 0)
            break;
        int sig = 0;
        if (wait_event(s, left, false, &sig) != WAKE_SIGNAL)
            continue;
        if (sig == SIGCHLD) {
            for (;;) {
                int status;
                pid_t pid = waitpid(-1, &status, WNOHANG);
                if (pid <= 0)
                    break;
                char why[128];
                describe_status(status, why, sizeof(why));
                if (pid == s->agent) {
                    lr_info("agent pid %ld %s", (long)pid, why);
                    s->agent = 0;
                } else if (pid == s->haproxy) {
                    lr_info("haproxy master pid %ld %s", (long)pid, why);
                    s->haproxy = 0;
                }
            }
        } else if (sig == SIGINT || sig == SIGTERM) {
            lr_warn("second stop request: killing the children now");
            break;
        }
    }
    pid_t *left[] = {&s->agent, &s->haproxy};
    for (size_t i = 0; i < 2; i++) {
        if (*left[i] <= 0)
            continue;
        lr_warn("%s pid %ld did not stop in time: SIGKILL", i == 0 ? "agent" : "haproxy master",
                (long)*left[i]);
        kill(*left[i], SIGKILL);
        while (waitpid(*left[i], NULL, 0) < 0 && errno == EINTR)
            ;
        *left[i] = 0;
    }
}

static void remove_run_files(const struct sup *s)
{
    static const char *const names[] = {"control.pid", "agent.pid", "haproxy.pid", "haproxy.sock",
                                        "haproxy-master.sock"};
    /* external: the sockets are HAProxy's, which keeps running */
    size_t n = s->external ? 1 : sizeof(names) / sizeof(names[0]);
    for (size_t i = 0; i < n; i++)
        remove_in(s->run_dir, names[i]);
}

/* ---- reload -------------------------------------------------------------------------- */

/* ---- noticing config file changes: inotify, or polling ------------------------------ */

/* sha256 of the config file's bytes into hex; -1 when it cannot be read (e.g. being
 * replaced). */
static int cfg_file_digest(const char *path, char hex[LR_SHA256_HEX_LEN + 1])
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    struct lr_sha256 c;
    lr_sha256_init(&c);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        lr_sha256_update(&c, buf, n);
    int rc = ferror(f) ? -1 : 0;
    fclose(f);
    uint8_t d[32];
    lr_sha256_final(&c, d);
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return rc;
}

/* What a reload is about to read: compared with what the file says when an event comes. */
static void remember_cfg_stat(struct sup *s)
{
    s->have_cfg_stat = s->config_path && stat(s->config_path, &s->cfg_stat) == 0;
    s->have_cfg_digest = s->config_path && cfg_file_digest(s->config_path, s->cfg_digest) == 0;
}

/* Polling: whether the file's inode, size or mtime moved since it was last read. */
static bool cfg_file_changed(struct sup *s)
{
    if (!s->config_path)
        return false;
    struct stat st;
    if (stat(s->config_path, &st) < 0)
        return false; /* being replaced; look again at the next tick */
    if (!s->have_cfg_stat)
        return true;
    return st.st_ino != s->cfg_stat.st_ino || st.st_size != s->cfg_stat.st_size ||
           st.st_mtim.tv_sec != s->cfg_stat.st_mtim.tv_sec ||
           st.st_mtim.tv_nsec != s->cfg_stat.st_mtim.tv_nsec;
}

/* false when a part does not fit (no such file can exist: ENAMETOOLONG). */
static bool split_path(const char *path, char *dir, size_t dlen, char *name, size_t nlen)
{
    const char *slash = strrchr(path, '/');
    int nd, nn;
    if (!slash) {
        nd = snprintf(dir, dlen, ".");
        nn = snprintf(name, nlen, "%s", path);
    } else {
        nd = snprintf(dir, dlen, "%.*s", slash == path ? 1 : (int)(slash - path), path);
        nn = snprintf(name, nlen, "%s", slash + 1);
    }
    return nd >= 0 && (size_t)nd < dlen && nn >= 0 && (size_t)nn < nlen;
}

#define WATCH_MASK                                                                                 \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB |            \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

static void watch_drop(struct sup *s, struct watch *w)
{
    if (w->wd >= 0)
        inotify_rm_watch(s->ino_fd, w->wd); /* its IN_IGNORED is skipped: wd no longer ours */
    w->wd = -1;
    w->dir[0] = w->name[0] = 0;
}

static int watch_add(struct sup *s, struct watch *w, const char *dir, const char *name, bool any)
{
    w->wd = inotify_add_watch(s->ino_fd, dir, WATCH_MASK);
    if (w->wd < 0)
        return -errno;
    w->any = any;
    snprintf(w->dir, sizeof(w->dir), "%s", dir);
    snprintf(w->name, sizeof(w->name), "%s", name);
    return 0;
}

/* Watches the directory of the config path, for its name; when the path is a symlink (a
 * configmap's `..data/lunaroute.yaml`, a symlink swapped by a deploy tool), for any name in
 * that directory too, and the directory of the file it resolves to, for that file's name.
 * Watching directories, not the file, sees editors that write a temporary file and rename
 * it over the old one, in-place writes and symlink swaps alike. Re-armed when a watched
 * directory goes away or the symlink now resolves elsewhere. 0, or -errno for the first
 * watch (the second is best effort). */
static int watch_arm(struct sup *s)
{
    char dir[PATH_MAX], name[NAME_MAX + 1], real[PATH_MAX], rdir[PATH_MAX], rname[NAME_MAX + 1];
    if (!split_path(s->config_path, dir, sizeof(dir), name, sizeof(name)))
        return -ENAMETOOLONG;
    struct stat st;
    bool link = lstat(s->config_path, &st) == 0 && S_ISLNK(st.st_mode);
    rdir[0] = 0;
    if (link && realpath(s->config_path, real)) {
        char adir[PATH_MAX];
        if (!split_path(real, rdir, sizeof(rdir), rname, sizeof(rname)) ||
            (realpath(dir, adir) && !strcmp(adir, rdir)))
            rdir[0] = 0; /* same directory: the first watch sees it */
    }
    struct watch *w0 = &s->watch[0], *w1 = &s->watch[1];
    if (w0->wd < 0 || strcmp(w0->dir, dir) || w0->any != link) {
        watch_drop(s, w0);
        int rc = watch_add(s, w0, dir, name, link);
        if (rc < 0)
            return rc;
    }
    if (strcmp(w1->dir, rdir)) {
        watch_drop(s, w1);
        if (rdir[0] && watch_add(s, w1, rdir, rname, false) < 0)
            lr_warn("cannot watch %s (where %s points): %s", rdir, s->config_path, strerror(errno));
    }
    return 0;
}

/* From inotify to polling, said once. */
static void watch_give_up(struct sup *s, const char *why)
{
    lr_warn("%s: falling back to polling %s every %.0fs", why, s->config_path, TICK_SECS);
    if (s->ino_fd >= 0)
        close(s->ino_fd);
    s->ino_fd = -1;
    s->watch[0].wd = s->watch[1].wd = -1;
    s->poll_config = true;
    s->change_first = s->change_at = 0;
}

static void watch_start(struct sup *s)
{
    s->ino_fd = -1;
    s->watch[0].wd = s->watch[1].wd = -1;
    if (!s->config_path)
        return; /* built-in defaults: nothing to watch */
    if (s->poll_config) {
        lr_info("watching %s by polling it every %.0fs", s->config_path, TICK_SECS);
        return;
    }
    char why[PATH_MAX + 128];
    s->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (s->ino_fd < 0) {
        snprintf(why, sizeof(why), "inotify_init1: %s", strerror(errno));
        watch_give_up(s, why);
        return;
    }
    int rc = watch_arm(s);
    if (rc < 0) {
        snprintf(why, sizeof(why), "inotify_add_watch %s: %s", s->config_path, strerror(-rc));
        watch_give_up(s, why);
        return;
    }
    lr_info("watching %s with inotify (directory %s%s%s)", s->config_path, s->watch[0].dir,
            s->watch[1].wd >= 0 ? ", and " : "", s->watch[1].wd >= 0 ? s->watch[1].dir : "");
}

static struct watch *watch_find(struct sup *s, int wd)
{
    for (size_t i = 0; i < 2; i++)
        if (wd >= 0 && s->watch[i].wd == wd)
            return &s->watch[i];
    return NULL;
}

/* Reads every pending event; a relevant one (re)starts the debounce: the file is looked at
 * DEBOUNCE_SECS after the last event of a burst, at most DEBOUNCE_MAX_SECS after the first. */
static void watch_read(struct sup *s)
{
    _Alignas(struct inotify_event) char buf[4096];
    bool relevant = false, rearm = false;
    for (;;) {
        ssize_t n = read(s->ino_fd, buf, sizeof(buf));
        if (n <= 0)
            break; /* EAGAIN: drained */
        for (char *p = buf; p + sizeof(struct inotify_event) <= buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)(void *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                relevant = true;
                continue;
            }
            struct watch *w = watch_find(s, ev->wd);
            if (!w)
                continue;
            if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT)) {
                relevant = rearm = true;
                if (ev->mask & (IN_IGNORED | IN_UNMOUNT))
                    w->wd = -1; /* the kernel dropped it */
                continue;
            }
            if (w->any || (ev->len && !strcmp(ev->name, w->name)))
                relevant = true;
        }
    }
    if (rearm) {
        int rc = watch_arm(s);
        if (rc < 0) {
            char why[PATH_MAX + 128];
            snprintf(why, sizeof(why), "cannot watch %s any more (%s)", s->watch[0].dir,
                     strerror(-rc));
            watch_give_up(s, why);
            return;
        }
    }
    if (!relevant)
        return;
    double now = now_mono();
    if (s->change_first <= 0)
        s->change_first = now;
    s->change_at = now + DEBOUNCE_SECS;
    if (s->change_at > s->change_first + DEBOUNCE_MAX_SECS)
        s->change_at = s->change_first + DEBOUNCE_MAX_SECS;
}

/* The burst is over: whether the file now says something else than what was last loaded. */
static bool watch_settled_changed(struct sup *s)
{
    s->change_first = s->change_at = 0;
    if (watch_arm(s) < 0) /* a symlink swap may have moved the target's directory */
        watch_give_up(s, "cannot re-arm the inotify watches");
    char hex[LR_SHA256_HEX_LEN + 1];
    if (cfg_file_digest(s->config_path, hex) < 0) {
        lr_debug("%s not readable now (%s): waiting for the next change", s->config_path,
                 strerror(errno));
        return false;
    }
    if (s->have_cfg_digest && !strcmp(hex, s->cfg_digest)) {
        lr_debug("%s: events, but the same content: no reload", s->config_path);
        return false;
    }
    return true;
}

int supervise_parse_show_proc(const char *text, struct supervise_proc_info *out)
{
    memset(out, 0, sizeof(*out));
    out->failed_reloads = -1;
    bool master = false, in_workers = false;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        char buf[256];
        snprintf(buf, sizeof(buf), "%.*s", (int)(ll < sizeof(buf) ? ll : sizeof(buf) - 1), line);
        line = nl ? nl + 1 : NULL;
        if (buf[0] == '#') {
            in_workers = strncmp(buf, "# workers", 9) == 0;
            continue;
        }
        char type[32] = "";
        long pid = 0, reloads = 0;
        if (sscanf(buf, "%ld %31s %ld", &pid, type, &reloads) < 2)
            continue;
        if (!strcmp(type, "master") && !master) {
            master = true;
            out->master_pid = pid;
            out->reloads = reloads;
            const char *f = strstr(buf, "[failed:");
            long failed;
            if (f && sscanf(f, "[failed: %ld", &failed) == 1)
                out->failed_reloads = failed;
        } else if (in_workers && !strcmp(type, "worker") && !out->worker_pid) {
            out->worker_pid = pid;
        }
    }
    return master ? 0 : -1;
}

static int master_show_proc(const char *msock, struct supervise_proc_info *info, char *err,
                            size_t errlen)
{
    char *out = NULL;
    if (haproxy_cli_command(msock, "show proc", MASTER_CLI_TIMEOUT, &out, err, errlen) !=
        ADMIN_CLIENT_OK)
        return -1;
    int rc = supervise_parse_show_proc(out, info);
    if (rc < 0)
        snprintf(err, errlen, "%.400s: unexpected answer to `show proc`", msock);
    free(out);
    return rc;
}

/* Reloads HAProxy through the master CLI (`reload`, as `kill -USR2` does, DESIGN §3) and waits
 * for the master to report the outcome; SIGUSR2 when the CLI is not usable. -1 when the master
 * reported that it refused the new files (its workers keep the previous ones), else 0. */
static int reload_haproxy(struct sup *s)
{
    char msock[PATH_MAX], err[512] = "";
    struct supervise_proc_info before, now;
    if (join(msock, sizeof(msock), s->run_dir, "haproxy-master.sock") < 0 ||
        master_show_proc(msock, &before, err, sizeof(err)) < 0) {
        if (!s->external) {
            lr_warn("haproxy master CLI not usable (%s): reloading master pid %ld with SIGUSR2",
                    err, (long)s->haproxy);
            kill(s->haproxy, SIGUSR2);
            return 0;
        }
        /* Not our process: the master CLI is the only way in. */
        struct stat st;
        if (stat(msock, &st) < 0 && errno == ENOENT) {
            lr_info("haproxy not running (no %s): it loads the new files when it starts", msock);
            s->haproxy_stale = false;
            return 0;
        }
        lr_log(s->haproxy_stale ? LR_LOG_DEBUG : LR_LOG_ERROR,
               "haproxy master CLI not usable (%s): HAProxy keeps its previous configuration; "
               "retrying every %.0fs",
               err, EXTERNAL_RETRY_SECS);
        s->haproxy_stale = true;
        s->retry_at = now_mono() + EXTERNAL_RETRY_SECS;
        return 0;
    }
    s->haproxy_stale = false;
    lr_info("haproxy configuration changed: `reload` on the master CLI (master pid %ld, worker "
            "pid %ld)",
            before.master_pid, before.worker_pid);
    char *out = NULL;
    /* The master closes the connection as it re-executes itself: an error here says nothing;
     * `show proc` tells. */
    (void)haproxy_cli_command(msock, "reload", MASTER_CLI_TIMEOUT, &out, err, sizeof(err));
    free(out);
    double deadline = now_mono() + HAPROXY_RELOAD_WAIT;
    while (now_mono() < deadline) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (master_show_proc(msock, &now, err, sizeof(err)) < 0 || now.reloads <= before.reloads)
            continue;
        if (now.failed_reloads > before.failed_reloads && before.failed_reloads >= 0) {
            lr_err("haproxy rejected the new configuration (%s); the previous configuration "
                   "keeps serving",
                   s->external ? "see HAProxy's log" : "its messages are above");
            return -1;
        }
        lr_info("haproxy reloaded: worker pid %ld (was %ld)", now.worker_pid, before.worker_pid);
        return 0;
    }
    lr_warn("haproxy master pid %ld did not report the reload within %.0fs (%s)", before.master_pid,
            HAPROXY_RELOAD_WAIT, err[0] ? err : "no new reload in `show proc`");
    return 0;
}

/* " pid N" for our agent; "" for an external one (its pid is another container's). */
static const char *agent_label(const struct sup *s)
{
    static char buf[32];
    if (s->external || s->agent <= 0)
        return "";
    snprintf(buf, sizeof(buf), " pid %ld", (long)s->agent);
    return buf;
}

/* Applies the rendered agent.json to the running agent through its admin API (POST
 * /v1/reload on sock, the socket the agent serves), or with SIGHUP when the API cannot be
 * reached. Sets agent_stale when the agent may not have it. */
static void reload_agent(struct sup *s, const char *sock, const char *sock_err)
{
    char err[512] = "";
    if (!s->external && s->agent <= 0) {
        lr_info("agent not running: it will start with the new settings");
        s->agent_stale = false;
        return;
    }
    struct admin_response r;
    int rc = ADMIN_CLIENT_UNREACHABLE;
    if (sock)
        rc = admin_client_request(sock, "POST", "/v1/reload", NULL, AGENT_RELOAD_TIMEOUT, &r, err,
                                  sizeof(err));
    else
        snprintf(err, sizeof(err), "%s", sock_err);
    if (rc != ADMIN_CLIENT_OK && !s->external) {
        lr_warn("agent admin API %s (%s): sending SIGHUP to agent pid %ld",
                sock ? "unreachable" : "unknown", err, (long)s->agent);
        kill(s->agent, SIGHUP);
        s->agent_stale = false;
        return;
    }
    if (rc != ADMIN_CLIENT_OK) {
        /* Not our process: the admin API is the only way in. */
        struct stat st;
        if (sock && stat(sock, &st) < 0 && errno == ENOENT) {
            lr_info("agent not running (no %s): it reads the new settings when it starts", sock);
            s->agent_stale = false;
            return;
        }
        lr_log(s->agent_stale && s->retry_at > 0 ? LR_LOG_DEBUG : LR_LOG_ERROR,
               "agent admin API unreachable (%s): the agent keeps its previous settings; "
               "retrying every %.0fs",
               err, EXTERNAL_RETRY_SECS);
        s->agent_stale = true;
        s->retry_at = now_mono() + EXTERNAL_RETRY_SECS;
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(r.body, r.body_len, 0, &jerr);
    const char *e = json_string_value(json_object_get(doc, "error"));
    if (r.status == 200) {
        const char *dg = json_string_value(json_object_get(doc, "digest"));
        const json_t *rr = json_object_get(doc, "restart_required");
        lr_info("agent%s applied the new settings through its admin API (%s, sha256 %.12s)",
                agent_label(s),
                json_is_true(json_object_get(doc, "changed")) ? "changed" : "unchanged",
                dg ? dg : "?");
        if (json_array_size(rr))
            lr_warn("agent settings that take effect only when the agent restarts changed "
                    "(e.g. %s)",
                    json_string_value(json_array_get(rr, 0)));
        s->agent_stale = false;
    } else {
        lr_err("agent%s refused the new settings (HTTP %d): %s; it keeps the previous ones",
               agent_label(s), r.status, e ? e : "no reason given");
        s->agent_stale = true;
    }
    json_decref(doc);
    admin_response_free(&r);
}

/* Logs what a failed check printed, one line at a time. */
static void log_output(const struct lr_buf *out)
{
    const char *p = out->len ? (const char *)out->data : "";
    size_t left = out->len;
    while (left) {
        const char *nl = memchr(p, '\n', left);
        size_t ll = nl ? (size_t)(nl - p) : left;
        if (ll)
            lr_err("  %.*s", (int)ll, p);
        p += ll + (nl ? 1 : 0);
        left -= ll + (nl ? 1 : 0);
    }
}

/* Removes a staging directory (flat: render writes no subdirectory). */
static void rm_staging(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                remove_in(dir, de->d_name);
        closedir(d);
    }
    rmdir(dir);
}

/* Renders n into a staging directory and has HAProxy (`haproxy -c`) and the agent
 * (`--check`) check it, before anything in the run directory changes. 0, or -1 (logged). */
static int precheck(struct sup *s, const struct lr_config *n, char **env)
{
    char dir[PATH_MAX], err[512] = "", cfg[PATH_MAX], aj[PATH_MAX];
    /* In the run directory, unless the staging path would push the rendered `stats socket`
     * path past HAProxy's limit (`haproxy -c` would refuse what the run directory accepts):
     * then in $TMPDIR (mkdtemp: 0700; the rendered files hold no secret). */
    const char *tmp = getenv("TMPDIR");
    const char *base =
        strlen(s->run_dir) + strlen("/.reload-XXXXXX/haproxy.sock") <= HAPROXY_SOCK_PATH_MAX
            ? s->run_dir
            : (tmp && *tmp ? tmp : "/tmp");
    if (join(dir, sizeof(dir), base, base == s->run_dir ? ".reload-XXXXXX" : "lr-reload-XXXXXX") <
            0 ||
        !mkdtemp(dir)) {
        lr_err("reload: cannot create a staging directory in %s: %s", base, strerror(errno));
        return -1;
    }
    int rc = -1;
    if (render_write_all(n, RENDER_STANDALONE, dir, err, sizeof(err)) < 0) {
        lr_err("reload: %s", err);
        goto out;
    }
    if (join(cfg, sizeof(cfg), dir, "haproxy.cfg") < 0 ||
        join(aj, sizeof(aj), dir, "agent.json") < 0)
        goto out;
    struct lr_buf o = {0};
    const char *cfgs[] = {cfg};
    /* external mode without a local haproxy: skipped (said once at start) */
    int st = s->haproxy_bin[0] ? validate_haproxy_check(s->haproxy_bin, cfgs, 1, env, &o) : 0;
    if (st != 0) {
        lr_err("reload: `haproxy -c` rejected the new configuration (status %d):", st);
        log_output(&o);
        lr_buf_free(&o);
        goto out;
    }
    lr_buf_reset(&o);
    const char *argv[] = {s->agent_bin, "--check", "--settings", aj, NULL};
    st = s->agent_bin[0] ? validate_run(argv, env, &o) : 0;
    if (st != 0) {
        lr_err("reload: the agent rejected the new settings (lunaroute-agent --check, status "
               "%d):",
               st);
        log_output(&o);
        lr_buf_free(&o);
        goto out;
    }
    lr_buf_free(&o);
    rc = 0;
out:
    rm_staging(dir);
    return rc;
}

/* HAProxy refused files that `haproxy -c` let through (e.g. a bind that fails only for
 * real), or that were never checked (external mode without haproxy): puts back the ones it
 * runs, so that a HAProxy (re)started from the run directory starts on them, and the next
 * change is compared with them. */
static void restore_haproxy_files(struct sup *s, const char *const names[], char *const text[],
                                  size_t n)
{
    char err[512] = "";
    for (size_t i = 0; i < n; i++) {
        if (!text[i])
            continue;
        if (render_write_file(s->run_dir, names[i], text[i], 0644, err, sizeof(err)) < 0) {
            lr_err("cannot restore %s: %s", names[i], err);
            return;
        }
    }
    lr_warn("restored the previous haproxy.cfg, spoe-lunaroute.conf and routes.map in %s: the "
            "files HAProxy runs",
            s->run_dir);
}

/* Renders n into the run directory and applies only what changed (see supervise.h);
 * `new_secrets`: n hands the children other credentials. 0, or -1 when nothing could be
 * rendered (logged; the previous files stay). */
static int apply(struct sup *s, const struct lr_config *n, bool new_secrets)
{
    /* The socket the running agent serves: from the agent.json it was started with. */
    char sock[PATH_MAX], sock_err[512] = "";
    bool have_sock =
        admin_client_socket_path(s->run_dir, sock, sizeof(sock), sock_err, sizeof(sock_err)) == 0;

    static const char *const hafiles[] = {"haproxy.cfg", "spoe-lunaroute.conf", "routes.map"};
    char *before[3], *after[3];
    for (size_t i = 0; i < 3; i++)
        before[i] = read_file(s->run_dir, hafiles[i]);
    char *agent_before = read_file(s->run_dir, "agent.json");
    char err[512] = "";
    int rc = render_write_all(n, RENDER_STANDALONE, s->run_dir, err, sizeof(err));
    bool ha_changed = false;
    for (size_t i = 0; i < 3; i++) {
        after[i] = read_file(s->run_dir, hafiles[i]);
        if (!same_text(before[i], after[i]))
            ha_changed = true;
        free(after[i]);
    }
    char *agent_after = read_file(s->run_dir, "agent.json");
    bool agent_changed = !same_text(agent_before, agent_after);
    free(agent_before);
    free(agent_after);
    if (rc < 0) {
        lr_err("reload: %s; still running the previous configuration", err);
        for (size_t i = 0; i < 3; i++)
            free(before[i]);
        return -1;
    }
    if (!have_sock) /* first render in an empty run directory: the new file names it */
        have_sock = admin_client_socket_path(s->run_dir, sock, sizeof(sock), sock_err,
                                             sizeof(sock_err)) == 0;

    if (new_secrets && s->external) {
        lr_warn("credentials changed: the agent and HAProxy read theirs from their own "
                "environment; restart them to use the new ones");
    } else if (new_secrets) {
        lr_warn("credentials changed: restarting the agent; HAProxy keeps the credentials it "
                "started with until `lunaroute-control up` is restarted");
        if (s->agent > 0) {
            s->agent_restart_now = true;
            kill(s->agent, SIGTERM);
        }
        s->agent_stale = false;
    }
    if (new_secrets && !s->external) {
        /* the restart applies agent.json */
    } else if (agent_changed || s->agent_stale) {
        reload_agent(s, have_sock ? sock : NULL, sock_err);
    } else {
        lr_info("agent settings unchanged: no agent reload");
    }
    if ((ha_changed || s->haproxy_stale) && (s->external || s->haproxy > 0)) {
        if (reload_haproxy(s) < 0)
            restore_haproxy_files(s, hafiles, before, 3);
    } else {
        lr_info("haproxy configuration unchanged: no haproxy reload");
    }
    for (size_t i = 0; i < 3; i++)
        free(before[i]);
    return 0;
}

/* External mode: tries again to reach an agent or a HAProxy that could not be reached. */
static void retry_external(struct sup *s)
{
    if (s->agent_stale) {
        char sock[PATH_MAX], sock_err[512] = "";
        bool have_sock = admin_client_socket_path(s->run_dir, sock, sizeof(sock), sock_err,
                                                  sizeof(sock_err)) == 0;
        reload_agent(s, have_sock ? sock : NULL, sock_err);
    }
    if (s->haproxy_stale)
        reload_haproxy(s);
    if ((!s->agent_stale && !s->haproxy_stale) || s->retry_at <= now_mono())
        s->retry_at = 0;
}

static void reload(struct sup *s, const char *why)
{
    lr_info("reloading configuration (%s)", why);
    remember_cfg_stat(s);
    struct lr_config *n = NULL;
    struct cfg_errors errs = {0};
    if (config_load(s->config_path, cfg_getenv_process, NULL, &n, &errs) < 0) {
        for (size_t i = 0; i < errs.n; i++) {
            char line[1024];
            cfg_error_format(&errs.v[i], line, sizeof(line));
            lr_err("%s", line);
        }
        if (errs.n == 0)
            lr_err("configuration could not be loaded");
        lr_err("reload aborted; still running the previous configuration");
        cfg_errors_free(&errs);
        return;
    }
    cfg_errors_free(&errs);

    bool new_secrets = secrets_differ(s->cfg, n);
    char **env = new_secrets ? env_build(n) : NULL;
    if (new_secrets && !env) {
        lr_err("reload: out of memory");
        config_free(n);
        return;
    }
    if (precheck(s, n, env ? env : s->env) < 0) {
        lr_err("reload aborted; still running the previous configuration");
        env_free(env);
        config_free(n);
        return;
    }
    if (apply(s, n, new_secrets) < 0) {
        env_free(env);
        config_free(n);
        return;
    }
    if (new_secrets) {
        env_free(s->env);
        s->env = env;
    }
    if (n->log_level) {
        enum lr_log_level l;
        if (lr_log_level_from_str(n->log_level, &l) == 0)
            lr_log_set_level(l);
    }
    config_free(s->cfg);
    s->cfg = n;
}

/* ---- main loop ----------------------------------------------------------------------- */

/* The agent binary: LUNAROUTE_AGENT_BIN, else lunaroute-agent next to this program. */
static int find_agent(struct sup *s, char *why, size_t len)
{
    const char *abin = getenv("LUNAROUTE_AGENT_BIN");
    if (abin && *abin) {
        if ((size_t)snprintf(s->agent_bin, sizeof(s->agent_bin), "%s", abin) >=
                sizeof(s->agent_bin) ||
            access(abin, X_OK) < 0) {
            snprintf(why, len, "LUNAROUTE_AGENT_BIN=%s is not an executable file", abin);
            return -1;
        }
        return 0;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        snprintf(why, len,
                 "cannot locate lunaroute-agent (readlink /proc/self/exe: %s); set "
                 "LUNAROUTE_AGENT_BIN",
                 strerror(errno));
        return -1;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = 0;
    if (join(s->agent_bin, sizeof(s->agent_bin), self, "lunaroute-agent") < 0 ||
        access(s->agent_bin, X_OK) < 0) {
        /* %.400s: the message must fit the caller's buffer, a path may not */
        snprintf(why, len,
                 "cannot find lunaroute-agent next to lunaroute-control (%.400s); set "
                 "LUNAROUTE_AGENT_BIN",
                 s->agent_bin);
        return -1;
    }
    return 0;
}

static int setup(struct sup *s, const char *run_dir)
{
    /* Before touching anything: never re-render under a running supervisor's feet. */
    pid_t other = running_control(run_dir);
    if (other) {
        lr_err("lunaroute-control pid %ld is already running in %s", (long)other, run_dir);
        return -1;
    }
    char err[512] = "";
    /* Standalone: render now (render_write_all creates the directory 0700 and checks the
     * path is usable). External: the files may be in use by a running HAProxy and agent, so
     * the first rendering goes through the checked reload path, below. */
    if (s->external) {
        if (mkdir(run_dir, 0700) < 0 && errno != EEXIST) {
            lr_err("%s: %s", run_dir, strerror(errno));
            return -1;
        }
    } else if (render_write_all(s->cfg, RENDER_STANDALONE, run_dir, err, sizeof(err)) < 0) {
        lr_err("%s", err);
        return -1;
    }
    if (!realpath(run_dir, s->run_dir)) {
        lr_err("%s: %s", run_dir, strerror(errno));
        return -1;
    }
    if (find_agent(s, err, sizeof(err)) < 0) {
        if (!s->external) {
            lr_err("%s", err);
            return -1;
        }
        s->agent_bin[0] = 0;
        lr_warn("%s: new settings are not checked with `lunaroute-agent --check` (the agent "
                "still refuses settings it cannot load, keeping its previous ones)",
                err);
    }
    if (supervise_find_program("LUNAROUTE_HAPROXY_BIN", "haproxy", s->haproxy_bin,
                               sizeof(s->haproxy_bin)) < 0) {
        const char *o = getenv("LUNAROUTE_HAPROXY_BIN");
        if (!s->external || (o && *o)) {
            lr_err("cannot find haproxy (not on PATH, or LUNAROUTE_HAPROXY_BIN is not "
                   "executable)");
            return -1;
        }
        s->haproxy_bin[0] = 0;
        lr_info("haproxy is not installed here: new configurations are not checked with "
                "`haproxy -c`; the HAProxy master refuses a configuration it cannot load and "
                "keeps its current workers");
    }
    if (!(s->env = env_build(s->cfg))) {
        lr_err("out of memory");
        return -1;
    }
    int rc = write_pid_file(s->run_dir, "control.pid", getpid());
    if (rc < 0) {
        lr_err("cannot write %s/control.pid: %s", s->run_dir, strerror(-rc));
        return -1;
    }
    return 0;
}

int supervise_run(struct lr_config *cfg, const char *config_path, const char *run_dir,
                  const struct supervise_opts *opts)
{
    struct sup s = {.cfg = cfg,
                    .config_path = config_path,
                    .external = opts && opts->external,
                    .poll_config = opts && opts->poll_config,
                    .sigfd = -1,
                    .ino_fd = -1,
                    .watch = {{.wd = -1}, {.wd = -1}}};
    sigemptyset(&s.sigs);
    sigaddset(&s.sigs, SIGCHLD);
    sigaddset(&s.sigs, SIGINT);
    sigaddset(&s.sigs, SIGTERM);
    sigaddset(&s.sigs, SIGHUP);
    sigset_t old;
    sigprocmask(SIG_BLOCK, &s.sigs, &old);
    signal(SIGPIPE, SIG_IGN);

    int ret = 1;
    bool pidfile = false;
    if (cfg->log_level) {
        enum lr_log_level l;
        if (lr_log_level_from_str(cfg->log_level, &l) == 0)
            lr_log_set_level(l);
    }
    s.sigfd = signalfd(-1, &s.sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s.sigfd < 0) {
        lr_err("signalfd: %s", strerror(errno));
        goto out;
    }
    if (setup(&s, run_dir) < 0)
        goto out;
    pidfile = true;
    remember_cfg_stat(&s);
    lr_info("run directory %s; configuration %s%s", s.run_dir,
            config_path ? config_path : "built-in defaults",
            s.external ? "; external HAProxy and agent (driven through their sockets)" : "");

    if (s.external) {
        /* The first rendering is a reload like any other: checked, then only what changed
         * is applied to an agent and a HAProxy that may already run on the old files. */
        if (precheck(&s, s.cfg, s.env) < 0 || apply(&s, s.cfg, false) < 0) {
            lr_err("the configuration was not applied");
            goto out;
        }
    } else if (start_agent(&s) < 0 || start_haproxy(&s) < 0) {
        stop_children(&s);
        goto out;
    }
    watch_start(&s);

    for (;;) {
        double now = now_mono();
        double wait = s.config_path && s.poll_config ? TICK_SECS : IDLE_SECS;
        if (s.agent == 0 && s.agent_restart_at > 0 && s.agent_restart_at - now < wait)
            wait = s.agent_restart_at - now;
        if (s.change_at > 0 && s.change_at - now < wait)
            wait = s.change_at - now;
        if (s.retry_at > 0 && s.retry_at - now < wait)
            wait = s.retry_at - now;
        int sig = 0;
        enum wake w = wait_event(&s, wait, s.ino_fd >= 0, &sig);
        if (w == WAKE_SIGNAL && (sig == SIGINT || sig == SIGTERM)) {
            lr_info("received %s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
            stop_children(&s);
            ret = 0;
            break;
        }
        if (w == WAKE_SIGNAL && sig == SIGCHLD && reap(&s)) {
            stop_children(&s);
            break;
        }
        if (w == WAKE_WATCH)
            watch_read(&s);
        if (w == WAKE_SIGNAL && sig == SIGHUP) {
            s.change_first = s.change_at = 0; /* this reload reads the file anyway */
            reload(&s, "SIGHUP");
        } else if (s.ino_fd >= 0 && s.change_at > 0 && now_mono() >= s.change_at) {
            if (watch_settled_changed(&s))
                reload(&s, "config file changed");
        } else if (s.poll_config && cfg_file_changed(&s)) {
            reload(&s, "config file changed");
        }
        if (s.external && s.retry_at > 0 && now_mono() >= s.retry_at)
            retry_external(&s);
        if (s.agent == 0 && s.agent_restart_at > 0 && now_mono() >= s.agent_restart_at &&
            start_agent(&s) < 0) {
            s.backoff = supervise_next_backoff(s.backoff, 0);
            s.agent_restart_at = now_mono() + s.backoff;
        }
    }

out:
    if (pidfile) {
        remove_run_files(&s);
        lr_info("stopped");
    }
    if (s.ino_fd >= 0)
        close(s.ino_fd);
    if (s.sigfd >= 0)
        close(s.sigfd);
    env_free(s.env);
    config_free(s.cfg);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return ret;
}
