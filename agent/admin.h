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
 * Anything else: 404 / 405 JSON {"error": "..."}; a bad request or bad JSON: 400.
 *
 * The settings digest reported is the SHA-256 of the agent.json bytes the settings were
 * parsed from (the same value `sha256sum agent.json` prints). */
#ifndef LR_ADMIN_H
#define LR_ADMIN_H

#include <stddef.h>

#include <ev.h>
#include <jansson.h>

struct agent_settings;

#define ADMIN_PERSIST_FILE "bypass-provider.json"

struct admin_config {
    const char *socket_path; /* required */
    const char *state_dir;   /* where ADMIN_PERSIST_FILE lives; NULL: socket_path's directory */
    unsigned threads;        /* reported in status */
    /* A new reference to the settings in force. Called on the admin loop's thread. */
    struct agent_settings *(*current)(void *ud);
    /* Makes s the settings in force on every loop thread (as a reload does); takes its own
     * reference if it keeps s. 0, or -1 with a message. Called on the admin loop's thread. */
    int (*publish)(void *ud, struct agent_settings *s, char *err, size_t errlen);
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

/* The GET /v1/status document (new reference, NULL on allocation failure). */
json_t *admin_status_json(struct admin *a);

#endif
