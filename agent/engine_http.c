#include "engine_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <llhttp.h>

#include "log.h"
#include "net.h"
#include "metrics.h"
#include "models.h"
#include "proxy.h"
#include "router.h"
#include "settings.h"
#include "stats.h"

#define EC_READ_CHUNK          (16u * 1024u)
#define EC_MAX_READS_PER_EVENT 4
#define EC_DEFAULT_MAX_BODY    (100ull * 1024 * 1024)
#define EC_MAX_PIPELINED       (256u * 1024u) /* input held while a request is in progress */
#define EC_KEEP_BODY_CAP       (1u << 20)     /* a larger body buffer is freed after use */

/* Connection states, changed only through conn_set_state(). */
enum ec_state {
    EC_IDLE = 0, /* between requests (or before the first): no request byte yet */
    EC_HEADERS,  /* request line / headers in progress: header timeout runs */
    EC_BODY,     /* body in progress: idle timeout, re-armed on each read */
    EC_BUSY,     /* request dispatched, response in progress: no timer, no parsing */
    EC_CLOSING,  /* final response queued: flush it, then linger */
    EC_LINGER,   /* write side shut: read and discard until EOF or timeout */
    EC_CLOSED,   /* on the reap list */
    EC_STATE_COUNT
};

struct hdr_ref {
    size_t name_off, name_len, val_off, val_len;
};

struct engine_conn {
    struct engine_http *eh;
    struct engine_conn *prev, *next;
    uint64_t id;
    int fd;
    ev_io rio, wio;
    ev_timer timer;
    enum ec_state state;
    llhttp_t parser;
    struct lr_buf in;
    struct lr_buf out;
    size_t out_off;
    struct engine_conn *dnext; /* dirty list: output to flush / parsing to resume */
    bool dirty, dead, resume_parse, want_drain, in_dispatch, resp_done;
    /* response in progress */
    bool resp_chunked, resp_head;
    const struct engine_owner_ops *oops;
    void *oud;
    struct engine_http_request req; /* the dispatched request, valid while busy */
    unsigned requests;
    /* current request */
    struct lr_buf hb; /* URL then header names/values, concatenated */
    size_t url_len;
    struct hdr_ref *refs;
    size_t n_refs, cap_refs;
    struct engine_http_header *hv; /* built at dispatch */
    size_t cap_hv;
    int last_cb; /* 0 none/url, 1 field, 2 value */
    size_t header_bytes;
    uint64_t body_len, max_body;
    struct lr_buf body; /* buffered for the proxied paths */
    bool want_body;
    bool started, msg_complete, has_av, close_after;
    int err_status;      /* set by a callback that aborts the parse */
    const char *err_msg; /* its message (static), or NULL for llhttp's error name */
    const char *exec_at; /* start of the bytes handed to the current llhttp_execute */
};

struct engine_http {
    struct ev_loop *loop;
    struct engine_http_config cfg;
    struct engine_gen *const *gen;
    struct proxy_ctx px;
    llhttp_settings_t ps;
    struct engine_conn *conns; /* active */
    struct engine_conn *reap;  /* closed, freed in the prepare watcher */
    struct engine_conn *dirty; /* flushed (and resumed) in the prepare watcher */
    size_t n_conns;
    bool draining;
    ev_prepare reaper;
};

static void conn_flush(struct engine_conn *c, bool may_close);
static void conn_close(struct engine_conn *c);
static void conn_process(struct engine_conn *c);
static void conn_update_read(struct engine_conn *c);

void engine_http_config_default(struct engine_http_config *cfg)
{
    cfg->header_timeout = ENGINE_HTTP_HEADER_TIMEOUT;
    cfg->idle_timeout = ENGINE_HTTP_IDLE_TIMEOUT;
    cfg->linger_timeout = 2.0;
    cfg->max_header_bytes = ENGINE_HTTP_MAX_HEADER_BYTES;
}

/* ---- pure helpers ---- */

const struct engine_http_header *engine_http_find_header(const struct engine_http_request *req,
                                                         const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct engine_http_header *h = &req->headers[i];
        if (h->name_len == n && strncasecmp(h->name, name, n) == 0)
            return h;
    }
    return NULL;
}

enum engine_http_dialect engine_http_detect_dialect(const char *path, size_t path_len,
                                                    bool has_anthropic_version)
{
    static const char msgs[] = "/v1/messages";
    const size_t ml = sizeof(msgs) - 1;
    if (has_anthropic_version)
        return ENGINE_DIALECT_ANTHROPIC;
    if (path && path_len >= ml && memcmp(path, msgs, ml) == 0 &&
        (path_len == ml || path[ml] == '/'))
        return ENGINE_DIALECT_ANTHROPIC;
    return ENGINE_DIALECT_OPENAI;
}

struct error_kind {
    int status;
    const char *openai_type, *openai_code, *anthropic_type;
};

static const struct error_kind error_kinds[] = {
    {400, "invalid_request_error", "bad_request", "invalid_request_error"},
    {404, "invalid_request_error", "not_found", "not_found_error"},
    {405, "invalid_request_error", "method_not_allowed", "invalid_request_error"},
    {408, "invalid_request_error", "request_timeout", "timeout_error"},
    {413, "invalid_request_error", "request_too_large", "request_too_large"},
    {431, "invalid_request_error", "request_header_fields_too_large", "invalid_request_error"},
    {502, "server_error", "bad_gateway", "api_error"},
    {503, "server_error", "service_unavailable", "overloaded_error"},
    {504, "server_error", "gateway_timeout", "timeout_error"},
};

int engine_http_error_body(enum engine_http_dialect d, int status, const char *message,
                           struct lr_buf *out)
{
    const struct error_kind *k = NULL;
    for (size_t i = 0; i < sizeof(error_kinds) / sizeof(error_kinds[0]); i++)
        if (error_kinds[i].status == status)
            k = &error_kinds[i];
    static const struct error_kind fallback = {500, "server_error", "internal_error", "api_error"};
    if (!k)
        k = &fallback;
    json_t *msg = json_string(message ? message : "");
    if (!msg)
        msg = json_string("invalid request"); /* message was not valid UTF-8 */
    json_t *root;
    if (d == ENGINE_DIALECT_ANTHROPIC)
        root = json_pack("{s:s,s:{s:s,s:o}}", "type", "error", "error", "type", k->anthropic_type,
                         "message", msg);
    else
        root = json_pack("{s:{s:o,s:s,s:s}}", "error", "message", msg, "type", k->openai_type,
                         "code", k->openai_code);
    if (!root)
        return -ENOMEM;
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s)
        return -ENOMEM;
    int rc = lr_buf_puts(out, s);
    free(s);
    return rc;
}

const char *engine_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 529:
        return "Site Overloaded";
    default:
        return "Unknown";
    }
}

/* ---- connection plumbing ---- */

static void conn_set_state(struct engine_conn *c, enum ec_state st)
{
    c->state = st;
}

static void conn_arm_timer(struct engine_conn *c, double secs)
{
    c->timer.repeat = secs;
    ev_timer_again(c->eh->loop, &c->timer);
}

static void conn_mark_dirty(struct engine_conn *c)
{
    if (c->dirty)
        return;
    c->dirty = true;
    c->dnext = c->eh->dirty;
    c->eh->dirty = c;
}

static size_t conn_pending(const struct engine_conn *c)
{
    return c->out.len - c->out_off;
}

static void req_reset(struct engine_conn *c)
{
    lr_buf_reset(&c->hb);
    c->url_len = 0;
    c->n_refs = 0;
    c->last_cb = 0;
    c->header_bytes = 0;
    c->body_len = 0;
    c->want_body = false;
    if (c->body.cap > EC_KEEP_BODY_CAP)
        lr_buf_free(&c->body);
    else
        lr_buf_reset(&c->body);
    c->started = c->msg_complete = c->has_av = false;
}

static const struct engine_gen *conn_gen(const struct engine_conn *c)
{
    return c->eh->gen ? *c->eh->gen : NULL;
}

/* Appends raw bytes to the output; flushed before the loop blocks (or now when a lot is
 * pending, never closing from here: this may run inside an upstream callback). */
static int conn_out(struct engine_conn *c, const void *p, size_t len)
{
    if (c->dead || c->state == EC_CLOSED)
        return -1;
    if (c->out_off && c->out_off == c->out.len) {
        lr_buf_reset(&c->out);
        c->out_off = 0;
    }
    if (lr_buf_append(&c->out, p, len) < 0) {
        lr_warn("engine conn %llu: out of memory", (unsigned long long)c->id);
        c->dead = true;
        conn_mark_dirty(c);
        return -1;
    }
    conn_mark_dirty(c);
    if (conn_pending(c) > ENGINE_HTTP_LOW_WATER && !ev_is_active(&c->wio))
        conn_flush(c, false);
    return c->dead ? -1 : 0;
}

/* Where the response leaves the connection once it is complete. */
static void conn_after_response(struct engine_conn *c)
{
    if (c->state == EC_CLOSED)
        return;
    if (c->close_after) {
        conn_set_state(c, EC_CLOSING);
        conn_arm_timer(c, c->eh->cfg.idle_timeout); /* to get the response out */
        conn_mark_dirty(c);
        return;
    }
    req_reset(c);
    conn_set_state(c, EC_IDLE);
    conn_arm_timer(c, c->eh->cfg.idle_timeout);
    if (!c->in_dispatch) {
        c->resume_parse = true;
        conn_mark_dirty(c);
    }
}

int engine_conn_begin(struct engine_conn *c, int status, const struct engine_http_header *h,
                      size_t n, int64_t content_length)
{
    if (c->dead || c->state == EC_CLOSED)
        return -1;
    bool http10 = c->req.http_major == 1 && c->req.http_minor == 0;
    c->resp_chunked = false;
    if (content_length < 0 && !c->resp_head) {
        if (http10)
            c->close_after = true; /* close-delimited */
        else
            c->resp_chunked = true;
    }
    if (c->eh->draining)
        c->close_after = true;
    bool ka10 = !c->close_after && http10;
    struct lr_buf *o = &c->out;
    if (c->out_off && c->out_off == o->len) {
        lr_buf_reset(o);
        c->out_off = 0;
    }
    int rc = lr_buf_append(o, "HTTP/1.1 ", 9);
    if (rc == 0)
        rc = lr_buf_append_u64(o, status >= 0 ? (uint64_t)status : 0);
    if (rc == 0)
        rc = lr_buf_append(o, " ", 1);
    if (rc == 0)
        rc = lr_buf_puts(o, engine_http_reason(status));
    if (rc == 0)
        rc = lr_buf_append(o, "\r\n", 2);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = lr_buf_append(o, h[i].name, h[i].name_len);
        if (rc == 0)
            rc = lr_buf_append(o, ": ", 2);
        if (rc == 0)
            rc = lr_buf_append(o, h[i].value, h[i].value_len);
        if (rc == 0)
            rc = lr_buf_append(o, "\r\n", 2);
    }
    if (rc == 0 && content_length >= 0) {
        rc = lr_buf_append(o, "content-length: ", 16);
        if (rc == 0)
            rc = lr_buf_append_u64(o, (uint64_t)content_length);
        if (rc == 0)
            rc = lr_buf_append(o, "\r\n", 2);
    } else if (rc == 0 && c->resp_chunked)
        rc = lr_buf_puts(o, "transfer-encoding: chunked\r\n");
    if (rc == 0)
        rc = lr_buf_puts(o, c->close_after ? "connection: close\r\n\r\n"
                                           : (ka10 ? "connection: keep-alive\r\n\r\n" : "\r\n"));
    if (status >= 500)
        stats_inc(STATS_ENGINE_ERRORS_5XX);
    else if (status >= 400)
        stats_inc(STATS_ENGINE_ERRORS_4XX);
    if (rc < 0) {
        lr_warn("engine conn %llu: out of memory building a response", (unsigned long long)c->id);
        c->dead = true;
        conn_mark_dirty(c);
        return -1;
    }
    conn_mark_dirty(c);
    return 0;
}

int engine_conn_write(struct engine_conn *c, const void *p, size_t len)
{
    if (c->dead || c->state == EC_CLOSED)
        return -1;
    if (c->resp_head || len == 0)
        return 0;
    if (c->resp_chunked) {
        char hdr[24];
        int hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        if (conn_out(c, hdr, (size_t)hl) < 0)
            return -1;
        if (lr_buf_append(&c->out, p, len) < 0 || lr_buf_append(&c->out, "\r\n", 2) < 0) {
            c->dead = true;
            return -1;
        }
        if (conn_pending(c) > ENGINE_HTTP_LOW_WATER && !ev_is_active(&c->wio))
            conn_flush(c, false);
        return c->dead ? -1 : 0;
    }
    return conn_out(c, p, len);
}

bool engine_conn_congested(const struct engine_conn *c)
{
    return conn_pending(c) > ENGINE_HTTP_HIGH_WATER;
}

void engine_conn_want_drain(struct engine_conn *c)
{
    c->want_drain = true;
    conn_mark_dirty(c);
}

static void conn_release_owner(struct engine_conn *c)
{
    c->oops = NULL;
    c->oud = NULL;
    c->want_drain = false;
}

void engine_conn_end(struct engine_conn *c, bool close_conn)
{
    if (c->state == EC_CLOSED || c->resp_done)
        return;
    if (c->resp_chunked && !c->dead)
        (void)conn_out(c, "0\r\n\r\n", 5);
    c->resp_chunked = false;
    c->resp_done = true;
    conn_release_owner(c);
    if (close_conn)
        c->close_after = true;
    if (c->dead) {
        conn_mark_dirty(c);
        return;
    }
    if (!c->in_dispatch)
        conn_after_response(c);
}

void engine_conn_abort(struct engine_conn *c)
{
    if (c->state == EC_CLOSED)
        return;
    conn_release_owner(c);
    c->resp_done = true;
    /* No close from here (we may be inside an upstream callback): the prepare reaps it. */
    c->dead = true;
    conn_mark_dirty(c);
}

void engine_conn_own(struct engine_conn *c, const struct engine_owner_ops *ops, void *ud)
{
    c->oops = ops;
    c->oud = ud;
}

uint64_t engine_conn_id(const struct engine_conn *c)
{
    return c->id;
}

struct ev_loop *engine_conn_loop(const struct engine_conn *c)
{
    return c->eh->loop;
}

/* Queues a complete response. close marks the connection to close once it is written. */
static void conn_respond(struct engine_conn *c, int status, const char *ctype, const char *body,
                         size_t len, bool close)
{
    if (close)
        c->close_after = true;
    struct engine_http_header h = {"content-type", 12, ctype, strlen(ctype)};
    if (engine_conn_begin(c, status, &h, 1, (int64_t)len) == 0)
        (void)engine_conn_write(c, body, len);
    engine_conn_end(c, false);
}

void engine_conn_respond(struct engine_conn *c, int status, const char *ctype, const char *body,
                         size_t len)
{
    conn_respond(c, status, ctype, body, len, false);
}

static void conn_respond_error(struct engine_conn *c, enum engine_http_dialect d, int status,
                               const char *message, bool close)
{
    struct lr_buf b = {0};
    if (engine_http_error_body(d, status, message, &b) < 0) {
        lr_buf_free(&b);
        engine_conn_abort(c);
        return;
    }
    conn_respond(c, status, "application/json", (const char *)b.data, b.len, close);
    lr_buf_free(&b);
}

void engine_conn_respond_error(struct engine_conn *c, int status, const char *message)
{
    conn_respond_error(c, c->req.dialect, status, message, false);
}

/* ---- dispatch: the handler table ---- */

#define EM_GET  1u
#define EM_HEAD 2u
#define EM_POST 4u

/* A handler answers through engine_respond()/engine_respond_error(), or takes the request
 * (engine_conn_own) and answers later. */
struct engine_ctx {
    struct engine_conn *c;
    const struct engine_http_request *req;
};
typedef void (*engine_handler_fn)(struct engine_ctx *ctx);

static void engine_respond(struct engine_ctx *x, int status, const char *ctype, const char *body,
                           size_t len)
{
    conn_respond(x->c, status, ctype, body, len, false);
}

static void engine_respond_error(struct engine_ctx *x, int status, const char *message)
{
    conn_respond_error(x->c, x->req->dialect, status, message, false);
}

static void handle_healthz(struct engine_ctx *x)
{
    static const char body[] = "{\"status\":\"ok\"}";
    engine_respond(x, 200, "application/json", body, sizeof(body) - 1);
}

/* Readiness: settings loaded and at least one provider's circuit not open (DESIGN §8). */
static bool engine_ready(const struct engine_http *eh, const char **why)
{
    const struct engine_gen *g = eh->gen ? *eh->gen : NULL;
    if (!g || !g->settings) {
        *why = "settings not loaded";
        return false;
    }
    if (!g->router || !router_any_available(g->router, proxy_now())) {
        *why = "no provider available (every circuit is open or none is enabled)";
        return false;
    }
    return true;
}

static void handle_readyz(struct engine_ctx *x)
{
    const char *why = NULL;
    if (engine_ready(x->c->eh, &why)) {
        static const char body[] = "{\"status\":\"ready\"}";
        engine_respond(x, 200, "application/json", body, sizeof(body) - 1);
        return;
    }
    json_t *o = json_pack("{s:s,s:s}", "status", "not_ready", "reason", why);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s)
        engine_respond(x, 503, "application/json", s, strlen(s));
    else
        engine_respond_error(x, 503, "not ready");
    free(s);
}

static void handle_metrics(struct engine_ctx *x)
{
    const struct engine_gen *g = conn_gen(x->c);
    struct lr_buf b = {0};
    if (metrics_render(&b, g ? g->router : NULL) < 0) {
        lr_buf_free(&b);
        engine_respond_error(x, 500, "out of memory");
        return;
    }
    engine_respond(x, 200, "text/plain; version=0.0.4", b.data ? (const char *)b.data : "", b.len);
    lr_buf_free(&b);
}

static void handle_models(struct engine_ctx *x)
{
    models_handle(&x->c->eh->px, x->c, x->req);
}

static bool gen_serves(const struct engine_gen *g, enum engine_http_dialect d)
{
    if (!g)
        return false;
    return d == ENGINE_DIALECT_ANTHROPIC ? g->serve_anthropic : g->serve_openai;
}

static void handle_proxy(struct engine_ctx *x)
{
    proxy_handle(&x->c->eh->px, x->c, x->req);
}

struct engine_route {
    const char *path;
    unsigned methods;
    engine_handler_fn fn;
    int dialect; /* proxied path: the dialect that must be served; -1 otherwise */
};

static const struct engine_route engine_routes[] = {
    {"/v1/chat/completions", EM_POST, handle_proxy, ENGINE_DIALECT_OPENAI},
    {"/v1/messages", EM_POST, handle_proxy, ENGINE_DIALECT_ANTHROPIC},
    {"/v1/models", EM_GET | EM_HEAD, handle_models, -1},
    {"/healthz", EM_GET | EM_HEAD, handle_healthz, -1},
    {"/readyz", EM_GET | EM_HEAD, handle_readyz, -1},
    {"/metrics", EM_GET | EM_HEAD, handle_metrics, -1},
};

static unsigned method_bit(uint8_t m)
{
    switch (m) {
    case HTTP_GET:
        return EM_GET;
    case HTTP_HEAD:
        return EM_HEAD;
    case HTTP_POST:
        return EM_POST;
    default:
        return 0;
    }
}

static bool path_is(const char *path, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return n == len && memcmp(path, lit, n) == 0;
}

static void engine_dispatch(struct engine_conn *c, const struct engine_http_request *req)
{
    struct engine_ctx x = {c, req};
    uint8_t m = llhttp_get_method(&c->parser);
    for (size_t i = 0; i < sizeof(engine_routes) / sizeof(engine_routes[0]); i++) {
        const struct engine_route *r = &engine_routes[i];
        if (path_is(req->path, req->path_len, r->path) && (r->methods & method_bit(m))) {
            if (r->dialect >= 0 && !gen_serves(conn_gen(c), (enum engine_http_dialect)r->dialect))
                break; /* api_dialect does not serve it: 404 */
            r->fn(&x);
            return;
        }
    }
    char msg[320];
    snprintf(msg, sizeof(msg), "Unknown request URL: %.*s %.*s", (int)req->method_len, req->method,
             req->path_len > 256 ? 256 : (int)req->path_len, req->path);
    engine_respond_error(&x, 404, msg);
}

static void conn_finish_request(struct engine_conn *c)
{
    struct engine_http_request *req = &c->req;
    memset(req, 0, sizeof(*req));
    if (c->cap_hv < c->n_refs) {
        size_t cap = c->n_refs < 16 ? 16 : c->n_refs * 2;
        struct engine_http_header *hv = realloc(c->hv, cap * sizeof(*hv));
        if (!hv) {
            conn_close(c);
            return;
        }
        c->hv = hv;
        c->cap_hv = cap;
    }
    const char *base = (const char *)c->hb.data;
    for (size_t i = 0; i < c->n_refs; i++) {
        c->hv[i].name = base + c->refs[i].name_off;
        c->hv[i].name_len = c->refs[i].name_len;
        c->hv[i].value = base + c->refs[i].val_off;
        c->hv[i].value_len = c->refs[i].val_len;
    }
    c->requests++;
    req->conn_id = c->id;
    req->seq = c->requests;
    uint8_t m = llhttp_get_method(&c->parser);
    req->method = llhttp_method_name((llhttp_method_t)m);
    req->method_len = strlen(req->method);
    req->path = base ? base : "";
    const char *q = c->url_len ? memchr(req->path, '?', c->url_len) : NULL;
    req->path_len = q ? (size_t)(q - req->path) : c->url_len;
    req->query = q ? q + 1 : "";
    req->query_len = q ? c->url_len - req->path_len - 1 : 0;
    req->headers = c->hv;
    req->n_headers = c->n_refs;
    req->http_major = llhttp_get_http_major(&c->parser);
    req->http_minor = llhttp_get_http_minor(&c->parser);
    req->head = m == HTTP_HEAD;
    req->body_len = c->body_len;
    req->body = c->want_body ? (c->body.data ? (const char *)c->body.data : "") : NULL;
    /* The proxied paths have their own dialect, whatever the headers say. */
    if (path_is(req->path, req->path_len, "/v1/chat/completions"))
        req->dialect = ENGINE_DIALECT_OPENAI;
    else
        req->dialect = engine_http_detect_dialect(req->path, req->path_len, c->has_av);
    if (!llhttp_should_keep_alive(&c->parser))
        c->close_after = true;
    stats_inc(STATS_ENGINE_REQUESTS);
    c->resp_head = req->head;
    c->resp_done = false;
    conn_set_state(c, EC_BUSY);
    ev_timer_stop(c->eh->loop, &c->timer); /* the handler's own timeouts govern */
    c->in_dispatch = true;
    engine_dispatch(c, req);
    c->in_dispatch = false;
    if (c->state == EC_CLOSED)
        return;
    if (c->resp_done) {
        if (c->dead)
            return; /* closed by the prepare */
        conn_after_response(c);
        return;
    }
    if (!c->oops) {
        /* A handler that neither answered nor took the request: a bug; do not hang. */
        lr_err("engine conn %llu: request left unanswered", (unsigned long long)c->id);
        conn_respond_error(c, req->dialect, 500, "internal error", true);
        conn_after_response(c);
    }
    /* else: in progress; parsing resumes after engine_conn_end */
}

/* ---- llhttp callbacks ---- */

static struct engine_conn *pconn(llhttp_t *p)
{
    return p->data;
}

static int on_message_begin(llhttp_t *p)
{
    struct engine_conn *c = pconn(p);
    req_reset(c);
    c->started = true;
    conn_set_state(c, EC_HEADERS);
    conn_arm_timer(c, c->eh->cfg.header_timeout);
    return 0;
}

static int count_header_bytes(struct engine_conn *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > c->eh->cfg.max_header_bytes) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct engine_conn *c = pconn(p);
    if (count_header_bytes(c, len) < 0 || lr_buf_append(&c->hb, at, len) < 0)
        return -1;
    c->url_len += len;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct engine_conn *c = pconn(p);
    if (count_header_bytes(c, len + 4) < 0)
        return -1;
    if (c->last_cb != 1) {
        if (c->n_refs == c->cap_refs) {
            size_t cap = c->cap_refs ? c->cap_refs * 2 : 16;
            struct hdr_ref *r = realloc(c->refs, cap * sizeof(*r));
            if (!r)
                return -1;
            c->refs = r;
            c->cap_refs = cap;
        }
        struct hdr_ref *r = &c->refs[c->n_refs++];
        r->name_off = c->hb.len;
        r->name_len = 0;
        r->val_off = c->hb.len;
        r->val_len = 0;
        c->last_cb = 1;
    }
    if (lr_buf_append(&c->hb, at, len) < 0)
        return -1;
    c->refs[c->n_refs - 1].name_len += len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct engine_conn *c = pconn(p);
    if (count_header_bytes(c, len) < 0 || c->n_refs == 0)
        return -1;
    struct hdr_ref *r = &c->refs[c->n_refs - 1];
    /* A value span resumes at the start of the bytes of a new llhttp_execute; one that
     * starts anywhere else after this header's value ended is an obs-fold line (" foo").
     * llhttp 8 joins it to the value, so " Content-Length: 5" would vanish into the
     * previous header: reject (RFC 9112 5.2 allows a server that). */
    if (c->last_cb == 2 && at != c->exec_at) {
        c->err_status = 400;
        c->err_msg = "Header line folding (obs-fold) is not accepted";
        return -1;
    }
    if (c->last_cb != 2) {
        r->val_off = c->hb.len;
        r->val_len = 0;
        c->last_cb = 2;
    }
    if (lr_buf_append(&c->hb, at, len) < 0)
        return -1;
    r->val_len += len;
    return 0;
}

static bool ref_name_is(const struct engine_conn *c, const struct hdr_ref *r, const char *name)
{
    size_t n = strlen(name);
    return r->name_len == n && strncasecmp((const char *)c->hb.data + r->name_off, name, n) == 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct engine_conn *c = pconn(p);
    bool expect_continue = false;
    unsigned n_te = 0;
    bool te_plain = false;
    for (size_t i = 0; i < c->n_refs; i++) {
        const struct hdr_ref *r = &c->refs[i];
        if (ref_name_is(c, r, "anthropic-version"))
            c->has_av = true;
        else if (ref_name_is(c, r, "transfer-encoding")) {
            size_t n = r->val_len;
            const char *v = (const char *)c->hb.data + r->val_off;
            while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                n--;
            n_te++;
            te_plain = n == 7 && strncasecmp(v, "chunked", 7) == 0;
        } else if (ref_name_is(c, r, "expect") && r->val_len == 12 &&
                   strncasecmp((const char *)c->hb.data + r->val_off, "100-continue", 12) == 0)
            expect_continue = true;
    }
    /* Only one framing is accepted: one `transfer-encoding: chunked`, nothing stacked on it
     * (llhttp takes `identity, chunked`; an intermediary might not). */
    if (n_te > 1 || (n_te == 1 && !te_plain)) {
        c->err_status = 400;
        c->err_msg = "Unsupported transfer-encoding (only a single `chunked` is accepted)";
        return -1;
    }
    const struct engine_gen *g = conn_gen(c);
    const struct agent_settings *s = g ? g->settings : NULL;
    c->max_body = s && s->max_request_body_bytes ? s->max_request_body_bytes : EC_DEFAULT_MAX_BODY;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->max_body) {
        c->err_status = 413;
        return -1;
    }
    /* Bodies of the proxied paths are kept; any other is counted and dropped. */
    if (llhttp_get_method(p) == HTTP_POST) {
        const char *path = (const char *)c->hb.data;
        const char *q = c->url_len ? memchr(path, '?', c->url_len) : NULL;
        size_t plen = q ? (size_t)(q - path) : c->url_len;
        c->want_body =
            path_is(path, plen, "/v1/chat/completions") || path_is(path, plen, "/v1/messages");
        if (c->want_body && (p->flags & F_CONTENT_LENGTH) && p->content_length &&
            lr_buf_reserve(&c->body, (size_t)p->content_length) < 0)
            return -1;
    }
    bool has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    if (has_body) {
        if (expect_continue && p->http_minor >= 1)
            (void)conn_out(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        conn_set_state(c, EC_BODY);
        conn_arm_timer(c, c->eh->cfg.idle_timeout);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct engine_conn *c = pconn(p);
    c->body_len += len;
    if (c->body_len > c->max_body) {
        c->err_status = 413;
        return -1;
    }
    if (c->want_body && lr_buf_append(&c->body, at, len) < 0)
        return -1;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    pconn(p)->msg_complete = true;
    return HPE_PAUSED; /* one request at a time: responses leave in request order */
}

/* ---- I/O ---- */

static void conn_fail(struct engine_conn *c, int status, const char *msg)
{
    enum engine_http_dialect d = ENGINE_DIALECT_OPENAI;
    if (c->url_len) {
        const char *path = (const char *)c->hb.data;
        const char *q = memchr(path, '?', c->url_len);
        d = engine_http_detect_dialect(path, q ? (size_t)(q - path) : c->url_len, c->has_av);
    }
    lr_debug("engine conn %llu: %d %s", (unsigned long long)c->id, status, msg);
    c->req.http_major = 1;
    c->req.http_minor = 1;
    c->resp_head = false;
    c->resp_done = false;
    c->in_dispatch = true; /* no parse resumption from engine_conn_end */
    conn_respond_error(c, d, status, msg, true);
    c->in_dispatch = false;
    conn_after_response(c);
}

/* Parses what `in` holds, dispatching each complete request in order, until one is in
 * progress. */
static void conn_process(struct engine_conn *c)
{
    const char *p = (const char *)c->in.data;
    const char *end = p + c->in.len;
    while (p < end && c->state < EC_BUSY) {
        c->exec_at = p;
        llhttp_errno_t err = llhttp_execute(&c->parser, p, (size_t)(end - p));
        if (err == HPE_OK) {
            p = end;
            break;
        }
        if (err == HPE_PAUSED) {
            const char *ep = llhttp_get_error_pos(&c->parser);
            p = ep ? ep : end;
            llhttp_resume(&c->parser);
            if (c->msg_complete)
                conn_finish_request(c);
            continue;
        }
        if (err == HPE_PAUSED_UPGRADE) {
            /* Upgrades are not supported: answer the request and close. */
            c->close_after = true;
            if (c->msg_complete)
                conn_finish_request(c);
            else
                conn_fail(c, 400, "upgrade not supported");
            p = end;
            break;
        }
        if (c->err_status == 413)
            conn_fail(c, 413, "Request body too large");
        else if (c->err_status == 431)
            conn_fail(c, 431, "Request header fields too large");
        else if (c->err_msg)
            conn_fail(c, 400, c->err_msg);
        else
            conn_fail(c, 400, llhttp_errno_name(err));
        break;
    }
    if (c->state == EC_CLOSED)
        return;
    if (c->state >= EC_CLOSING)
        lr_buf_reset(&c->in);
    else
        lr_buf_consume(&c->in, (size_t)(p - (const char *)c->in.data));
    conn_update_read(c);
}

/* The read watcher runs unless: closed; closing (our last response is going out); output is
 * backed up between requests (back-pressure on pipelining); or a request is in progress and
 * enough of the next ones is already buffered. While a request is in progress reading goes
 * on so that a client that goes away is noticed at once. */
static void conn_update_read(struct engine_conn *c)
{
    struct ev_loop *loop = c->eh->loop;
    bool want;
    switch (c->state) {
    case EC_CLOSED:
    case EC_CLOSING:
        want = false;
        break;
    case EC_LINGER:
        want = true;
        break;
    case EC_BUSY:
        want = c->in.len < EC_MAX_PIPELINED;
        break;
    default:
        want = !ev_is_active(&c->wio);
        break;
    }
    if (want && !ev_is_active(&c->rio))
        ev_io_start(loop, &c->rio);
    else if (!want && ev_is_active(&c->rio))
        ev_io_stop(loop, &c->rio);
}

static void conn_start_linger(struct engine_conn *c)
{
    ev_io_stop(c->eh->loop, &c->wio);
    shutdown(c->fd, SHUT_WR);
    conn_set_state(c, EC_LINGER);
    conn_update_read(c);
    conn_arm_timer(c, c->eh->cfg.linger_timeout);
}

/* Writes pending output. may_close: false from inside an engine_conn_* call (an owner's
 * callback may be on the stack); a write error then marks the connection dead and the
 * prepare closes it. */
static void conn_flush(struct engine_conn *c, bool may_close)
{
    struct ev_loop *loop = c->eh->loop;
    if (c->state == EC_CLOSED)
        return;
    if (c->dead) {
        if (may_close)
            conn_close(c);
        return;
    }
    switch (net_send_pending(c->fd, &c->out, &c->out_off)) {
    case NET_WOULD_BLOCK:
        ev_io_start(loop, &c->wio);
        if (c->out_off > ENGINE_HTTP_LOW_WATER) {
            lr_buf_consume(&c->out, c->out_off);
            c->out_off = 0;
        }
        conn_update_read(c);
        return;
    case NET_SEND_ERROR:
        lr_debug("engine conn %llu: send: %s", (unsigned long long)c->id, strerror(errno));
        c->dead = true;
        if (may_close)
            conn_close(c);
        else
            conn_mark_dirty(c);
        return;
    case NET_SENT_ALL:
        break;
    }
    lr_buf_reset(&c->out);
    c->out_off = 0;
    ev_io_stop(loop, &c->wio);
    if (c->state == EC_CLOSING) {
        conn_start_linger(c);
        return;
    }
    conn_update_read(c);
    if (may_close && c->want_drain && c->oops) {
        c->want_drain = false;
        c->oops->on_drain(c->oud);
    }
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct engine_conn *c = w->data;
    for (int i = 0; i < EC_MAX_READS_PER_EVENT && c->state != EC_CLOSED; i++) {
        if (c->state == EC_LINGER) {
            char tmp[4096];
            ssize_t n = read(c->fd, tmp, sizeof(tmp));
            if (n > 0)
                continue;
            if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            conn_close(c);
            return;
        }
        if (lr_buf_reserve(&c->in, EC_READ_CHUNK) < 0) {
            conn_close(c);
            return;
        }
        ssize_t n = read(c->fd, c->in.data + c->in.len, EC_READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            if (n < 0)
                lr_debug("engine conn %llu: read: %s", (unsigned long long)c->id, strerror(errno));
            conn_close(c);
            return;
        }
        c->in.len += (size_t)n;
        if (c->state == EC_BUSY) {
            /* The next request waits; stop reading once enough of it is buffered. */
            conn_update_read(c);
            if (!ev_is_active(&c->rio))
                break;
            continue;
        }
        if (c->state == EC_BODY)
            conn_arm_timer(c, c->eh->cfg.idle_timeout);
        conn_process(c);
        if (c->state >= EC_BUSY || (size_t)n < EC_READ_CHUNK)
            break;
    }
    if (c->state != EC_CLOSED && c->state != EC_LINGER)
        conn_flush(c, true);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_flush(w->data, true);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct engine_conn *c = w->data;
    switch (c->state) {
    case EC_HEADERS:
    case EC_BODY:
        lr_debug("engine conn %llu: request timeout", (unsigned long long)c->id);
        conn_fail(c, 408, "Request timeout");
        conn_flush(c, true);
        break;
    case EC_BUSY:
        break; /* not armed while busy */
    case EC_IDLE:
    case EC_CLOSING:
    case EC_LINGER:
    default:
        conn_close(c);
        break;
    }
}

static void conn_close(struct engine_conn *c)
{
    struct engine_http *eh = c->eh;
    if (c->state == EC_CLOSED)
        return;
    ev_io_stop(eh->loop, &c->rio);
    ev_io_stop(eh->loop, &c->wio);
    ev_timer_stop(eh->loop, &c->timer);
    close(c->fd);
    c->fd = -1;
    conn_set_state(c, EC_CLOSED);
    if (c->prev)
        c->prev->next = c->next;
    else
        eh->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = eh->reap;
    eh->reap = c;
    eh->n_conns--;
    stats_dec(STATS_ENGINE_CONN_OPEN);
    if (c->oops) {
        /* The request's owner learns now; it must not touch the connection afterwards. */
        const struct engine_owner_ops *ops = c->oops;
        void *ud = c->oud;
        conn_release_owner(c);
        ops->on_client_gone(ud);
    }
}

static void conn_free(struct engine_conn *c)
{
    lr_buf_free(&c->in);
    lr_buf_free(&c->out);
    lr_buf_free(&c->hb);
    lr_buf_free(&c->body);
    free(c->refs);
    free(c->hv);
    free(c);
}

static void reap_all(struct engine_http *eh)
{
    while (eh->reap) {
        struct engine_conn *c = eh->reap;
        eh->reap = c->next;
        conn_free(c);
    }
}

/* Before the loop blocks: write what this iteration produced, resume parsing on
 * connections whose response ended, close dead ones; then free closed connections. */
static void reaper_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct engine_http *eh = w->data;
    while (eh->dirty) {
        struct engine_conn *c = eh->dirty;
        eh->dirty = c->dnext;
        c->dnext = NULL;
        c->dirty = false;
        if (c->state == EC_CLOSED)
            continue;
        if (c->dead) {
            conn_close(c);
            continue;
        }
        if (c->resume_parse) {
            c->resume_parse = false;
            if (c->state == EC_IDLE && c->in.len)
                conn_process(c);
        }
        if (c->state != EC_CLOSED && c->state != EC_LINGER)
            conn_flush(c, true);
    }
    reap_all(eh);
}

/* ---- public ---- */

struct engine_http *engine_http_new(struct ev_loop *loop, const struct engine_http_config *cfg,
                                    struct engine_gen *const *gen, struct upstream *up)
{
    struct engine_http *eh = calloc(1, sizeof(*eh));
    if (!eh)
        return NULL;
    eh->loop = loop;
    if (cfg)
        eh->cfg = *cfg;
    else
        engine_http_config_default(&eh->cfg);
    eh->gen = gen;
    eh->px.loop = loop;
    eh->px.up = up;
    eh->px.gen = gen;
    eh->px.models = models_cache_new();
    if (!eh->px.models) {
        free(eh);
        return NULL;
    }
    llhttp_settings_init(&eh->ps);
    eh->ps.on_message_begin = on_message_begin;
    eh->ps.on_url = on_url;
    eh->ps.on_header_field = on_header_field;
    eh->ps.on_header_value = on_header_value;
    eh->ps.on_headers_complete = on_headers_complete;
    eh->ps.on_body = on_body;
    eh->ps.on_message_complete = on_message_complete;
    ev_prepare_init(&eh->reaper, reaper_cb);
    eh->reaper.data = eh;
    ev_prepare_start(loop, &eh->reaper);
    ev_unref(loop); /* the reaper alone must not keep the loop alive */
    return eh;
}

void engine_http_accept(struct engine_http *eh, int fd, uint64_t conn_id)
{
    struct engine_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        lr_warn("engine: out of memory accepting a connection");
        close(fd);
        return;
    }
    c->eh = eh;
    c->id = conn_id;
    c->fd = fd;
    llhttp_init(&c->parser, HTTP_REQUEST, &eh->ps);
    c->parser.data = c;
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    c->rio.data = c;
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    c->wio.data = c;
    ev_init(&c->timer, conn_timer_cb);
    c->timer.data = c;
    c->next = eh->conns;
    if (eh->conns)
        eh->conns->prev = c;
    eh->conns = c;
    eh->n_conns++;
    stats_inc(STATS_ENGINE_CONN_OPEN);
    stats_inc(STATS_ENGINE_CONN_TOTAL);
    conn_set_state(c, EC_IDLE);
    /* A fresh connection gets the header timeout for its first byte. */
    conn_arm_timer(c, eh->cfg.header_timeout);
    ev_io_start(eh->loop, &c->rio);
    if (eh->draining)
        conn_close(c);
}

void engine_http_drain(struct engine_http *eh)
{
    eh->draining = true;
    struct engine_conn *c = eh->conns;
    while (c) {
        struct engine_conn *next = c->next;
        if (c->state == EC_IDLE && c->in.len == 0 && c->out_off >= c->out.len)
            conn_close(c);
        else
            c->close_after = true;
        c = next;
    }
}

size_t engine_http_conn_count(const struct engine_http *eh)
{
    return eh ? eh->n_conns : 0;
}

void engine_http_free(struct engine_http *eh)
{
    if (!eh)
        return;
    while (eh->conns)
        conn_close(eh->conns);
    eh->dirty = NULL;
    reap_all(eh);
    models_cache_free(eh->px.models);
    ev_ref(eh->loop);
    ev_prepare_stop(eh->loop, &eh->reaper);
    free(eh);
}
