/* engine_http.c over real loopback sockets: an in-process engine on its own loop thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>
#include <ev.h>
#include <jansson.h>

#include "buf.h"
#include "engine_http.h"
#include "metrics.h"
#include "net.h"
#include "proxy.h"
#include "settings.h"

struct harness {
    struct ev_loop *loop;
    struct engine_http *eh;
    struct net_acceptor acc;
    ev_async stop;
    pthread_t tid;
    int port;
    struct engine_gen *gen;
    uint64_t next_id;
};

static void h_accept(void *ud, int fd)
{
    struct harness *h = ud;
    engine_http_accept(h->eh, fd, ++h->next_id);
}

static void h_stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)revents;
    struct harness *h = w->data;
    net_acceptor_close(&h->acc);
    engine_http_free(h->eh);
    h->eh = NULL;
    ev_async_stop(loop, w);
    ev_break(loop, EVBREAK_ALL);
}

static void *h_main(void *arg)
{
    struct harness *h = arg;
    ev_run(h->loop, 0);
    return NULL;
}

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    struct harness *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    /* One provider that is never reached: this test has no upstream (NULL), so every
     * attempt fails as a connect error (test_proxy.c covers real upstreams). */
    static const char json[] = "{\"providers\":[{\"name\":\"openai\",\"type\":\"openai\","
                               "\"base_url\":\"http://127.0.0.1:1\",\"max_retries\":0},"
                               "{\"name\":\"anthropic\",\"type\":\"anthropic\","
                               "\"base_url\":\"http://127.0.0.1:1\",\"max_retries\":0}],"
                               "\"http_server\":{\"max_request_body_bytes\":1000}}";
    char err[256];
    struct agent_settings *s = agent_settings_parse(json, strlen(json), err, sizeof(err));
    if (!s)
        fail_msg("settings: %s", err);
    h->gen = engine_gen_new(s, err, sizeof(err));
    agent_settings_unref(s);
    if (!h->gen)
        fail_msg("gen: %s", err);
    h->loop = ev_loop_new(EVFLAG_AUTO);
    struct engine_http_config cfg;
    engine_http_config_default(&cfg);
    cfg.header_timeout = 0.3;
    cfg.idle_timeout = 2.0;
    cfg.linger_timeout = 0.5;
    cfg.max_header_bytes = 4096;
    h->eh = engine_http_new(h->loop, &cfg, &h->gen, NULL);
    int fd = net_listen("127.0.0.1:0", 0, 64, true, err, sizeof(err));
    assert_true(fd >= 0);
    h->port = net_local_port(fd);
    net_acceptor_init(&h->acc, h->loop, fd, "engine", h_accept, h);
    net_acceptor_start(&h->acc);
    ev_async_init(&h->stop, h_stop_cb);
    h->stop.data = h;
    ev_async_start(h->loop, &h->stop);
    assert_int_equal(pthread_create(&h->tid, NULL, h_main, h), 0);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    struct harness *h = *state;
    ev_async_send(h->loop, &h->stop);
    pthread_join(h->tid, NULL);
    ev_loop_destroy(h->loop);
    engine_gen_unref(h->gen);
    metrics_free_all();
    free(h);
    return 0;
}

static int client(const struct harness *h)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)h->port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

static void send_all(int fd, const char *s)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        assert_true(n > 0);
        off += (size_t)n;
    }
}

struct resp {
    int status;
    char headers[2048];
    char body[4096];
    size_t body_len;
};

/* Buffered reader so pipelined responses can be split. */
struct reader {
    int fd;
    char buf[16384];
    size_t len;
};

static int fill(struct reader *r)
{
    if (r->len >= sizeof(r->buf))
        return -1;
    ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
    if (n <= 0)
        return -1;
    r->len += (size_t)n;
    return 0;
}

/* Reads one response; head: no body expected. 0, or -1 on EOF/timeout before a response. */
static int read_resp(struct reader *r, struct resp *out, int head)
{
    memset(out, 0, sizeof(*out));
    char *end;
    for (;;) {
        r->buf[r->len < sizeof(r->buf) ? r->len : sizeof(r->buf) - 1] = 0;
        end = r->len ? strstr(r->buf, "\r\n\r\n") : NULL;
        if (end)
            break;
        if (fill(r) < 0)
            return -1;
    }
    size_t hlen = (size_t)(end - r->buf) + 4;
    assert_true(hlen < sizeof(out->headers));
    memcpy(out->headers, r->buf, hlen);
    out->headers[hlen] = 0;
    assert_int_equal(sscanf(out->headers, "HTTP/1.1 %d", &out->status), 1);
    const char *cl = strstr(out->headers, "content-length: ");
    assert_non_null(cl);
    size_t blen = head ? 0 : strtoul(cl + 16, NULL, 10);
    assert_true(blen < sizeof(out->body));
    while (r->len < hlen + blen)
        assert_int_equal(fill(r), 0);
    memcpy(out->body, r->buf + hlen, blen);
    out->body[blen] = 0;
    out->body_len = blen;
    memmove(r->buf, r->buf + hlen + blen, r->len - hlen - blen);
    r->len -= hlen + blen;
    return 0;
}

/* True when the server closes the connection (EOF) within the receive timeout. */
static int reads_eof(struct reader *r)
{
    char tmp[512];
    for (;;) {
        ssize_t n = recv(r->fd, tmp, sizeof(tmp), 0);
        if (n == 0)
            return 1;
        if (n < 0)
            return 0;
    }
}

static json_t *parse_json(const struct resp *rp)
{
    json_error_t e;
    json_t *j = json_loadb(rp->body, rp->body_len, 0, &e);
    if (!j)
        fail_msg("bad JSON body '%s': %s", rp->body, e.text);
    assert_non_null(strstr(rp->headers, "content-type: application/json\r\n"));
    return j;
}

static void expect_json_status(const struct resp *rp, int status, const char *key, const char *v)
{
    assert_int_equal(rp->status, status);
    json_t *j = parse_json(rp);
    assert_string_equal(json_string_value(json_object_get(j, key)), v);
    json_decref(j);
}

static void expect_openai_error(const struct resp *rp, int status, const char *code)
{
    assert_int_equal(rp->status, status);
    json_t *j = parse_json(rp);
    json_t *e = json_object_get(j, "error");
    assert_non_null(e);
    assert_null(json_object_get(j, "type"));
    assert_string_equal(json_string_value(json_object_get(e, "code")), code);
    assert_non_null(json_string_value(json_object_get(e, "message")));
    assert_non_null(json_string_value(json_object_get(e, "type")));
    json_decref(j);
}

static void expect_anthropic_error(const struct resp *rp, int status, const char *type)
{
    assert_int_equal(rp->status, status);
    json_t *j = parse_json(rp);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "error");
    json_t *e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "type")), type);
    assert_non_null(json_string_value(json_object_get(e, "message")));
    json_decref(j);
}

static void test_healthz_readyz(void **state)
{
    struct harness *h = *state;
    struct reader r = {.fd = client(h)};
    struct resp rp;
    send_all(r.fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_json_status(&rp, 200, "status", "ok");
    send_all(r.fd, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_json_status(&rp, 200, "status", "ready");
    /* HEAD: same headers, no body. */
    send_all(r.fd, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 1), 0);
    assert_int_equal(rp.status, 200);
    assert_non_null(strstr(rp.headers, "content-length: 15\r\n"));
    /* ...and the connection is still in sync afterwards. */
    send_all(r.fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_json_status(&rp, 200, "status", "ok");
    close(r.fd);
}

static void test_not_found_dialects(void **state)
{
    struct harness *h = *state;
    struct reader r = {.fd = client(h)};
    struct resp rp;
    send_all(r.fd, "GET /v1/nothing?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_openai_error(&rp, 404, "not_found");
    assert_non_null(strstr(rp.body, "/v1/nothing"));
    assert_null(strstr(rp.body, "x=1"));

    send_all(r.fd, "GET /v1/nothing HTTP/1.1\r\nHost: x\r\nAnthropic-Version: 2023-06-01\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_anthropic_error(&rp, 404, "not_found_error");

    send_all(r.fd, "POST /v1/messages/count_tokens HTTP/1.1\r\nHost: x\r\n"
                   "Content-Length: 2\r\n\r\n{}");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_anthropic_error(&rp, 404, "not_found_error");

    send_all(r.fd, "POST /v1/messagesX HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_openai_error(&rp, 404, "not_found");

    /* A path needing JSON escaping stays valid JSON. */
    send_all(r.fd, "GET /a\"b\\c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_openai_error(&rp, 404, "not_found");
    close(r.fd);
}

static void test_keepalive_and_pipelining(void **state)
{
    struct harness *h = *state;
    struct reader r = {.fd = client(h)};
    struct resp rp;
    /* Three requests in one write, answered in order; the chunked body in between is
     * buffered and handed to the proxy, which rejects it (not JSON). */
    send_all(r.fd, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                   "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                   "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_openai_error(&rp, 404, "not_found");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_openai_error(&rp, 400, "bad_request");
    assert_non_null(strstr(rp.body, "not valid JSON"));
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_json_status(&rp, 200, "status", "ok");
    assert_null(strstr(rp.headers, "connection: close"));
    /* Still open: a later request on the same connection. */
    send_all(r.fd, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_json_status(&rp, 200, "status", "ready");
    /* Connection: close is honoured, and what follows it is ignored. */
    send_all(r.fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                   "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    assert_int_equal(rp.status, 200);
    assert_non_null(strstr(rp.headers, "connection: close\r\n"));
    assert_int_equal(r.len, 0);
    assert_true(reads_eof(&r));
    close(r.fd);
}

static void test_http10(void **state)
{
    struct harness *h = *state;
    struct reader r = {.fd = client(h)};
    struct resp rp;
    send_all(r.fd, "GET /healthz HTTP/1.0\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_json_status(&rp, 200, "status", "ok");
    assert_true(reads_eof(&r));
    close(r.fd);

    /* HTTP/1.0 with keep-alive stays open and says so. */
    struct reader r2 = {.fd = client(h)};
    send_all(r2.fd, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(read_resp(&r2, &rp, 0), 0);
    assert_non_null(strstr(rp.headers, "connection: keep-alive\r\n"));
    send_all(r2.fd, "GET /healthz HTTP/1.0\r\n\r\n");
    assert_int_equal(read_resp(&r2, &rp, 0), 0);
    assert_true(reads_eof(&r2));
    close(r2.fd);
}

static void test_malformed(void **state)
{
    struct harness *h = *state;
    struct reader r = {.fd = client(h)};
    struct resp rp;
    send_all(r.fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nBLAH\x01 / HTTP/9\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    assert_int_equal(rp.status, 200);
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_openai_error(&rp, 400, "bad_request");
    assert_non_null(strstr(rp.headers, "connection: close\r\n"));
    assert_true(reads_eof(&r));
    close(r.fd);

    /* Header bytes over the limit (4 KiB here): 431. */
    struct reader r2 = {.fd = client(h)};
    char big[6000];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /healthz HTTP/1.1\r\nX-Big: ", 30);
    memcpy(big + sizeof(big) - 5, "\r\n\r\n", 5);
    send_all(r2.fd, big);
    assert_int_equal(read_resp(&r2, &rp, 0), 0);
    expect_openai_error(&rp, 431, "request_header_fields_too_large");
    close(r2.fd);
}

/* Ambiguous framing (request smuggling shapes) -> 400 JSON + close, whatever follows. The
 * second request of each case is a valid one that a lenient parser would answer. */
static void test_smuggling_rejected(void **state)
{
    struct harness *h = *state;
    static const char *const cases[] = {
        /* CL + TE */
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        /* two different CLs */
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        "Content-Length: 0\r\n\r\n",
        /* TE with a coding stacked before chunked (llhttp alone takes it) */
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        /* two TE headers */
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, "
        "identity\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        /* obs-fold hiding a Content-Length in the previous header (llhttp 8 joins it) */
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Content-Length: 5\r\n\r\n",
        /* chunk data not followed by CRLF (the lenient llhttp build skips any 2 bytes) */
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "2\r\n{}XX0\r\n\r\n",
        /* bad chunk sizes */
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "-1\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "fffffffffffffffff\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0x2\r\n{}\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct reader r = {.fd = client(h)};
        struct resp rp;
        send_all(r.fd, cases[i]);
        send_all(r.fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(read_resp(&r, &rp, 0), 0);
        expect_openai_error(&rp, 400, "bad_request");
        assert_non_null(strstr(rp.headers, "content-type: application/json\r\n"));
        assert_non_null(strstr(rp.headers, "connection: close\r\n"));
        assert_int_equal(r.len, 0); /* the pipelined /healthz was never answered */
        assert_true(reads_eof(&r));
        close(r.fd);
    }
}

/* The obs-fold guard must not trip on a value split across reads: one byte per write. */
static void test_byte_at_a_time(void **state)
{
    struct harness *h = *state;
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: a b\tc d\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    struct reader r = {.fd = client(h)};
    struct resp rp;
    int one = 1;
    setsockopt(r.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (size_t i = 0; i < sizeof(req) - 1; i++) {
        char b[2] = {req[i], 0};
        send_all(r.fd, b);
        usleep(200);
    }
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_json_status(&rp, 200, "status", "ok");
    close(r.fd);
}

static void test_body_too_large(void **state)
{
    struct harness *h = *state;
    struct reader r = {.fd = client(h)};
    struct resp rp;
    /* Content-Length over the limit (1000): answered before any body byte. */
    send_all(r.fd, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_anthropic_error(&rp, 413, "request_too_large");
    assert_non_null(strstr(rp.headers, "connection: close\r\n"));
    assert_true(reads_eof(&r));
    close(r.fd);

    /* Chunked bodies are counted as they arrive. */
    struct reader r2 = {.fd = client(h)};
    send_all(r2.fd, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n");
    char chunk[600];
    memset(chunk, 'z', sizeof(chunk));
    memcpy(chunk, "200\r\n", 5);
    memcpy(chunk + 5 + 512, "\r\n", 3);
    for (int i = 0; i < 2; i++)
        send_all(r2.fd, chunk);
    assert_int_equal(read_resp(&r2, &rp, 0), 0);
    expect_openai_error(&rp, 413, "request_too_large");
    close(r2.fd);

    /* At the limit is fine. */
    struct reader r3 = {.fd = client(h)};
    char req[1200];
    int n =
        snprintf(req, sizeof(req), "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
    memset(req + n, 'b', 1000);
    req[n + 1000] = 0;
    send_all(r3.fd, req);
    assert_int_equal(read_resp(&r3, &rp, 0), 0);
    expect_openai_error(&rp, 404, "not_found");
    close(r3.fd);
}

static void test_header_timeout(void **state)
{
    struct harness *h = *state;
    struct reader r = {.fd = client(h)};
    struct resp rp;
    /* A slow client: header bytes keep coming but the block never completes. */
    send_all(r.fd, "GET /healthz HTTP/1.1\r\n");
    usleep(150 * 1000);
    send_all(r.fd, "Host: x\r\n");
    usleep(100 * 1000);
    send_all(r.fd, "X-A: 1\r\n");
    assert_int_equal(read_resp(&r, &rp, 0), 0);
    expect_openai_error(&rp, 408, "request_timeout");
    assert_true(reads_eof(&r));
    close(r.fd);

    /* A connection that sends nothing is closed quietly. */
    struct reader r2 = {.fd = client(h)};
    assert_true(reads_eof(&r2));
    assert_int_equal(r2.len, 0);
    close(r2.fd);
}

static void test_error_body_shapes(void **state)
{
    (void)state;
    struct lr_buf b = {0};
    assert_int_equal(engine_http_error_body(ENGINE_DIALECT_OPENAI, 404, "a\"b\n\x01", &b), 0);
    json_t *j = json_loadb((const char *)b.data, b.len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
                        "a\"b\n\x01");
    json_decref(j);
    lr_buf_reset(&b);
    /* Invalid UTF-8 in a message still yields valid JSON. */
    assert_int_equal(engine_http_error_body(ENGINE_DIALECT_ANTHROPIC, 400, "bad \xff", &b), 0);
    j = json_loadb((const char *)b.data, b.len, 0, NULL);
    assert_non_null(j);
    json_decref(j);
    lr_buf_free(&b);
    assert_int_equal(engine_http_detect_dialect("/v1/messages", 12, false),
                     ENGINE_DIALECT_ANTHROPIC);
    assert_int_equal(engine_http_detect_dialect("/v1/messages/batches", 20, false),
                     ENGINE_DIALECT_ANTHROPIC);
    assert_int_equal(engine_http_detect_dialect("/v1/messagesx", 13, false), ENGINE_DIALECT_OPENAI);
    assert_int_equal(engine_http_detect_dialect("/v1/models", 10, true), ENGINE_DIALECT_ANTHROPIC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_body_shapes),
        cmocka_unit_test_setup_teardown(test_healthz_readyz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_dialects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_and_pipelining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http10, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_smuggling_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_byte_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_timeout, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
