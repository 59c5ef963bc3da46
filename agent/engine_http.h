/* The routing-engine HTTP/1.1 listener (DESIGN §8), first cut: keep-alive, in-order
 * pipelining, bounded headers and bodies, timeouts, /healthz and /readyz, and JSON errors
 * in the client's dialect. Request bodies are counted and discarded for now; the routing
 * handlers plug into the dispatch table in engine_http.c.
 *
 * One struct engine_http per loop thread; the server's acceptor hands it accepted fds. */
#ifndef LR_ENGINE_HTTP_H
#define LR_ENGINE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "buf.h"

struct agent_settings;

#define ENGINE_HTTP_HEADER_TIMEOUT   10.0 /* seconds for a whole header block */
#define ENGINE_HTTP_IDLE_TIMEOUT     60.0 /* keep-alive idle, and body inactivity */
#define ENGINE_HTTP_MAX_HEADER_BYTES (64u * 1024u)

struct engine_http_config {
    double header_timeout;
    double idle_timeout;
    double linger_timeout; /* after a final response, how long to drain the client's bytes */
    size_t max_header_bytes;
};
void engine_http_config_default(struct engine_http_config *cfg);

enum engine_http_dialect {
    ENGINE_DIALECT_OPENAI = 0,
    ENGINE_DIALECT_ANTHROPIC,
    ENGINE_DIALECT_COUNT
};

struct engine_http_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* A parsed request, valid during its dispatch. Strings are not NUL-terminated. */
struct engine_http_request {
    uint64_t conn_id;
    unsigned seq; /* 1 for the connection's first request */
    const char *method;
    size_t method_len;
    const char *path; /* request-target up to '?' */
    size_t path_len;
    const char *query; /* after '?', "" when none */
    size_t query_len;
    const struct engine_http_header *headers;
    size_t n_headers;
    unsigned http_major, http_minor;
    bool head;
    uint64_t body_len; /* bytes received (the body itself is discarded in this version) */
    enum engine_http_dialect dialect;
};

/* Case-insensitive header lookup; NULL when absent. */
const struct engine_http_header *engine_http_find_header(const struct engine_http_request *req,
                                                         const char *name);
/* Anthropic when the request has an anthropic-version header or its path is /v1/messages or
 * under /v1/messages/; OpenAI otherwise. */
enum engine_http_dialect engine_http_detect_dialect(const char *path, size_t path_len,
                                                    bool has_anthropic_version);

/* Appends an error body in the dialect's shape to out ({"type":"error","error":{...}} or
 * {"error":{"message","type","code"}}). The message is JSON-escaped. 0 or -ENOMEM. */
int engine_http_error_body(enum engine_http_dialect d, int status, const char *message,
                           struct lr_buf *out);

struct engine_http;

/* settings points at the owning thread's current-settings slot (read on each request). */
struct engine_http *engine_http_new(struct ev_loop *loop, const struct engine_http_config *cfg,
                                    struct agent_settings *const *settings);
/* Takes ownership of a connected, non-blocking socket. */
void engine_http_accept(struct engine_http *eh, int fd, uint64_t conn_id);
/* Shutdown: idle connections close now, busy ones after the response in progress. */
void engine_http_drain(struct engine_http *eh);
size_t engine_http_conn_count(const struct engine_http *eh);
/* Closes every connection and frees; NULL-safe. */
void engine_http_free(struct engine_http *eh);

#endif
