/* Constants shared by the agent and the control daemon: they must agree on these, so they
 * live in one place. */
#ifndef LR_DEFAULTS_H
#define LR_DEFAULTS_H

/* LunaRoute's intercepted set: exact paths (no query string) served by the routing engine. */
#define LR_DEFAULT_INTERCEPT_PATHS                                                                 \
    "/v1/chat/completions", "/v1/messages", "/v1/models", "/healthz", "/readyz", "/metrics"
#define LR_DEFAULT_INTERCEPT_COUNT 6

/* HAProxy backend names. Provider backends are LR_PROVIDER_BACKEND_PREFIX + provider name. */
#define LR_ENGINE_BACKEND          "lr_engine"
#define LR_SPOA_BACKEND            "lr_spoa"
#define LR_PROVIDER_BACKEND_PREFIX "lr_provider_"

/* SPOE names (spoe-lunaroute.conf). */
#define LR_SPOE_ENGINE     "lunaroute"
#define LR_SPOE_AGENT      "lunaroute-agent"
#define LR_SPOE_MESSAGE    "lunaroute-classify"
#define LR_SPOE_VAR_PREFIX "lunaroute"

/* The NOTIFY arguments of lunaroute-classify, as named in spoe-lunaroute.conf. */
#define LR_ARG_METHOD            "method" /* string: HTTP method */
#define LR_ARG_PATH              "path"   /* string: path without query string */
#define LR_ARG_ANTHROPIC_VERSION "av"     /* int: count of anthropic-version headers */
#define LR_ARG_X_API_KEY         "xk"     /* int: count of x-api-key headers (never the value) */
#define LR_ARG_AUTH_SCHEME       "auth" /* string: authorization scheme only ("bearer", "basic") */

/* Variables the agent sets (scope txn, prefix lunaroute): txn.lunaroute.<name>. */
#define LR_VAR_ROUTE    "route"    /* "engine" | "bypass" */
#define LR_VAR_BACKEND  "backend"  /* exact HAProxy backend name */
#define LR_VAR_PROVIDER "provider" /* provider name (bypass), "" for engine */

/* The longest unix socket path (admin, spoa and engine sockets): sockaddr_un.sun_path holds
 * 108 bytes on Linux, the terminating NUL included. */
#define LR_UNIX_PATH_MAX 107

/* SPOP frame size we offer (HAProxy's default tune.bufsize 16384 minus the 4-byte length). */
#define LR_SPOP_MAX_FRAME_SIZE 16380u

#endif
