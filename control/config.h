/* The configuration model of lunaroute-control (DESIGN §6): built-in defaults < YAML file
 * (libyaml, with ${VAR} expansion) < environment < command-line flags. Every value that came
 * from the file remembers its position so errors read "file:line:col: message". */
#ifndef LR_CONFIG_H
#define LR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cfg_pos {
    int line, col; /* 1-based; 0 when the value did not come from the file */
};

enum cfg_dialect {
    CFG_DIALECT_OPENAI = 0,
    CFG_DIALECT_ANTHROPIC,
    CFG_DIALECT_BOTH,
    CFG_DIALECT_COUNT
};
enum cfg_provider_type { CFG_PROVIDER_OPENAI = 0, CFG_PROVIDER_ANTHROPIC, CFG_PROVIDER_TYPE_COUNT };
enum cfg_failure_mode { CFG_FAILURE_STATIC = 0, CFG_FAILURE_REJECT, CFG_FAILURE_MODE_COUNT };
enum cfg_strategy {
    CFG_STRATEGY_NONE = 0, /* primary + fallbacks */
    CFG_STRATEGY_ROUND_ROBIN,
    CFG_STRATEGY_WEIGHTED_ROUND_ROBIN,
    CFG_STRATEGY_LIMITS_ALTERNATIVE,
    CFG_STRATEGY_COUNT
};
const char *cfg_dialect_to_str(unsigned d);
const char *cfg_provider_type_to_str(unsigned t);
const char *cfg_failure_mode_to_str(unsigned m);
const char *cfg_strategy_to_str(unsigned s); /* "" for NONE */

struct cfg_provider {
    char *name; /* [a-z0-9_-]+, unique */
    enum cfg_provider_type type;
    bool enabled;
    char *base_url; /* normalized: no trailing "/" and no trailing "/v1" */
    /* base_url split, for the HAProxy server line */
    bool tls;          /* https */
    char *host;        /* host name or IP literal (no brackets) */
    unsigned port;     /* explicit or 443/80 */
    char *path_prefix; /* "" or "/openai" (no trailing slash) */
    /* Credentials: the value stays in memory only and is handed to children through their
     * environment; rendered files carry only api_key_env (a variable NAME). */
    char *api_key;     /* NULL or "" = no key configured: client credentials pass through */
    char *api_key_env; /* name: the ${VAR} it came from, the env override's name, or
                          LUNAROUTE_<NAME>_API_KEY for a literal; NULL when no key */
    unsigned timeout_secs, connect_timeout_secs, max_retries;
    struct cfg_pos pos;
};

struct cfg_target { /* a provider in a rule, with its weight (weighted-round-robin) */
    char *provider;
    unsigned weight; /* default 1 */
    struct cfg_pos pos;
};

struct cfg_rule {
    char *name;
    char *model_pattern; /* POSIX extended regex, validated with regcomp */
    int priority;        /* higher first; default 10 (LunaRoute's); ties keep file order */
    enum cfg_strategy strategy;
    char *primary; /* when strategy NONE */
    struct cfg_target *fallbacks;
    size_t n_fallbacks;
    struct cfg_target *targets; /* strategy providers (round-robin, wrr) or primaries (limits) */
    size_t n_targets;
    struct cfg_target *alternatives; /* limits-alternative */
    size_t n_alternatives;
    struct cfg_pos pos;
};

struct lr_config {
    char *source_file; /* NULL when running on defaults */
    enum cfg_dialect dialect;
    struct cfg_provider *providers;
    size_t n_providers;
    bool bypass_enabled;
    char *bypass_provider; /* "auto" or a provider name */
    char **extra_paths;    /* intercept.extra_paths, each starting with '/' */
    size_t n_extra_paths;
    struct cfg_rule *rules;
    size_t n_rules;
    struct {
        unsigned failure_threshold, success_threshold, open_secs;
    } circuit_breaker;
    struct {
        bool enabled;
        char *default_message;
    } provider_switch_notification;
    struct {
        uint64_t max_request_body_bytes;
        unsigned sse_keepalive_interval_secs;
    } http_server;
    struct {
        unsigned default_max_tokens; /* OpenAI -> Anthropic requests without max_tokens */
    } translation;
    struct {
        char *bind;       /* host:port */
        char *stats_bind; /* host:port */
        unsigned maxconn;
        enum cfg_failure_mode failure_mode;
    } haproxy;
    struct {
        char *spoa_bind, *engine_bind;
        char *admin_socket; /* NULL = <run_dir>/agent.sock */
        unsigned threads;
        /* HAProxy reaches the agent over unix sockets in run_dir (spoa.sock, engine.sock)
         * instead of loopback TCP; the TCP listeners stay up either way. Unset: on in
         * standalone mode (one user runs both), off in boltin mode (the fleet's HAProxy
         * runs as its own user). See render_local_sockets(). */
        bool local_sockets;
        bool local_sockets_set;
    } agent;
    /* render --mode boltin: which requests of the fleet's frontend are LLM traffic. A
     * request is when its Host is one of `hosts` (any host when empty) and its path starts
     * with one of `path_prefixes` (any path when empty). Default: any host, "/v1/". */
    struct {
        char **hosts; /* lower case, no port */
        size_t n_hosts;
        char **path_prefixes; /* each starts with '/' */
        size_t n_path_prefixes;
    } boltin;
    char *run_dir;
    char *log_level;
};

/* Errors are collected (not just the first) so validate can report all of them. */
struct cfg_error {
    char *file; /* NULL for errors not tied to the file (e.g. an environment variable) */
    int line, col;
    char *msg; /* never contains a secret value */
};
struct cfg_errors {
    struct cfg_error *v;
    size_t n;
};
void cfg_errors_free(struct cfg_errors *e);
/* Formats error i as "file:line:col: message" (or "message" when not from the file). */
int cfg_error_format(const struct cfg_error *e, char *buf, size_t len);

/* Environment lookup, injectable for tests. NULL when unset. */
typedef const char *(*cfg_getenv_fn)(const char *name, void *ud);
const char *cfg_getenv_process(const char *name, void *ud); /* getenv() */

/* Builds the configuration: defaults, then `path` if non-NULL (YAML), then the environment
 * (the LUNAROUTE_* overrides and OPENAI_API_KEY/ANTHROPIC_API_KEY), then validation.
 * Returns 0 and *out, or -1 with errs filled (and *out NULL). */
int config_load(const char *path, cfg_getenv_fn env, void *env_ud, struct lr_config **out,
                struct cfg_errors *errs);
/* Same from an in-memory YAML document; `name` is used in error positions. */
int config_load_string(const char *yaml, size_t len, const char *name, cfg_getenv_fn env,
                       void *env_ud, struct lr_config **out, struct cfg_errors *errs);
void config_free(struct lr_config *c); /* NULL-safe */

const struct cfg_provider *config_provider(const struct lr_config *c, const char *name);

/* Env-var names and values the children (HAProxy, agent) need for credentials: for each
 * provider with a key, (api_key_env, api_key). Used by `up` to build the child environment. */
size_t config_secret_count(const struct lr_config *c);
void config_secret_get(const struct lr_config *c, size_t i, const char **name, const char **value);

#endif
