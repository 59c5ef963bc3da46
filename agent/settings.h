/* agent.json: the agent's settings, rendered by lunaroute-control. Immutable once loaded and
 * reference-counted, so a SIGHUP reload swaps a pointer per loop thread while requests that
 * hold the old settings finish with them.
 *
 * Schema (version 1; unknown keys are ignored so control can add keys first):
 * {
 *   "version": 1,
 *   "spoa_bind": "127.0.0.1:12345",          host:port (IPv4/IPv6 "[::1]:p")
 *   "engine_bind": "127.0.0.1:8081",
 *   "admin_socket": "/abs/run/agent.sock",
 *   "spoa_socket": "/abs/run/spoa.sock",     optional: SPOP also on this unix socket
 *   "engine_socket": "/abs/run/engine.sock", optional: the engine also on this unix socket
 *   "threads": 1,                            1..64
 *   "log_level": "info",
 *   "api_dialect": "both",                   openai | anthropic | both
 *   "engine_backend": "lr_engine",
 *   "max_frame_size": 16380,                 optional, 256..LR_SPOP_MAX_FRAME_SIZE
 *   "bypass": {"enabled": true, "provider": "auto"},
 *   "intercept": {"extra_paths": ["/v1/responses"]},
 *   "providers": [
 *     {"name": "openai", "type": "openai", "enabled": true,
 *      "base_url": "https://api.openai.com",  normalized: no trailing "/" or "/v1"
 *      "backend": "lr_provider_openai",
 *      "api_key_env": "OPENAI_API_KEY",       the variable's NAME, or null: no key configured
 *      "timeout_secs": 600, "connect_timeout_secs": 10, "max_retries": 3}
 *   ],
 *   "routing": {...},        kept as JSON for the routing engine
 *   "http_server": {"max_request_body_bytes": 104857600, "sse_keepalive_interval_secs": 15},
 *   "translation": {"default_max_tokens": 4096}   OpenAI -> Anthropic without max_tokens
 * }
 * Secrets are never in this file: only api_key_env names; values come from the environment. */
#ifndef LR_SETTINGS_H
#define LR_SETTINGS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

enum agent_provider_type {
    AGENT_PROVIDER_OPENAI = 0,
    AGENT_PROVIDER_ANTHROPIC,
    AGENT_PROVIDER_TYPE_COUNT
};
const char *agent_provider_type_to_str(unsigned t);

struct agent_provider {
    char *name;
    enum agent_provider_type type;
    bool enabled;
    char *base_url;
    char *backend;
    char *api_key_env; /* NULL when no key is configured */
    unsigned timeout_secs, connect_timeout_secs, max_retries;
};

struct agent_settings {
    atomic_uint refs;
    char *path; /* file it was loaded from (NULL when parsed from memory) */
    char *spoa_bind, *engine_bind, *admin_socket;
    char *spoa_socket, *engine_socket; /* NULL: TCP only */
    unsigned threads;
    char *log_level;
    char *api_dialect;
    char *engine_backend;
    uint32_t max_frame_size;
    bool bypass_enabled;
    char *bypass_provider; /* "auto" or a provider name (validated: enabled provider) */
    /* Intercepted paths: the LunaRoute defaults followed by intercept.extra_paths. */
    char **intercept_paths;
    size_t n_intercept_paths;
    struct agent_provider *providers;
    size_t n_providers;
    uint64_t max_request_body_bytes;
    unsigned sse_keepalive_interval_secs;
    unsigned default_max_tokens; /* translation.default_max_tokens */
    json_t *routing;             /* owned reference, may be NULL */
    json_t *root;                /* the whole document, owned */
    char digest[65];  /* sha256 (lowercase hex) of the JSON bytes parsed, as `sha256sum` shows */
    time_t loaded_at; /* wall clock when parsed */
    /* bypass_provider was set at runtime (admin API, bypass-provider.json), not by the file;
     * root still holds the file's value (agent_settings_config_bypass_provider). */
    bool bypass_runtime;

    /* Private: precomputed by settings.c at load time for classify.c, so classify() is a
     * few length compares and branches. Provider pointers point into `providers`; NULL
     * means "no candidate: route to the engine". */
    size_t *intercept_path_lens;                     /* strlen(intercept_paths[i]) */
    bool bypass_auto;                                /* bypass_provider is "auto" */
    const struct agent_provider *cls_auto_openai;    /* auto, OpenAI-ish request */
    const struct agent_provider *cls_auto_anthropic; /* auto, Anthropic-ish request */
    const struct agent_provider *cls_named;          /* named provider */
    const struct agent_provider *cls_named_ns;       /* named, /v1/messages/... path */
};

/* Parses settings from JSON text. On error returns NULL and writes "line:col: message" or a
 * plain message into err. The result has one reference. */
struct agent_settings *agent_settings_parse(const char *json, size_t len, char *err, size_t errlen);
/* Reads and parses a file; errors are prefixed with the path. */
struct agent_settings *agent_settings_load(const char *path, char *err, size_t errlen);
struct agent_settings *agent_settings_ref(struct agent_settings *s);
void agent_settings_unref(struct agent_settings *s); /* NULL-safe; frees at zero */

/* A copy of s with the bypass provider replaced: provider is "auto" or the name of an
 * enabled provider of s (bypass_runtime = true), or NULL for the file's own value
 * (bypass_runtime = false). The classifier's precomputed pointers are re-derived; path,
 * digest and loaded_at are kept. The result has one reference. NULL with a message on error:
 * "provider 'x' is not configured (...)", "provider 'x' is disabled", ... */
struct agent_settings *agent_settings_with_bypass_provider(const struct agent_settings *s,
                                                           const char *provider, char *err,
                                                           size_t errlen);
/* The bypass provider agent.json itself names ("auto" when absent). */
const char *agent_settings_config_bypass_provider(const struct agent_settings *s);

/* Lookup helpers (NULL when absent). */
const struct agent_provider *agent_settings_provider(const struct agent_settings *s,
                                                     const char *name);
bool agent_settings_is_intercepted(const struct agent_settings *s, const char *path, size_t len);

#endif
