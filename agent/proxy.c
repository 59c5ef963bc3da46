#include "proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "body_peek.h"
#include "buf.h"
#include "json_io.h"
#include "log.h"
#include "metrics.h"
#include "retry_after.h"
#include "router.h"
#include "settings.h"
#include "sse.h"
#include "translate.h"
#include "upstream.h"

#define PX_MAX_ERR_BODY   (64u * 1024u) /* a retryable error response kept for the verdict */
#define PX_MAX_MODEL_LBL  200           /* model label bytes kept for metrics and logs */
#define PX_MAX_RESP_HDRS  128
#define PX_STATUS_GONE    499                   /* metrics: the client went away first */
#define PX_MAX_XLATE_BODY (64u * 1024u * 1024u) /* a non-streamed response to translate */

/* ---- generations ---- */

struct engine_gen *engine_gen_new(struct agent_settings *s, char *err, size_t errlen)
{
    struct engine_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&g->refs, 1);
    g->settings = agent_settings_ref(s);
    g->router = router_new(s, err, errlen);
    if (!g->router)
        goto fail;
    if (s->n_providers && !(g->keys = calloc(s->n_providers, sizeof(*g->keys)))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < s->n_providers; i++) {
        const char *env = s->providers[i].api_key_env;
        const char *v = env && *env ? getenv(env) : NULL;
        if (v && *v && !(g->keys[i] = strdup(v))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    const char *d = s->api_dialect ? s->api_dialect : "both";
    g->serve_openai = strcmp(d, "anthropic") != 0;
    g->serve_anthropic = strcmp(d, "openai") != 0;
    return g;
fail:
    engine_gen_unref(g);
    return NULL;
}

struct engine_gen *engine_gen_ref(struct engine_gen *g)
{
    if (g)
        atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    return g;
}

void engine_gen_unref(struct engine_gen *g)
{
    if (!g || atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (g->keys) {
        for (size_t i = 0; i < g->settings->n_providers; i++) {
            if (g->keys[i]) {
                /* keys live in memory only; do not leave them in freed heap either */
                volatile char *k = g->keys[i];
                for (size_t j = 0; k[j]; j++)
                    k[j] = 0;
                free(g->keys[i]);
            }
        }
        free(g->keys);
    }
    router_free(g->router);
    agent_settings_unref(g->settings);
    free(g);
}

const char *engine_gen_key(const struct engine_gen *g, const struct agent_provider *p)
{
    if (!g || !g->keys || !p)
        return NULL;
    const struct agent_settings *s = g->settings;
    if (p < s->providers || p >= s->providers + s->n_providers)
        return NULL;
    return g->keys[p - s->providers];
}

double proxy_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- upstream request headers ---- */

static bool name_is(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && strncasecmp(name, lit, n) == 0;
}

/* Never forwarded: hop-by-hop (RFC 9110 7.6.1) and what the transfer sets itself. */
static bool drop_request_header(const char *name, size_t len)
{
#define PX_DROP(s)                                                                                 \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
    static const struct {
        const char *name;
        size_t len;
    } drop[] = {
        PX_DROP("connection"),          PX_DROP("keep-alive"), PX_DROP("proxy-connection"),
        PX_DROP("proxy-authorization"), PX_DROP("te"),         PX_DROP("trailer"),
        PX_DROP("transfer-encoding"),   PX_DROP("upgrade"),    PX_DROP("host"),
        PX_DROP("content-length"),      PX_DROP("expect"),     PX_DROP("accept-encoding"),
    };
#undef PX_DROP
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        if (len == drop[i].len && strncasecmp(name, drop[i].name, len) == 0)
            return true;
    return false;
}

static struct curl_slist *slist_add(struct curl_slist *l, const char *line, bool *ok)
{
    struct curl_slist *n = curl_slist_append(l, line);
    if (!n) {
        *ok = false;
        return l;
    }
    return n;
}

static bool name_has_prefix(const char *name, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && strncasecmp(name, prefix, n) == 0;
}

/* The client's own credential in the other dialect's form, for a translated request with no
 * configured key: "Authorization: Bearer K" <-> "x-api-key: K". NULL when there is none. */
static const struct engine_http_header *client_credential(const struct engine_http_request *req,
                                                          bool to_anthropic, size_t *off)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        const struct engine_http_header *h = &req->headers[i];
        if (to_anthropic && name_is(h->name, h->name_len, "authorization") && h->value_len > 7 &&
            strncasecmp(h->value, "Bearer ", 7) == 0) {
            *off = 7;
            return h;
        }
        if (!to_anthropic && name_is(h->name, h->name_len, "x-api-key") && h->value_len) {
            *off = 0;
            return h;
        }
    }
    return NULL;
}

struct curl_slist *proxy_upstream_headers(const struct engine_gen *g,
                                          const struct agent_provider *p,
                                          const struct engine_http_request *req,
                                          enum router_dialect client, bool *ok)
{
    struct curl_slist *l = NULL;
    struct lr_buf line = {0};
    const char *key = engine_gen_key(g, p);
    bool to_anthropic = p->type == AGENT_PROVIDER_ANTHROPIC;
    bool xlate = to_anthropic != (client == ROUTER_ANTHROPIC);
    bool has_av = false, has_ctype = false, has_accept = false;
    *ok = true;
    for (size_t i = 0; i < req->n_headers && *ok; i++) {
        const struct engine_http_header *h = &req->headers[i];
        if (drop_request_header(h->name, h->name_len))
            continue;
        if ((key || xlate) && (name_is(h->name, h->name_len, "authorization") ||
                               name_is(h->name, h->name_len, "x-api-key")))
            continue; /* the configured key replaces the client's, in either dialect's header;
                         translated: the client's own key goes in the target's header below */
        if (xlate && name_has_prefix(h->name, h->name_len, to_anthropic ? "openai-" : "anthropic-"))
            continue; /* the source dialect's API headers mean nothing to the target */
        if (name_is(h->name, h->name_len, "anthropic-version"))
            has_av = true;
        else if (name_is(h->name, h->name_len, "content-type"))
            has_ctype = true;
        else if (name_is(h->name, h->name_len, "accept"))
            has_accept = true;
        lr_buf_reset(&line);
        /* "Name;" is how libcurl sends a header with an empty value ("Name:" removes it). */
        if (lr_buf_append(&line, h->name, h->name_len) < 0 ||
            (h->value_len ? lr_buf_append(&line, ": ", 2) < 0 ||
                                lr_buf_append(&line, h->value, h->value_len) < 0
                          : lr_buf_append(&line, ";", 1) < 0)) {
            *ok = false;
            break;
        }
        l = slist_add(l, (const char *)line.data, ok);
    }
    if (*ok && key) {
        lr_buf_reset(&line);
        if (p->type == AGENT_PROVIDER_ANTHROPIC) {
            if (lr_buf_puts(&line, "x-api-key: ") < 0 || lr_buf_puts(&line, key) < 0)
                *ok = false;
            else
                l = slist_add(l, (const char *)line.data, ok);
            if (!has_av)
                l = slist_add(l, "anthropic-version: 2023-06-01", ok);
        } else {
            if (lr_buf_puts(&line, "Authorization: Bearer ") < 0 || lr_buf_puts(&line, key) < 0)
                *ok = false;
            else
                l = slist_add(l, (const char *)line.data, ok);
        }
        /* wipe the scratch copy of the key */
        if (line.data)
            memset(line.data, 0, line.cap);
    } else if (*ok && xlate) {
        size_t off = 0;
        const struct engine_http_header *cred = client_credential(req, to_anthropic, &off);
        lr_buf_reset(&line);
        if (cred) {
            if (lr_buf_printf(&line,
                              to_anthropic ? "x-api-key: %.*s" : "Authorization: Bearer %.*s",
                              (int)(cred->value_len - off), cred->value + off) < 0)
                *ok = false;
            else
                l = slist_add(l, (const char *)line.data, ok);
            if (line.data)
                memset(line.data, 0, line.cap);
        }
        if (to_anthropic && !has_av)
            l = slist_add(l, "anthropic-version: 2023-06-01", ok);
    }
    /* Identity only: the relay forwards bytes as they come and parses event streams; a
     * compressed stream could not be split into events. */
    l = slist_add(l, "Accept-Encoding: identity", ok);
    l = slist_add(l, "Expect:", ok); /* no 100-continue round trip for big bodies */
    if (!has_ctype)
        l = slist_add(l, "Content-Type:", ok); /* not libcurl's form-urlencoded default */
    if (!has_accept)
        l = slist_add(l, "Accept:", ok); /* the client sent none: not libcurl's default either */
    lr_buf_free(&line);
    return l;
}

/* ---- the request ---- */

enum px_mode {
    PX_MODE_NONE = 0, /* no response headers yet */
    PX_MODE_BUFFER,   /* a retryable error response: kept until the verdict */
    PX_MODE_RELAY,    /* final: relayed to the client as it arrives (translated event by
                         event when the provider speaks the other dialect) */
    PX_MODE_XLATE,    /* final, not an event stream, other dialect: kept whole, translated */
};

enum px_fail { PX_FAIL_NONE = 0, PX_FAIL_CONNECT, PX_FAIL_TIMEOUT, PX_FAIL_5XX, PX_FAIL_429 };

struct proxy_req {
    struct proxy_ctx *px;
    struct engine_conn *conn;
    const struct engine_http_request *req; /* owned by the connection, valid while we own it */
    struct engine_gen *gen;
    enum router_dialect dialect;
    char model[PX_MAX_MODEL_LBL + 1];
    bool stream;
    struct router_plan plan;
    size_t cand;      /* current candidate */
    unsigned attempt; /* 1-based, on the current candidate */
    const struct agent_provider *prov;
    bool admitted; /* a verdict is owed to the router for prov */
    bool any_attempt;
    struct upstream_xfer *xfer;
    struct lr_buf url;
    ev_timer retry_timer, ka_timer;
    double t_start, t_attempt;
    /* the current attempt */
    enum px_mode mode;
    int status;
    double retry_after;
    bool sse, paused, write_failed, ttft_done;
    struct sse_parser sp;
    bool sp_init;
    struct lr_buf cur_hdrs, cur_body; /* PX_MODE_BUFFER: name\0value\0 pairs, body */
    /* the last upstream error response, relayed when nothing is left */
    int last_status;
    struct lr_buf last_hdrs, last_body;
    enum px_fail last_fail;
    bool last_other_dialect; /* the last error response is in the provider's dialect */
    /* The parsed body, kept when a candidate needs a translation or a switch notification;
     * out_body: what goes to the current candidate instead of the client's bytes. */
    json_t *root;
    char *out_body;
    size_t out_body_len;
    enum router_switch_reason sw_reason;
    /* translation (the current candidate speaks the other dialect) */
    bool xlate, include_usage, xfailed;
    const char *xerr; /* why the request could not be translated (static) */
    char xerr_buf[200];
    struct tr_stream *trs;
    struct lr_buf xout;
};

static void px_next(struct proxy_req *r);
static void px_free(struct proxy_req *r);

static enum router_dialect px_prov_dialect(const struct agent_provider *p)
{
    return p->type == AGENT_PROVIDER_ANTHROPIC ? ROUTER_ANTHROPIC : ROUTER_OPENAI;
}

static enum tr_dialect px_tr(enum router_dialect d)
{
    return d == ROUTER_ANTHROPIC ? TR_ANTHROPIC : TR_OPENAI;
}

/* Dropped-field reports, by the direction of the translation at hand. */
static void px_drop_to_anthropic(void *ud, const char *field)
{
    (void)ud;
    metrics_translation_dropped(1, field);
}

static void px_drop_to_openai(void *ud, const char *field)
{
    (void)ud;
    metrics_translation_dropped(0, field);
}

static tr_drop_fn px_drop_fn(enum router_dialect to)
{
    return to == ROUTER_ANTHROPIC ? px_drop_to_anthropic : px_drop_to_openai;
}

static const char *px_prov_name(const struct proxy_req *r)
{
    return r->prov ? r->prov->name : "";
}

static double px_rand01(void)
{
    static _Thread_local uint64_t s;
    if (!s)
        s = (uint64_t)proxy_now() * 6364136223846793005ull ^ (uint64_t)(uintptr_t)&s;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (double)(s >> 11) / 9007199254740992.0;
}

static void px_metrics_done(struct proxy_req *r, int status)
{
    metrics_request(px_prov_name(r), r->model, status, proxy_now() - r->t_start);
    if (r->sp_init && r->sp.events)
        metrics_stream_chunks(px_prov_name(r), r->sp.events);
}

static void px_client_gone(void *ud)
{
    struct proxy_req *r = ud;
    if (r->xfer) {
        upstream_cancel(r->xfer);
        r->xfer = NULL;
        metrics_upstream(px_prov_name(r), proxy_now() - r->t_attempt);
        metrics_upstream_active(px_prov_name(r), -1);
    }
    if (r->admitted) {
        router_report(r->gen->router, r->prov, ROUTER_ABANDONED, -1, proxy_now());
        r->admitted = false;
    }
    lr_debug("engine conn %llu: client went away, upstream cancelled",
             (unsigned long long)engine_conn_id(r->conn));
    r->conn = NULL;
    px_metrics_done(r, PX_STATUS_GONE);
    px_free(r);
}

static void px_drain(void *ud)
{
    struct proxy_req *r = ud;
    if (r->paused && r->xfer) {
        r->paused = false;
        upstream_resume(r->xfer);
    }
}

static const struct engine_owner_ops px_owner_ops = {px_client_gone, px_drain};

/* Ends the client's request with a JSON error in its dialect and frees r. */
static void px_fail_json(struct proxy_req *r, int status, const char *msg)
{
    px_metrics_done(r, status);
    engine_conn_respond_error(r->conn, status, msg);
    px_free(r);
}

/* Answers with status, the kept upstream headers (name\0value\0 pairs) and body, and frees
 * r. json_body: the body was re-written (translated): the upstream's content-type and
 * content-encoding no longer apply. */
static void px_send_kept(struct proxy_req *r, int status, const struct lr_buf *hdrs,
                         const void *body, size_t len, bool json_body)
{
    struct engine_http_header h[PX_MAX_RESP_HDRS];
    size_t n = 0;
    const char *p = (const char *)hdrs->data;
    const char *end = p + hdrs->len;
    while (p && p < end && n < PX_MAX_RESP_HDRS - 1) {
        size_t nl = strlen(p);
        const char *v = p + nl + 1;
        size_t vl = strlen(v);
        if (!json_body || !(name_is(p, nl, "content-type") || name_is(p, nl, "content-encoding")))
            h[n++] = (struct engine_http_header){p, nl, v, vl};
        p = v + vl + 1;
    }
    if (json_body)
        h[n++] = (struct engine_http_header){"Content-Type", 12, "application/json", 16};
    px_metrics_done(r, status);
    if (engine_conn_begin(r->conn, status, h, n, (int64_t)len) == 0 && len)
        (void)engine_conn_write(r->conn, body, len);
    engine_conn_end(r->conn, false);
    px_free(r);
}

/* An upstream error response (status, body in the provider's dialect) in the client's
 * dialect: malloc'd compact JSON, *status_out set; NULL on allocation failure. */
static char *px_translate_error(struct proxy_req *r, int status, const struct lr_buf *body,
                                enum router_dialect from, int *status_out, size_t *len)
{
    json_error_t e;
    json_t *in = body->len ? json_io_loadb((const char *)body->data, body->len, &e) : NULL;
    json_t *out = tr_error(px_tr(from), px_tr(r->dialect), status, in, status_out);
    *len = 0;
    char *text = out ? json_io_dumps(out, len) : NULL;
    json_decref(in);
    json_decref(out);
    return text;
}

/* Nothing left to try: the last upstream error response as the provider sent it (translated
 * into the client's dialect when the provider speaks the other one), else a gateway error. */
static void px_exhausted(struct proxy_req *r)
{
    if (r->last_status && r->last_other_dialect) {
        enum router_dialect from =
            r->dialect == ROUTER_ANTHROPIC ? ROUTER_OPENAI : ROUTER_ANTHROPIC;
        int st = r->last_status;
        size_t len;
        char *text = px_translate_error(r, r->last_status, &r->last_body, from, &st, &len);
        if (text) {
            struct lr_buf hdrs = r->last_hdrs; /* px_send_kept frees r */
            r->last_hdrs = (struct lr_buf){0};
            px_send_kept(r, st, &hdrs, text, len, true);
            lr_buf_free(&hdrs);
            free(text);
            return;
        }
    }
    if (r->last_status) {
        px_send_kept(r, r->last_status, &r->last_hdrs, r->last_body.data, r->last_body.len, false);
        return;
    }
    if (!r->any_attempt) {
        if (r->xerr)
            px_fail_json(r, 400, r->xerr);
        else
            px_fail_json(r, 503, "No provider available for this request");
        return;
    }
    if (r->last_fail == PX_FAIL_TIMEOUT)
        px_fail_json(r, 504, "The upstream provider timed out");
    else
        px_fail_json(r, 502, "The upstream provider could not be reached");
}

static int px_on_event(void *ud, const struct sse_event *ev)
{
    struct proxy_req *r = ud;
    if (ev->kind == SSE_EVENT_DATA && !r->ttft_done) {
        r->ttft_done = true;
        metrics_ttft(px_prov_name(r), proxy_now() - r->t_start);
    }
    if (!r->trs)
        return 0;
    /* translated relay: the event in the client's dialect, written whole */
    lr_buf_reset(&r->xout);
    int rc = tr_stream_feed(r->trs, ev->event, ev->event_len, ev->data, ev->data_len,
                            px_drop_fn(r->dialect), r, &r->xout);
    if (rc < 0) {
        r->xfailed = true;
        return rc;
    }
    if (r->xout.len && engine_conn_write(r->conn, r->xout.data, r->xout.len) < 0) {
        r->write_failed = true;
        return -1;
    }
    return 0;
}

static void px_ka_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct proxy_req *r = w->data;
    /* a translated stream is written event by event: always at a boundary */
    if (r->mode != PX_MODE_RELAY || r->paused || (!r->trs && (!r->sp.at_boundary || r->sp.failed)))
        return;
    static const char ka[] = ": keep-alive\n\n";
    (void)engine_conn_write(r->conn, ka, sizeof(ka) - 1);
}

static int px_on_headers(void *ud, int status, const struct upstream_header *uh, size_t n)
{
    struct proxy_req *r = ud;
    r->status = status;
    bool retryable = status == 429 || status >= 500;
    struct engine_http_header h[PX_MAX_RESP_HDRS];
    size_t nh = 0;
    int64_t clen = -1;
    for (size_t i = 0; i < n; i++)
        if (name_is(uh[i].name, strlen(uh[i].name), "content-type") &&
            strncasecmp(uh[i].value, "text/event-stream", 17) == 0)
            r->sse = true;
    for (size_t i = 0; i < n; i++) {
        const char *name = uh[i].name, *value = uh[i].value;
        size_t nl = strlen(name);
        if (name_is(name, nl, "content-length")) {
            char *e;
            errno = 0;
            long long v = strtoll(value, &e, 10);
            if (!errno && e != value && *e == 0 && v >= 0)
                clen = v;
            continue;
        }
        if (name_is(name, nl, "connection") || name_is(name, nl, "keep-alive") ||
            name_is(name, nl, "proxy-connection") || name_is(name, nl, "transfer-encoding") ||
            name_is(name, nl, "te") || name_is(name, nl, "trailer") ||
            name_is(name, nl, "upgrade") || name_is(name, nl, "proxy-authenticate"))
            continue;
        double ra;
        if (status == 429 && name_is(name, nl, "retry-after") &&
            retry_after_parse(value, strlen(value), time(NULL), &ra) == 0)
            r->retry_after = ra;
        if (retryable || (r->xlate && !r->sse)) {
            if (lr_buf_append(&r->cur_hdrs, name, nl + 1) < 0 ||
                lr_buf_append(&r->cur_hdrs, value, strlen(value) + 1) < 0)
                return -1;
        } else if (nh < PX_MAX_RESP_HDRS) {
            h[nh++] = (struct engine_http_header){name, nl, value, strlen(value)};
        }
    }
    if (retryable) {
        r->mode = PX_MODE_BUFFER;
        return 0;
    }
    /* Final: the provider answered. */
    if (r->admitted) {
        router_report(r->gen->router, r->prov, ROUTER_OK, -1, proxy_now());
        r->admitted = false;
    }
    if (r->xlate && !r->sse) {
        r->mode = PX_MODE_XLATE; /* kept whole, translated when complete */
        return 0;
    }
    r->mode = PX_MODE_RELAY;
    if (r->xlate) {
        clen = -1; /* the translated stream is another length */
        if (status >= 200 && status < 300 &&
            !(r->trs = tr_stream_new(px_tr(px_prov_dialect(r->prov)), r->model, r->include_usage,
                                     (int64_t)time(NULL)))) {
            r->write_failed = true;
            return -1;
        }
    }
    if (engine_conn_begin(r->conn, status, h, nh, clen) < 0) {
        r->write_failed = true;
        return -1;
    }
    if (r->sse) {
        sse_parser_init(&r->sp);
        r->sp_init = true;
        const struct agent_settings *s = r->gen->settings;
        double ka = s->sse_keepalive_interval_secs ? s->sse_keepalive_interval_secs : 15;
        ev_timer_init(&r->ka_timer, px_ka_cb, ka, ka);
        r->ka_timer.data = r;
        ev_timer_start(r->px->loop, &r->ka_timer);
    }
    return 0;
}

static int px_on_data(void *ud, const char *p, size_t len)
{
    struct proxy_req *r = ud;
    if (r->mode == PX_MODE_BUFFER) {
        size_t room = PX_MAX_ERR_BODY - r->cur_body.len;
        if (len > room)
            len = room;
        if (len && lr_buf_append(&r->cur_body, p, len) < 0)
            return UPSTREAM_DATA_ABORT;
        return UPSTREAM_DATA_OK;
    }
    if (r->mode == PX_MODE_XLATE) {
        if (len > PX_MAX_XLATE_BODY - r->cur_body.len || lr_buf_append(&r->cur_body, p, len) < 0) {
            r->xfailed = true;
            return UPSTREAM_DATA_ABORT;
        }
        return UPSTREAM_DATA_OK;
    }
    if (r->mode != PX_MODE_RELAY)
        return UPSTREAM_DATA_OK;
    if (engine_conn_congested(r->conn)) {
        r->paused = true;
        engine_conn_want_drain(r->conn);
        return UPSTREAM_DATA_PAUSE;
    }
    if (!r->trs && engine_conn_write(r->conn, p, len) < 0) {
        r->write_failed = true;
        return UPSTREAM_DATA_ABORT;
    }
    if (r->sp_init) {
        if (!r->sp.failed) {
            int rc = sse_feed(&r->sp, p, len, px_on_event, r);
            if (rc < 0 && r->trs) {
                /* nothing can be relayed that was not translated */
                r->xfailed = !r->write_failed;
                return UPSTREAM_DATA_ABORT;
            }
            if (rc < 0)
                lr_debug("engine conn %llu: event stream not parseable (%d), relaying as is",
                         (unsigned long long)engine_conn_id(r->conn), rc);
        } else if (r->trs) {
            return UPSTREAM_DATA_ABORT;
        }
        ev_timer_again(r->px->loop, &r->ka_timer);
    } else if (r->trs) {
        return UPSTREAM_DATA_ABORT; /* cannot happen: a translated relay is an event stream */
    }
    return UPSTREAM_DATA_OK;
}

/* Ends a stream that broke after its first byte: an error event in the client's dialect,
 * never a clean end; the connection closes after it. */
static void px_stream_error(struct proxy_req *r, const char *msg)
{
    if (!r->trs && (!r->sp.at_boundary || r->sp.failed))
        (void)engine_conn_write(r->conn, "\n\n", 2);
    json_t *m = json_string(msg && *msg ? msg : "upstream stream interrupted");
    if (!m)
        m = json_string("upstream stream interrupted");
    json_t *o;
    if (r->dialect == ROUTER_ANTHROPIC)
        o = json_pack("{s:s,s:{s:s,s:o}}", "type", "error", "error", "type", "api_error", "message",
                      m);
    else
        o = json_pack("{s:{s:o,s:s,s:s}}", "error", "message", m, "type", "upstream_error", "code",
                      "stream_interrupted");
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s) {
        struct lr_buf b = {0};
        if (r->dialect == ROUTER_ANTHROPIC)
            (void)lr_buf_printf(&b, "event: error\ndata: %s\n\n", s);
        else
            (void)lr_buf_printf(&b, "data: %s\n\n", s);
        if (b.len)
            (void)engine_conn_write(r->conn, b.data, b.len);
        lr_buf_free(&b);
        free(s);
    }
    engine_conn_end(r->conn, true);
}

static void px_retry_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void px_attempt(struct proxy_req *r);
static void px_xlate_done(struct proxy_req *r, CURLcode code, const char *error);

/* An attempt failed before any byte reached the client. */
static void px_attempt_failed(struct proxy_req *r, enum px_fail f)
{
    double now = proxy_now();
    r->last_fail = f;
    r->sw_reason = f == PX_FAIL_429 ? ROUTER_SWITCH_RATE_LIMIT : ROUTER_SWITCH_SERVICE_ISSUE;
    if (f == PX_FAIL_429) {
        router_report(r->gen->router, r->prov, ROUTER_RATE_LIMITED, r->retry_after, now);
        r->admitted = false;
        if (r->cand + 1 < r->plan.n)
            metrics_fallback(METRICS_FALLBACK_RATE_LIMITED);
        r->cand++;
        px_next(r);
        return;
    }
    router_report(r->gen->router, r->prov, ROUTER_FAILED, -1, now);
    r->admitted = false;
    if (r->attempt <= r->prov->max_retries) {
        metrics_retry(r->prov->name);
        double d = router_backoff(r->attempt, px_rand01());
        r->attempt++;
        ev_timer_init(&r->retry_timer, px_retry_cb, d, 0.);
        r->retry_timer.data = r;
        ev_timer_start(r->px->loop, &r->retry_timer);
        return;
    }
    if (r->cand + 1 < r->plan.n)
        metrics_fallback(f == PX_FAIL_TIMEOUT   ? METRICS_FALLBACK_TIMEOUT
                         : f == PX_FAIL_CONNECT ? METRICS_FALLBACK_CONNECT
                                                : METRICS_FALLBACK_5XX);
    r->cand++;
    px_next(r);
}

static void px_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct proxy_req *r = w->data;
    if (!router_admit(r->gen->router, r->prov, proxy_now())) {
        r->sw_reason = ROUTER_SWITCH_CIRCUIT_BREAKER;
        if (r->cand + 1 < r->plan.n)
            metrics_fallback(METRICS_FALLBACK_CIRCUIT_OPEN);
        r->cand++;
        px_next(r);
        return;
    }
    r->admitted = true;
    px_attempt(r);
}

static void px_reset_attempt(struct proxy_req *r)
{
    r->mode = PX_MODE_NONE;
    r->status = 0;
    r->retry_after = -1;
    r->sse = false;
    lr_buf_reset(&r->cur_hdrs);
    lr_buf_reset(&r->cur_body);
}

static void px_on_done(void *ud, CURLcode code, const char *error)
{
    struct proxy_req *r = ud;
    r->xfer = NULL;
    metrics_upstream(px_prov_name(r), proxy_now() - r->t_attempt);
    metrics_upstream_active(px_prov_name(r), -1);
    if (r->mode == PX_MODE_RELAY) {
        if (r->sp_init)
            ev_timer_stop(r->px->loop, &r->ka_timer);
        px_metrics_done(r, r->status);
        if (r->write_failed) {
            engine_conn_abort(r->conn);
        } else if (r->xfailed) {
            lr_info("engine conn %llu: the event stream from %s could not be translated",
                    (unsigned long long)engine_conn_id(r->conn), px_prov_name(r));
            px_stream_error(r, "the upstream event stream could not be translated");
        } else if (code == CURLE_OK) {
            bool ok_status = r->status >= 200 && r->status < 300;
            if (r->sp_init && !r->sp.failed)
                (void)sse_finish(&r->sp, px_on_event, r);
            bool ended = r->trs ? tr_stream_done(r->trs) || tr_stream_errored(r->trs)
                                : r->sp.seen_end || r->sp.seen_error;
            if (r->write_failed)
                engine_conn_abort(r->conn);
            else if (r->xfailed)
                px_stream_error(r, "the upstream event stream could not be translated");
            else if (r->sp_init && ok_status && !ended)
                px_stream_error(r, "upstream stream ended before its final event");
            else
                engine_conn_end(r->conn, false);
        } else if (r->sp_init) {
            lr_info("engine conn %llu: stream from %s broke: %s",
                    (unsigned long long)engine_conn_id(r->conn), px_prov_name(r),
                    error ? error : curl_easy_strerror(code));
            px_stream_error(r, error && *error ? error : curl_easy_strerror(code));
        } else {
            lr_info("engine conn %llu: response from %s broke: %s",
                    (unsigned long long)engine_conn_id(r->conn), px_prov_name(r),
                    error ? error : curl_easy_strerror(code));
            engine_conn_abort(r->conn); /* never a truncated body that looks complete */
        }
        px_free(r);
        return;
    }
    if (r->mode == PX_MODE_XLATE) {
        px_xlate_done(r, code, error);
        return;
    }
    if (r->mode == PX_MODE_BUFFER) {
        /* A 5xx or 429 (possibly cut short): the newest error response the client may see. */
        struct lr_buf t = r->last_hdrs;
        r->last_hdrs = r->cur_hdrs;
        r->cur_hdrs = t;
        t = r->last_body;
        r->last_body = r->cur_body;
        r->cur_body = t;
        r->last_status = r->status;
        r->last_other_dialect = r->xlate;
        lr_debug("engine conn %llu: %s answered %d", (unsigned long long)engine_conn_id(r->conn),
                 px_prov_name(r), r->status);
        px_attempt_failed(r, r->status == 429 ? PX_FAIL_429 : PX_FAIL_5XX);
        return;
    }
    lr_debug("engine conn %llu: %s failed: %s", (unsigned long long)engine_conn_id(r->conn),
             px_prov_name(r), error ? error : curl_easy_strerror(code));
    px_attempt_failed(r, code == CURLE_OPERATION_TIMEDOUT ? PX_FAIL_TIMEOUT : PX_FAIL_CONNECT);
}

/* PX_MODE_XLATE: the provider's whole (non-stream) answer, translated into the client's
 * dialect: a 2xx response with tr_response, anything else as an error with tr_error. */
static void px_xlate_done(struct proxy_req *r, CURLcode code, const char *error)
{
    if (code != CURLE_OK || r->xfailed) {
        lr_info("engine conn %llu: response from %s broke: %s",
                (unsigned long long)engine_conn_id(r->conn), px_prov_name(r),
                r->xfailed ? "too large to translate"
                           : (error && *error ? error : curl_easy_strerror(code)));
        px_fail_json(r, 502, "The upstream response could not be read");
        return;
    }
    enum router_dialect from = px_prov_dialect(r->prov);
    int status = r->status;
    size_t len = 0;
    char *text = NULL;
    if (status >= 200 && status < 300) {
        json_error_t e;
        json_t *in = json_io_loadb((const char *)r->cur_body.data, r->cur_body.len, &e);
        json_t *out = in ? tr_response(px_tr(from), px_tr(r->dialect), in, (int64_t)time(NULL),
                                       px_drop_fn(r->dialect), r)
                         : NULL;
        text = out ? json_io_dumps(out, &len) : NULL;
        json_decref(in);
        json_decref(out);
        if (!text) {
            lr_info("engine conn %llu: the response from %s could not be translated",
                    (unsigned long long)engine_conn_id(r->conn), px_prov_name(r));
            px_fail_json(r, 502, "The upstream response could not be translated");
            return;
        }
    } else if (!(text = px_translate_error(r, status, &r->cur_body, from, &status, &len))) {
        px_fail_json(r, 502, "Out of memory");
        return;
    }
    struct lr_buf hdrs = r->cur_hdrs; /* px_send_kept frees r */
    r->cur_hdrs = (struct lr_buf){0};
    px_send_kept(r, status, &hdrs, text, len, true);
    lr_buf_free(&hdrs);
    free(text);
}

static const struct upstream_callbacks px_callbacks = {px_on_headers, px_on_data, px_on_done};

static void px_attempt(struct proxy_req *r)
{
    const struct agent_provider *p = r->prov;
    const struct engine_http_request *req = r->req;
    char err[256] = "no upstream";
    px_reset_attempt(r);
    r->any_attempt = true;
    r->t_attempt = proxy_now();
    lr_buf_reset(&r->url);
    bool ok = true;
    struct curl_slist *hdrs = NULL;
    if (r->xlate) /* the target dialect's endpoint; the client's query belongs to its API */
        ok = lr_buf_printf(&r->url, "%s%s", p->base_url,
                           p->type == AGENT_PROVIDER_ANTHROPIC ? "/v1/messages"
                                                               : "/v1/chat/completions") >= 0;
    else if (lr_buf_puts(&r->url, p->base_url) < 0 ||
             lr_buf_append(&r->url, req->path, req->path_len) < 0 ||
             (req->query_len && (lr_buf_append(&r->url, "?", 1) < 0 ||
                                 lr_buf_append(&r->url, req->query, req->query_len) < 0)))
        ok = false;
    if (ok)
        hdrs = proxy_upstream_headers(r->gen, p, req, r->dialect, &ok);
    if (ok && r->px->up) {
        struct upstream_request ur = {
            .method = "POST",
            .url = (const char *)r->url.data,
            .headers = hdrs,
            .body = r->out_body ? r->out_body : req->body,
            .body_len = r->out_body ? r->out_body_len : (size_t)req->body_len,
            .timeout_secs = (long)p->timeout_secs,
            .connect_timeout_secs = (long)p->connect_timeout_secs,
        };
        hdrs = NULL; /* the transfer owns them, even on failure */
        metrics_upstream_active(p->name, 1);
        r->xfer = upstream_start(r->px->up, &ur, &px_callbacks, r, err, sizeof(err));
        if (r->xfer)
            return;
        metrics_upstream_active(p->name, -1);
    }
    curl_slist_free_all(hdrs);
    lr_warn("engine conn %llu: cannot start a request to %s: %s",
            (unsigned long long)engine_conn_id(r->conn), p->name, ok ? err : "out of memory");
    px_attempt_failed(r, PX_FAIL_CONNECT);
}

/* The body for the current candidate (r->out_body; NULL: the client's bytes unchanged):
 *  - provider_switch_notification: for a provider other than the plan's first, the
 *    configured notice is injected (router_switch_inject); on any failure there the
 *    conversation goes without it;
 *  - translation: a provider of the other dialect gets the request translated (translate.h).
 * -1 when the request cannot be translated for this candidate (r->xerr says why). */
static int px_prepare_body(struct proxy_req *r)
{
    free(r->out_body);
    r->out_body = NULL;
    r->out_body_len = 0;
    r->xlate = px_prov_dialect(r->prov) != r->dialect;
    json_t *copy = NULL;
    const char *tmpl = router_switch_message(r->gen->router);
    if (tmpl && r->root && r->prov != r->plan.p[0]) {
        char *msg =
            router_switch_format(tmpl, r->plan.p[0]->name, r->prov->name, r->sw_reason, r->model);
        copy = msg ? json_deep_copy(r->root) : NULL;
        if (copy && router_switch_inject(copy, r->dialect, msg) != 1) {
            json_decref(copy);
            copy = NULL;
        }
        free(msg);
    }
    json_t *body = copy;
    if (r->xlate) {
        enum router_dialect to = px_prov_dialect(r->prov);
        struct tr_opts o = {.default_max_tokens = r->gen->settings->default_max_tokens};
        body = r->root ? tr_request(px_tr(r->dialect), px_tr(to), copy ? copy : r->root, &o,
                                    px_drop_fn(to), r, r->xerr_buf, sizeof(r->xerr_buf))
                       : NULL;
        json_decref(copy);
        if (!body) {
            r->xerr =
                r->root && r->xerr_buf[0] ? r->xerr_buf : "The request could not be translated";
            return -1;
        }
        metrics_translation(to == ROUTER_ANTHROPIC);
    }
    if (body) {
        r->out_body_len = 0;
        r->out_body = json_io_dumps(body, &r->out_body_len);
        json_decref(body);
        if (!r->out_body && r->xlate) {
            r->xerr = "Out of memory";
            return -1;
        }
    }
    return 0;
}

/* The next admitted candidate from r->cand, or the end. */
static void px_next(struct proxy_req *r)
{
    double now = proxy_now();
    for (; r->cand < r->plan.n; r->cand++) {
        const struct agent_provider *p = r->plan.p[r->cand];
        if (!router_admit(r->gen->router, p, now)) {
            r->sw_reason = ROUTER_SWITCH_CIRCUIT_BREAKER;
            if (r->cand + 1 < r->plan.n)
                metrics_fallback(METRICS_FALLBACK_CIRCUIT_OPEN);
            continue;
        }
        r->prov = p;
        if (px_prepare_body(r) < 0) {
            lr_debug("engine conn %llu: cannot translate for %s: %s",
                     (unsigned long long)engine_conn_id(r->conn), p->name, r->xerr);
            router_report(r->gen->router, p, ROUTER_ABANDONED, -1, now);
            continue;
        }
        r->admitted = true;
        r->attempt = 1;
        px_attempt(r);
        return;
    }
    px_exhausted(r);
}

static void px_free(struct proxy_req *r)
{
    if (!r)
        return;
    struct ev_loop *loop = r->px->loop;
    ev_timer_stop(loop, &r->retry_timer);
    if (r->sp_init) {
        ev_timer_stop(loop, &r->ka_timer);
        sse_parser_free(&r->sp);
    }
    lr_buf_free(&r->url);
    lr_buf_free(&r->cur_hdrs);
    lr_buf_free(&r->cur_body);
    lr_buf_free(&r->last_hdrs);
    lr_buf_free(&r->last_body);
    json_decref(r->root);
    free(r->out_body);
    tr_stream_free(r->trs);
    lr_buf_free(&r->xout);
    engine_gen_unref(r->gen);
    free(r);
}

/* Reads "model" and "stream" from the body; the body itself is forwarded untouched. The
 * fast path (body_peek: yajl, no tree) answers most bodies; what it cannot be sure of goes
 * through jansson (*keep then receives the tree, which a translation may reuse). */
static int px_read_body(const char *body, size_t len, char *model, size_t model_size, bool *stream,
                        json_t **keep, const char **why)
{
    struct body_peek bp;
    enum body_peek_result rc = body_peek(body, len, model, model_size, &bp);
    if (rc == BODY_PEEK_UNSURE)
        rc = body_peek_tree(body, len, model, model_size, &bp, keep);
    switch (rc) {
    case BODY_PEEK_OK:
        break;
    case BODY_PEEK_NOT_OBJECT:
        *why = "The request body must be a JSON object";
        return -1;
    case BODY_PEEK_INVALID:
    case BODY_PEEK_UNSURE:
    case BODY_PEEK_RESULT_COUNT:
    default:
        *why = "The request body is not valid JSON";
        return -1;
    }
    if (!bp.has_model || bp.model_len == 0) {
        json_decref(*keep);
        *keep = NULL;
        *why = "The request body has no \"model\" string";
        return -1;
    }
    *stream = bp.stream;
    return 0;
}

void proxy_handle(struct proxy_ctx *px, struct engine_conn *c,
                  const struct engine_http_request *req)
{
    struct engine_gen *g = px->gen ? *px->gen : NULL;
    if (!g) {
        engine_conn_respond_error(c, 503, "Settings are not loaded");
        return;
    }
    /* malloc, not calloc: glibc's calloc skips the thread cache (~200 instructions more) */
    struct proxy_req *r = malloc(sizeof(*r));
    if (!r) {
        engine_conn_respond_error(c, 503, "Out of memory");
        return;
    }
    *r = (struct proxy_req){0};
    r->t_start = proxy_now();
    r->px = px;
    r->conn = c;
    r->req = req;
    r->dialect = req->dialect == ENGINE_DIALECT_ANTHROPIC ? ROUTER_ANTHROPIC : ROUTER_OPENAI;
    r->retry_after = -1;
    ev_init(&r->retry_timer, px_retry_cb);
    r->retry_timer.data = r;
    const char *why = NULL;
    if (px_read_body(req->body, (size_t)req->body_len, r->model, sizeof(r->model), &r->stream,
                     &r->root, &why) < 0) {
        free(r);
        engine_conn_respond_error(c, 400, why);
        return;
    }
    r->gen = engine_gen_ref(g);
    size_t n = router_plan(g->router, r->dialect, r->model, strlen(r->model), r->t_start, &r->plan);
    if (n == 0) {
        px_fail_json(r, 503, "No provider is configured for this API");
        return;
    }
    /* The parsed body is kept only when some candidate needs it rewritten. */
    bool keep = router_switch_message(g->router) != NULL;
    for (size_t i = 0; i < n && !keep; i++)
        keep = px_prov_dialect(r->plan.p[i]) != r->dialect;
    if (keep && !r->root) {
        json_error_t e;
        r->root = json_io_loadb(req->body, (size_t)req->body_len, &e);
        if (!json_is_object(r->root)) { /* cannot happen: body_peek agreed with jansson */
            px_fail_json(r, 400, "The request body is not valid JSON");
            return;
        }
    }
    if (keep) {
        const json_t *so = json_object_get(r->root, "stream_options");
        r->include_usage = json_is_true(json_object_get(so, "include_usage"));
    } else {
        json_decref(r->root);
        r->root = NULL;
    }
    engine_conn_own(c, &px_owner_ops, r);
    px_next(r);
}
