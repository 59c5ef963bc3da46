/* The proxied request lifecycle (DESIGN §8): POST /v1/chat/completions (OpenAI dialect) and
 * POST /v1/messages (Anthropic dialect).
 *
 *   plan (router_plan) -> for each candidate: admit (circuit) -> attempt (upstream.c)
 *     connect error / timeout / 5xx before any byte reached the client:
 *         retry the same provider (max_retries, router_backoff), then fall over
 *     429: report the Retry-After, fall over at once
 *     anything else: final, relayed as it arrives (SSE parsed on the side for metrics,
 *         keep-alive comments and a clean error event if the stream breaks)
 *   nothing left: the last upstream error response as the provider sent it, else 502/504
 *   JSON (503 when no provider could be tried at all).
 *
 * The body bytes are forwarded unchanged; jansson reads only "model" and "stream".
 * Requests go out with "Accept-Encoding: identity": the relay never decodes, so a gzipped
 * event stream could not be split into events (and would hang the keep-alive/error logic).
 *
 * A settings generation (struct engine_gen) bundles the settings with their router and the
 * resolved API keys; every loop thread holds a reference to the current one and each
 * request holds one for its lifetime, so a reload never pulls a provider from under a
 * request. The router's state (circuits, rate-limit windows, round-robin positions) starts
 * fresh with each generation: a reload resets it. */
#ifndef LR_PROXY_H
#define LR_PROXY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <ev.h>

#include "engine_http.h"
#include "router.h"

struct agent_settings;
struct agent_provider;
struct router;
struct upstream;
struct models_cache;

struct engine_gen {
    atomic_uint refs;
    struct agent_settings *settings; /* own reference */
    struct router *router;
    char **keys; /* per settings->providers[i]: the key from api_key_env, or NULL. Memory
                    only, never logged. */
    bool serve_openai, serve_anthropic; /* from api_dialect */
};

/* Builds a generation for s (takes its own reference): compiles the router, resolves keys
 * with getenv(). NULL with a message on a bad routing section. */
struct engine_gen *engine_gen_new(struct agent_settings *s, char *err, size_t errlen);
struct engine_gen *engine_gen_ref(struct engine_gen *g);
void engine_gen_unref(struct engine_gen *g); /* NULL-safe */
/* The configured key of p (a provider of g->settings), or NULL. */
const char *engine_gen_key(const struct engine_gen *g, const struct agent_provider *p);

/* Per loop thread, owned by engine_http. */
struct proxy_ctx {
    struct ev_loop *loop;
    struct upstream *up; /* NULL: attempts fail as connect errors */
    struct engine_gen *const *gen;
    struct models_cache *models;
};

/* Handles a proxied request (the engine checked path, method and dialect). Answers now or
 * takes ownership of the connection's request (engine_conn_own). */
void proxy_handle(struct proxy_ctx *px, struct engine_conn *c,
                  const struct engine_http_request *req);

/* Monotonic seconds (the router's clock). */
double proxy_now(void);

/* Upstream request headers for p, for a request of the `client` dialect: the client's minus
 * hop-by-hop, host, content-length, expect, accept-encoding; plus Accept-Encoding: identity;
 * credentials per p (a configured key replaces the client's and drops the other dialect's
 * header; no key: the client's pass through); anthropic-version added for Anthropic
 * providers with a key when absent. Translated (p speaks the other dialect): the source
 * dialect's API headers (anthropic-* / openai-*) are dropped, the client's own credential
 * moves to the target's header when no key is configured (Authorization: Bearer K <->
 * x-api-key: K), and anthropic-version is added when absent. *ok is false on allocation
 * failure. */
struct curl_slist *proxy_upstream_headers(const struct engine_gen *g,
                                          const struct agent_provider *p,
                                          const struct engine_http_request *req,
                                          enum router_dialect client, bool *ok);

#endif
