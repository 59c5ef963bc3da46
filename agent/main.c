/* lunaroute-agent: the SPOE agent and routing engine (DESIGN §7).
 *   lunaroute-agent --settings FILE [--check]
 * Exit status: 0 ok, 1 runtime failure, 2 usage or settings error. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "server.h"
#include "settings.h"
#include "upstream.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: lunaroute-agent --settings FILE [--check]\n"
               "\n"
               "  -s, --settings FILE  agent.json rendered by lunaroute-control\n"
               "  -c, --check          load and validate the settings, then exit\n"
               "  -h, --help           this help\n"
               "  -V, --version        print the version\n"
               "\n"
               "SIGHUP re-reads the settings; SIGTERM/SIGINT drain and exit.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"settings", required_argument, NULL, 's'},
        {"check", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int check = 0, ch;
    lr_log_set_ident("agent");
    while ((ch = getopt_long(argc, argv, "s:chV", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            path = optarg;
            break;
        case 'c':
            check = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("lunaroute-agent %s\n", LR_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lunaroute-agent: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!path) {
        fprintf(stderr, "lunaroute-agent: --settings FILE is required\n");
        usage(stderr);
        return 2;
    }
    char err[1024];
    struct agent_settings *s = agent_settings_load(path, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "lunaroute-agent: %s\n", err);
        return 2;
    }
    if (check) {
        /* The routing section must compile too. */
        struct engine_gen *g = engine_gen_new(s, err, sizeof(err));
        agent_settings_unref(s);
        if (!g) {
            fprintf(stderr, "lunaroute-agent: %s: %s\n", path, err);
            return 2;
        }
        engine_gen_unref(g);
        printf("%s: ok\n", path);
        return 0;
    }
    server_apply_log_level(s);
    signal(SIGPIPE, SIG_IGN);

    if (upstream_global_init() != 0) {
        lr_err("cannot initialise libcurl");
        agent_settings_unref(s);
        return 1;
    }
    struct server_options o;
    server_options_default(&o);
    o.settings_path = path;
    o.handle_signals = true;
    struct server *srv = server_new(s, &o, err, sizeof(err));
    agent_settings_unref(s); /* the server holds its own reference */
    if (!srv) {
        lr_err("%s", err);
        upstream_global_cleanup();
        metrics_free_all();
        return 1;
    }
    int rc = server_run(srv);
    server_free(srv);
    upstream_global_cleanup();
    metrics_free_all();
    return rc == 0 ? 0 : 1;
}
