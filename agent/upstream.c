/* Egress to providers: one libcurl multi per loop thread, driven by libev.
 *
 * Wiring (curl's evhiperfifo shape, with its timer fixed):
 *   CURLMOPT_SOCKETFUNCTION -> one ev_io per socket (struct up_sock, curl_multi_assign'ed);
 *   CURLMOPT_TIMERFUNCTION  -> one ev_timer armed for timeout_ms / 1000.0; libcurl is never
 *                              called from the timer function.
 *
 * Re-entrancy: consumer callbacks (on_headers, on_data) run inside libcurl callbacks, where
 * libcurl refuses most multi calls. u->in_curl counts the libcurl calls on the stack; while it
 * is non-zero, upstream_start/resume/cancel only record what to do on the transfer and arm the
 * "kick" timer (0 s), whose callback performs it from the loop. on_done is only ever called
 * from the loop, after curl_multi_socket_action has returned.
 *
 * Work due now (the kick, or a 0 ms timeout from libcurl, which it asks for right after every
 * curl_multi_add_handle) is done by an ev_prepare watcher, just before the loop would poll: a
 * transfer started from an I/O callback leaves in the same iteration. A 0 s timer would cost
 * one more iteration, with an empty epoll_wait, per request. The 0 s timers stay armed as the
 * fallback for work the prepare watcher does not reach (created after it ran, or beyond its
 * round limit), and it stops them when it does the work. */
#include "upstream.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"

#define UP_MAX_CONNECTS      64L
#define UP_HDR_BYTES_MAX     (64u * 1024u) /* header block of one response */
#define UP_HDR_COUNT_MAX     256u
#define UP_HDR_COUNT_INITIAL 32u
/* Idle easy handles kept for reuse: curl_easy_init/cleanup per request cost more than the
 * request's own work on a fast upstream. */
#define UP_EASY_POOL 64u
/* A pooled handle whose last transfer was a plain POST that libcurl ended well, sent once,
 * keeps its options: curl_easy_reset and setting the constant ones again cost ~4k
 * instructions. The next transfer sets every option that varies; a handle used any other way
 * is reset. Sent once: curl_easy_reset is the only thing that zeroes libcurl's count of
 * requests re-sent on a connection found dead (state.retrycount, at most 5 per handle), and
 * every re-send calls CURLOPT_PREREQFUNCTION again. */
#if LIBCURL_VERSION_NUM >= 0x075000
#define UP_EASY_KEEP 1
#else
#define UP_EASY_KEEP 0 /* no CURLOPT_PREREQFUNCTION: always reset */
#endif
/* Parsed URLs (CURLOPT_CURLU) kept by string: a provider's endpoint is parsed once, not by
 * libcurl on every transfer. URLs with a query are not kept. */
#define UP_URL_CACHE 8u

/* Rounds of due-now work per prepare: work done in a round may create more (libcurl asks
 * for 0 ms again, a consumer callback starts or resumes a transfer). What is left after the
 * last round waits for the 0 s timers: one more iteration, not a busy prepare. */
#define UP_PREPARE_ROUNDS 8

/* Deferred work on a transfer, done by the kick (timer or prepare watcher). */
#define UP_PEND_ADD    0x1u /* curl_multi_add_handle */
#define UP_PEND_RESUME 0x2u /* curl_easy_pause(CURLPAUSE_CONT) */
#define UP_PEND_FAIL   0x4u /* finish with fail_code */

struct up_sock {
    struct upstream *u;
    struct up_sock *prev, *next;
    curl_socket_t fd;
    ev_io io;
};

struct up_url {
    char *url; /* NULL: free slot */
    CURLU *h;
    char *norm;    /* h as libcurl prints it (curl_free) */
    unsigned refs; /* transfers using h: it is not freed before they end */
    uint64_t used; /* LRU stamp */
};

struct upstream_xfer {
    struct upstream *u;
    struct up_url *url;                          /* the cached parsed URL in use, or NULL */
    struct upstream_xfer *prev, *next;           /* u->xfers */
    struct upstream_xfer *pend_prev, *pend_next; /* u->pend_head, when pend != 0 or cancelled */
    CURL *easy;
    struct upstream_callbacks cb;
    void *ud;
    struct curl_slist *headers;

    unsigned pend;     /* UP_PEND_* */
    bool on_pend_list; /* linked on u->pend_* */
    bool in_multi;     /* added to u->multi */
    bool headers_done; /* on_headers delivered (or attempted) */
    bool cancelled;    /* no more callbacks; freed at the next safe point */
    bool aborted;      /* a callback asked to stop: every later libcurl callback returns 0 */
    bool finishing;    /* on_done is running: cancel is a no-op */
    bool reuse_easy;   /* ended by libcurl (not cancelled mid-way, never left paused) */
    bool easy_kept;    /* x->easy came from the pool with its options (UP_EASY_KEEP) */
    bool plain_post;   /* set up as a POST: no CUSTOMREQUEST, NOBODY or HTTPGET */
    bool ended_ok;     /* libcurl ended it with CURLE_OK */
    unsigned prereqs;  /* CURLOPT_PREREQFUNCTION calls: requests sent */
    CURLcode fail_code;

    int status;         /* of the header block being collected */
    struct lr_buf hbuf; /* "name\0value\0" pairs of that block */
    size_t hn;
    struct upstream_header *harr;
    size_t harr_cap;

    char reason[96]; /* our own error text (overrides errbuf) */
    char errbuf[CURL_ERROR_SIZE];
};

struct upstream {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;   /* libcurl's timeout */
    ev_timer kick;    /* deferred work, 0 s */
    ev_prepare prep;  /* does the kick's work and 0 ms timeouts before the loop polls */
    bool timeout_now; /* timer armed for a 0 ms timeout from libcurl */
    int in_curl;      /* libcurl calls on the stack that may call back into consumers */
    size_t active;
    struct upstream_xfer *xfers;
    struct upstream_xfer *pend_head, *pend_tail;
    struct up_sock *socks;
    struct {
        CURL *e;
        bool kept; /* options of a plain POST left set (UP_EASY_KEEP) */
    } easy_pool[UP_EASY_POOL];
    size_t n_easy_pool;
    bool no_proxy_env; /* none of libcurl's proxy variables is set */
    struct up_url urls[UP_URL_CACHE];
    uint64_t url_clock;
};

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

/* ---- lists ----------------------------------------------------------------------------- */

static void pend_unlink(struct upstream_xfer *x)
{
    struct upstream *u = x->u;
    if (!x->on_pend_list)
        return;
    if (x->pend_prev)
        x->pend_prev->pend_next = x->pend_next;
    else
        u->pend_head = x->pend_next;
    if (x->pend_next)
        x->pend_next->pend_prev = x->pend_prev;
    else
        u->pend_tail = x->pend_prev;
    x->pend_prev = x->pend_next = NULL;
    x->on_pend_list = false;
}

static void arm_kick(struct upstream *u)
{
    if (!ev_is_active(&u->kick)) {
        ev_timer_set(&u->kick, 0., 0.);
        ev_timer_start(u->loop, &u->kick);
    }
}

/* Records deferred work (flags may be 0 for a cancelled transfer) and arms the kick. */
static void pend_add(struct upstream_xfer *x, unsigned flags)
{
    struct upstream *u = x->u;
    x->pend |= flags;
    if (!x->on_pend_list) {
        x->pend_prev = u->pend_tail;
        x->pend_next = NULL;
        if (u->pend_tail)
            u->pend_tail->pend_next = x;
        else
            u->pend_head = x;
        u->pend_tail = x;
        x->on_pend_list = true;
    }
    arm_kick(u);
}

/* curl_easy_setopt on `e`, until one fails (`rc`). */
#define UP_SET(opt, val)                                                                           \
    do {                                                                                           \
        if (rc == CURLE_OK)                                                                        \
            rc = curl_easy_setopt(e, opt, val);                                                    \
    } while (0)

/* An easy handle for x, reused when one is idle. */
static CURL *easy_get(struct upstream *u, struct upstream_xfer *x)
{
    if (u->n_easy_pool) {
        u->n_easy_pool--;
        x->easy_kept = u->easy_pool[u->n_easy_pool].kept;
        return u->easy_pool[u->n_easy_pool].e;
    }
    x->easy_kept = false;
    return curl_easy_init();
}

/* Back to the pool, or freed. The handle is reset, or (a plain POST sent once and ended well)
 * the pointers into the transfer that libcurl reads itself (URL handle, header list, body,
 * error buffer, private) are cleared; the callbacks' data pointers are only handed to
 * callbacks, which run during a transfer, and the next transfer sets them again. */
static void easy_put(struct upstream *u, const struct upstream_xfer *x)
{
    CURL *e = x->easy;
    if (u->n_easy_pool >= UP_EASY_POOL) {
        curl_easy_cleanup(e);
        return;
    }
    bool keep = UP_EASY_KEEP && x->plain_post && x->ended_ok && x->prereqs == 1;
    if (keep) {
        CURLcode rc = CURLE_OK;
        UP_SET(CURLOPT_CURLU, NULL);
        UP_SET(CURLOPT_HTTPHEADER, NULL);
        UP_SET(CURLOPT_POSTFIELDS, NULL);
        UP_SET(CURLOPT_ERRORBUFFER, NULL);
        UP_SET(CURLOPT_PRIVATE, NULL);
        keep = rc == CURLE_OK;
    }
    if (!keep)
        curl_easy_reset(e);
    u->easy_pool[u->n_easy_pool].e = e;
    u->easy_pool[u->n_easy_pool].kept = keep;
    u->n_easy_pool++;
}

static void url_slot_clear(struct up_url *e)
{
    curl_url_cleanup(e->h);
    curl_free(e->norm);
    free(e->url);
    *e = (struct up_url){0};
}

/* The parsed form of url (a reference for one transfer), or NULL: not cacheable, not
 * parseable (libcurl then reports the error from CURLOPT_URL), or every slot in use. */
static struct up_url *url_get(struct upstream *u, const char *url)
{
    if (strchr(url, '?'))
        return NULL;
    struct up_url *victim = NULL;
    for (size_t i = 0; i < UP_URL_CACHE; i++) {
        struct up_url *e = &u->urls[i];
        if (e->url && strcmp(e->url, url) == 0) {
            e->refs++;
            e->used = ++u->url_clock;
            return e;
        }
        if (!e->url)
            victim = victim && !victim->url ? victim : e;
        else if (e->refs == 0 && (!victim || (victim->url && e->used < victim->used)))
            victim = e;
    }
    if (!victim)
        return NULL;
    CURLU *h = curl_url();
    char *copy = h ? strdup(url) : NULL, *norm = NULL;
    /* the flags libcurl itself parses CURLOPT_URL with */
    if (!copy ||
        curl_url_set(h, CURLUPART_URL, url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) !=
            CURLUE_OK ||
        curl_url_get(h, CURLUPART_URL, &norm, 0) != CURLUE_OK) {
        curl_url_cleanup(h);
        free(copy);
        return NULL;
    }
    if (victim->url)
        url_slot_clear(victim);
    *victim = (struct up_url){.url = copy, .h = h, .norm = norm, .refs = 1, .used = ++u->url_clock};
    return victim;
}

static void xfer_free(struct upstream_xfer *x)
{
    struct upstream *u = x->u;
    if (x->in_multi) {
        curl_multi_remove_handle(u->multi, x->easy);
        x->in_multi = false;
    }
    pend_unlink(x);
    if (x->prev)
        x->prev->next = x->next;
    else
        u->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    if (x->easy && x->reuse_easy)
        easy_put(u, x);
    else if (x->easy)
        curl_easy_cleanup(x->easy);
    if (x->url)
        x->url->refs--; /* after the handle was reset or freed: nothing points at it now */
    curl_slist_free_all(x->headers);
    lr_buf_free(&x->hbuf);
    free(x->harr);
    free(x);
}

/* ---- response headers ------------------------------------------------------------------ */

static void hdr_reset(struct upstream_xfer *x)
{
    lr_buf_reset(&x->hbuf);
    x->hn = 0;
    x->status = 0;
}

static void trim(const char **p, size_t *len)
{
    const char *s = *p;
    size_t n = *len;
    while (n > 0 && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    *p = s;
    *len = n;
}

/* "HTTP/1.1 200 OK" -> 200; -1 when malformed. */
static int parse_status(const char *p, size_t len)
{
    size_t i = 5; /* after "HTTP/" */
    while (i < len && p[i] != ' ')
        i++;
    while (i < len && p[i] == ' ')
        i++;
    if (i + 3 > len)
        return -1;
    int code = 0;
    for (size_t k = 0; k < 3; k++) {
        char c = p[i + k];
        if (c < '0' || c > '9')
            return -1;
        code = code * 10 + (c - '0');
    }
    if (i + 3 < len && p[i + 3] != ' ' && p[i + 3] != '\r' && p[i + 3] != '\n')
        return -1;
    return code >= 100 ? code : -1;
}

static int fail_with(struct upstream_xfer *x, const char *reason)
{
    snprintf(x->reason, sizeof(x->reason), "%s", reason);
    x->aborted = true;
    return -1;
}

static int hdr_append(struct upstream_xfer *x, const char *name, size_t nlen, const char *val,
                      size_t vlen)
{
    if (x->hn >= UP_HDR_COUNT_MAX)
        return fail_with(x, "too many response headers");
    if (x->hbuf.len + nlen + vlen + 2 > UP_HDR_BYTES_MAX)
        return fail_with(x, "response headers too large");
    if (lr_buf_reserve(&x->hbuf, nlen + vlen + 2) < 0)
        return fail_with(x, "out of memory");
    uint8_t *d = x->hbuf.data + x->hbuf.len;
    memcpy(d, name, nlen);
    d[nlen] = '\0';
    memcpy(d + nlen + 1, val, vlen);
    d[nlen + 1 + vlen] = '\0';
    x->hbuf.len += nlen + vlen + 2;
    x->hn++;
    return 0;
}

/* obs-fold: a line starting with whitespace continues the previous value. */
static int hdr_continue(struct upstream_xfer *x, const char *val, size_t vlen)
{
    if (x->hn == 0 || vlen == 0)
        return 0;
    if (x->hbuf.len + vlen + 1 > UP_HDR_BYTES_MAX)
        return fail_with(x, "response headers too large");
    if (lr_buf_reserve(&x->hbuf, vlen + 1) < 0)
        return fail_with(x, "out of memory");
    uint8_t *d = x->hbuf.data + x->hbuf.len - 1; /* the previous value's NUL */
    *d++ = ' ';
    memcpy(d, val, vlen);
    d[vlen] = '\0';
    x->hbuf.len += vlen + 1;
    return 0;
}

/* Calls on_headers once. 0, or -1 when the transfer must stop. */
static int deliver_headers(struct upstream_xfer *x)
{
    x->headers_done = true;
    if (x->hn > x->harr_cap) {
        size_t cap = x->harr_cap ? x->harr_cap : UP_HDR_COUNT_INITIAL;
        while (cap < x->hn)
            cap *= 2;
        struct upstream_header *a = realloc(x->harr, cap * sizeof(*a));
        if (!a)
            return fail_with(x, "out of memory");
        x->harr = a;
        x->harr_cap = cap;
    }
    const char *p = (const char *)x->hbuf.data;
    for (size_t i = 0; i < x->hn; i++) {
        x->harr[i].name = p;
        p += strlen(p) + 1;
        x->harr[i].value = p;
        p += strlen(p) + 1;
    }
    int rc = x->cb.on_headers ? x->cb.on_headers(x->ud, x->status, x->harr, x->hn) : 0;
    if (x->cancelled)
        return -1;
    if (rc != 0) {
        x->aborted = true;
        return -1;
    }
    return 0;
}

static size_t header_cb(char *p, size_t size, size_t nmemb, void *userdata)
{
    struct upstream_xfer *x = userdata;
    size_t len = size * nmemb;
    if (x->cancelled || x->aborted)
        return 0;
    if (x->headers_done)
        return len; /* trailers of a chunked body: not relayed */
    const char *s = p;
    size_t n = len;
    while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    if (n == 0) { /* end of a header block */
        if (x->status <= 0)
            return len;
        if (x->status < 200) { /* 100 Continue, 103 Early Hints: the final one follows */
            hdr_reset(x);
            return len;
        }
        return deliver_headers(x) == 0 ? len : 0;
    }
    if (n >= 5 && memcmp(s, "HTTP/", 5) == 0) {
        hdr_reset(x);
        x->status = parse_status(s, n);
        if (x->status < 0) {
            fail_with(x, "malformed status line from upstream");
            return 0;
        }
        return len;
    }
    if (s[0] == ' ' || s[0] == '\t') {
        trim(&s, &n);
        return hdr_continue(x, s, n) == 0 ? len : 0;
    }
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return len; /* not a header line: ignored */
    const char *name = s, *val = colon + 1;
    size_t nlen = (size_t)(colon - s), vlen = n - nlen - 1;
    trim(&name, &nlen);
    trim(&val, &vlen);
    if (nlen == 0)
        return len;
    return hdr_append(x, name, nlen, val, vlen) == 0 ? len : 0;
}

/* ---- response body --------------------------------------------------------------------- */

static size_t write_cb(char *p, size_t size, size_t nmemb, void *userdata)
{
    struct upstream_xfer *x = userdata;
    size_t len = size * nmemb;
    if (x->cancelled || x->aborted)
        return 0;
    if (!x->headers_done) { /* the header callback did not see the end of the block */
        if (x->status <= 0) {
            long code = 0;
            curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
            x->status = (int)code;
        }
        if (deliver_headers(x) != 0)
            return 0;
    }
    if (len == 0 || !x->cb.on_data)
        return len;
    int rc = x->cb.on_data(x->ud, p, len);
    if (x->cancelled)
        return 0;
    if (rc == UPSTREAM_DATA_PAUSE)
        return CURL_WRITEFUNC_PAUSE;
    if (rc != UPSTREAM_DATA_OK) {
        x->aborted = true;
        return 0;
    }
    return len;
}

/* ---- completion ------------------------------------------------------------------------ */

/* From the loop only (u->in_curl == 0): on_done unless cancelled, then free. */
static void finish(struct upstream_xfer *x, CURLcode rc)
{
    struct upstream *u = x->u;
    if (x->in_multi) {
        curl_multi_remove_handle(u->multi, x->easy);
        x->in_multi = false;
    }
    pend_unlink(x);
    x->ended_ok = false;
    if (!x->cancelled) {
        u->active--;
        x->finishing = true; /* from here on, cancel only silences the callbacks */
        if (rc == CURLE_OK && !x->headers_done) {
            long code = 0;
            curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
            if (x->status <= 0)
                x->status = (int)code;
            deliver_headers(x);
        }
        if (rc == CURLE_OK && x->aborted)
            rc = CURLE_WRITE_ERROR;
        const char *err = NULL;
        if (rc != CURLE_OK)
            err = x->reason[0] ? x->reason : x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
        x->ended_ok = rc == CURLE_OK; /* (on_done may cancel it now: a no-op) */
        if (!x->cancelled && x->cb.on_done)
            x->cb.on_done(x->ud, rc, err);
    }
    x->reuse_easy = true;
    xfer_free(x);
}

static void drain(struct upstream *u)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(u->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode rc = m->data.result;
        char *priv = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        if (priv)
            finish((struct upstream_xfer *)(void *)priv, rc);
    }
}

static void socket_action(struct upstream *u, curl_socket_t fd, int ev_bitmask)
{
    int running = 0;
    u->in_curl++;
    curl_multi_socket_action(u->multi, fd, ev_bitmask, &running);
    u->in_curl--;
    drain(u);
}

/* ---- libev <-> libcurl ----------------------------------------------------------------- */

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct up_sock *s = w->data;
    int action =
        ((revents & EV_READ) ? CURL_CSELECT_IN : 0) | ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    /* s may be freed by the socket callback during the action: copy what we need. */
    socket_action(s->u, s->fd, action);
}

/* libcurl's timeout, due now: the timer is stopped so that it does not fire again for it. */
static void timeout_run(struct upstream *u)
{
    if (u->timeout_now) {
        u->timeout_now = false;
        ev_timer_stop(u->loop, &u->timer);
    }
    socket_action(u, CURL_SOCKET_TIMEOUT, 0);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    timeout_run(w->data);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arms the ev_timer, never calls libcurl. A 0 ms timeout is
 * normally done by the prepare watcher, which then stops the timer. */
static int multi_timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct upstream *u = userp;
    ev_timer_stop(u->loop, &u->timer);
    u->timeout_now = timeout_ms == 0;
    if (timeout_ms >= 0) {
        ev_timer_set(&u->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(u->loop, &u->timer);
    }
    return 0;
}

static void sock_free(struct upstream *u, struct up_sock *s)
{
    ev_io_stop(u->loop, &s->io);
    if (s->prev)
        s->prev->next = s->next;
    else
        u->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s);
}

/* CURLMOPT_SOCKETFUNCTION */
static int multi_sock_fn(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    struct upstream *u = userp;
    struct up_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(u->multi, fd, NULL);
            sock_free(u, s);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->u = u;
        s->fd = fd;
        s->next = u->socks;
        if (u->socks)
            u->socks->prev = s;
        u->socks = s;
        ev_init(&s->io, io_cb);
        s->io.data = s;
        curl_multi_assign(u->multi, fd, s);
    } else {
        ev_io_stop(u->loop, &s->io);
    }
    int events = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (events) {
        ev_io_set(&s->io, fd, events);
        ev_io_start(u->loop, &s->io);
    }
    return 0;
}

/* ---- deferred work --------------------------------------------------------------------- */

/* From the loop, outside libcurl callbacks. */
static void resume_now(struct upstream_xfer *x)
{
    struct upstream *u = x->u;
    u->in_curl++;
    CURLcode rc = curl_easy_pause(x->easy, CURLPAUSE_CONT);
    u->in_curl--;
    if (x->cancelled)
        return; /* cancelled from inside on_data: the kick frees it */
    if (rc != CURLE_OK || x->aborted) {
        /* on_data refused the redelivered bytes: curl reports it to us, not to the multi. */
        x->fail_code = rc != CURLE_OK ? rc : CURLE_WRITE_ERROR;
        pend_add(x, UP_PEND_FAIL);
        return;
    }
    arm_kick(u); /* drive the multi: the socket may hold no new event for buffered bytes */
}

/* The kick's work: the pending list, then the multi driven (which also does a 0 ms timeout). */
static void kick_run(struct upstream *u)
{
    struct upstream_xfer *x;
    while ((x = u->pend_head)) {
        unsigned pend = x->pend;
        x->pend = 0;
        pend_unlink(x);
        if (x->cancelled) {
            xfer_free(x);
        } else if (pend & UP_PEND_FAIL) {
            finish(x, x->fail_code);
        } else if (pend & UP_PEND_ADD) {
            CURLMcode mc = curl_multi_add_handle(u->multi, x->easy);
            if (mc != CURLM_OK) {
                snprintf(x->reason, sizeof(x->reason), "curl_multi_add_handle: %s",
                         curl_multi_strerror(mc));
                finish(x, CURLE_FAILED_INIT);
            } else {
                x->in_multi = true;
            }
        } else if ((pend & UP_PEND_RESUME) && x->in_multi) {
            resume_now(x);
        }
    }
    timeout_run(u);
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kick_run(w->data);
}

/* Before the loop polls: the work that is due now, so it does not wait for an iteration. */
static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    struct upstream *u = w->data;
    if (u->in_curl)
        return; /* not reached from a libcurl call; the timers would do it */
    for (int round = 0; round < UP_PREPARE_ROUNDS; round++) {
        if (ev_is_active(&u->kick)) {
            ev_timer_stop(loop, &u->kick);
            kick_run(u);
        } else if (u->timeout_now) {
            timeout_run(u);
        } else {
            return;
        }
    }
}

/* ---- public API ------------------------------------------------------------------------ */

/* libcurl looks these up (getenv over the whole environment, several times) for every
 * transfer that has no CURLOPT_PROXY. The agent never changes its environment: when none
 * is set, "no proxy" is said once with CURLOPT_PROXY "" and the lookups are skipped. */
static bool proxy_env_unset(void)
{
    static const char *const vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                       "ALL_PROXY",  "no_proxy",    "NO_PROXY"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return false;
    }
    return true;
}

struct upstream *upstream_new(struct ev_loop *loop)
{
    if (!loop)
        return NULL;
    struct upstream *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->loop = loop;
    u->no_proxy_env = proxy_env_unset();
    u->multi = curl_multi_init();
    if (!u->multi) {
        free(u);
        return NULL;
    }
    ev_timer_init(&u->timer, timer_cb, 0., 0.);
    u->timer.data = u;
    ev_timer_init(&u->kick, kick_cb, 0., 0.);
    u->kick.data = u;
    /* Before the other prepare watchers: engine_http flushes its connections in one, and
     * what an on_done run from here writes must not wait for the next iteration's flush. */
    ev_prepare_init(&u->prep, prepare_cb);
    ev_set_priority(&u->prep, EV_MAXPRI);
    u->prep.data = u;
    ev_prepare_start(loop, &u->prep);
    ev_unref(loop); /* the watcher alone must not keep the loop alive */
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, multi_sock_fn);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, multi_timer_fn);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, UP_MAX_CONNECTS);
    return u;
}

void upstream_free(struct upstream *u)
{
    if (!u)
        return;
    while (u->xfers) {
        u->xfers->cancelled = true;
        xfer_free(u->xfers);
    }
    /* Stop the watchers before curl closes the pooled connections' sockets. */
    for (struct up_sock *s = u->socks; s; s = s->next)
        ev_io_stop(u->loop, &s->io);
    while (u->n_easy_pool)
        curl_easy_cleanup(u->easy_pool[--u->n_easy_pool].e);
    for (size_t i = 0; i < UP_URL_CACHE; i++)
        if (u->urls[i].url)
            url_slot_clear(&u->urls[i]);
    curl_multi_cleanup(u->multi);
    while (u->socks)
        sock_free(u, u->socks);
    ev_timer_stop(u->loop, &u->timer);
    ev_timer_stop(u->loop, &u->kick);
    ev_ref(u->loop);
    ev_prepare_stop(u->loop, &u->prep);
    free(u);
}

static bool has_header(const struct curl_slist *h, const char *name)
{
    size_t n = strlen(name);
    for (; h; h = h->next)
        if (h->data && strncasecmp(h->data, name, n) == 0 &&
            (h->data[n] == ':' || h->data[n] == ';'))
            return true;
    return false;
}

#if UP_EASY_KEEP
static int prereq_cb(void *userdata, char *conn_primary_ip, char *conn_local_ip,
                     int conn_primary_port, int conn_local_port)
{
    (void)conn_primary_ip;
    (void)conn_local_ip;
    (void)conn_primary_port;
    (void)conn_local_port;
    struct upstream_xfer *x = userdata;
    x->prereqs++;
    return CURL_PREREQFUNC_OK;
}
#endif

/* The options that are the same for every transfer of u. */
static CURLcode setup_easy_constant(struct upstream *u, CURL *e)
{
    CURLcode rc = CURLE_OK;
    UP_SET(CURLOPT_NOSIGNAL, 1L);
    UP_SET(CURLOPT_TCP_NODELAY, 1L);
    UP_SET(CURLOPT_TCP_KEEPALIVE, 1L);
    UP_SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    UP_SET(CURLOPT_FOLLOWLOCATION, 0L);
    UP_SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L); /* a proxy's CONNECT reply is not ours */
    if (u->no_proxy_env) {
        UP_SET(CURLOPT_PROXY, "");
        UP_SET(CURLOPT_NOPROXY, ""); /* moot without a proxy; spares the no_proxy lookups */
    }
#if LIBCURL_VERSION_NUM >= 0x075500
    UP_SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    UP_SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    UP_SET(CURLOPT_HEADERFUNCTION, header_cb);
    UP_SET(CURLOPT_WRITEFUNCTION, write_cb);
#if UP_EASY_KEEP
    UP_SET(CURLOPT_PREREQFUNCTION, prereq_cb);
#endif
    return rc;
}

static int setup_easy(struct upstream_xfer *x, const struct upstream_request *req)
{
    CURL *e = x->easy;
    const char *m = req->method ? req->method : "POST";
    x->plain_post = strcasecmp(m, "POST") == 0;
    if (x->easy_kept && !x->plain_post) {
        /* the kept options are a POST's (method, body size): not the ground for another */
        curl_easy_reset(e);
        x->easy_kept = false;
    }
    CURLcode rc = x->easy_kept ? CURLE_OK : setup_easy_constant(x->u, e);
    /* With only CURLOPT_CURLU, libcurl prints the handle back to a string for every transfer
     * (curl_url_get, ~7k instructions); given the same string as CURLOPT_URL too, it takes
     * that one. CURLOPT_CURLU wins when both are set: the URL is the same either way. */
    if (x->url) {
        UP_SET(CURLOPT_CURLU, x->url->h);
        UP_SET(CURLOPT_URL, x->url->norm);
    } else {
        UP_SET(CURLOPT_URL, req->url);
    }
    UP_SET(CURLOPT_PRIVATE, x);
    UP_SET(CURLOPT_ERRORBUFFER, x->errbuf);
    UP_SET(CURLOPT_HEADERDATA, x);
    UP_SET(CURLOPT_WRITEDATA, x);
#if UP_EASY_KEEP
    UP_SET(CURLOPT_PREREQDATA, x);
#endif
    UP_SET(CURLOPT_TIMEOUT, req->timeout_secs > 0 ? req->timeout_secs : 0L);
    /* always set: a kept handle may hold the last transfer's (0 is libcurl's default) */
    UP_SET(CURLOPT_CONNECTTIMEOUT, req->connect_timeout_secs > 0 ? req->connect_timeout_secs : 0L);

    bool body = req->body != NULL || x->plain_post;
    if (strcasecmp(m, "GET") == 0 && !req->body) {
        UP_SET(CURLOPT_HTTPGET, 1L);
    } else if (strcasecmp(m, "HEAD") == 0) {
        UP_SET(CURLOPT_NOBODY, 1L);
        body = false;
    } else {
        if (strcasecmp(m, "POST") != 0)
            UP_SET(CURLOPT_CUSTOMREQUEST, m);
        if (body) {
            UP_SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
            UP_SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
        }
    }
#undef UP_SET
    if (rc != CURLE_OK) {
        snprintf(x->reason, sizeof(x->reason), "curl_easy_setopt: %s", curl_easy_strerror(rc));
        return -1;
    }

    /* No "Expect: 100-continue" stall on large bodies, and no form content type invented by
     * libcurl when the caller sent none. */
    struct curl_slist *h = x->headers, *t;
    if (!has_header(h, "Expect")) {
        if (!(t = curl_slist_append(h, "Expect:")))
            goto oom;
        h = x->headers = t;
    }
    if (body && !has_header(h, "Content-Type")) {
        if (!(t = curl_slist_append(h, "Content-Type:")))
            goto oom;
        h = x->headers = t;
    }
    if (curl_easy_setopt(e, CURLOPT_HTTPHEADER, h) != CURLE_OK)
        goto oom;
    return 0;
oom:
    snprintf(x->reason, sizeof(x->reason), "out of memory");
    return -1;
}

struct upstream_xfer *upstream_start(struct upstream *u, const struct upstream_request *req,
                                     const struct upstream_callbacks *cb, void *ud, char *err,
                                     size_t errlen)
{
    if (!u || !req || !cb) {
        set_err(err, errlen, "upstream_start: missing argument");
        if (req)
            curl_slist_free_all(req->headers);
        return NULL;
    }
    if (!req->url || !req->url[0]) {
        set_err(err, errlen, "upstream_start: no URL");
        curl_slist_free_all(req->headers);
        return NULL;
    }
    if (!req->body && req->body_len > 0) {
        set_err(err, errlen, "upstream_start: body_len without body");
        curl_slist_free_all(req->headers);
        return NULL;
    }
    struct upstream_xfer *x = malloc(sizeof(*x)); /* not calloc: see proxy_handle */
    if (!x) {
        set_err(err, errlen, "out of memory");
        curl_slist_free_all(req->headers);
        return NULL;
    }
    *x = (struct upstream_xfer){0};
    x->u = u;
    x->cb = *cb;
    x->ud = ud;
    x->headers = req->headers;
    x->next = u->xfers;
    if (u->xfers)
        u->xfers->prev = x;
    u->xfers = x;
    x->easy = easy_get(u, x);
    if (!x->easy) {
        set_err(err, errlen, "curl_easy_init failed");
        xfer_free(x);
        return NULL;
    }
    x->url = url_get(u, req->url);
    if (setup_easy(x, req) < 0) {
        set_err(err, errlen, x->reason);
        xfer_free(x);
        return NULL;
    }
    if (u->in_curl) {
        pend_add(x, UP_PEND_ADD); /* libcurl refuses add_handle from its callbacks */
    } else {
        CURLMcode mc = curl_multi_add_handle(u->multi, x->easy);
        if (mc != CURLM_OK) {
            if (err && errlen > 0)
                snprintf(err, errlen, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
            xfer_free(x);
            return NULL;
        }
        x->in_multi = true;
    }
    u->active++;
    return x;
}

void upstream_resume(struct upstream_xfer *x)
{
    if (!x || x->cancelled || x->finishing || x->aborted)
        return;
    if (x->u->in_curl || !x->in_multi)
        pend_add(x, UP_PEND_RESUME);
    else
        resume_now(x);
}

void upstream_cancel(struct upstream_xfer *x)
{
    if (!x || x->cancelled)
        return;
    struct upstream *u = x->u;
    x->cancelled = true;
    if (x->finishing)
        return; /* finish() frees it when on_done returns */
    u->active--;
    if (u->in_curl)
        pend_add(x, 0); /* removed from the multi by the kick; its callbacks return 0 now */
    else
        xfer_free(x);
}

size_t upstream_active(const struct upstream *u)
{
    return u ? u->active : 0;
}

/* glibc's calloc never takes from the per-thread cache, and libcurl callocs about ten times
 * per transfer (its request state, header records, buffers): malloc + memset does. */
static void *up_calloc(size_t n, size_t size)
{
    size_t len;
    if (__builtin_mul_overflow(n, size, &len))
        return NULL;
    void *p = malloc(len);
    if (!p)
        return NULL;
    __asm__ volatile("" : : "r"(p) : "memory"); /* or gcc folds malloc + memset into calloc */
    return memset(p, 0, len);
}

int upstream_global_init(void)
{
    return curl_global_init_mem(CURL_GLOBAL_DEFAULT, malloc, free, realloc, strdup, up_calloc) ==
                   CURLE_OK
               ? 0
               : -1;
}

void upstream_global_cleanup(void)
{
    curl_global_cleanup();
}
