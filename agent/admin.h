/* The agent's admin API (DESIGN §3): HTTP/1.1 + JSON on a unix socket (agent.json
 * "admin_socket", mode 0600), served on thread 0's loop, one request per connection
 * (Connection: close). Requests are parsed with llhttp; bodies are JSON (jansson).
 *
 *   GET    /v1/status           the agent's state (admin_status_json)
 *   GET    /v1/bypass-provider  {"provider", "source", "config_provider", "persisted"}
 *   POST   /v1/bypass-provider  {"provider": "auto" | NAME | null}
 *                               switches the bypass provider for the next request, with no
 *                               HAProxy reload: a copy of the settings in force with the new
 *                               provider is published to every loop thread (like a SIGHUP
 *                               reload) and the choice is saved in
 *                               <state_dir>/bypass-provider.json so a restart or a reload keeps
 *                               it. null clears it (back to agent.json's value).
 *                               200 {"provider", "previous", "source": "runtime"|"config"}
 *                               400 {"error": "provider 'x' is not configured (...)"} etc.
 *   DELETE /v1/bypass-provider  same as POST {"provider": null}
 *   POST   /v1/reload           re-reads the agent.json the agent was started with, exactly as
 *                               SIGHUP does (validate, keep the runtime bypass provider,
 *                               publish to every loop thread) but answers with the outcome:
 *                               200 {"digest": "<sha256 of agent.json>", "changed": bool,
 *                                    "previous_digest", "bypass_provider",
 *                                    "restart_required": [keys that only a restart applies]}
 *                               400 {"error": "<path>:<line>:<col>: ..."} bad file, or
 *                               500 {"error": ...}: nothing changed, the old settings stay.
 * Anything else: 404 / 405 JSON {"error": "..."}; a bad request or bad JSON: 400.
 *
 * The settings digest reported is the SHA-256 of the agent.json bytes the settings were
 * parsed from (the same value `sha256sum agent.json` prints). */
#ifndef LR_ADMIN_H
#define LR_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include <ev.h>
#include <jansson.h>

struct agent_settings;

#define ADMIN_PERSIST_FILE "bypass-provider.json"

/* The outcome of a settings reload (POST /v1/reload, SIGHUP). */
enum admin_reload_status {
    ADMIN_RELOAD_OK = 0,
    ADMIN_RELOAD_BAD_FILE = -1,      /* unreadable or invalid agent.json: nothing changed */
    ADMIN_RELOAD_PUBLISH_FAILED = -2 /* valid, but could not be put in force: nothing changed */
};

struct admin_reload_result {
    char digest[65];           /* SHA-256 of the agent.json bytes now in force */
    char previous_digest[65];  /* ... and of the settings it replaced */
    bool changed;              /* the two differ */
    char bypass_provider[128]; /* the bypass provider in force after the reload */
    /* Keys that changed but take effect only on restart (comma-separated, "" when none):
     * spoa_bind, engine_bind, admin_socket, threads. */
    char restart_required[128];
};

struct admin_config {
    const char *socket_path; /* required */
    const char *state_dir;   /* where ADMIN_PERSIST_FILE lives; NULL: socket_path's directory */
    unsigned threads;        /* reported in status */
    /* A new reference to the settings in force. Called on the admin loop's thread. */
    struct agent_settings *(*current)(void *ud);
    /* Makes s the settings in force on every loop thread (as a reload does); takes its own
     * reference if it keeps s. 0, or -1 with a message. Called on the admin loop's thread. */
    int (*publish)(void *ud, struct agent_settings *s, char *err, size_t errlen);
    /* POST /v1/reload: re-reads the settings file as a SIGHUP does (the server calls
     * admin_reload_file with its own bookkeeping). An admin_reload_status, *res filled on
     * ADMIN_RELOAD_OK, a message otherwise. NULL: POST /v1/reload answers 501. Called on the
     * admin loop's thread. */
    int (*reload)(void *ud, struct admin_reload_result *res, char *err, size_t errlen);
    void *ud;
};

struct admin;

/* Binds the socket (a stale socket file is replaced; a live one or a non-socket file is an
 * error) and starts serving on loop. NULL with a message on error. */
struct admin *admin_new(struct ev_loop *loop, const struct admin_config *cfg, char *err,
                        size_t errlen);
/* Closes every connection, removes the socket file (if still ours). NULL-safe. */
void admin_free(struct admin *a);

/* Call after every load of agent.json (start, SIGHUP): when the state directory (the
 * directory of s->admin_socket) holds a bypass-provider.json naming "auto" or an enabled
 * provider of s, returns settings with that provider (bypass_runtime = true); otherwise, or
 * when the file is unusable (logged as a warning, the file is kept), s itself. Consumes the
 * caller's reference to s and returns one. Also updates the /metrics
 * lunaroute_bypass_provider_info gauge. */
struct agent_settings *admin_apply_persisted(struct agent_settings *s);

/* The reload itself, shared by SIGHUP and POST /v1/reload: loads and validates the file at
 * path, re-applies the runtime bypass provider (admin_apply_persisted), and publishes the
 * result through publish(ud, ...) (which takes its own reference). cur (borrowed) is the
 * settings in force, for the digest comparison and restart_required. An
 * admin_reload_status; on failure a message and nothing published. Logs only what
 * admin_apply_persisted logs (the runtime provider kept or ignored). */
int admin_reload_file(const char *path, const struct agent_settings *cur,
                      int (*publish)(void *ud, struct agent_settings *s, char *err, size_t errlen),
                      void *ud, struct admin_reload_result *res, char *err, size_t errlen);

/* The GET /v1/status document (new reference, NULL on allocation failure). */
json_t *admin_status_json(struct admin *a);

#endif
