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
#include "settings.h"
#include "stats.h"

#define EC_READ_CHUNK          (16u * 1024u)
#define EC_MAX_READS_PER_EVENT 4
#define EC_DEFAULT_MAX_BODY    (100ull * 1024 * 1024)

/* Connection states, changed only through conn_set_state(). */
enum ec_state {
    EC_IDLE = 0, /* between requests (or before the first): no request byte yet */
    EC_HEADERS,  /* request line / headers in progress: header timeout runs */
    EC_BODY,     /* body in progress: idle timeout, re-armed on each read */
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
    bool started, msg_complete, has_av, close_after;
    int err_status; /* set by a callback that aborts the parse */
};

struct engine_http {
    struct ev_loop *loop;
    struct engine_http_config cfg;
    struct agent_settings *const *settings;
    llhttp_settings_t ps;
    struct engine_conn *conns; /* active */
    struct engine_conn *reap;  /* closed, freed in the prepare watcher */
    size_t n_conns;
    bool draining;
    ev_prepare reaper;
};

static void conn_flush(struct engine_conn *c);
static void conn_close(struct engine_conn *c);

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
    {503, "server_error", "service_unavailable", "overloaded_error"},
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

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
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

static void req_reset(struct engine_conn *c)
{
    lr_buf_reset(&c->hb);
    c->url_len = 0;
    c->n_refs = 0;
    c->last_cb = 0;
    c->header_bytes = 0;
    c->body_len = 0;
    c->started = c->msg_complete = c->has_av = false;
}

/* Queues a complete response. close marks the connection to close once it is written. */
static void conn_respond(struct engine_conn *c, int status, const char *ctype, const char *body,
                         size_t len, bool head, bool close)
{
    if (c->eh->draining)
        close = true;
    bool ka10 =
        !close && llhttp_get_http_major(&c->parser) == 1 && llhttp_get_http_minor(&c->parser) == 0;
    int rc = lr_buf_printf(
        &c->out, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n%s\r\n", status,
        reason_phrase(status), ctype, len,
        close ? "connection: close\r\n" : (ka10 ? "connection: keep-alive\r\n" : ""));
    if (rc == 0 && !head && len)
        rc = lr_buf_append(&c->out, body, len);
    if (status >= 500)
        stats_inc(STATS_ENGINE_ERRORS_5XX);
    else if (status >= 400)
        stats_inc(STATS_ENGINE_ERRORS_4XX);
    if (rc < 0) {
        lr_warn("engine conn %llu: out of memory building a response", (unsigned long long)c->id);
        close = true;
    }
    if (close) {
        c->close_after = true;
        conn_set_state(c, EC_CLOSING);
        conn_arm_timer(c, c->eh->cfg.idle_timeout); /* to get the response out */
    }
}

static void conn_respond_error(struct engine_conn *c, enum engine_http_dialect d, int status,
                               const char *message, bool head, bool close)
{
    struct lr_buf b = {0};
    if (engine_http_error_body(d, status, message, &b) < 0) {
        lr_buf_free(&b);
        conn_close(c);
        return;
    }
    conn_respond(c, status, "application/json", (const char *)b.data, b.len, head, close);
    lr_buf_free(&b);
}

/* ---- dispatch: the handler table the routing engine extends ---- */

#define EM_GET  1u
#define EM_HEAD 2u
#define EM_POST 4u

/* A handler answers through engine_respond()/engine_respond_error(). */
struct engine_ctx {
    struct engine_conn *c;
    const struct engine_http_request *req;
};
typedef void (*engine_handler_fn)(struct engine_ctx *ctx);

static void engine_respond(struct engine_ctx *x, int status, const char *ctype, const char *body,
                           size_t len)
{
    conn_respond(x->c, status, ctype, body, len, x->req->head, x->c->close_after);
}

static void engine_respond_error(struct engine_ctx *x, int status, const char *message)
{
    conn_respond_error(x->c, x->req->dialect, status, message, x->req->head, x->c->close_after);
}

static void handle_healthz(struct engine_ctx *x)
{
    static const char body[] = "{\"status\":\"ok\"}";
    engine_respond(x, 200, "application/json", body, sizeof(body) - 1);
}

/* Readiness. Hook: the routing engine adds "at least one provider's circuit is not open"
 * (DESIGN §8) here, returning false with a reason. */
static bool engine_ready(const struct engine_http *eh, const char **why)
{
    if (!eh->settings || !*eh->settings) {
        *why = "settings not loaded";
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

struct engine_route {
    const char *path;
    unsigned methods;
    engine_handler_fn fn;
};

static const struct engine_route engine_routes[] = {
    {"/healthz", EM_GET | EM_HEAD, handle_healthz},
    {"/readyz", EM_GET | EM_HEAD, handle_readyz},
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

static void engine_dispatch(struct engine_conn *c, const struct engine_http_request *req)
{
    struct engine_ctx x = {c, req};
    uint8_t m = llhttp_get_method(&c->parser);
    for (size_t i = 0; i < sizeof(engine_routes) / sizeof(engine_routes[0]); i++) {
        const struct engine_route *r = &engine_routes[i];
        if (strlen(r->path) == req->path_len && memcmp(r->path, req->path, req->path_len) == 0 &&
            (r->methods & method_bit(m))) {
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
    struct engine_http_request req;
    memset(&req, 0, sizeof(req));
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
    req.conn_id = c->id;
    req.seq = c->requests;
    uint8_t m = llhttp_get_method(&c->parser);
    req.method = llhttp_method_name((llhttp_method_t)m);
    req.method_len = strlen(req.method);
    req.path = base ? base : "";
    const char *q = c->url_len ? memchr(req.path, '?', c->url_len) : NULL;
    req.path_len = q ? (size_t)(q - req.path) : c->url_len;
    req.query = q ? q + 1 : "";
    req.query_len = q ? c->url_len - req.path_len - 1 : 0;
    req.headers = c->hv;
    req.n_headers = c->n_refs;
    req.http_major = llhttp_get_http_major(&c->parser);
    req.http_minor = llhttp_get_http_minor(&c->parser);
    req.head = m == HTTP_HEAD;
    req.body_len = c->body_len;
    req.dialect = engine_http_detect_dialect(req.path, req.path_len, c->has_av);
    if (!llhttp_should_keep_alive(&c->parser))
        c->close_after = true;
    stats_inc(STATS_ENGINE_REQUESTS);
    engine_dispatch(c, &req);
    if (c->state == EC_CLOSED || c->state == EC_CLOSING)
        return;
    req_reset(c);
    conn_set_state(c, EC_IDLE);
    conn_arm_timer(c, c->eh->cfg.idle_timeout);
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
    for (size_t i = 0; i < c->n_refs; i++) {
        const struct hdr_ref *r = &c->refs[i];
        if (ref_name_is(c, r, "anthropic-version"))
            c->has_av = true;
        else if (ref_name_is(c, r, "expect") && r->val_len == 12 &&
                 strncasecmp((const char *)c->hb.data + r->val_off, "100-continue", 12) == 0)
            expect_continue = true;
    }
    const struct agent_settings *s = c->eh->settings ? *c->eh->settings : NULL;
    c->max_body = s && s->max_request_body_bytes ? s->max_request_body_bytes : EC_DEFAULT_MAX_BODY;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->max_body) {
        c->err_status = 413;
        return -1;
    }
    bool has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    if (has_body) {
        if (expect_continue && p->http_minor >= 1)
            (void)lr_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        conn_set_state(c, EC_BODY);
        conn_arm_timer(c, c->eh->cfg.idle_timeout);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    (void)at;
    struct engine_conn *c = pconn(p);
    c->body_len += len;
    if (c->body_len > c->max_body) {
        c->err_status = 413;
        return -1;
    }
    return 0; /* discarded: the routing engine will consume bodies here */
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
    conn_respond_error(c, d, status, msg, false, true);
}

/* Parses what `in` holds, dispatching each complete request in order. */
static void conn_process(struct engine_conn *c)
{
    const char *p = (const char *)c->in.data;
    const char *end = p + c->in.len;
    while (p < end && c->state < EC_CLOSING) {
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
            break;
        }
        if (c->err_status == 413)
            conn_fail(c, 413, "Request body too large");
        else if (c->err_status == 431)
            conn_fail(c, 431, "Request header fields too large");
        else
            conn_fail(c, 400, llhttp_errno_name(err));
        break;
    }
    if (c->state >= EC_CLOSING)
        lr_buf_reset(&c->in);
    else
        lr_buf_consume(&c->in, (size_t)(p - (const char *)c->in.data));
}

static void conn_start_linger(struct engine_conn *c)
{
    ev_io_stop(c->eh->loop, &c->wio);
    shutdown(c->fd, SHUT_WR);
    conn_set_state(c, EC_LINGER);
    ev_io_start(c->eh->loop, &c->rio);
    conn_arm_timer(c, c->eh->cfg.linger_timeout);
}

static void conn_flush(struct engine_conn *c)
{
    struct ev_loop *loop = c->eh->loop;
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* Back-pressure: stop reading until the client takes its responses. */
            ev_io_stop(loop, &c->rio);
            ev_io_start(loop, &c->wio);
            return;
        }
        lr_debug("engine conn %llu: send: %s", (unsigned long long)c->id, strerror(errno));
        conn_close(c);
        return;
    }
    lr_buf_reset(&c->out);
    c->out_off = 0;
    ev_io_stop(loop, &c->wio);
    if (c->state == EC_CLOSING) {
        conn_start_linger(c);
        return;
    }
    if (c->state != EC_CLOSED)
        ev_io_start(loop, &c->rio);
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct engine_conn *c = w->data;
    for (int i = 0; i < EC_MAX_READS_PER_EVENT && c->state != EC_CLOSED; i++) {
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
        if (c->state == EC_LINGER) {
            continue; /* discard */
        }
        c->in.len += (size_t)n;
        if (c->state == EC_BODY)
            conn_arm_timer(c, c->eh->cfg.idle_timeout);
        conn_process(c);
        if (c->state >= EC_CLOSING || (size_t)n < EC_READ_CHUNK)
            break;
    }
    if (c->state != EC_CLOSED && c->state != EC_LINGER)
        conn_flush(c);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_flush(w->data);
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
        conn_flush(c);
        break;
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
}

static void conn_free(struct engine_conn *c)
{
    lr_buf_free(&c->in);
    lr_buf_free(&c->out);
    lr_buf_free(&c->hb);
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

static void reaper_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    reap_all(w->data);
}

/* ---- public ---- */

struct engine_http *engine_http_new(struct ev_loop *loop, const struct engine_http_config *cfg,
                                    struct agent_settings *const *settings)
{
    struct engine_http *eh = calloc(1, sizeof(*eh));
    if (!eh)
        return NULL;
    eh->loop = loop;
    if (cfg)
        eh->cfg = *cfg;
    else
        engine_http_config_default(&eh->cfg);
    eh->settings = settings;
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
    reap_all(eh);
    ev_ref(eh->loop);
    ev_prepare_stop(eh->loop, &eh->reaper);
    free(eh);
}
