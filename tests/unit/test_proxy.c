/* proxy.c + engine_http.c + models.c through the real server (server.c) over loopback sockets,
 * against in-process mock providers (one accept thread per mock, one thread per connection;
 * all joined in teardown). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>
#include <jansson.h>

#include "metrics.h"
#include "server.h"
#include "settings.h"
#include "upstream.h"

/* ---- mock provider ---- */

enum mock_mode {
    M_JSON = 0, /* 200 application/json */
    M_STATUS,   /* status + body + extra headers */
    M_SSE,      /* an event stream, events 150 ms apart, then the end event */
    M_SSE_DIE,  /* two events, then the connection closes mid-stream */
    M_SSE_HANG, /* one event, then waits for the client to go away */
    M_MODELS,   /* GET /v1/models */
};

#define MOCK_MAX_CONNS 64

struct mock {
    const char *name;
    int lfd, port;
    int stop[2];
    pthread_t acc;
    pthread_mutex_t mu;
    pthread_t conns[MOCK_MAX_CONNS];
    int nconns;
    /* behaviour */
    _Atomic int mode;
    int status;
    char extra[256];
    char body[1024];
    int anthropic;         /* SSE flavour */
    atomic_int fail_first; /* answer 500 to this many requests first */
    /* observations */
    atomic_int requests;
    atomic_int hang_closed; /* M_SSE_HANG: the client closed */
    double hang_sent_at, hang_closed_at;
    char last_head[8192];
    char *last_body;
    size_t last_body_len;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int m_wait(struct mock *m, int fd, int ms)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = m->stop[0], .events = POLLIN}};
    int n = poll(p, 2, ms);
    if (n <= 0)
        return n;
    return (p[1].revents & POLLIN) ? -1 : 1;
}

static int m_send(int fd, const void *p, size_t len)
{
    const char *c = p;
    while (len) {
        ssize_t n = send(fd, c, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        c += n;
        len -= (size_t)n;
    }
    return 0;
}

static int m_sendf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int m_sendf(int fd, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return m_send(fd, buf, (size_t)n);
}

static int m_chunk(int fd, const char *s)
{
    return m_sendf(fd, "%zx\r\n%s\r\n", strlen(s), s);
}

static void *mock_conn(void *arg)
{
    void **a = arg;
    struct mock *m = a[0];
    int fd = (int)(intptr_t)a[1];
    free(a);
    char *buf = malloc(8u << 20);
    size_t len = 0;
    for (;;) {
        /* one request: headers, then Content-Length bytes */
        char *hend = NULL;
        size_t need = 0;
        for (;;) {
            if (!hend) {
                buf[len] = 0;
                hend = strstr(buf, "\r\n\r\n");
                if (hend) {
                    const char *cl = strcasestr(buf, "\r\ncontent-length:");
                    need = (size_t)(hend - buf) + 4 +
                           (cl && cl < hend ? strtoul(cl + 17, NULL, 10) : 0);
                }
            }
            if (hend && len >= need)
                break;
            if (m_wait(m, fd, 5000) <= 0)
                goto out;
            ssize_t n = recv(fd, buf + len, (8u << 20) - 1 - len, 0);
            if (n <= 0)
                goto out;
            len += (size_t)n;
        }
        size_t hlen = (size_t)(hend - buf) + 4;
        pthread_mutex_lock(&m->mu);
        snprintf(m->last_head, sizeof(m->last_head), "%.*s", (int)hlen, buf);
        free(m->last_body);
        m->last_body_len = need - hlen;
        m->last_body = malloc(m->last_body_len + 1);
        memcpy(m->last_body, buf + hlen, m->last_body_len);
        m->last_body[m->last_body_len] = 0;
        pthread_mutex_unlock(&m->mu);
        memmove(buf, buf + need, len - need);
        len -= need;
        atomic_fetch_add(&m->requests, 1);
        int mode = atomic_load(&m->mode);
        if (atomic_load(&m->fail_first) > 0) {
            atomic_fetch_sub(&m->fail_first, 1);
            static const char b[] = "{\"error\":\"first\"}";
            m_sendf(fd,
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                    "content-length: %zu\r\n\r\n%s",
                    sizeof(b) - 1, b);
            continue;
        }
        switch (mode) {
        case M_JSON: {
            char b[256];
            int bl = snprintf(b, sizeof(b), "{\"id\":\"chatcmpl-1\",\"provider\":\"%s\"}", m->name);
            m_sendf(fd,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-request-id: rq-%s\r\n"
                    "openai-processing-ms: 5\r\ncontent-length: %d\r\n\r\n%s",
                    m->name, bl, b);
            break;
        }
        case M_STATUS:
            m_sendf(fd,
                    "HTTP/1.1 %d X\r\ncontent-type: application/json\r\n%scontent-length: "
                    "%zu\r\n\r\n%s",
                    m->status, m->extra, strlen(m->body), m->body);
            break;
        case M_MODELS:
            m_sendf(fd,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    "%zu\r\n\r\n%s",
                    strlen(m->body), m->body);
            break;
        case M_SSE:
        case M_SSE_DIE:
        case M_SSE_HANG: {
            m_sendf(fd, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        "transfer-encoding: chunked\r\n\r\n");
            const char *ev = m->anthropic
                                 ? "event: content_block_delta\ndata: {\"type\":\"x\"}\n\n"
                                 : "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
            int nev = mode == M_SSE ? 3 : mode == M_SSE_DIE ? 2 : 1;
            for (int i = 0; i < nev; i++) {
                if (i)
                    usleep(150 * 1000);
                if (m_chunk(fd, ev) < 0)
                    goto out;
            }
            if (mode == M_SSE_DIE) {
                /* half an event, then gone */
                m_send(fd, "10\r\ndata: {\"partial", 19);
                goto out;
            }
            if (mode == M_SSE_HANG) {
                m->hang_sent_at = now_s();
                int w = m_wait(m, fd, 5000);
                if (w > 0) {
                    char tmp[64];
                    if (recv(fd, tmp, sizeof(tmp), 0) <= 0) {
                        m->hang_closed_at = now_s();
                        atomic_store(&m->hang_closed, 1);
                    }
                }
                goto out;
            }
            m_chunk(fd, m->anthropic ? "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
                                     : "data: [DONE]\n\n");
            m_send(fd, "0\r\n\r\n", 5);
            break;
        }
        default:
            goto out;
        }
    }
out:
    free(buf);
    close(fd);
    return NULL;
}

static void *mock_accept(void *arg)
{
    struct mock *m = arg;
    for (;;) {
        if (m_wait(m, m->lfd, 10000) < 0)
            break;
        int fd = accept(m->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        void **a = malloc(2 * sizeof(void *));
        a[0] = m;
        a[1] = (void *)(intptr_t)fd;
        pthread_mutex_lock(&m->mu);
        if (m->nconns < MOCK_MAX_CONNS &&
            pthread_create(&m->conns[m->nconns], NULL, mock_conn, a) == 0)
            m->nconns++;
        else {
            close(fd);
            free(a);
        }
        pthread_mutex_unlock(&m->mu);
    }
    return NULL;
}

static void mock_start(struct mock *m, const char *name)
{
    memset(m, 0, sizeof(*m));
    m->name = name;
    pthread_mutex_init(&m->mu, NULL);
    assert_int_equal(pipe(m->stop), 0);
    m->lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(m->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(m->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(m->lfd, 64), 0);
    socklen_t sl = sizeof(sin);
    getsockname(m->lfd, (struct sockaddr *)&sin, &sl);
    m->port = ntohs(sin.sin_port);
    assert_int_equal(pthread_create(&m->acc, NULL, mock_accept, m), 0);
}

static void mock_stop(struct mock *m)
{
    assert_int_equal(write(m->stop[1], "x", 1), 1);
    pthread_join(m->acc, NULL);
    for (int i = 0; i < m->nconns; i++)
        pthread_join(m->conns[i], NULL);
    close(m->lfd);
    close(m->stop[0]);
    close(m->stop[1]);
    free(m->last_body);
    pthread_mutex_destroy(&m->mu);
}

static void mock_head(struct mock *m, char *out, size_t cap)
{
    pthread_mutex_lock(&m->mu);
    snprintf(out, cap, "%s", m->last_head);
    pthread_mutex_unlock(&m->mu);
}

/* ---- the agent ---- */

struct fx {
    struct mock oa1, oa2, an1;
    int dead_port; /* nothing listens there */
    char path[64];
    struct server *srv;
    pthread_t tid;
    int port;
};

static void *run_main(void *arg)
{
    struct fx *f = arg;
    server_run(f->srv);
    return NULL;
}

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    socklen_t sl = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    close(fd);
    return ntohs(sin.sin_port);
}

/* oa1/oa2: OpenAI type; an1: Anthropic. oa1_port / an1_port may be overridden (dead port).
 * extra: more top-level keys (may be ""). */
static void fx_start(struct fx *f, int oa1_port, int oa2_port, int an1_port, int retries,
                     const char *extra)
{
    char json[4096];
    snprintf(json, sizeof(json),
             "{\"version\":1,\"spoa_bind\":\"127.0.0.1:0\",\"engine_bind\":\"127.0.0.1:0\","
             "\"threads\":1,\"log_level\":\"error\","
             "\"providers\":["
             "{\"name\":\"oa1\",\"type\":\"openai\",\"base_url\":\"http://127.0.0.1:%d\","
             "\"api_key_env\":\"LR_TEST_OA1_KEY\",\"max_retries\":%d,\"timeout_secs\":5,"
             "\"connect_timeout_secs\":2},"
             "{\"name\":\"oa2\",\"type\":\"openai\",\"base_url\":\"http://127.0.0.1:%d\","
             "\"max_retries\":0,\"timeout_secs\":5},"
             "{\"name\":\"an1\",\"type\":\"anthropic\",\"base_url\":\"http://127.0.0.1:%d\","
             "\"api_key_env\":\"LR_TEST_AN1_KEY\",\"max_retries\":0,\"timeout_secs\":5}],"
             "\"http_server\":{\"max_request_body_bytes\":4194304,"
             "\"sse_keepalive_interval_secs\":1}%s%s}",
             oa1_port, retries, oa2_port, an1_port, *extra ? "," : "", extra);
    snprintf(f->path, sizeof(f->path), "/tmp/lr-test-proxy-XXXXXX");
    int tfd = mkstemp(f->path);
    assert_true(tfd >= 0);
    assert_int_equal(write(tfd, json, strlen(json)), (ssize_t)strlen(json));
    close(tfd);
    char err[512];
    struct agent_settings *s = agent_settings_load(f->path, err, sizeof(err));
    if (!s)
        fail_msg("settings: %s", err);
    struct server_options o;
    server_options_default(&o);
    o.drain_timeout = 2.0;
    f->srv = server_new(s, &o, err, sizeof(err));
    agent_settings_unref(s);
    if (!f->srv)
        fail_msg("server_new: %s", err);
    f->port = server_engine_port(f->srv);
    assert_int_equal(pthread_create(&f->tid, NULL, run_main, f), 0);
}

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    setenv("LR_TEST_OA1_KEY", "sk-oa1-secret", 1);
    setenv("LR_TEST_AN1_KEY", "sk-an1-secret", 1);
    metrics_reset();
    struct fx *f = calloc(1, sizeof(*f));
    mock_start(&f->oa1, "oa1");
    mock_start(&f->oa2, "oa2");
    mock_start(&f->an1, "an1");
    f->dead_port = closed_port();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f->srv) {
        server_stop(f->srv);
        pthread_join(f->tid, NULL);
        server_free(f->srv);
        unlink(f->path);
    }
    mock_stop(&f->oa1);
    mock_stop(&f->oa2);
    mock_stop(&f->an1);
    free(f);
    return 0;
}

/* ---- client ---- */

static int client(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

struct resp {
    int status;
    char head[4096];
    char *body; /* decoded */
    size_t body_len;
    int eof; /* the connection was closed after the response */
};

static void resp_free(struct resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* Reads one whole response (content-length, chunked or until EOF). */
static int read_resp(int fd, struct resp *out)
{
    memset(out, 0, sizeof(*out));
    size_t cap = 8u << 20, len = 0;
    char *buf = malloc(cap + 1);
    char *hend = NULL;
    while (!hend) {
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0) {
            free(buf);
            return -1;
        }
        len += (size_t)n;
        buf[len] = 0;
        hend = strstr(buf, "\r\n\r\n");
    }
    size_t hlen = (size_t)(hend - buf) + 4;
    snprintf(out->head, sizeof(out->head), "%.*s", (int)hlen, buf);
    sscanf(buf, "HTTP/1.1 %d", &out->status);
    out->body = malloc(cap);
    const char *cl = strcasestr(out->head, "\r\ncontent-length:");
    int chunked = strcasestr(out->head, "transfer-encoding: chunked") != NULL;
    size_t pos = hlen;
    for (;;) {
        if (cl) {
            size_t want = strtoul(cl + 17, NULL, 10);
            if (len - hlen >= want) {
                memcpy(out->body, buf + hlen, want);
                out->body_len = want;
                break;
            }
        } else if (chunked) {
            /* decode as far as possible */
            int done = 0;
            while (1) {
                char *eol = memmem(buf + pos, len - pos, "\r\n", 2);
                if (!eol)
                    break;
                size_t sz = strtoul(buf + pos, NULL, 16);
                size_t dstart = (size_t)(eol - buf) + 2;
                if (len < dstart + sz + 2)
                    break;
                if (sz == 0) {
                    done = 1;
                    break;
                }
                memcpy(out->body + out->body_len, buf + dstart, sz);
                out->body_len += sz;
                pos = dstart + sz + 2;
            }
            if (done)
                break;
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0) {
            out->eof = 1;
            if (!cl && !chunked) {
                memcpy(out->body, buf + hlen, len - hlen);
                out->body_len = len - hlen;
            }
            break;
        }
        len += (size_t)n;
    }
    out->body[out->body_len] = 0;
    free(buf);
    return 0;
}

static void send_all(int fd, const char *p, size_t len)
{
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

static void post(int fd, const char *path, const char *hdrs, const char *body)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
                     "Content-Length: %zu\r\n\r\n",
                     path, hdrs, strlen(body));
    send_all(fd, head, (size_t)n);
    send_all(fd, body, strlen(body));
}

static void do_req(struct fx *f, const char *path, const char *hdrs, const char *body,
                   struct resp *rp)
{
    int fd = client(f->port);
    post(fd, path, hdrs, body);
    assert_int_equal(read_resp(fd, rp), 0);
    close(fd);
}

static void do_get(struct fx *f, const char *path, const char *hdrs, struct resp *rp)
{
    int fd = client(f->port);
    char req[512];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n", path, hdrs);
    send_all(fd, req, (size_t)n);
    assert_int_equal(read_resp(fd, rp), 0);
    close(fd);
}

static const char chat_body[] = "{\"model\":\"gpt-4\",  \"messages\":[{\"role\":\"user\","
                                "\"content\":\"hi\"}] }";
static const char msg_body[] = "{\"model\":\"claude-3\",\"max_tokens\":5,\"messages\":[]}";

/* ---- tests ---- */

static void test_relay_openai_key_injection(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->oa1.port, f->oa2.port, f->an1.port, 0, "");
    struct resp rp;
    do_req(f, "/v1/chat/completions",
           "Authorization: Bearer client-key\r\nX-Api-Key: client-x\r\nAccept-Encoding: gzip\r\n"
           "Connection: keep-alive\r\nX-Custom: yes\r\n",
           chat_body, &rp);
    assert_int_equal(rp.status, 200);
    assert_string_equal(rp.body, "{\"id\":\"chatcmpl-1\",\"provider\":\"oa1\"}");
    assert_non_null(strcasestr(rp.head, "x-request-id: rq-oa1"));
    assert_non_null(strcasestr(rp.head, "openai-processing-ms: 5"));
    assert_non_null(strcasestr(rp.head, "content-type: application/json"));
    char h[8192];
    mock_head(&f->oa1, h, sizeof(h));
    assert_non_null(strstr(h, "POST /v1/chat/completions HTTP/1.1"));
    assert_non_null(strcasestr(h, "authorization: Bearer sk-oa1-secret"));
    assert_null(strstr(h, "client-key"));
    assert_null(strcasestr(h, "x-api-key"));
    assert_non_null(strcasestr(h, "accept-encoding: identity"));
    assert_null(strcasestr(h, "gzip"));
    assert_null(strcasestr(h, "connection: keep-alive"));
    assert_non_null(strcasestr(h, "x-custom: yes"));
    assert_null(strcasestr(h, "accept:")); /* none sent: none added, not libcurl's default */
    pthread_mutex_lock(&f->oa1.mu);
    assert_string_equal(f->oa1.last_body, chat_body); /* bytes unchanged */
    pthread_mutex_unlock(&f->oa1.mu);
    resp_free(&rp);
}

static void test_relay_anthropic_and_passthrough(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->dead_port, f->oa2.port, f->an1.port, 0, "");
    struct resp rp;
    /* Anthropic: x-api-key replaced, Authorization dropped, anthropic-version added. */
    do_req(f, "/v1/messages",
           "Authorization: Bearer client\r\nX-Api-Key: client-x\r\n"
           "Anthropic-Beta: tools-1\r\n",
           msg_body, &rp);
    assert_int_equal(rp.status, 200);
    char h[8192];
    mock_head(&f->an1, h, sizeof(h));
    assert_non_null(strcasestr(h, "x-api-key: sk-an1-secret"));
    assert_null(strcasestr(h, "authorization"));
    assert_non_null(strcasestr(h, "anthropic-version: 2023-06-01"));
    assert_non_null(strcasestr(h, "anthropic-beta: tools-1"));
    resp_free(&rp);
    /* The client's Accept passes as sent. */
    do_req(f, "/v1/messages", "Accept: application/json\r\n", msg_body, &rp);
    mock_head(&f->an1, h, sizeof(h));
    assert_non_null(strcasestr(h, "\r\naccept: application/json\r\n"));
    resp_free(&rp);
    /* The client's own anthropic-version is kept (not doubled). */
    do_req(f, "/v1/messages", "Anthropic-Version: 2024-01-01\r\n", msg_body, &rp);
    mock_head(&f->an1, h, sizeof(h));
    assert_non_null(strcasestr(h, "anthropic-version: 2024-01-01"));
    assert_null(strcasestr(h, "2023-06-01"));
    resp_free(&rp);
    /* oa1 refuses connections -> oa2, which has no key: the client's credentials pass. */
    do_req(f, "/v1/chat/completions", "Authorization: Bearer client-key\r\n", chat_body, &rp);
    assert_int_equal(rp.status, 200);
    assert_non_null(strstr(rp.body, "oa2"));
    mock_head(&f->oa2, h, sizeof(h));
    assert_non_null(strcasestr(h, "authorization: Bearer client-key"));
    resp_free(&rp);
}

static void test_fallback_on_500_and_retry(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->oa1.port, f->oa2.port, f->an1.port, 1, "");
    atomic_store(&f->oa1.mode, M_STATUS);
    f->oa1.status = 500;
    strcpy(f->oa1.body, "{\"error\":\"boom\"}");
    struct resp rp;
    do_req(f, "/v1/chat/completions", "", chat_body, &rp);
    assert_int_equal(rp.status, 200);
    assert_non_null(strstr(rp.body, "oa2"));
    assert_int_equal(atomic_load(&f->oa1.requests), 2); /* one retry (max_retries 1) */
    resp_free(&rp);
    /* A retry that succeeds stays on the same provider. */
    atomic_store(&f->oa1.mode, M_JSON);
    atomic_store(&f->oa1.fail_first, 1);
    do_req(f, "/v1/chat/completions", "", chat_body, &rp);
    assert_int_equal(rp.status, 200);
    assert_non_null(strstr(rp.body, "oa1"));
    resp_free(&rp);
    do_get(f, "/metrics", "", &rp);
    assert_int_equal(rp.status, 200);
    assert_non_null(strstr(rp.head, "text/plain; version=0.0.4"));
    assert_non_null(strstr(rp.body, "lunaroute_requests_total{provider=\"oa2\",model=\"gpt-4\","
                                    "status=\"200\"} 1"));
    assert_non_null(strstr(rp.body, "lunaroute_requests_total{provider=\"oa1\",model=\"gpt-4\","
                                    "status=\"200\"} 1"));
    assert_non_null(strstr(rp.body, "lunaroute_retries_total{provider=\"oa1\"} 2"));
    assert_non_null(strstr(rp.body, "lunaroute_fallbacks_total{reason=\"upstream_5xx\"} 1"));
    resp_free(&rp);
}

static void test_429_fallover_and_avoid(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->oa1.port, f->oa2.port, f->an1.port, 3, "");
    atomic_store(&f->oa1.mode, M_STATUS);
    f->oa1.status = 429;
    strcpy(f->oa1.extra, "retry-after: 30\r\n");
    strcpy(f->oa1.body, "{\"error\":{\"message\":\"slow down\"}}");
    struct resp rp;
    do_req(f, "/v1/chat/completions", "", chat_body, &rp);
    assert_int_equal(rp.status, 200);
    assert_non_null(strstr(rp.body, "oa2"));
    assert_int_equal(atomic_load(&f->oa1.requests), 1); /* no retry on 429 */
    resp_free(&rp);
    do_req(f, "/v1/chat/completions", "", chat_body, &rp);
    assert_int_equal(rp.status, 200);
    assert_non_null(strstr(rp.body, "oa2"));
    assert_int_equal(atomic_load(&f->oa1.requests), 1); /* avoided while limited */
    resp_free(&rp);
}

static void test_all_fail_last_response_relayed(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->oa1.port, f->oa2.port, f->dead_port, 0, "");
    atomic_store(&f->oa1.mode, M_STATUS);
    f->oa1.status = 500;
    strcpy(f->oa1.body, "{\"error\":\"oa1\"}");
    atomic_store(&f->oa2.mode, M_STATUS);
    f->oa2.status = 429;
    strcpy(f->oa2.extra, "retry-after: 7\r\nx-ratelimit-remaining-requests: 0\r\n");
    strcpy(f->oa2.body, "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"}}");
    struct resp rp;
    do_req(f, "/v1/chat/completions", "", chat_body, &rp);
    assert_int_equal(rp.status, 429); /* not wrapped in a 502 */
    assert_string_equal(rp.body, f->oa2.body);
    assert_non_null(strcasestr(rp.head, "retry-after: 7"));
    assert_non_null(strcasestr(rp.head, "x-ratelimit-remaining-requests: 0"));
    resp_free(&rp);
    /* Connect refused with nothing else: 502 JSON in the Anthropic dialect. */
    do_req(f, "/v1/messages", "", msg_body, &rp);
    assert_int_equal(rp.status, 502);
    json_t *j = json_loads(rp.body, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "error");
    json_decref(j);
    resp_free(&rp);
}

static void test_streaming_progressive(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->oa1.port, f->oa2.port, f->an1.port, 0, "");
    atomic_store(&f->oa1.mode, M_SSE);
    int fd = client(f->port);
    double t0 = now_s();
    post(fd, "/v1/chat/completions", "", "{\"model\":\"gpt-4\",\"stream\":true}");
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n > 0);
    buf[n] = 0;
    double first = now_s() - t0;
    assert_non_null(strstr(buf, "200 OK"));
    assert_non_null(strstr(buf, "transfer-encoding: chunked"));
    assert_non_null(strstr(buf, "text/event-stream"));
    /* the first event arrives before the stream is over (300 ms in total) */
    if (!strstr(buf, "data: {"))
        assert_true(recv(fd, buf, sizeof(buf) - 1, 0) > 0);
    assert_true(now_s() - t0 < 0.25);
    (void)first;
    /* the rest, ending with [DONE] and the last chunk */
    char all[16384];
    size_t len = 0;
    while (!memmem(all, len, "0\r\n\r\n", 5)) {
        n = recv(fd, all + len, sizeof(all) - len, 0);
        assert_true(n > 0);
        len += (size_t)n;
    }
    assert_non_null(memmem(all, len, "data: [DONE]", 12));
    assert_null(memmem(all, len, "stream_interrupted", 18));
    assert_true(now_s() - t0 >= 0.28);
    /* keep-alive: the connection serves another request */
    post(fd, "/v1/chat/completions", "", chat_body);
    atomic_store(&f->oa1.mode, M_JSON);
    struct resp rp;
    assert_int_equal(read_resp(fd, &rp), 0);
    assert_int_equal(rp.status, 200);
    resp_free(&rp);
    close(fd);
}

static void test_stream_dies_midway(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->oa1.port, f->oa2.port, f->an1.port, 0, "");
    atomic_store(&f->oa1.mode, M_SSE_DIE);
    struct resp rp;
    do_req(f, "/v1/chat/completions", "", "{\"model\":\"gpt-4\",\"stream\":true}", &rp);
    assert_int_equal(rp.status, 200);
    assert_non_null(strstr(rp.body, "\"code\":\"stream_interrupted\""));
    assert_non_null(strstr(rp.body, "\"type\":\"upstream_error\""));
    assert_null(strstr(rp.body, "[DONE]"));
    /* the error event starts on an event boundary */
    assert_non_null(strstr(rp.body, "\n\ndata: {\"error\""));
    resp_free(&rp);
    /* Anthropic flavour */
    atomic_store(&f->an1.mode, M_SSE_DIE);
    f->an1.anthropic = 1;
    do_req(f, "/v1/messages", "", "{\"model\":\"claude-3\",\"stream\":true}", &rp);
    assert_int_equal(rp.status, 200);
    assert_non_null(strstr(rp.body, "event: error\ndata: {\"type\":\"error\""));
    assert_non_null(strstr(rp.body, "\"api_error\""));
    assert_null(strstr(rp.body, "message_stop"));
    resp_free(&rp);
}

static void test_client_disconnect_cancels(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->oa1.port, f->oa2.port, f->an1.port, 0, "");
    atomic_store(&f->oa1.mode, M_SSE_HANG);
    int fd = client(f->port);
    post(fd, "/v1/chat/completions", "", "{\"model\":\"gpt-4\",\"stream\":true}");
    char buf[4096];
    size_t len = 0;
    /* the first event, then (upstream silent, sse_keepalive_interval_secs 1) a keep-alive */
    while (!memmem(buf, len, ": keep-alive\n\n", 14)) {
        ssize_t n = recv(fd, buf + len, sizeof(buf) - len, 0);
        assert_true(n > 0);
        len += (size_t)n;
    }
    assert_non_null(memmem(buf, len, "data: {", 7));
    double t0 = now_s();
    close(fd);
    while (!atomic_load(&f->oa1.hang_closed) && now_s() - t0 < 2)
        usleep(10 * 1000);
    assert_true(atomic_load(&f->oa1.hang_closed));
    assert_true(f->oa1.hang_closed_at - t0 < 1.0);
}

static void test_bad_requests_and_big_body(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->oa1.port, f->oa2.port, f->an1.port, 0, "");
    struct resp rp;
    do_req(f, "/v1/chat/completions", "", "{not json", &rp);
    assert_int_equal(rp.status, 400);
    assert_non_null(strstr(rp.head, "content-type: application/json"));
    assert_non_null(strstr(rp.body, "\"error\""));
    resp_free(&rp);
    do_req(f, "/v1/messages", "", "{\"max_tokens\":1}", &rp);
    assert_int_equal(rp.status, 400);
    assert_non_null(strstr(rp.body, "\"type\":\"error\""));
    resp_free(&rp);
    /* over max_request_body_bytes (4 MiB): 413 before the body */
    int fd = client(f->port);
    const char big[] = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                       "Content-Length: 5000000\r\n\r\n";
    send_all(fd, big, sizeof(big) - 1);
    assert_int_equal(read_resp(fd, &rp), 0);
    assert_int_equal(rp.status, 413);
    resp_free(&rp);
    close(fd);
    /* 2 MiB body: forwarded intact */
    size_t blen = 2u << 20;
    char *body = malloc(blen + 1);
    int h = snprintf(body, blen, "{\"model\":\"gpt-4\",\"pad\":\"");
    for (size_t i = (size_t)h; i < blen - 2; i++)
        body[i] = (char)('a' + i % 26);
    body[blen - 2] = '"';
    body[blen - 1] = '}';
    body[blen] = 0;
    do_req(f, "/v1/chat/completions", "", body, &rp);
    assert_int_equal(rp.status, 200);
    pthread_mutex_lock(&f->oa1.mu);
    assert_int_equal(f->oa1.last_body_len, blen);
    assert_memory_equal(f->oa1.last_body, body, blen);
    pthread_mutex_unlock(&f->oa1.mu);
    resp_free(&rp);
    free(body);
}

static void test_readyz_all_circuits_open(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->dead_port, f->dead_port, f->dead_port, 0,
             "\"routing\":{\"circuit_breaker\":{\"failure_threshold\":1,\"success_threshold\":1,"
             "\"open_secs\":60}}");
    struct resp rp;
    do_get(f, "/readyz", "", &rp);
    assert_int_equal(rp.status, 200);
    resp_free(&rp);
    do_req(f, "/v1/chat/completions", "", chat_body, &rp);
    assert_int_equal(rp.status, 502);
    resp_free(&rp);
    do_req(f, "/v1/messages", "", msg_body, &rp);
    assert_int_equal(rp.status, 502);
    resp_free(&rp);
    do_get(f, "/readyz", "", &rp);
    assert_int_equal(rp.status, 503);
    assert_non_null(strstr(rp.body, "not_ready"));
    resp_free(&rp);
    /* every circuit open: nothing is tried, 503 */
    do_req(f, "/v1/chat/completions", "", chat_body, &rp);
    assert_int_equal(rp.status, 503);
    resp_free(&rp);
}

static void test_models_merge(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->oa1.port, f->dead_port, f->an1.port, 0, "");
    atomic_store(&f->oa1.mode, M_MODELS);
    strcpy(f->oa1.body, "{\"object\":\"list\",\"data\":[{\"id\":\"gpt-4\",\"object\":\"model\","
                        "\"created\":1700000000,\"owned_by\":\"openai\"}]}");
    atomic_store(&f->an1.mode, M_MODELS);
    strcpy(f->an1.body,
           "{\"data\":[{\"type\":\"model\",\"id\":\"claude-3\",\"display_name\":"
           "\"Claude 3\",\"created_at\":\"2024-02-29T00:00:00Z\"}],\"has_more\":false}");
    struct resp rp;
    do_get(f, "/v1/models", "", &rp);
    assert_int_equal(rp.status, 200);
    json_t *j = json_loads(rp.body, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
    json_t *d = json_object_get(j, "data");
    assert_int_equal(json_array_size(d), 2);
    json_t *c = json_array_get(d, 1);
    assert_string_equal(json_string_value(json_object_get(c, "id")), "claude-3");
    assert_int_equal(json_integer_value(json_object_get(c, "created")), 1709164800);
    json_decref(j);
    resp_free(&rp);
    char h[8192];
    mock_head(&f->oa1, h, sizeof(h));
    assert_non_null(strstr(h, "GET /v1/models"));
    do_get(f, "/v1/models", "anthropic-version: 2023-06-01\r\n", &rp);
    assert_int_equal(rp.status, 200);
    j = json_loads(rp.body, 0, NULL);
    assert_non_null(j);
    assert_false(json_is_true(json_object_get(j, "has_more")));
    assert_string_equal(json_string_value(json_object_get(j, "first_id")), "gpt-4");
    assert_string_equal(json_string_value(json_object_get(j, "last_id")), "claude-3");
    c = json_array_get(json_object_get(j, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "type")), "model");
    assert_string_equal(json_string_value(json_object_get(c, "created_at")),
                        "2023-11-14T22:13:20Z");
    json_decref(j);
    resp_free(&rp);
}

static void test_dialect_restriction(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->oa1.port, f->oa2.port, f->an1.port, 0, "\"api_dialect\":\"openai\"");
    struct resp rp;
    do_req(f, "/v1/messages", "", msg_body, &rp);
    assert_int_equal(rp.status, 404);
    resp_free(&rp);
    do_req(f, "/v1/chat/completions", "", chat_body, &rp);
    assert_int_equal(rp.status, 200);
    resp_free(&rp);
}

static void test_switch_notification(void **state)
{
    struct fx *f = *state;
    fx_start(f, f->dead_port, f->oa2.port, f->an1.port, 0,
             "\"routing\":{\"provider_switch_notification\":{\"enabled\":true,"
             "\"default_message\":\"IMPORTANT: switched to ${new_provider}\"}}");
    struct resp rp;
    do_req(f, "/v1/chat/completions", "", chat_body, &rp);
    assert_int_equal(rp.status, 200);
    pthread_mutex_lock(&f->oa2.mu);
    assert_non_null(strstr(f->oa2.last_body, "IMPORTANT: switched to oa2"));
    pthread_mutex_unlock(&f->oa2.mu);
    resp_free(&rp);
}

int main(void)
{
    if (upstream_global_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_relay_openai_key_injection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_anthropic_and_passthrough, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallback_on_500_and_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_429_fallover_and_avoid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_fail_last_response_relayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming_progressive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_dies_midway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_disconnect_cancels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests_and_big_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readyz_all_circuits_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_models_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dialect_restriction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_notification, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    metrics_free_all();
    upstream_global_cleanup();
    return rc;
}
