/* Process supervision for `lunaroute-control up` (DESIGN §3, §7).
 *
 * One thread, signals taken synchronously: SIGCHLD/SIGINT/SIGTERM/SIGHUP are blocked and
 * collected with sigtimedwait(), so no handler ever runs and every reaction happens in the
 * main loop with its full context. The children get a clean signal mask and default
 * dispositions through posix_spawn attributes. */
#include "supervise.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
#include "validate.h"

extern char **environ;

#define STOP_GRACE_SECS      10.0
#define BACKOFF_MIN          0.1
#define BACKOFF_MAX          5.0
#define BACKOFF_RESET_UPTIME 30.0
#define TICK_SECS            1.0
#define AGENT_RELOAD_TIMEOUT 5.0  /* POST /v1/reload, answered once the agent re-read its file */
#define MASTER_CLI_TIMEOUT   2.0
#define HAPROXY_RELOAD_WAIT  15.0 /* for the master to report the reload in `show proc` */

struct sup {
    struct lr_config *cfg;
    const char *config_path;
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

/* Waits for one of our signals for at most `secs`. 0 on timeout. */
static int wait_signal(struct sup *s, double secs)
{
    if (secs < 0)
        secs = 0;
    struct timespec ts = {.tv_sec = (time_t)secs,
                          .tv_nsec = (long)((secs - (double)(time_t)secs) * 1e9)};
    for (;;) {
        int sig = sigtimedwait(&s->sigs, NULL, &ts);
        if (sig >= 0)
            return sig;
        if (errno == EAGAIN)
            return 0;
        if (errno != EINTR)
            return 0;
    }
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
        int sig = wait_signal(s, left);
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
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        remove_in(s->run_dir, names[i]);
}

/* ---- reload -------------------------------------------------------------------------- */

static void remember_cfg_stat(struct sup *s)
{
    s->have_cfg_stat = s->config_path && stat(s->config_path, &s->cfg_stat) == 0;
}

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
        snprintf(err, errlen, "%s: unexpected answer to `show proc`", msock);
    free(out);
    return rc;
}

/* Reloads HAProxy through the master CLI (`reload`, as `kill -USR2` does, DESIGN §3) and waits
 * for the master to report the outcome; SIGUSR2 when the CLI is not usable. */
static void reload_haproxy(struct sup *s)
{
    char msock[PATH_MAX], err[512] = "";
    struct supervise_proc_info before, now;
    if (join(msock, sizeof(msock), s->run_dir, "haproxy-master.sock") < 0 ||
        master_show_proc(msock, &before, err, sizeof(err)) < 0) {
        lr_warn("haproxy master CLI not usable (%s): reloading master pid %ld with SIGUSR2", err,
                (long)s->haproxy);
        kill(s->haproxy, SIGUSR2);
        return;
    }
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
        if (now.failed_reloads > before.failed_reloads && before.failed_reloads >= 0)
            lr_err("haproxy rejected the new configuration (its messages are above); the "
                   "previous configuration keeps serving");
        else
            lr_info("haproxy reloaded: worker pid %ld (was %ld)", now.worker_pid,
                    before.worker_pid);
        return;
    }
    lr_warn("haproxy master pid %ld did not report the reload within %.0fs (%s)",
            (long)s->haproxy, HAPROXY_RELOAD_WAIT, err[0] ? err : "no new reload in `show proc`");
}

/* Applies the rendered agent.json to the running agent through its admin API (POST
 * /v1/reload on sock, the socket the agent serves), or with SIGHUP when the API cannot be
 * reached. Sets agent_stale when the agent may not have it. */
static void reload_agent(struct sup *s, const char *sock, const char *sock_err)
{
    char err[512] = "";
    if (s->agent <= 0) {
        lr_info("agent not running: it will start with the new settings");
        s->agent_stale = false;
        return;
    }
    if (!sock) {
        lr_warn("agent admin API unknown (%s): sending SIGHUP to agent pid %ld", sock_err,
                (long)s->agent);
        kill(s->agent, SIGHUP);
        s->agent_stale = false;
        return;
    }
    struct admin_response r;
    int rc = admin_client_request(sock, "POST", "/v1/reload", NULL, AGENT_RELOAD_TIMEOUT, &r, err,
                                  sizeof(err));
    if (rc != ADMIN_CLIENT_OK) {
        lr_warn("agent admin API unreachable (%s): sending SIGHUP to agent pid %ld", err,
                (long)s->agent);
        kill(s->agent, SIGHUP);
        s->agent_stale = false;
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(r.body, r.body_len, 0, &jerr);
    const char *e = json_string_value(json_object_get(doc, "error"));
    if (r.status == 200) {
        const char *dg = json_string_value(json_object_get(doc, "digest"));
        const json_t *rr = json_object_get(doc, "restart_required");
        lr_info("agent pid %ld applied the new settings through its admin API (%s, sha256 "
                "%.12s)",
                (long)s->agent, json_is_true(json_object_get(doc, "changed")) ? "changed"
                                                                                : "unchanged",
                dg ? dg : "?");
        if (json_array_size(rr))
            lr_warn("agent settings that take effect only when the agent restarts changed "
                    "(e.g. %s)",
                    json_string_value(json_array_get(rr, 0)));
        s->agent_stale = false;
    } else {
        lr_err("agent pid %ld refused the new settings (HTTP %d): %s; it keeps the previous "
               "ones",
               (long)s->agent, r.status, e ? e : "no reason given");
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
    if (join(dir, sizeof(dir), s->run_dir, ".reload-XXXXXX") < 0 || !mkdtemp(dir)) {
        lr_err("reload: cannot create a staging directory in %s: %s", s->run_dir,
               strerror(errno));
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
    int st = validate_haproxy_check(s->haproxy_bin, cfgs, 1, env, &o);
    if (st != 0) {
        lr_err("reload: `haproxy -c` rejected the new configuration (status %d):", st);
        log_output(&o);
        lr_buf_free(&o);
        goto out;
    }
    lr_buf_reset(&o);
    const char *argv[] = {s->agent_bin, "--check", "--settings", aj, NULL};
    st = validate_run(argv, env, &o);
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
        free(before[i]);
        free(after[i]);
    }
    char *agent_after = read_file(s->run_dir, "agent.json");
    bool agent_changed = !same_text(agent_before, agent_after);
    free(agent_before);
    free(agent_after);
    if (rc < 0) {
        lr_err("reload: %s; still running the previous configuration", err);
        env_free(env);
        config_free(n);
        return;
    }

    if (new_secrets) {
        env_free(s->env);
        s->env = env;
        lr_warn("credentials changed: restarting the agent; HAProxy keeps the credentials it "
                "started with until `lunaroute-control up` is restarted");
        if (s->agent > 0) {
            s->agent_restart_now = true;
            kill(s->agent, SIGTERM);
        }
        s->agent_stale = false;
    } else if (agent_changed || s->agent_stale) {
        reload_agent(s, have_sock ? sock : NULL, sock_err);
    } else {
        lr_info("agent settings unchanged: no agent reload");
    }
    if (ha_changed && s->haproxy > 0)
        reload_haproxy(s);
    else
        lr_info("haproxy configuration unchanged: no haproxy reload");
    if (n->log_level) {
        enum lr_log_level l;
        if (lr_log_level_from_str(n->log_level, &l) == 0)
            lr_log_set_level(l);
    }
    config_free(s->cfg);
    s->cfg = n;
}

/* ---- main loop ----------------------------------------------------------------------- */

static int setup(struct sup *s, const char *run_dir)
{
    /* Before touching anything: never re-render under a running supervisor's feet. */
    pid_t other = running_control(run_dir);
    if (other) {
        lr_err("lunaroute-control pid %ld is already running in %s", (long)other, run_dir);
        return -1;
    }
    char err[512] = "";
    /* render_write_all creates the directory (0700) and checks the path is usable */
    if (render_write_all(s->cfg, RENDER_STANDALONE, run_dir, err, sizeof(err)) < 0) {
        lr_err("%s", err);
        return -1;
    }
    if (!realpath(run_dir, s->run_dir)) {
        lr_err("%s: %s", run_dir, strerror(errno));
        return -1;
    }
    const char *abin = getenv("LUNAROUTE_AGENT_BIN");
    if (abin && *abin) {
        if ((size_t)snprintf(s->agent_bin, sizeof(s->agent_bin), "%s", abin) >=
                sizeof(s->agent_bin) ||
            access(abin, X_OK) < 0) {
            lr_err("LUNAROUTE_AGENT_BIN=%s is not an executable file", abin);
            return -1;
        }
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0) {
            lr_err("cannot locate lunaroute-agent (readlink /proc/self/exe: %s); set "
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
            lr_err("cannot find lunaroute-agent next to lunaroute-control (%s); set "
                   "LUNAROUTE_AGENT_BIN",
                   s->agent_bin);
            return -1;
        }
    }
    if (supervise_find_program("LUNAROUTE_HAPROXY_BIN", "haproxy", s->haproxy_bin,
                               sizeof(s->haproxy_bin)) < 0) {
        lr_err("cannot find haproxy (not on PATH, or LUNAROUTE_HAPROXY_BIN is not executable)");
        return -1;
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

int supervise_run(struct lr_config *cfg, const char *config_path, const char *run_dir)
{
    struct sup s = {.cfg = cfg, .config_path = config_path};
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
    if (setup(&s, run_dir) < 0)
        goto out;
    pidfile = true;
    remember_cfg_stat(&s);
    lr_info("run directory %s; configuration %s", s.run_dir,
            config_path ? config_path : "built-in defaults");

    if (start_agent(&s) < 0 || start_haproxy(&s) < 0) {
        stop_children(&s);
        goto out;
    }

    for (;;) {
        double now = now_mono();
        double wait = TICK_SECS;
        if (s.agent == 0 && s.agent_restart_at > 0 && s.agent_restart_at - now < wait)
            wait = s.agent_restart_at - now;
        int sig = wait_signal(&s, wait);
        if (sig == SIGINT || sig == SIGTERM) {
            lr_info("received %s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
            stop_children(&s);
            ret = 0;
            break;
        }
        if (sig == SIGCHLD && reap(&s)) {
            stop_children(&s);
            break;
        }
        if (sig == SIGHUP)
            reload(&s, "SIGHUP");
        else if (cfg_file_changed(&s))
            reload(&s, "config file changed");
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
    env_free(s.env);
    config_free(s.cfg);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return ret;
}
