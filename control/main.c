/* lunaroute-control: the command line (DESIGN §7). Thin shell: parses arguments, loads the
 * configuration, and hands over to the renderers or the supervisor. Exit status: 0 ok,
 * 1 runtime failure, 2 usage or configuration error. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "admin_client.h"
#include "buf.h"
#include "config.h"
#include "log.h"
#include "render.h"
#include "status.h"
#include "supervise.h"
#include "validate.h"

#define EXIT_OK      0
#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

static const char *const prog = "lunaroute-control";

static const char usage_main[] =
    "usage: lunaroute-control <command> [options]\n"
    "\n"
    "commands:\n"
    "  render    --config F --out DIR [--mode standalone|boltin]\n"
    "                                  write the rendered HAProxy/SPOE/agent files into DIR\n"
    "  validate  --config F            check a configuration (and run `haproxy -c` on the\n"
    "                                  rendered result when haproxy is installed)\n"
    "  up        [--config F] [--run-dir D] [--external] [--watch inotify|poll]\n"
    "                                  render, start and supervise the agent and HAProxy\n"
    "                                  (--external: drive ones started elsewhere)\n"
    "  switch-provider openai|anthropic|auto|NAME [--run-dir D]\n"
    "                                  switch the bypass provider of the running agent now\n"
    "                                  (no HAProxy reload; persisted in the run directory)\n"
    "  status    [--run-dir D]         one JSON document: agent, HAProxy, servers, provider\n"
    "\n"
    "Without --config, the file named by LUNAROUTE_CONFIG is used; with neither, the\n"
    "built-in defaults. Run `lunaroute-control <command> --help` for details.\n"
    "\n"
    "options:\n"
    "  -h, --help     show this help\n"
    "      --version  show the version\n"
    "\n"
    "exit status: 0 ok, 1 runtime failure, 2 usage or configuration error\n";

static const char usage_render[] =
    "usage: lunaroute-control render [--config F] --out DIR [--mode standalone|boltin]\n"
    "\n"
    "Renders the configuration into DIR (created 0700 if missing):\n"
    "  standalone (default): haproxy.cfg, spoe-lunaroute.conf, routes.map, agent.json\n"
    "  boltin: lunaroute-backends.cfg (load it with an extra -f), frontend-snippet.cfg\n"
    "          (paste into your frontend), spoe-lunaroute.conf, routes.map, agent.json\n"
    "Rendered files carry environment-variable names only, never key values.\n"
    "\n"
    "options:\n"
    "  -c, --config F   configuration file (default: $LUNAROUTE_CONFIG, else built-in defaults)\n"
    "  -o, --out DIR    output directory (required)\n"
    "  -m, --mode M     standalone | boltin (default standalone)\n"
    "  -h, --help       show this help\n"
    "      --version    show the version\n";

static const char usage_validate[] =
    "usage: lunaroute-control validate [--config F]\n"
    "\n"
    "Loads and validates the configuration (every error as file:line:col), renders it into\n"
    "temporary directories and, when haproxy is installed (or LUNAROUTE_HAPROXY_BIN names it),\n"
    "runs `haproxy -c` twice: on the standalone haproxy.cfg, and on the bolt-on files\n"
    "(frontend-snippet.cfg pasted into a minimal fleet frontend, loaded with\n"
    "lunaroute-backends.cfg). Prints one line per check, then \"configuration is valid\" and\n"
    "exits 0; or prints the errors and exits 2 (1 when haproxy could not be run).\n"
    "\n"
    "options:\n"
    "  -c, --config F   configuration file (default: $LUNAROUTE_CONFIG, else built-in defaults)\n"
    "  -h, --help       show this help\n"
    "      --version    show the version\n";

static const char usage_up[] =
    "usage: lunaroute-control up [--config F] [--run-dir D] [--external] [--watch inotify|poll]\n"
    "\n"
    "Renders into the run directory, starts lunaroute-agent and HAProxy (master-worker) and\n"
    "supervises them: the agent is restarted with back-off when it dies; SIGHUP or a change of\n"
    "the config file reloads; SIGINT/SIGTERM stop both cleanly.\n"
    "\n"
    "The config file is watched with inotify on its directory, so an in-place write, an editor's\n"
    "write-then-rename and a symlink swap (a Kubernetes configmap) are all seen; a burst of\n"
    "changes is one reload, 150 ms after the last, and only when the content changed. When\n"
    "inotify is not available (or with --watch poll), the file is polled every second.\n"
    "\n"
    "A reload re-renders into a staging directory and checks it (`haproxy -c`, the agent's\n"
    "--check) before anything changes; a bad file is rejected and the running stack keeps the\n"
    "old configuration. Then only what changed is applied: the agent re-reads agent.json\n"
    "through its admin API (POST /v1/reload; SIGHUP when the socket cannot be reached), HAProxy\n"
    "is reloaded through its master CLI (`reload`; SIGUSR2 when the CLI cannot be reached) only\n"
    "when haproxy.cfg, spoe-lunaroute.conf or routes.map changed, and new credentials restart\n"
    "the agent.\n"
    "\n"
    "--external: HAProxy and the agent are started elsewhere (e.g. their own containers) on\n"
    "the files of the shared run directory; nothing is spawned, stopped or signalled. The\n"
    "first rendering and every reload take the checked path above and are applied through\n"
    "<run_dir>/agent.sock (POST /v1/reload) and <run_dir>/haproxy-master.sock (`reload`, the\n"
    "outcome read back from `show proc`) only. A missing socket means that process is not\n"
    "running yet (it reads the files when it starts); an unreachable one is retried every 5 s.\n"
    "`haproxy -c` and `lunaroute-agent --check` run when they are installed here; otherwise\n"
    "those checks are skipped (logged at start) and HAProxy's master and the agent still\n"
    "refuse what they cannot load, keeping what they run. New credentials are not applied:\n"
    "the other processes read theirs from their own environment.\n"
    "\n"
    "options:\n"
    "  -c, --config F    configuration file (default: $LUNAROUTE_CONFIG, else built-in defaults)\n"
    "  -r, --run-dir D   run directory (default: $LUNAROUTE_RUN_DIR, else run_dir from the\n"
    "                    configuration, else ./run)\n"
    "      --external    supervise an agent and a HAProxy started elsewhere (see above)\n"
    "      --watch M     inotify (default) | poll: how config file changes are noticed\n"
    "  -h, --help        show this help\n"
    "      --version     show the version\n"
    "\n"
    "environment: LUNAROUTE_AGENT_BIN (default: lunaroute-agent next to this program),\n"
    "             LUNAROUTE_HAPROXY_BIN (default: haproxy from PATH)\n";

static const char usage_switch[] =
    "usage: lunaroute-control switch-provider openai|anthropic|auto|NAME [--run-dir D]\n"
    "       lunaroute-control switch-provider --clear [--run-dir D]\n"
    "\n"
    "Switches the bypass provider of the running agent through its admin API (the unix socket\n"
    "named by <run_dir>/agent.json \"admin_socket\"). Effective for the next request, with no\n"
    "HAProxy reload. The choice is saved in <run_dir>/bypass-provider.json, so an agent restart\n"
    "or a reload keeps it, until --clear (back to the configuration's bypass.provider).\n"
    "NAME must be \"auto\" or an enabled provider of the running configuration.\n"
    "\n"
    "options:\n"
    "  -r, --run-dir D   run directory (default: $LUNAROUTE_RUN_DIR, else ./run)\n"
    "      --clear       drop the runtime choice\n"
    "  -h, --help        show this help\n"
    "      --version     show the version\n"
    "\n"
    "exit status: 0 switched; 1 the agent could not be reached (or failed); 2 usage error, or\n"
    "the provider was refused (unknown or disabled: the agent's message is printed)\n";

static const char usage_status_head[] =
    "usage: lunaroute-control status [--run-dir D]\n"
    "\n"
    "Prints one JSON document describing the running stack: the agent (admin API GET\n"
    "/v1/status), HAProxy (runtime API on <run_dir>/haproxy.sock: `show info`, `show stat`,\n"
    "`show servers state`) and control's own files. Missing pieces are reported as fields,\n"
    "never as a crash.\n"
    "\n"
    "options:\n"
    "  -r, --run-dir D   run directory (default: $LUNAROUTE_RUN_DIR, else ./run)\n"
    "  -h, --help        show this help\n"
    "      --version     show the version\n"
    "\n"
    "exit status: 0 when the agent and HAProxy both answered, 1 otherwise, 2 usage error\n"
    "\n";

enum { OPT_VERSION = 1000, OPT_CLEAR, OPT_EXTERNAL, OPT_WATCH };

static void print_version(void)
{
    printf("%s %s\n", prog, LR_VERSION);
}

/* Options a command accepts (parse_opts rejects the others as unknown). */
enum {
    ACCEPT_CONFIG = 1u << 0,  /* -c, --config F */
    ACCEPT_OUT = 1u << 1,     /* -o, --out DIR */
    ACCEPT_MODE = 1u << 2,    /* -m, --mode M */
    ACCEPT_RUN_DIR = 1u << 3, /* -r, --run-dir D */
    ACCEPT_CLEAR = 1u << 4,   /* --clear */
    ACCEPT_ARG = 1u << 5,     /* one positional argument */
    ACCEPT_UP = 1u << 6,      /* --external, --watch M */
};

struct cmd_opts {
    const char *config, *out, *mode, *run_dir, *arg, *watch;
    bool clear, external;
};

/* Parses the options of one command; --help prints usage then usage_more (may be NULL).
 * Returns -1 to continue, else an exit status. */
static int parse_opts(const char *cmd, const char *usage, const char *usage_more, int argc,
                      char **argv, unsigned accept, struct cmd_opts *o)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"out", required_argument, NULL, 'o'},
        {"mode", required_argument, NULL, 'm'},
        {"run-dir", required_argument, NULL, 'r'},
        {"clear", no_argument, NULL, OPT_CLEAR},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"external", no_argument, NULL, OPT_EXTERNAL},
        {"watch", required_argument, NULL, OPT_WATCH},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":c:o:m:r:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            if (!(accept & ACCEPT_CONFIG))
                goto unknown;
            o->config = optarg;
            break;
        case 'o':
            if (!(accept & ACCEPT_OUT))
                goto unknown;
            o->out = optarg;
            break;
        case 'm':
            if (!(accept & ACCEPT_MODE))
                goto unknown;
            o->mode = optarg;
            break;
        case 'r':
            if (!(accept & ACCEPT_RUN_DIR))
                goto unknown;
            o->run_dir = optarg;
            break;
        case OPT_CLEAR:
            if (!(accept & ACCEPT_CLEAR))
                goto unknown;
            o->clear = true;
            break;
        case OPT_EXTERNAL:
            if (!(accept & ACCEPT_UP))
                goto unknown;
            o->external = true;
            break;
        case OPT_WATCH:
            if (!(accept & ACCEPT_UP))
                goto unknown;
            o->watch = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            if (usage_more)
                fputs(usage_more, stdout);
            return EXIT_OK;
        case OPT_VERSION:
            print_version();
            return EXIT_OK;
        case ':':
            fprintf(stderr, "%s %s: option %s needs a value\n", prog, cmd, argv[optind - 1]);
            fprintf(stderr, "Try '%s %s --help'.\n", prog, cmd);
            return EXIT_USAGE;
        default:
        unknown : {
            /* "--out x": getopt already took x as the value; name the option, not x. */
            const char *bad = argv[optind - 1];
            if (optarg && bad == optarg && optind >= 2)
                bad = argv[optind - 2];
            fprintf(stderr, "%s %s: unknown option %s\n", prog, cmd, bad);
            fprintf(stderr, "Try '%s %s --help'.\n", prog, cmd);
            return EXIT_USAGE;
        }
        }
    }
    if ((accept & ACCEPT_ARG) && optind < argc)
        o->arg = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "%s %s: unexpected argument '%s'\n", prog, cmd, argv[optind]);
        fprintf(stderr, "Try '%s %s --help'.\n", prog, cmd);
        return EXIT_USAGE;
    }
    return -1;
}

/* The file to load: --config, else $LUNAROUTE_CONFIG, else NULL (built-in defaults). */
static const char *config_path(const char *flag)
{
    if (flag && *flag)
        return flag;
    const char *e = getenv("LUNAROUTE_CONFIG");
    return e && *e ? e : NULL;
}

/* Loads the configuration; on errors prints each as "file:line:col: message". */
static int load_config(const char *path, struct lr_config **out)
{
    struct cfg_errors errs = {0};
    if (config_load(path, cfg_getenv_process, NULL, out, &errs) == 0) {
        cfg_errors_free(&errs);
        return EXIT_OK;
    }
    for (size_t i = 0; i < errs.n; i++) {
        char line[2048];
        cfg_error_format(&errs.v[i], line, sizeof(line));
        fprintf(stderr, "%s\n", line);
    }
    if (errs.n == 0)
        fprintf(stderr, "%s: %s: configuration could not be loaded\n", prog,
                path ? path : "built-in defaults");
    cfg_errors_free(&errs);
    return EXIT_USAGE;
}

static int cmd_render(int argc, char **argv)
{
    struct cmd_opts o = {0};
    int rc = parse_opts("render", usage_render, NULL, argc, argv,
                        ACCEPT_CONFIG | ACCEPT_OUT | ACCEPT_MODE, &o);
    if (rc >= 0)
        return rc;
    enum render_mode mode = RENDER_STANDALONE;
    if (o.mode && render_mode_from_str(o.mode, &mode) < 0) {
        fprintf(stderr, "%s render: --mode must be standalone or boltin, not '%s'\n", prog, o.mode);
        return EXIT_USAGE;
    }
    if (!o.out || !*o.out) {
        fprintf(stderr, "%s render: --out DIR is required\nTry '%s render --help'.\n", prog, prog);
        return EXIT_USAGE;
    }
    struct lr_config *c = NULL;
    rc = load_config(config_path(o.config), &c);
    if (rc != EXIT_OK)
        return rc;
    char err[1024] = "";
    rc = render_write_all(c, mode, o.out, err, sizeof(err)) < 0 ? EXIT_RUNTIME : EXIT_OK;
    if (rc != EXIT_OK)
        fprintf(stderr, "%s render: %s\n", prog, err);
    else
        printf("rendered %s configuration into %s\n", render_mode_to_str(mode), o.out);
    config_free(c);
    return rc;
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char p[PATH_MAX];
            if ((size_t)snprintf(p, sizeof(p), "%s/%s", dir, de->d_name) < sizeof(p))
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* A fresh temporary directory under $TMPDIR (or /tmp). 0, or -1 with errno set. */
static int make_tmp_dir(char *dir, size_t len, const char *what)
{
    const char *tmp = getenv("TMPDIR");
    if ((size_t)snprintf(dir, len, "%s/lunaroute-validate-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp",
                         what) >= len) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return mkdtemp(dir) ? 0 : -1;
}

/* `haproxy -c` on cfgs; prints what haproxy said when it refused. An exit status. */
static int check_with_haproxy(const char *bin, const char *what, const char *const cfgs[], size_t n)
{
    struct lr_buf out = {0};
    int st = validate_haproxy_check(bin, cfgs, n, NULL, &out);
    int rc = EXIT_OK;
    if (st != 0) {
        if (out.len)
            fprintf(stderr, "%.*s%s", (int)out.len, (const char *)out.data,
                    out.data[out.len - 1] == '\n' ? "" : "\n");
        if (st < 0 || st == 127) {
            fprintf(stderr, "%s validate: could not run %s\n", prog, bin);
            rc = EXIT_RUNTIME;
        } else {
            fprintf(stderr, "%s validate: haproxy -c: the %s rendering is rejected\n", prog, what);
            rc = EXIT_USAGE;
        }
    } else {
        printf("haproxy -c: %s rendering OK\n", what);
    }
    lr_buf_free(&out);
    return rc;
}

static int cmd_validate(int argc, char **argv)
{
    struct cmd_opts o = {0};
    int rc = parse_opts("validate", usage_validate, NULL, argc, argv, ACCEPT_CONFIG, &o);
    if (rc >= 0)
        return rc;
    struct lr_config *c = NULL;
    rc = load_config(config_path(o.config), &c);
    if (rc != EXIT_OK)
        return rc;

    char sdir[PATH_MAX], bdir[PATH_MAX];
    if (make_tmp_dir(sdir, sizeof(sdir), "standalone") < 0) {
        fprintf(stderr, "%s validate: cannot create a temporary directory: %s\n", prog,
                strerror(errno));
        config_free(c);
        return EXIT_RUNTIME;
    }
    if (make_tmp_dir(bdir, sizeof(bdir), "boltin") < 0) {
        fprintf(stderr, "%s validate: cannot create a temporary directory: %s\n", prog,
                strerror(errno));
        rm_dir(sdir);
        config_free(c);
        return EXIT_RUNTIME;
    }
    char err[1024] = "", harness[PATH_MAX];
    if (render_write_all(c, RENDER_STANDALONE, sdir, err, sizeof(err)) < 0 ||
        render_write_all(c, RENDER_BOLTIN, bdir, err, sizeof(err)) < 0 ||
        validate_write_boltin_harness(bdir, harness, sizeof(harness), err, sizeof(err)) < 0) {
        fprintf(stderr, "%s validate: %s\n", prog, err);
        rm_dir(sdir);
        rm_dir(bdir);
        config_free(c);
        return EXIT_RUNTIME;
    }
    config_free(c);
    printf("configuration checks: OK\n");

    char bin[PATH_MAX];
    rc = EXIT_OK;
    if (supervise_find_program("LUNAROUTE_HAPROXY_BIN", "haproxy", bin, sizeof(bin)) < 0) {
        const char *o_bin = getenv("LUNAROUTE_HAPROXY_BIN");
        if (o_bin && *o_bin) {
            fprintf(stderr, "%s validate: LUNAROUTE_HAPROXY_BIN=%s is not executable\n", prog,
                    o_bin);
            rc = EXIT_RUNTIME;
        } else {
            fprintf(stderr, "%s validate: haproxy not found on PATH: `haproxy -c` skipped\n", prog);
        }
    } else {
        char cfg[PATH_MAX + 16], backends[PATH_MAX + 32];
        snprintf(cfg, sizeof(cfg), "%s/haproxy.cfg", sdir);
        snprintf(backends, sizeof(backends), "%s/lunaroute-backends.cfg", bdir);
        const char *standalone[] = {cfg};
        const char *boltin[] = {harness, backends};
        int r1 = check_with_haproxy(bin, "standalone", standalone, 1);
        int r2 = check_with_haproxy(bin, "boltin (frontend-snippet.cfg + lunaroute-backends.cfg)",
                                    boltin, 2);
        rc = r1 == EXIT_RUNTIME || r2 == EXIT_RUNTIME ? EXIT_RUNTIME : r1 != EXIT_OK ? r1 : r2;
    }
    rm_dir(sdir);
    rm_dir(bdir);
    if (rc == EXIT_OK)
        printf("configuration is valid\n");
    return rc;
}

static int cmd_up(int argc, char **argv)
{
    struct cmd_opts o = {0};
    int rc = parse_opts("up", usage_up, NULL, argc, argv,
                        ACCEPT_CONFIG | ACCEPT_RUN_DIR | ACCEPT_UP, &o);
    if (rc >= 0)
        return rc;
    struct supervise_opts so = {.external = o.external};
    if (o.watch && !strcmp(o.watch, "poll")) {
        so.poll_config = true;
    } else if (o.watch && strcmp(o.watch, "inotify")) {
        fprintf(stderr, "%s up: --watch must be inotify or poll, not '%s'\n", prog, o.watch);
        return EXIT_USAGE;
    }
    const char *path = config_path(o.config);
    struct lr_config *c = NULL;
    rc = load_config(path, &c);
    if (rc != EXIT_OK)
        return rc;
    const char *run_dir = o.run_dir;
    const char *env_dir = getenv("LUNAROUTE_RUN_DIR");
    if (!run_dir || !*run_dir)
        run_dir = env_dir && *env_dir ? env_dir : (c->run_dir && *c->run_dir ? c->run_dir : NULL);
    /* copy: the supervisor owns (and may replace) the configuration run_dir points into */
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", run_dir ? run_dir : "./run");
    return supervise_run(c, path, dir, &so);
}

/* --run-dir, else $LUNAROUTE_RUN_DIR, else ./run */
static const char *ops_run_dir(const char *flag)
{
    const char *env = getenv("LUNAROUTE_RUN_DIR");
    if (flag && *flag)
        return flag;
    return env && *env ? env : "./run";
}

static int cmd_switch_provider(int argc, char **argv)
{
    struct cmd_opts o = {0};
    int rc = parse_opts("switch-provider", usage_switch, NULL, argc, argv,
                        ACCEPT_RUN_DIR | ACCEPT_CLEAR | ACCEPT_ARG, &o);
    if (rc >= 0)
        return rc;
    const char *provider = o.arg;
    bool clear = o.clear;
    if (clear == (provider != NULL)) {
        fprintf(stderr, "%s switch-provider: %s\nTry '%s switch-provider --help'.\n", prog,
                clear ? "--clear takes no provider"
                      : "which provider? (openai|anthropic|auto|NAME)",
                prog);
        return EXIT_USAGE;
    }
    const char *dir = ops_run_dir(o.run_dir);
    char sock[PATH_MAX], err[1024] = "";
    if (admin_client_socket_path(dir, sock, sizeof(sock), err, sizeof(err)) < 0) {
        fprintf(stderr, "%s switch-provider: %s (is the run directory right? --run-dir)\n", prog,
                err);
        return EXIT_RUNTIME;
    }
    char *body = NULL;
    if (provider) {
        json_t *doc = json_pack("{s:s}", "provider", provider);
        body = doc ? json_dumps(doc, 0) : NULL;
        json_decref(doc);
        if (!body) {
            fprintf(stderr, "%s switch-provider: out of memory\n", prog);
            return EXIT_RUNTIME;
        }
    }
    struct admin_response r;
    rc = admin_client_request(sock, provider ? "POST" : "DELETE", "/v1/bypass-provider", body,
                              ADMIN_CLIENT_TIMEOUT_SECS, &r, err, sizeof(err));
    free(body);
    if (rc != ADMIN_CLIENT_OK) {
        fprintf(stderr, "%s switch-provider: the agent is not reachable: %s\n", prog, err);
        return EXIT_RUNTIME;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(r.body, r.body_len, 0, &jerr);
    const json_t *e = json_object_get(doc, "error");
    if (r.status == 200) {
        const char *now = json_string_value(json_object_get(doc, "provider"));
        const char *prev = json_string_value(json_object_get(doc, "previous"));
        const char *src = json_string_value(json_object_get(doc, "source"));
        printf("bypass provider: %s (was %s; source %s%s)\n", now ? now : "?", prev ? prev : "?",
               src ? src : "?",
               src && !strcmp(src, "runtime") ? ", persisted in the run directory" : "");
        rc = EXIT_OK;
    } else {
        fprintf(stderr, "%s switch-provider: %s\n", prog,
                json_is_string(e) ? json_string_value(e) : "the agent refused the request");
        rc = r.status == 400 ? EXIT_USAGE : EXIT_RUNTIME;
    }
    json_decref(doc);
    admin_response_free(&r);
    return rc;
}

static int cmd_status(int argc, char **argv)
{
    struct cmd_opts o = {0};
    int rc =
        parse_opts("status", usage_status_head, status_fields_help, argc, argv, ACCEPT_RUN_DIR, &o);
    if (rc >= 0)
        return rc;
    json_t *doc = NULL;
    rc = status_collect(ops_run_dir(o.run_dir), &doc);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!text) {
        fprintf(stderr, "%s status: out of memory\n", prog);
        return EXIT_RUNTIME;
    }
    puts(text);
    free(text);
    return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

int main(int argc, char **argv)
{
    lr_log_set_ident("control");
    if (argc < 2) {
        fputs(usage_main, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_main, stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        print_version();
        return EXIT_OK;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"render", cmd_render}, {"validate", cmd_validate},
        {"up", cmd_up},         {"switch-provider", cmd_switch_provider},
        {"status", cmd_status},
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(cmd, cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command '%s'\nTry '%s --help'.\n", prog, cmd, prog);
    return EXIT_USAGE;
}
