/* The routing-engine HTTP/1.1 listener (DESIGN §8): keep-alive, in-order pipelining (one
 * request in progress per connection; later ones wait, unparsed, in the input buffer),
 * bounded headers and bodies, timeouts, JSON errors in the client's dialect, and the
 * dispatch to /healthz, /readyz, /metrics, /v1/models (models.c) and the proxied
 * /v1/chat/completions and /v1/messages (proxy.c), whose bodies are buffered here.
 *
 * Responses may be asynchronous and streamed: a handler that took a request (the "owner")
 * answers later through engine_conn_begin / engine_conn_write / engine_conn_end. Output is
 * buffered per connection and written before the loop next blocks (an ev_prepare), so all
 * bytes produced in one loop iteration leave in one write; the write watcher runs only after
 * EAGAIN. Back-pressure: engine_conn_congested() says when the client's pending output is
 * over ENGINE_HTTP_HIGH_WATER; the owner then pauses its producer and gets on_drain once
 * the output has fallen under ENGINE_HTTP_LOW_WATER. A client that goes away while a request
 * is in flight is reported to the owner at once (on_client_gone). While a response is in
 * progress no idle timer runs: the owner's own (upstream) timeouts govern.
 *
 * One struct engine_http per loop thread; the server's acceptor hands it accepted fds. */
#ifndef LR_ENGINE_HTTP_H
#define LR_ENGINE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "buf.h"

struct engine_gen;
struct upstream;

#define ENGINE_HTTP_HEADER_TIMEOUT   10.0 /* seconds for a whole header block */
#define ENGINE_HTTP_IDLE_TIMEOUT     60.0 /* keep-alive idle, and body inactivity */
#define ENGINE_HTTP_MAX_HEADER_BYTES (64u * 1024u)
#define ENGINE_HTTP_HIGH_WATER       (256u * 1024u) /* pending output that pauses the producer */
#define ENGINE_HTTP_LOW_WATER        (64u * 1024u)  /* ... and resumes it */

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
    uint64_t body_len; /* bytes received */
    /* The buffered body for the proxied paths (POST /v1/chat/completions, /v1/messages),
     * NULL otherwise (the body was counted and discarded). Valid until engine_conn_end. */
    const char *body;
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

/* HTTP reason phrase for a status ("Unknown" when we have none). */
const char *engine_http_reason(int status);

struct engine_http;
struct engine_conn;

/* ---- the asynchronous response API (for proxy.c and models.c) ---- */

/* The owner of a connection's in-flight request. */
struct engine_owner_ops {
    /* The client went away (EOF, error) or the listener is being freed: stop everything and
     * never touch the connection again. Called from the loop, never from inside an
     * engine_conn_* call. */
    void (*on_client_gone)(void *ud);
    /* Pending output fell under ENGINE_HTTP_LOW_WATER after engine_conn_want_drain(). Called
     * from the loop (write watcher / prepare), never from inside an engine_conn_* call. */
    void (*on_drain)(void *ud);
};

/* Takes the request being dispatched: the dispatcher then leaves the connection busy until
 * engine_conn_end/abort. Only valid during the handler call (proxy_handle, models_handle). */
void engine_conn_own(struct engine_conn *c, const struct engine_owner_ops *ops, void *ud);
/* Queues the status line and headers. content_length >= 0: that many body bytes follow;
 * < 0: unknown, chunked (HTTP/1.1) or close-delimited (HTTP/1.0). The engine adds
 * content-length/transfer-encoding/connection itself (do not pass them). 0, or -1 when the
 * connection is dead (the owner will get on_client_gone). */
int engine_conn_begin(struct engine_conn *c, int status, const struct engine_http_header *h,
                      size_t n, int64_t content_length);
/* Queues body bytes (framed as a chunk when chunked). 0 or -1 (dead). */
int engine_conn_write(struct engine_conn *c, const void *p, size_t len);
/* Pending output is over ENGINE_HTTP_HIGH_WATER. */
bool engine_conn_congested(const struct engine_conn *c);
/* Asks for one on_drain call once pending output is under ENGINE_HTTP_LOW_WATER. */
void engine_conn_want_drain(struct engine_conn *c);
/* Ends the response (last chunk when chunked) and releases the owner; close_conn: close the
 * connection once written (a stream that ended with an error). Pipelined requests then
 * continue (from the loop, not from inside this call). */
void engine_conn_end(struct engine_conn *c, bool close_conn);
/* Drops the connection without completing the response (the client must see a truncated
 * response, never one that looks complete); releases the owner (no on_client_gone). */
void engine_conn_abort(struct engine_conn *c);
/* A complete response in one call (begin + write + end), for a request already owned. */
void engine_conn_respond(struct engine_conn *c, int status, const char *ctype, const char *body,
                         size_t len);
/* The same with an error body in the request's dialect. */
void engine_conn_respond_error(struct engine_conn *c, int status, const char *message);
uint64_t engine_conn_id(const struct engine_conn *c);
struct ev_loop *engine_conn_loop(const struct engine_conn *c);

/* gen points at the owning thread's current-generation slot (settings + router, read on
 * each request); up is the thread's upstream (NULL: every upstream attempt fails as a
 * connect error, for tests and fuzzing). */
struct engine_http *engine_http_new(struct ev_loop *loop, const struct engine_http_config *cfg,
                                    struct engine_gen *const *gen, struct upstream *up);
/* Takes ownership of a connected, non-blocking socket. */
void engine_http_accept(struct engine_http *eh, int fd, uint64_t conn_id);
/* Shutdown: idle connections close now, busy ones after the response in progress. */
void engine_http_drain(struct engine_http *eh);
size_t engine_http_conn_count(const struct engine_http *eh);
/* Closes every connection (owners get on_client_gone) and frees; NULL-safe. */
void engine_http_free(struct engine_http *eh);

#endif
