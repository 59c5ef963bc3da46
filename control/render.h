/* Renderers: pure functions from the config model to file contents (no I/O), plus one
 * function that writes them into a directory atomically (write temp, fsync, rename).
 * Rendered text never contains a secret value: only environment-variable names. */
#ifndef LR_RENDER_H
#define LR_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct lr_config;

enum render_mode { RENDER_STANDALONE = 0, RENDER_BOLTIN, RENDER_MODE_COUNT };
const char *render_mode_to_str(unsigned m);
int render_mode_from_str(const char *s, enum render_mode *out);

/* Paths the rendered files refer to each other by (absolute; HAProxy resolves relative
 * paths against its cwd). */
struct render_paths {
    const char *run_dir;      /* absolute */
    const char *spoe_conf;    /* <run_dir>/spoe-lunaroute.conf */
    const char *routes_map;   /* <run_dir>/routes.map */
    const char *master_sock;  /* <run_dir>/haproxy-master.sock */
    const char *admin_socket; /* agent admin socket */
    /* agent.local_sockets: <run_dir>/spoa.sock and <run_dir>/engine.sock (NULL: TCP) */
    const char *spoa_socket, *engine_socket;
};

/* Each returns a malloc'd NUL-terminated string, or NULL on allocation failure. */
char *render_haproxy_cfg(const struct lr_config *c, const struct render_paths *p);
/* The SPOE message fires for every request in standalone mode, and only for the boltin
 * scope (boltin.hosts, boltin.path_prefixes) in boltin mode. */
char *render_spoe_conf(const struct lr_config *c, const struct render_paths *p,
                       enum render_mode mode);
char *render_routes_map(const struct lr_config *c);
char *render_agent_json(const struct lr_config *c, const struct render_paths *p);
/* Boltin: the backends a fleet loads with an extra -f, and the lines to paste into its
 * frontend (scoped to boltin.hosts / boltin.path_prefixes). */
char *render_backends_cfg(const struct lr_config *c, const struct render_paths *p);
char *render_frontend_snippet(const struct lr_config *c, const struct render_paths *p);

/* Writes text into <dir>/<name> with `mode`: a temporary file in dir, fsync'd, renamed over
 * the old one (readers see the old or the new file, never a part). 0, or -1 with a message. */
int render_write_file(const char *dir, const char *name, const char *text, mode_t mode, char *err,
                      size_t errlen);

/* Whether HAProxy reaches the agent over its unix sockets in run_dir: agent.local_sockets,
 * or when unset, true in standalone mode and false in boltin mode. */
bool render_local_sockets(const struct lr_config *c, enum render_mode mode);

/* Writes every file of `mode` into out_dir (created 0700 if missing). Standalone:
 * haproxy.cfg, spoe-lunaroute.conf, routes.map, agent.json. Boltin: lunaroute-backends.cfg,
 * spoe-lunaroute.conf, routes.map, frontend-snippet.cfg, agent.json.
 * 0, or -1 with a message in err. */
int render_write_all(const struct lr_config *c, enum render_mode mode, const char *out_dir,
                     char *err, size_t errlen);

#endif
