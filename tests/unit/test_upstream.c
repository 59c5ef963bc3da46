/* upstream.c: libcurl multi on a libev loop against a scripted HTTP/1.1 server on loopback
 * (one pthread accepting, one per connection; all joined in teardown). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "upstream.h"

/* ---- scripted HTTP/1.1 server ----------------------------------------------------------- */

#define SRV_MAX_CONNS 32
#define BIG_LEN       (2u * 1024u * 1024u)
#define CLOSE_MID_LEN 100

struct srv {
    int lfd;
    uint16_t port;
    int stop[2]; /* readable once the server must stop */
    pthread_t acc_tid;
    pthread_mutex_t mu;
    pthread_t conn_tid[SRV_MAX_CONNS];
    int nconn;
    atomic_int accepted;
    atomic_int peer_closed; /* connections the client closed while we waited or wrote */
    atomic_int requests;
};

struct srv_conn {
    struct srv *s;
    int fd;
};

static unsigned char big_byte(size_t i)
{
    uint32_t word = (uint32_t)(i / 4);
    return (unsigned char)(word >> (8 * (i % 4)));
}

/* Waits for fd to be ready for `ev` or the stop pipe; 1 ready, 0 timeout, -1 stopping. */
static int srv_wait(struct srv *s, int fd, short ev, int timeout_ms)
{
    struct pollfd p[2] = {{.fd = fd, .events = ev}, {.fd = s->stop[0], .events = POLLIN}};
    for (;;) {
        int n = poll(p, 2, timeout_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (p[1].revents & POLLIN))
            return -1;
        return n == 0 ? 0 : 1;
    }
}

static int srv_send(struct srv *s, int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (srv_wait(s, fd, POLLOUT, -1) < 0)
                return -1;
            continue;
        }
        atomic_fetch_add(&s->peer_closed, 1);
        return -1;
    }
    return 0;
}

static int srv_sendf(struct srv *s, int fd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int srv_sendf(struct srv *s, int fd, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -1;
    return srv_send(s, fd, buf, (size_t)n);
}

/* Sleeps ms unless the client closes the connection (-1 then, counted) or we stop. */
static int srv_sleep_watch(struct srv *s, int fd, int ms)
{
    double end = ev_time() + ms / 1000.0;
    for (;;) {
        int left = (int)((end - ev_time()) * 1000.0);
        if (left <= 0)
            return 0;
        int r = srv_wait(s, fd, POLLIN, left);
        if (r < 0)
            return -1;
        if (r == 0)
            return 0;
        char c[256];
        ssize_t n = recv(fd, c, sizeof(c), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            atomic_fetch_add(&s->peer_closed, 1);
            return -1;
        }
    }
}

struct srv_req {
    char method[16];
    char path[128];
    char names[1024]; /* received header names, lowercase, comma-separated */
    char expect[64];
    char ctype[128];
    long clen;
};

static int srv_respond(struct srv *s, int fd, const struct srv_req *rq, const char *body,
                       size_t blen)
{
    const char *p = rq->path;
    if (strcmp(p, "/ok") == 0)
        return srv_sendf(s, fd,
                         "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         "X-Spaced: \t  padded value  \r\nX-Folded: a\r\n  b\r\n"
                         "Content-Length: 11\r\n\r\nhello world");
    if (strcmp(p, "/drop-after") == 0 || /* the next request on this connection is dropped */
        strcmp(p, "/close-idle") == 0)   /* the server closes the connection once answered */
        return srv_sendf(s, fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    if (strcmp(p, "/500") == 0) {
        const char *j = "{\"error\":{\"message\":\"boom\"}}";
        return srv_sendf(s, fd,
                         "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         strlen(j), j);
    }
    if (strcmp(p, "/continue") == 0)
        return srv_sendf(s, fd,
                         "HTTP/1.1 100 Continue\r\n\r\n"
                         "HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\n"
                         "HTTP/1.1 201 Created\r\nX-Final: yes\r\nContent-Length: 2\r\n\r\nok");
    if (strcmp(p, "/echo") == 0) {
        if (srv_sendf(s, fd,
                      "HTTP/1.1 200 OK\r\nX-Received-Headers: %s\r\nX-Received-Length: %ld\r\n"
                      "X-Received-Expect: %s\r\nX-Received-Content-Type: %s\r\n"
                      "X-Received-Method: %s\r\nContent-Length: %zu\r\n\r\n",
                      rq->names, rq->clen, rq->expect[0] ? rq->expect : "none",
                      rq->ctype[0] ? rq->ctype : "none", rq->method, blen) < 0)
            return -1;
        return srv_send(s, fd, body, blen);
    }
    if (strcmp(p, "/chunked-slow") == 0) {
        if (srv_sendf(s, fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") < 0)
            return -1;
        for (int i = 0; i < 5; i++) {
            if (i > 0 && srv_sleep_watch(s, fd, 50) < 0)
                return -1;
            if (srv_sendf(s, fd, "8\r\nchunk-%d\n\r\n", i) < 0)
                return -1;
        }
        return srv_sendf(s, fd, "0\r\nX-Trailer: t\r\n\r\n");
    }
    if (strcmp(p, "/big") == 0) {
        char *b = malloc(BIG_LEN);
        if (!b)
            return -1;
        for (size_t i = 0; i < BIG_LEN; i++)
            b[i] = (char)big_byte(i);
        int rc = srv_sendf(s, fd, "HTTP/1.1 200 OK\r\nContent-Length: %u\r\n\r\n", BIG_LEN);
        if (rc == 0)
            rc = srv_send(s, fd, b, BIG_LEN);
        free(b);
        return rc;
    }
    if (strcmp(p, "/hang") == 0) {
        while (srv_sleep_watch(s, fd, 1000) == 0)
            ;
        return -1;
    }
    if (strcmp(p, "/close-mid") == 0) {
        char part[CLOSE_MID_LEN];
        memset(part, 'x', sizeof(part));
        if (srv_sendf(s, fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n") < 0)
            return -1;
        srv_send(s, fd, part, sizeof(part));
        return -1; /* close */
    }
    return srv_sendf(s, fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
}

/* Parses one request head in buf[0..hlen) (hlen includes the blank line). */
static int srv_parse(const char *buf, size_t hlen, struct srv_req *rq)
{
    memset(rq, 0, sizeof(*rq));
    char *head = strndup(buf, hlen);
    if (!head)
        return -1;
    char *save = NULL, *line = strtok_r(head, "\r\n", &save);
    if (!line || sscanf(line, "%15s %127s", rq->method, rq->path) != 2) {
        free(head);
        return -1;
    }
    size_t nl = 0;
    while ((line = strtok_r(NULL, "\r\n", &save))) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = '\0';
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        for (char *c = line; *c; c++)
            *c = (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c);
        int w = snprintf(rq->names + nl, sizeof(rq->names) - nl, "%s%s", nl ? "," : "", line);
        if (w > 0 && (size_t)w < sizeof(rq->names) - nl)
            nl += (size_t)w;
        if (strcmp(line, "content-length") == 0)
            rq->clen = strtol(v, NULL, 10);
        else if (strcmp(line, "expect") == 0)
            snprintf(rq->expect, sizeof(rq->expect), "%s", v);
        else if (strcmp(line, "content-type") == 0)
            snprintf(rq->ctype, sizeof(rq->ctype), "%s", v);
    }
    free(head);
    return 0;
}

static void *srv_conn_main(void *arg)
{
    struct srv_conn *c = arg;
    struct srv *s = c->s;
    int fd = c->fd;
    free(c);
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc(cap);
    bool drop_next = false;
    while (buf) {
        /* One request: head, then Content-Length bytes of body. */
        char *end = NULL;
        while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
            if (len == cap || srv_wait(s, fd, POLLIN, -1) < 0)
                goto out;
            ssize_t n = recv(fd, buf + len, cap - len, 0);
            if (n == 0)
                goto out; /* client closed between requests: normal keep-alive end */
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                goto out;
            }
            len += (size_t)n;
        }
        size_t hlen = (size_t)(end - buf) + 4;
        struct srv_req rq;
        if (srv_parse(buf, hlen, &rq) < 0)
            break;
        if (rq.clen < 0 || rq.clen > 8 * 1024 * 1024)
            break;
        size_t need = hlen + (size_t)rq.clen;
        if (need > cap) {
            char *nb = realloc(buf, need);
            if (!nb)
                break;
            buf = nb;
            cap = need;
        }
        while (len < need) {
            if (srv_wait(s, fd, POLLIN, -1) < 0)
                goto out;
            ssize_t n = recv(fd, buf + len, need - len, 0);
            if (n == 0)
                goto out;
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                goto out;
            }
            len += (size_t)n;
        }
        atomic_fetch_add(&s->requests, 1);
        if (drop_next)
            break; /* read, never answered: the connection dies under the client's request */
        drop_next = strcmp(rq.path, "/drop-after") == 0;
        if (srv_respond(s, fd, &rq, buf + hlen, (size_t)rq.clen) < 0 ||
            strcmp(rq.path, "/close-idle") == 0)
            break;
        memmove(buf, buf + need, len - need);
        len -= need;
    }
out:
    free(buf);
    close(fd);
    return NULL;
}

static void *srv_accept_main(void *arg)
{
    struct srv *s = arg;
    for (;;) {
        if (srv_wait(s, s->lfd, POLLIN, -1) < 0)
            break;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&s->accepted, 1);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct srv_conn *c = malloc(sizeof(*c));
        if (c) {
            c->s = s;
            c->fd = fd;
        }
        pthread_mutex_lock(&s->mu);
        if (!c || s->nconn == SRV_MAX_CONNS ||
            pthread_create(&s->conn_tid[s->nconn], NULL, srv_conn_main, c) != 0) {
            pthread_mutex_unlock(&s->mu);
            free(c);
            close(fd);
            continue;
        }
        s->nconn++;
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

static struct srv *srv_start(void)
{
    struct srv *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    assert_int_equal(pipe(s->stop), 0);
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 64), 0);
    socklen_t al = sizeof(a);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->acc_tid, NULL, srv_accept_main, s), 0);
    return s;
}

static void srv_stop(struct srv *s)
{
    if (!s)
        return;
    ssize_t w = write(s->stop[1], "x", 1);
    (void)w;
    pthread_join(s->acc_tid, NULL);
    for (int i = 0; i < s->nconn; i++)
        pthread_join(s->conn_tid[i], NULL);
    close(s->lfd);
    close(s->stop[0]);
    close(s->stop[1]);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- fixture and transfer recorder ------------------------------------------------------ */

struct fx {
    struct srv *srv;
    struct ev_loop *loop;
    struct upstream *u;
    int want_done, dones;
    ev_timer deadline;
};

#define TX_MAX_TIMES 256

struct tx {
    struct fx *f;
    struct upstream_xfer *x;
    int headers_calls, status;
    char ctype[64], spaced[64], folded[64], final_hdr[16], recv_hdrs[1024], recv_len[32],
        recv_expect[64], recv_ctype[128], recv_method[16];
    int saw_link, saw_trailer;
    char *body;
    size_t len, cap;
    int data_calls;
    double t_data[TX_MAX_TIMES];
    int done_calls;
    CURLcode code;
    char err[CURL_ERROR_SIZE];
    double t_start, t_done;
    /* behaviours */
    int pause_mode; /* 1: pause at first call and at 1 MiB, resumed from timers */
    int paused, calls_while_paused, pauses;
    unsigned char first_paused[16];
    size_t first_paused_len;
    int check_redelivery;
    ev_timer resume_timer;
    int abort_headers, abort_data, cancel_in_data, abort_redelivery;
    int cancel_after_first_ms; /* >0: cancel from a timer after the first on_data */
    ev_timer cancel_timer;
    int cancelled;
    struct tx *start_on_headers; /* started from inside on_headers (deferred add) */
    const char *start_on_headers_url;
    struct tx *start_on_done;
    const char *start_on_done_url;
};

static void run_until_done(struct fx *f, int n, double max_s)
{
    f->want_done = n;
    if (f->dones >= n)
        return;
    ev_timer_set(&f->deadline, max_s, 0.);
    ev_timer_start(f->loop, &f->deadline);
    ev_run(f->loop, 0);
    ev_timer_stop(f->loop, &f->deadline);
}

/* Runs the loop for s seconds whatever happens. */
static void run_for(struct fx *f, double s)
{
    f->want_done = 1 << 30;
    ev_timer_set(&f->deadline, s, 0.);
    ev_timer_start(f->loop, &f->deadline);
    ev_run(f->loop, 0);
    ev_timer_stop(f->loop, &f->deadline);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void copy_hdr(char *dst, size_t cap, const struct upstream_header *h, size_t n,
                     const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(h[i].name, name) == 0) {
            snprintf(dst, cap, "%s", h[i].value);
            return;
        }
}

static struct upstream_xfer *tx_start(struct tx *t, const char *method, const char *path,
                                      const char *body, size_t blen, long timeout,
                                      struct curl_slist *hdrs);

static int on_headers(void *ud, int status, const struct upstream_header *h, size_t n)
{
    struct tx *t = ud;
    t->headers_calls++;
    t->status = status;
    for (size_t i = 0; i < n; i++) {
        assert_non_null(h[i].name);
        assert_non_null(h[i].value);
        if (strcasecmp(h[i].name, "Link") == 0)
            t->saw_link = 1;
        if (strcasecmp(h[i].name, "X-Trailer") == 0)
            t->saw_trailer = 1;
    }
    copy_hdr(t->ctype, sizeof(t->ctype), h, n, "content-type");
    copy_hdr(t->spaced, sizeof(t->spaced), h, n, "x-spaced");
    copy_hdr(t->folded, sizeof(t->folded), h, n, "x-folded");
    copy_hdr(t->final_hdr, sizeof(t->final_hdr), h, n, "x-final");
    copy_hdr(t->recv_hdrs, sizeof(t->recv_hdrs), h, n, "x-received-headers");
    copy_hdr(t->recv_len, sizeof(t->recv_len), h, n, "x-received-length");
    copy_hdr(t->recv_expect, sizeof(t->recv_expect), h, n, "x-received-expect");
    copy_hdr(t->recv_ctype, sizeof(t->recv_ctype), h, n, "x-received-content-type");
    copy_hdr(t->recv_method, sizeof(t->recv_method), h, n, "x-received-method");
    if (t->start_on_headers) {
        /* inside a libcurl callback: upstream defers the add to the loop */
        struct upstream_xfer *y =
            tx_start(t->start_on_headers, "GET", t->start_on_headers_url, NULL, 0, 5, NULL);
        t->start_on_headers->x = y;
        t->start_on_headers = NULL;
    }
    return t->abort_headers ? -1 : 0;
}

static void resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct tx *t = w->data;
    t->paused = 0;
    t->check_redelivery = 1;
    upstream_resume(t->x);
}

static void cancel_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct tx *t = w->data;
    upstream_cancel(t->x);
    t->cancelled = 1;
}

static int on_data(void *ud, const char *p, size_t len)
{
    struct tx *t = ud;
    assert_int_equal(t->headers_calls, 1);
    assert_true(len > 0);
    if (t->data_calls < TX_MAX_TIMES)
        t->t_data[t->data_calls] = ev_time();
    t->data_calls++;
    if (t->paused) { /* must not happen: keep the bytes unconsumed, fail in the test body */
        t->calls_while_paused++;
        return UPSTREAM_DATA_PAUSE;
    }
    if (t->check_redelivery) {
        t->check_redelivery = 0;
        assert_true(len >= t->first_paused_len);
        assert_memory_equal(p, t->first_paused, t->first_paused_len);
        if (t->abort_redelivery)
            return UPSTREAM_DATA_ABORT; /* refused from inside upstream_resume */
    }
    if (t->cancel_in_data) {
        upstream_cancel(t->x);
        t->cancelled = 1;
        return UPSTREAM_DATA_OK;
    }
    if (t->abort_data)
        return UPSTREAM_DATA_ABORT;
    if (t->pause_mode && (t->data_calls == 1 || (t->pauses == 1 && t->len + len > BIG_LEN / 2))) {
        t->pauses++;
        t->paused = 1;
        t->first_paused_len = len < sizeof(t->first_paused) ? len : sizeof(t->first_paused);
        memcpy(t->first_paused, p, t->first_paused_len);
        /* first pause: 100 ms; second: resumed on the next loop iteration */
        ev_timer_init(&t->resume_timer, resume_cb, t->pauses == 1 ? 0.1 : 0., 0.);
        t->resume_timer.data = t;
        ev_timer_start(t->f->loop, &t->resume_timer);
        return UPSTREAM_DATA_PAUSE;
    }
    if (t->len + len > t->cap) {
        size_t nc = t->cap ? t->cap : 4096;
        while (nc < t->len + len)
            nc *= 2;
        t->body = realloc(t->body, nc);
        assert_non_null(t->body);
        t->cap = nc;
    }
    memcpy(t->body + t->len, p, len);
    t->len += len;
    if (t->cancel_after_first_ms && t->data_calls == 1) {
        ev_timer_init(&t->cancel_timer, cancel_cb, t->cancel_after_first_ms / 1000.0, 0.);
        t->cancel_timer.data = t;
        ev_timer_start(t->f->loop, &t->cancel_timer);
    }
    return UPSTREAM_DATA_OK;
}

static void on_done(void *ud, CURLcode code, const char *error)
{
    struct tx *t = ud;
    t->done_calls++;
    t->code = code;
    t->t_done = ev_time();
    snprintf(t->err, sizeof(t->err), "%s", error ? error : "");
    if (code != CURLE_OK)
        assert_non_null(error);
    /* a cancel of the finishing transfer is a no-op */
    upstream_cancel(t->x);
    struct fx *f = t->f;
    if (t->start_on_done) {
        struct tx *n = t->start_on_done;
        t->start_on_done = NULL;
        n->x = tx_start(n, "GET", t->start_on_done_url, NULL, 0, 5, NULL);
        assert_non_null(n->x);
    }
    if (++f->dones >= f->want_done)
        ev_break(f->loop, EVBREAK_ALL);
}

static const struct upstream_callbacks cbs = {on_headers, on_data, on_done};

static struct upstream_xfer *tx_start(struct tx *t, const char *method, const char *path,
                                      const char *body, size_t blen, long timeout,
                                      struct curl_slist *hdrs)
{
    char url[256], err[256] = "";
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", t->f->srv->port, path);
    struct upstream_request rq = {.method = method,
                                  .url = url,
                                  .headers = hdrs,
                                  .body = body,
                                  .body_len = blen,
                                  .timeout_secs = timeout,
                                  .connect_timeout_secs = 2};
    t->t_start = ev_time();
    t->x = upstream_start(t->f->u, &rq, &cbs, t, err, sizeof(err));
    if (!t->x)
        fail_msg("upstream_start: %s", err);
    return t->x;
}

static void tx_init(struct tx *t, struct fx *f)
{
    memset(t, 0, sizeof(*t));
    t->f = f;
    t->code = (CURLcode)-1;
}

static void tx_fini(struct tx *t)
{
    free(t->body);
    t->body = NULL;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->srv = srv_start();
    f->loop = ev_loop_new(EVFLAG_AUTO);
    f->u = upstream_new(f->loop);
    if (!f->loop || !f->u)
        return -1;
    ev_init(&f->deadline, deadline_cb);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    upstream_free(f->u);
    ev_timer_stop(f->loop, &f->deadline);
    ev_loop_destroy(f->loop);
    srv_stop(f->srv);
    free(f);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_get_ok(void **state)
{
    struct fx *f = *state;
    struct tx t;
    tx_init(&t, f);
    tx_start(&t, "GET", "/ok", NULL, 0, 5, NULL);
    assert_int_equal(upstream_active(f->u), 1);
    run_until_done(f, 1, 3.0);
    assert_int_equal(t.done_calls, 1);
    assert_int_equal(t.code, CURLE_OK);
    assert_string_equal(t.err, "");
    assert_int_equal(t.headers_calls, 1);
    assert_int_equal(t.status, 200);
    assert_string_equal(t.ctype, "text/plain");
    assert_string_equal(t.spaced, "padded value");
    assert_string_equal(t.folded, "a b");
    assert_int_equal(t.len, 11);
    assert_memory_equal(t.body, "hello world", 11);
    assert_int_equal(upstream_active(f->u), 0);
    tx_fini(&t);
}

static void test_status_500_and_1xx(void **state)
{
    struct fx *f = *state;
    struct tx a, b;
    tx_init(&a, f);
    tx_init(&b, f);
    tx_start(&a, "GET", "/500", NULL, 0, 5, NULL);
    tx_start(&b, "GET", "/continue", NULL, 0, 5, NULL);
    assert_int_equal(upstream_active(f->u), 2);
    run_until_done(f, 2, 3.0);
    assert_int_equal(a.done_calls, 1);
    assert_int_equal(a.code, CURLE_OK); /* HTTP errors are the caller's business */
    assert_int_equal(a.status, 500);
    assert_string_equal(a.ctype, "application/json");
    const char *j = "{\"error\":{\"message\":\"boom\"}}";
    assert_int_equal(a.len, strlen(j));
    assert_memory_equal(a.body, j, a.len);
    /* 100 and 103 are skipped; the final block's headers only */
    assert_int_equal(b.done_calls, 1);
    assert_int_equal(b.code, CURLE_OK);
    assert_int_equal(b.headers_calls, 1);
    assert_int_equal(b.status, 201);
    assert_string_equal(b.final_hdr, "yes");
    assert_int_equal(b.saw_link, 0);
    assert_int_equal(b.len, 2);
    tx_fini(&a);
    tx_fini(&b);
}

static void test_post_echo_2mib(void **state)
{
    struct fx *f = *state;
    char *body = malloc(BIG_LEN);
    assert_non_null(body);
    for (size_t i = 0; i < BIG_LEN; i++)
        body[i] = (char)big_byte(i * 3 + 1);
    struct tx t, t2;
    tx_init(&t, f);
    tx_init(&t2, f);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "X-Custom: 1");
    tx_start(&t, "POST", "/echo", body, BIG_LEN, 5, h);
    run_until_done(f, 1, 4.0);
    assert_int_equal(t.done_calls, 1);
    assert_int_equal(t.code, CURLE_OK);
    assert_int_equal(t.status, 200);
    assert_string_equal(t.recv_len, "2097152");
    assert_string_equal(t.recv_expect, "none");
    assert_string_equal(t.recv_ctype, "application/json");
    assert_string_equal(t.recv_method, "POST");
    assert_non_null(strstr(t.recv_hdrs, "x-custom"));
    assert_null(strstr(t.recv_hdrs, "transfer-encoding"));
    assert_int_equal(t.len, BIG_LEN);
    assert_memory_equal(t.body, body, BIG_LEN);
    /* no Content-Type given: libcurl must not invent a form type; PUT via custom request */
    tx_start(&t2, "PUT", "/echo", "{}", 2, 5, NULL);
    run_until_done(f, 2, 3.0);
    assert_int_equal(t2.code, CURLE_OK);
    assert_string_equal(t2.recv_ctype, "none");
    assert_string_equal(t2.recv_method, "PUT");
    assert_string_equal(t2.recv_len, "2");
    assert_int_equal(t2.len, 2);
    assert_memory_equal(t2.body, "{}", 2);
    free(body);
    tx_fini(&t);
    tx_fini(&t2);
}

static void test_chunked_progressive(void **state)
{
    struct fx *f = *state;
    struct tx t;
    tx_init(&t, f);
    tx_start(&t, "GET", "/chunked-slow", NULL, 0, 5, NULL);
    run_until_done(f, 1, 3.0);
    assert_int_equal(t.done_calls, 1);
    assert_int_equal(t.code, CURLE_OK);
    const char *want = "chunk-0\nchunk-1\nchunk-2\nchunk-3\nchunk-4\n";
    assert_int_equal(t.len, strlen(want));
    assert_memory_equal(t.body, want, t.len);
    assert_true(t.data_calls >= 3);
    /* delivered as it arrived, not at the end */
    double span =
        t.t_data[(t.data_calls < TX_MAX_TIMES ? t.data_calls : TX_MAX_TIMES) - 1] - t.t_data[0];
    assert_true(span >= 0.15);
    assert_true(t.t_data[0] - t.t_start < 0.1);
    assert_int_equal(t.saw_trailer, 0);
    assert_int_equal(t.headers_calls, 1); /* trailers do not make a second header block */
    tx_fini(&t);
}

static void test_pause_resume(void **state)
{
    struct fx *f = *state;
    struct tx t;
    tx_init(&t, f);
    t.pause_mode = 1;
    tx_start(&t, "GET", "/big", NULL, 0, 5, NULL);
    run_until_done(f, 1, 4.0);
    assert_int_equal(t.done_calls, 1);
    assert_int_equal(t.code, CURLE_OK);
    assert_int_equal(t.pauses, 2);
    assert_int_equal(t.calls_while_paused, 0);
    assert_true(t.t_data[1] - t.t_data[0] >= 0.095); /* nothing came during the pause */
    assert_int_equal(t.len, BIG_LEN);
    for (size_t i = 0; i < BIG_LEN; i++)
        if ((unsigned char)t.body[i] != big_byte(i))
            fail_msg("byte %zu differs", i);
    tx_fini(&t);
}

static void test_abort_after_resume(void **state)
{
    struct fx *f = *state;
    struct tx t;
    tx_init(&t, f);
    t.pause_mode = 1;
    t.abort_redelivery = 1;
    tx_start(&t, "GET", "/big", NULL, 0, 5, NULL);
    run_until_done(f, 1, 3.0);
    run_for(f, 0.05);
    assert_int_equal(t.done_calls, 1);
    assert_int_equal(t.code, CURLE_WRITE_ERROR);
    assert_int_equal(t.data_calls, 2); /* the paused call and the refused redelivery */
    assert_int_equal(t.len, 0);
    assert_int_equal(upstream_active(f->u), 0);
    tx_fini(&t);
}

static void wait_peer_closed(struct fx *f, int n)
{
    for (int i = 0; i < 100 && atomic_load(&f->srv->peer_closed) < n; i++)
        run_for(f, 0.01);
}

static void test_cancel_mid_transfer(void **state)
{
    struct fx *f = *state;
    struct tx t;
    tx_init(&t, f);
    t.cancel_after_first_ms = 10;
    tx_start(&t, "GET", "/chunked-slow", NULL, 0, 5, NULL);
    run_for(f, 0.3);
    assert_int_equal(t.cancelled, 1);
    assert_int_equal(t.done_calls, 0);
    assert_int_equal(t.data_calls, 1); /* chunk 1 was due 50 ms after chunk 0 */
    assert_int_equal(upstream_active(f->u), 0);
    wait_peer_closed(f, 1);
    assert_int_equal(atomic_load(&f->srv->peer_closed), 1);
    tx_fini(&t);
}

static void test_reentrant_cancel_abort(void **state)
{
    struct fx *f = *state;
    struct tx a, b, c;
    tx_init(&a, f);
    tx_init(&b, f);
    tx_init(&c, f);
    a.cancel_in_data = 1; /* upstream_cancel from inside on_data */
    b.abort_data = 1;
    c.abort_headers = 1;
    tx_start(&a, "GET", "/chunked-slow", NULL, 0, 5, NULL);
    tx_start(&b, "GET", "/big", NULL, 0, 5, NULL);
    tx_start(&c, "GET", "/ok", NULL, 0, 5, NULL);
    run_until_done(f, 2, 3.0);
    run_for(f, 0.1);
    assert_int_equal(a.cancelled, 1);
    assert_int_equal(a.done_calls, 0);
    assert_int_equal(a.data_calls, 1);
    assert_int_equal(b.done_calls, 1);
    assert_int_equal(b.code, CURLE_WRITE_ERROR);
    assert_int_equal(b.data_calls, 1);
    assert_int_equal(c.done_calls, 1);
    assert_int_equal(c.code, CURLE_WRITE_ERROR);
    assert_int_equal(c.headers_calls, 1);
    assert_int_equal(c.data_calls, 0);
    assert_int_equal(upstream_active(f->u), 0);
    wait_peer_closed(f, 1);
    assert_true(atomic_load(&f->srv->peer_closed) >= 1);
    tx_fini(&a);
    tx_fini(&b);
    tx_fini(&c);
}

static void test_start_from_callbacks(void **state)
{
    struct fx *f = *state;
    struct tx a, b, c;
    tx_init(&a, f);
    tx_init(&b, f);
    tx_init(&c, f);
    a.start_on_headers = &b; /* deferred: libcurl refuses add_handle in its callbacks */
    a.start_on_headers_url = "/500";
    a.start_on_done = &c;
    a.start_on_done_url = "/ok";
    tx_start(&a, "GET", "/ok", NULL, 0, 5, NULL);
    run_until_done(f, 3, 3.0);
    assert_non_null(b.x);
    assert_int_equal(a.code, CURLE_OK);
    assert_int_equal(b.code, CURLE_OK);
    assert_int_equal(b.status, 500);
    assert_int_equal(c.code, CURLE_OK);
    assert_int_equal(c.status, 200);
    assert_int_equal(upstream_active(f->u), 0);
    tx_fini(&a);
    tx_fini(&b);
    tx_fini(&c);
}

static void test_connect_refused(void **state)
{
    struct fx *f = *state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t al = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd); /* bound, never listened: nothing there now */
    char url[64], err[256] = "";
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/ok", ntohs(a.sin_port));
    struct tx t;
    tx_init(&t, f);
    struct upstream_request rq = {.method = "GET", .url = url, .timeout_secs = 5};
    t.x = upstream_start(f->u, &rq, &cbs, &t, err, sizeof(err));
    assert_non_null(t.x);
    run_until_done(f, 1, 3.0);
    assert_int_equal(t.done_calls, 1);
    assert_int_equal(t.code, CURLE_COULDNT_CONNECT);
    assert_true(t.err[0] != '\0');
    assert_int_equal(t.headers_calls, 0);
    tx_fini(&t);
}

static void test_timeout(void **state)
{
    struct fx *f = *state;
    struct tx t;
    tx_init(&t, f);
    tx_start(&t, "GET", "/hang", NULL, 0, 1, NULL);
    run_until_done(f, 1, 3.0);
    assert_int_equal(t.done_calls, 1);
    assert_int_equal(t.code, CURLE_OPERATION_TIMEDOUT);
    double el = t.t_done - t.t_start;
    assert_true(el >= 0.9);
    assert_true(el < 1.5);
    assert_int_equal(t.headers_calls, 0);
    wait_peer_closed(f, 1);
    assert_int_equal(atomic_load(&f->srv->peer_closed), 1);
    tx_fini(&t);
}

static void test_close_mid(void **state)
{
    struct fx *f = *state;
    struct tx t;
    tx_init(&t, f);
    tx_start(&t, "GET", "/close-mid", NULL, 0, 5, NULL);
    run_until_done(f, 1, 3.0);
    assert_int_equal(t.done_calls, 1);
    assert_true(t.code == CURLE_PARTIAL_FILE || t.code == CURLE_RECV_ERROR);
    assert_true(t.err[0] != '\0');
    assert_int_equal(t.status, 200);
    assert_int_equal(t.len, CLOSE_MID_LEN);
    tx_fini(&t);
}

static void test_connection_reuse(void **state)
{
    struct fx *f = *state;
    struct tx a, b;
    tx_init(&a, f);
    tx_init(&b, f);
    tx_start(&a, "GET", "/ok", NULL, 0, 5, NULL);
    run_until_done(f, 1, 3.0);
    assert_int_equal(a.code, CURLE_OK);
    tx_start(&b, "GET", "/ok", NULL, 0, 5, NULL);
    run_until_done(f, 2, 3.0);
    assert_int_equal(b.code, CURLE_OK);
    assert_int_equal(atomic_load(&f->srv->requests), 2);
    assert_int_equal(atomic_load(&f->srv->accepted), 1);
    tx_fini(&a);
    tx_fini(&b);
}

/* Every request after the first goes out on a kept-alive connection that the server closes
 * once it has read it: libcurl re-sends it on a new connection, and counts that against a
 * limit of 5 per easy handle that only curl_easy_reset clears. The pooled handle must not
 * carry the count from one transfer to the next. */
static void test_resend_on_dead_connection(void **state)
{
    struct fx *f = *state;
    enum { N = 8 };
    for (int i = 0; i < N; i++) {
        struct tx t;
        tx_init(&t, f);
        tx_start(&t, "POST", "/drop-after", "{}", 2, 5, NULL);
        run_until_done(f, i + 1, 3.0);
        assert_int_equal(t.done_calls, 1);
        if (t.code != CURLE_OK)
            fail_msg("transfer %d: %s (%s)", i, curl_easy_strerror(t.code), t.err);
        assert_int_equal(t.status, 200);
        assert_int_equal(t.len, 2);
        tx_fini(&t);
    }
    /* the first on a new connection, each later one twice: dropped, then answered */
    assert_int_equal(atomic_load(&f->srv->requests), 1 + 2 * (N - 1));
    assert_int_equal(atomic_load(&f->srv->accepted), N);
}

static double cpu_secs(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The provider closes a kept-alive connection while it is idle in libcurl's cache: nothing
 * may keep watching the socket (a readable socket nobody reads would wake the loop without
 * end), and the next request must get a new connection. */
static void test_idle_connection_closed_by_server(void **state)
{
    struct fx *f = *state;
    struct tx a, b;
    tx_init(&a, f);
    tx_init(&b, f);
    tx_start(&a, "GET", "/close-idle", NULL, 0, 5, NULL);
    run_until_done(f, 1, 3.0);
    assert_int_equal(a.code, CURLE_OK);
    assert_int_equal(a.status, 200);
    double c0 = cpu_secs();
    run_for(f, 0.3); /* the server's FIN arrives while the connection is idle */
    double spent = cpu_secs() - c0;
    if (spent > 0.15)
        fail_msg("the loop spun on the idle connection: %.3f s of CPU in 0.3 s", spent);
    tx_start(&b, "GET", "/ok", NULL, 0, 5, NULL);
    run_until_done(f, 2, 3.0);
    assert_int_equal(b.code, CURLE_OK);
    assert_int_equal(b.status, 200);
    assert_int_equal(atomic_load(&f->srv->accepted), 2);
    tx_fini(&a);
    tx_fini(&b);
}

static void test_free_in_flight(void **state)
{
    struct fx *f = *state;
    struct tx a, b, c;
    tx_init(&a, f);
    tx_init(&b, f);
    tx_init(&c, f);
    a.pause_mode = 1; /* paused with buffered data when freed */
    tx_start(&a, "GET", "/big", NULL, 0, 5, NULL);
    tx_start(&b, "GET", "/hang", NULL, 0, 5, NULL);
    tx_start(&c, "GET", "/chunked-slow", NULL, 0, 5, NULL);
    for (int i = 0; i < 50 && (a.data_calls == 0 || c.data_calls == 0); i++)
        run_for(f, 0.01);
    assert_int_equal(a.data_calls, 1);
    assert_true(c.data_calls >= 1);
    assert_int_equal(upstream_active(f->u), 3);
    int ad = a.data_calls, cd = c.data_calls;
    ev_timer_stop(f->loop, &a.resume_timer); /* would resume a freed transfer */
    upstream_free(f->u);
    f->u = NULL;
    run_for(f, 0.1);
    assert_int_equal(a.data_calls, ad);
    assert_int_equal(c.data_calls, cd);
    assert_int_equal(a.done_calls + b.done_calls + c.done_calls, 0);
    wait_peer_closed(f, 2); /* /hang and /chunked-slow notice; /big may be mid-send */
    assert_true(atomic_load(&f->srv->peer_closed) >= 2);
    tx_fini(&a);
    tx_fini(&b);
    tx_fini(&c);
}

/* A server inside the test's own loop (not the threaded one), so the loop iteration in which
 * a request arrives is known: one connection, GET requests, a fixed keep-alive answer. */
struct loop_srv {
    int lfd, cfd;
    uint16_t port;
    ev_io acc, rd;
    char buf[4096];
    size_t len;
    int accepted, requests;
    unsigned it_request; /* ev_iteration() when the last request head was read */
};

static void loop_srv_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct loop_srv *ls = w->data;
    ssize_t n = recv(ls->cfd, ls->buf + ls->len, sizeof(ls->buf) - ls->len, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        ev_io_stop(loop, w);
        return;
    }
    ls->len += (size_t)n;
    char *end;
    while ((end = memmem(ls->buf, ls->len, "\r\n\r\n", 4))) {
        size_t hlen = (size_t)(end - ls->buf) + 4;
        ls->requests++;
        ls->it_request = ev_iteration(loop);
        static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_int_equal(send(ls->cfd, resp, sizeof(resp) - 1, MSG_NOSIGNAL),
                         (ssize_t)(sizeof(resp) - 1));
        memmove(ls->buf, ls->buf + hlen, ls->len - hlen);
        ls->len -= hlen;
    }
}

static void loop_srv_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct loop_srv *ls = w->data;
    int fd = accept(ls->lfd, NULL, NULL);
    if (fd < 0)
        return;
    assert_int_equal(ls->cfd, -1); /* one connection: the second transfer reuses it */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    ls->cfd = fd;
    ls->accepted++;
    ev_io_init(&ls->rd, loop_srv_read_cb, fd, EV_READ);
    ls->rd.data = ls;
    ev_io_start(loop, &ls->rd);
}

struct trigger {
    int fds[2];
    ev_io io;
    struct tx *t;
    char url[64];
    unsigned it_start; /* ev_iteration() when the transfer was started */
};

/* An I/O callback starting a transfer, as the engine does when a client request arrives. */
static void trigger_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct trigger *tg = w->data;
    char c;
    assert_int_equal(read(tg->fds[0], &c, 1), 1);
    ev_io_stop(loop, w);
    char err[256] = "";
    struct upstream_request rq = {.method = "GET", .url = tg->url, .timeout_secs = 5};
    tg->it_start = ev_iteration(loop);
    tg->t->x = upstream_start(tg->t->f->u, &rq, &cbs, tg->t, err, sizeof(err));
    if (!tg->t->x)
        fail_msg("upstream_start: %s", err);
}

static void test_start_same_iteration(void **state)
{
    struct fx *f = *state;
    struct loop_srv ls = {.cfd = -1};
    ls.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(ls.lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(ls.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(ls.lfd, 4), 0);
    socklen_t al = sizeof(a);
    assert_int_equal(getsockname(ls.lfd, (struct sockaddr *)&a, &al), 0);
    ev_io_init(&ls.acc, loop_srv_accept_cb, ls.lfd, EV_READ);
    ls.acc.data = &ls;
    ev_io_start(f->loop, &ls.acc);

    /* warm-up: the connection the measured transfer reuses */
    struct tx w, t;
    tx_init(&w, f);
    tx_init(&t, f);
    struct trigger tg = {.t = &t};
    snprintf(tg.url, sizeof(tg.url), "http://127.0.0.1:%u/warm", ntohs(a.sin_port));
    char err[256] = "";
    struct upstream_request rq = {.method = "GET", .url = tg.url, .timeout_secs = 5};
    w.x = upstream_start(f->u, &rq, &cbs, &w, err, sizeof(err));
    assert_non_null(w.x);
    run_until_done(f, 1, 3.0);
    assert_int_equal(w.code, CURLE_OK);
    assert_int_equal(ls.requests, 1);

    assert_int_equal(pipe(tg.fds), 0);
    ev_io_init(&tg.io, trigger_cb, tg.fds[0], EV_READ);
    tg.io.data = &tg;
    ev_io_start(f->loop, &tg.io);
    assert_int_equal(write(tg.fds[1], "x", 1), 1);
    run_until_done(f, 2, 3.0);
    assert_int_equal(t.code, CURLE_OK);
    assert_int_equal(t.status, 200);
    assert_int_equal(ls.requests, 2);
    assert_int_equal(ls.accepted, 1);
    /* Sent before the loop polls again: the poll right after the starting callback already
     * sees the request. A 0 s timer in between costs one more iteration (an empty poll). */
    assert_int_equal(ls.it_request - tg.it_start, 1);

    ev_io_stop(f->loop, &tg.io);
    ev_io_stop(f->loop, &ls.acc);
    ev_io_stop(f->loop, &ls.rd);
    upstream_free(f->u); /* closes curl's end of the cached connection before ours */
    f->u = NULL;
    close(tg.fds[0]);
    close(tg.fds[1]);
    if (ls.cfd >= 0)
        close(ls.cfd);
    close(ls.lfd);
    tx_fini(&w);
    tx_fini(&t);
}

static void test_bad_args(void **state)
{
    struct fx *f = *state;
    char err[128] = "";
    struct tx t;
    tx_init(&t, f);
    struct upstream_request rq = {.method = "GET", .url = NULL};
    assert_null(upstream_start(f->u, &rq, &cbs, &t, err, sizeof(err)));
    assert_true(err[0] != '\0');
    err[0] = '\0';
    struct curl_slist *h = curl_slist_append(NULL, "X-A: 1"); /* freed by the failed start */
    struct upstream_request rq2 = {
        .method = "POST", .url = "http://127.0.0.1:1/", .body = NULL, .body_len = 5, .headers = h};
    assert_null(upstream_start(f->u, &rq2, &cbs, &t, err, sizeof(err)));
    assert_true(err[0] != '\0');
    assert_null(upstream_new(NULL));
    upstream_cancel(NULL);
    upstream_resume(NULL);
    upstream_free(NULL);
    assert_int_equal(upstream_active(NULL), 0);
    assert_int_equal(upstream_active(f->u), 0);
    run_for(f, 0.01);
    assert_int_equal(t.done_calls + t.headers_calls, 0);
}

int main(void)
{
    /* the tests talk to 127.0.0.1 directly whatever the environment says */
    setenv("no_proxy", "*", 1);
    setenv("NO_PROXY", "*", 1);
    if (upstream_global_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_500_and_1xx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_echo_2mib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_progressive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_after_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_mid_transfer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reentrant_cancel_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_from_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_mid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resend_on_dead_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_connection_closed_by_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_same_iteration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    upstream_global_cleanup();
    return rc;
}
