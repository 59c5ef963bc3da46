/* The whole server in-process: settings file on free ports, a raw SPOP client (HELLO, NOTIFY,
 * pipelined NOTIFYs, a garbage connection that must not disturb the others), the engine
 * listener, reload (good and bad; SIGHUP's path and POST /v1/reload on the admin socket), and
 * a clean drain. LeakSanitizer checks the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/time.h>

#include <cmocka.h>
#include <jansson.h>

#include "admin_client.h"
#include "lr_defaults.h"
#include "server.h"
#include "settings.h"
#include "spop.h"
#include "stats.h"

static const char settings_fmt[] =
    "{\"version\":1,\"spoa_bind\":\"127.0.0.1:0\",\"engine_bind\":\"127.0.0.1:0\","
    "\"threads\":%d,\"log_level\":\"warn\",\"max_frame_size\":16380,"
    "\"bypass\":{\"enabled\":true,\"provider\":\"%s\"},"
    "\"providers\":["
    "{\"name\":\"openai\",\"type\":\"openai\",\"enabled\":true,"
    "\"base_url\":\"https://api.openai.com\",\"backend\":\"lr_provider_openai\"},"
    "{\"name\":\"anthropic\",\"type\":\"anthropic\",\"enabled\":true,"
    "\"base_url\":\"https://api.anthropic.com\",\"backend\":\"lr_provider_anthropic\"}]}";

struct fixture {
    char path[64];
    struct server *srv;
    pthread_t tid;
    int run_rc;
    int running;
};

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void write_settings(const char *path, int threads, const char *provider)
{
    char buf[2048];
    snprintf(buf, sizeof(buf), settings_fmt, threads, provider);
    write_file(path, buf);
}

static void *run_main(void *arg)
{
    struct fixture *fx = arg;
    fx->run_rc = server_run(fx->srv);
    return NULL;
}

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

static void send_all(int fd, const void *p, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, (const char *)p + off, len - off, MSG_NOSIGNAL);
        assert_true(n > 0);
        off += (size_t)n;
    }
}

/* ---- frame building with spop.h's encoders ---- */

struct fb {
    uint8_t b[4096];
    uint8_t *p;
    uint8_t *frame;
};

static void fb_init(struct fb *f)
{
    f->p = f->b;
}

static void fb_begin(struct fb *f, uint8_t type, uint64_t sid, uint64_t fid)
{
    f->frame = f->p;
    f->p += 4;
    *f->p++ = type;
    uint32_t flags = htonl(SPOP_FLAG_FIN);
    memcpy(f->p, &flags, 4);
    f->p += 4;
    assert_int_equal(spop_varint_encode(sid, &f->p, f->b + sizeof(f->b)), SPOP_OK);
    assert_int_equal(spop_varint_encode(fid, &f->p, f->b + sizeof(f->b)), SPOP_OK);
}

static void fb_end(struct fb *f)
{
    uint32_t n = htonl((uint32_t)(f->p - f->frame - 4));
    memcpy(f->frame, &n, 4);
}

static void fb_str(struct fb *f, const char *s)
{
    assert_int_equal(spop_str_encode(s, strlen(s), &f->p, f->b + sizeof(f->b)), SPOP_OK);
}

static void fb_kv(struct fb *f, const char *k, const struct spop_data *d)
{
    fb_str(f, k);
    assert_int_equal(spop_data_encode(d, &f->p, f->b + sizeof(f->b)), SPOP_OK);
}

static void fb_kv_str(struct fb *f, const char *k, const char *v)
{
    struct spop_data d = {.type = SPOP_DATA_STR};
    d.u.str.ptr = v;
    d.u.str.len = strlen(v);
    fb_kv(f, k, &d);
}

static void fb_hello(struct fb *f)
{
    fb_begin(f, SPOP_FRM_HAPROXY_HELLO, 0, 0);
    fb_kv_str(f, "supported-versions", "2.0");
    struct spop_data d = {.type = SPOP_DATA_UINT32};
    d.u.u = 16380;
    fb_kv(f, "max-frame-size", &d);
    fb_kv_str(f, "capabilities", "pipelining");
    fb_kv_str(f, "engine-id", "test-engine");
    fb_end(f);
}

/* A lunaroute-classify NOTIFY; av < 0 sends NULL for the count. */
static void fb_notify(struct fb *f, uint64_t sid, uint64_t fid, const char *method,
                      const char *path, int av)
{
    fb_begin(f, SPOP_FRM_NOTIFY, sid, fid);
    fb_str(f, LR_SPOE_MESSAGE);
    *f->p++ = 5;
    fb_kv_str(f, LR_ARG_METHOD, method);
    fb_kv_str(f, LR_ARG_PATH, path);
    struct spop_data d = {.type = av < 0 ? SPOP_DATA_NULL : SPOP_DATA_INT32};
    d.u.i = av;
    fb_kv(f, LR_ARG_ANTHROPIC_VERSION, &d);
    struct spop_data xk = {.type = SPOP_DATA_UINT64};
    xk.u.u = 0;
    fb_kv(f, LR_ARG_X_API_KEY, &xk);
    struct spop_data auth = {.type = SPOP_DATA_NULL};
    fb_kv(f, LR_ARG_AUTH_SCHEME, &auth);
    fb_end(f);
}

/* ---- frame reading ---- */

struct rframe {
    uint8_t type;
    uint64_t sid, fid;
    uint8_t pl[16384];
    size_t pl_len;
};

static int recv_exact(int fd, uint8_t *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t r = recv(fd, p + off, n - off, 0);
        if (r <= 0)
            return -1;
        off += (size_t)r;
    }
    return 0;
}

static int read_frame(int fd, struct rframe *f)
{
    uint8_t hdr[4];
    if (recv_exact(fd, hdr, 4) < 0)
        return -1;
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    assert_true(len <= 16380 && len >= 7);
    uint8_t buf[16384];
    assert_int_equal(recv_exact(fd, buf, len), 0);
    const uint8_t *p = buf + 5, *end = buf + len;
    f->type = buf[0];
    assert_int_equal(buf[4] & SPOP_FLAG_FIN, SPOP_FLAG_FIN);
    assert_int_equal(spop_varint_decode(&p, end, &f->sid), SPOP_OK);
    assert_int_equal(spop_varint_decode(&p, end, &f->fid), SPOP_OK);
    f->pl_len = (size_t)(end - p);
    memcpy(f->pl, p, f->pl_len);
    return 0;
}

struct vars {
    char route[32], backend[64], provider[32];
};

static void copy_str(char *dst, size_t cap, const char *s, size_t n)
{
    assert_true(n < cap);
    memcpy(dst, s, n);
    dst[n] = 0;
}

/* Decodes an ACK's set-var actions (scope txn) into vars. */
static void ack_vars(const struct rframe *f, struct vars *v)
{
    memset(v, 0, sizeof(*v));
    const uint8_t *p = f->pl, *end = f->pl + f->pl_len;
    int n = 0;
    while (p < end) {
        assert_true(end - p >= 3);
        assert_int_equal(*p++, 1); /* SET-VAR */
        assert_int_equal(*p++, 3);
        assert_int_equal(*p++, SPOP_SCOPE_TXN);
        const char *name;
        size_t nl;
        assert_int_equal(spop_str_decode(&p, end, &name, &nl), SPOP_OK);
        struct spop_data d;
        assert_int_equal(spop_data_decode(&p, end, &d), SPOP_OK);
        assert_int_equal(d.type, SPOP_DATA_STR);
        if (nl == 5 && memcmp(name, "route", 5) == 0)
            copy_str(v->route, sizeof(v->route), d.u.str.ptr, d.u.str.len);
        else if (nl == 7 && memcmp(name, "backend", 7) == 0)
            copy_str(v->backend, sizeof(v->backend), d.u.str.ptr, d.u.str.len);
        else if (nl == 8 && memcmp(name, "provider", 8) == 0)
            copy_str(v->provider, sizeof(v->provider), d.u.str.ptr, d.u.str.len);
        else
            fail_msg("unexpected variable %.*s", (int)nl, name);
        n++;
    }
    assert_int_equal(n, 3);
}

static int connect_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void spop_hello_on(int fd)
{
    struct fb f;
    fb_init(&f);
    fb_hello(&f);
    send_all(fd, f.b, (size_t)(f.p - f.b));
    struct rframe r;
    assert_int_equal(read_frame(fd, &r), 0);
    assert_int_equal(r.type, SPOP_FRM_AGENT_HELLO);
}

static int spop_handshake(int port)
{
    int fd = connect_port(port);
    spop_hello_on(fd);
    return fd;
}

static void classify_once(int fd, uint64_t sid, const char *path, int av, const char *route,
                          const char *backend, const char *provider)
{
    struct fb f;
    fb_init(&f);
    fb_notify(&f, sid, 1, "POST", path, av);
    send_all(fd, f.b, (size_t)(f.p - f.b));
    struct rframe r;
    assert_int_equal(read_frame(fd, &r), 0);
    assert_int_equal(r.type, SPOP_FRM_ACK);
    assert_int_equal(r.sid, sid);
    assert_int_equal(r.fid, 1);
    struct vars v;
    ack_vars(&r, &v);
    assert_string_equal(v.route, route);
    assert_string_equal(v.backend, backend);
    assert_string_equal(v.provider, provider);
}

static int reads_eof(int fd)
{
    uint8_t tmp[512];
    for (;;) {
        ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
        if (n == 0)
            return 1;
        if (n < 0)
            return 0;
    }
}

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    struct fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    snprintf(fx->path, sizeof(fx->path), "/tmp/lr-test-server-XXXXXX");
    int tfd = mkstemp(fx->path);
    assert_true(tfd >= 0);
    close(tfd);
    write_settings(fx->path, 2, "auto");
    char err[512];
    struct agent_settings *s = agent_settings_load(fx->path, err, sizeof(err));
    if (!s)
        fail_msg("settings: %s", err);
    struct server_options o;
    server_options_default(&o);
    o.settings_path = fx->path;
    o.drain_timeout = 2.0;
    o.spop_frame_timeout = 0.5;
    fx->srv = server_new(s, &o, err, sizeof(err));
    agent_settings_unref(s);
    if (!fx->srv)
        fail_msg("server_new: %s", err);
    assert_true(server_spoa_port(fx->srv) > 0);
    assert_true(server_engine_port(fx->srv) > 0);
    assert_int_equal(pthread_create(&fx->tid, NULL, run_main, fx), 0);
    fx->running = 1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    if (fx->running) {
        server_stop(fx->srv);
        pthread_join(fx->tid, NULL);
    }
    server_free(fx->srv);
    unlink(fx->path);
    free(fx);
    return 0;
}

static void test_spop_classify(void **state)
{
    struct fixture *fx = *state;
    int port = server_spoa_port(fx->srv);
    int fd = spop_handshake(port);
    classify_once(fd, 1, "/v1/embeddings", 0, "bypass", "lr_provider_openai", "openai");
    classify_once(fd, 2, "/v1/embeddings", 1, "bypass", "lr_provider_anthropic", "anthropic");
    classify_once(fd, 3, "/v1/chat/completions", -1, "engine", LR_ENGINE_BACKEND, "");
    classify_once(fd, 4, "/v1/messages/count_tokens", -1, "bypass", "lr_provider_anthropic",
                  "anthropic");

    /* Pipelined: two NOTIFYs in one write, two ACKs in order. */
    struct fb f;
    fb_init(&f);
    fb_notify(&f, 10, 1, "GET", "/v1/models", 0);
    fb_notify(&f, 11, 1, "POST", "/v1/audio/speech", 0);
    send_all(fd, f.b, (size_t)(f.p - f.b));
    struct rframe r;
    struct vars v;
    assert_int_equal(read_frame(fd, &r), 0);
    assert_int_equal(r.sid, 10);
    ack_vars(&r, &v);
    assert_string_equal(v.route, "engine");
    assert_int_equal(read_frame(fd, &r), 0);
    assert_int_equal(r.sid, 11);
    ack_vars(&r, &v);
    assert_string_equal(v.backend, "lr_provider_openai");

    /* A second connection sending garbage is disconnected with an error... */
    int bad = connect_port(port);
    static const char garbage[] = "\x00\x00\x00\x09GARBAGE!!\x00\x00\x00\x01";
    send_all(bad, garbage, sizeof(garbage) - 1);
    assert_int_equal(read_frame(bad, &r), 0);
    assert_int_equal(r.type, SPOP_FRM_AGENT_DISCON);
    assert_true(reads_eof(bad));
    close(bad);
    /* ...and one announcing an oversized frame too, without the agent buffering it. */
    bad = connect_port(port);
    static const char huge[] = "\x7f\xff\xff\xff\x01";
    send_all(bad, huge, sizeof(huge) - 1);
    assert_int_equal(read_frame(bad, &r), 0);
    assert_int_equal(r.type, SPOP_FRM_AGENT_DISCON);
    assert_true(reads_eof(bad));
    close(bad);

    /* The first connection is unaffected. */
    classify_once(fd, 5, "/v1/files", 0, "bypass", "lr_provider_openai", "openai");

    /* A frame split across writes is reassembled. */
    fb_init(&f);
    fb_notify(&f, 6, 1, "POST", "/v1/messages", 1);
    size_t len = (size_t)(f.p - f.b);
    send_all(fd, f.b, 3);
    usleep(20 * 1000);
    send_all(fd, f.b + 3, len - 3);
    assert_int_equal(read_frame(fd, &r), 0);
    assert_int_equal(r.sid, 6);
    ack_vars(&r, &v);
    assert_string_equal(v.route, "engine");

    struct stats_snapshot st;
    stats_snapshot(&st);
    assert_true(st.counters[STATS_SPOP_NOTIFY_IN] >= 8);
    assert_true(st.counters[STATS_SPOP_ACK_OUT] >= 8);
    assert_true(st.counters[STATS_SPOP_CONN_TOTAL] >= 3);
    uint64_t errors = 0;
    for (unsigned i = 0; i < STATS_SPOP_STATUS_COUNT; i++)
        errors += st.spop_errors[i];
    assert_true(errors >= 2);

    /* Drain: the open connection gets an AGENT-DISCONNECT (status 0), then EOF. */
    server_stop(fx->srv);
    assert_int_equal(read_frame(fd, &r), 0);
    assert_int_equal(r.type, SPOP_FRM_AGENT_DISCON);
    assert_true(reads_eof(fd));
    close(fd);
    pthread_join(fx->tid, NULL);
    fx->running = 0;
    assert_int_equal(fx->run_rc, 0);
}

/* The status-code of an AGENT-DISCONNECT frame. */
static unsigned disc_status(const struct rframe *r)
{
    assert_int_equal(r->type, SPOP_FRM_AGENT_DISCON);
    const uint8_t *p = r->pl, *end = r->pl + r->pl_len;
    while (p < end) {
        const char *k;
        size_t kl;
        struct spop_data d;
        assert_int_equal(spop_str_decode(&p, end, &k, &kl), SPOP_OK);
        assert_int_equal(spop_data_decode(&p, end, &d), SPOP_OK);
        if (kl == 11 && memcmp(k, "status-code", 11) == 0)
            return (unsigned)d.u.u;
    }
    fail_msg("DISCONNECT without status-code");
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* No HELLO, a frame begun and never finished, a frame trickled byte by byte: each gets a
 * DISCONNECT with status 2 (timeout) after spop_frame_timeout (0.5 s here); an idle ready
 * connection with nothing pending is kept. */
static void test_spop_frame_timeout(void **state)
{
    struct fixture *fx = *state;
    int port = server_spoa_port(fx->srv);
    struct rframe r;

    int idle = spop_handshake(port);

    int nohello = connect_port(port);
    double t0 = now_s();
    assert_int_equal(read_frame(nohello, &r), 0);
    assert_int_equal(disc_status(&r), SPOP_ST_TIMEOUT);
    assert_true(now_s() - t0 >= 0.4);
    assert_true(reads_eof(nohello));
    close(nohello);

    int half = spop_handshake(port);
    struct fb f;
    fb_init(&f);
    fb_notify(&f, 1, 1, "GET", "/v1/models", 0);
    send_all(half, f.b, 10);
    assert_int_equal(read_frame(half, &r), 0);
    assert_int_equal(disc_status(&r), SPOP_ST_TIMEOUT);
    assert_true(reads_eof(half));
    close(half);

    /* bytes that never complete a frame do not restart the timer */
    int trickle = spop_handshake(port);
    t0 = now_s();
    double t_disc = 0;
    for (int i = 0; i < 15 && !t_disc; i++) {
        struct pollfd pfd = {.fd = trickle, .events = POLLIN};
        if (send(trickle, f.b + i, 1, MSG_NOSIGNAL) != 1 || poll(&pfd, 1, 100) == 1)
            t_disc = now_s();
    }
    assert_true(t_disc > 0);
    assert_true(t_disc - t0 < 0.9); /* a restart per byte would only fire after 1.5 s */
    assert_int_equal(read_frame(trickle, &r), 0);
    assert_int_equal(disc_status(&r), SPOP_ST_TIMEOUT);
    close(trickle);

    /* the idle connection outlived all of that and still answers */
    classify_once(idle, 7, "/v1/embeddings", 0, "bypass", "lr_provider_openai", "openai");
    close(idle);
}

/* Frames straddling reads: the partial frame is carried over between reads (reads land in
 * the thread's scratch buffer) and every frame is answered, in order. */
static void test_spop_split_frames(void **state)
{
    struct fixture *fx = *state;
    int fd = spop_handshake(server_spoa_port(fx->srv));
    struct fb f;
    fb_init(&f);
    fb_notify(&f, 1, 1, "GET", "/v1/embeddings", 0);
    fb_notify(&f, 2, 1, "GET", "/v1/embeddings", 1);
    fb_notify(&f, 3, 1, "GET", "/v1/chat/completions", 0);
    size_t total = (size_t)(f.p - f.b);
    /* cut inside the length prefix, inside the first frame, then the rest */
    size_t cuts[] = {2, 17, total};
    size_t off = 0;
    for (size_t i = 0; i < 3; i++) {
        send_all(fd, f.b + off, cuts[i] - off);
        off = cuts[i];
        usleep(50000); /* separate reads */
    }
    static const char *const backends[] = {"lr_provider_openai", "lr_provider_anthropic",
                                           LR_ENGINE_BACKEND};
    for (uint64_t sid = 1; sid <= 3; sid++) {
        struct rframe r;
        assert_int_equal(read_frame(fd, &r), 0);
        assert_int_equal(r.type, SPOP_FRM_ACK);
        assert_int_equal(r.sid, sid);
        struct vars v;
        ack_vars(&r, &v);
        assert_string_equal(v.backend, backends[sid - 1]);
    }
    close(fd);
}

/* GET /healthz on a connected engine socket: the whole response (Connection: close). */
static void healthz_on(int fd)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    send_all(fd, req, sizeof(req) - 1);
    char buf[1024];
    size_t off = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + off, sizeof(buf) - 1 - off, 0);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    buf[off] = 0;
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(buf, "{\"status\":\"ok\"}"));
}

static void test_engine_and_healthcheck(void **state)
{
    struct fixture *fx = *state;
    int fd = connect_port(server_engine_port(fx->srv));
    healthz_on(fd);
    close(fd);
    char buf[1024];

    /* HAProxy's SPOP health check: HELLO with healthcheck=true, AGENT-HELLO, then close. */
    fd = connect_port(server_spoa_port(fx->srv));
    struct fb f;
    fb_init(&f);
    fb_begin(&f, SPOP_FRM_HAPROXY_HELLO, 0, 0);
    fb_kv_str(&f, "supported-versions", "2.0");
    struct spop_data d = {.type = SPOP_DATA_UINT32};
    d.u.u = 16380;
    fb_kv(&f, "max-frame-size", &d);
    fb_kv_str(&f, "capabilities", "");
    struct spop_data hc = {.type = SPOP_DATA_BOOL};
    hc.u.b = true;
    fb_kv(&f, "healthcheck", &hc);
    fb_end(&f);
    send_all(fd, f.b, (size_t)(f.p - f.b));
    struct rframe r;
    assert_int_equal(read_frame(fd, &r), 0);
    assert_int_equal(r.type, SPOP_FRM_AGENT_HELLO);
    assert_true(reads_eof(fd));
    close(fd);

    /* An idle keep-alive engine connection does not hold up the drain. */
    fd = connect_port(server_engine_port(fx->srv));
    static const char ka[] = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, ka, sizeof(ka) - 1);
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n > 0);
    buf[n] = 0;
    assert_non_null(strstr(buf, "{\"status\":\"ready\"}"));
    server_stop(fx->srv);
    assert_true(reads_eof(fd));
    close(fd);
    pthread_join(fx->tid, NULL);
    fx->running = 0;
}

static void wait_reloads(struct fixture *fx, unsigned ok, unsigned failed)
{
    for (int i = 0; i < 200; i++) {
        if (server_reloads_ok(fx->srv) == ok && server_reloads_failed(fx->srv) == failed)
            return;
        usleep(10 * 1000);
    }
    fail_msg("reloads: ok %u (want %u), failed %u (want %u)", server_reloads_ok(fx->srv), ok,
             server_reloads_failed(fx->srv), failed);
}

static void test_reload(void **state)
{
    struct fixture *fx = *state;
    int port = server_spoa_port(fx->srv);
    int fd = spop_handshake(port);
    classify_once(fd, 1, "/v1/embeddings", 0, "bypass", "lr_provider_openai", "openai");

    /* A good reload switches the bypass provider without dropping the connection. */
    write_settings(fx->path, 2, "anthropic");
    server_reload(fx->srv);
    wait_reloads(fx, 1, 0);
    classify_once(fd, 2, "/v1/embeddings", 0, "bypass", "lr_provider_anthropic", "anthropic");
    /* New connections (whichever thread takes them) see it too. */
    for (int i = 0; i < 4; i++) {
        int fd2 = spop_handshake(port);
        classify_once(fd2, 1, "/v1/embeddings", 0, "bypass", "lr_provider_anthropic", "anthropic");
        close(fd2);
    }

    /* A bad file is refused and the current settings stay. */
    write_file(fx->path, "{\"version\": 1, \"threads\": ");
    server_reload(fx->srv);
    wait_reloads(fx, 1, 1);
    classify_once(fd, 3, "/v1/embeddings", 0, "bypass", "lr_provider_anthropic", "anthropic");
    close(fd);
}

/* Settings with an admin socket in dir (the fixture's file has none). */
static void write_admin_settings(const char *path, const char *dir, const char *provider)
{
    char buf[2048], with[2300];
    snprintf(buf, sizeof(buf), settings_fmt, 1, provider);
    snprintf(with, sizeof(with), "{\"admin_socket\":\"%s/agent.sock\",%s", dir, buf + 1);
    write_file(path, with);
}

static json_t *post_reload(const char *sock, int *status)
{
    struct admin_response r;
    char err[512] = "";
    int rc = admin_client_request(sock, "POST", "/v1/reload", NULL, 5.0, &r, err, sizeof(err));
    if (rc != ADMIN_CLIENT_OK)
        fail_msg("POST /v1/reload: %s", err);
    *status = r.status;
    json_error_t jerr;
    json_t *doc = json_loadb(r.body, r.body_len, 0, &jerr);
    if (!doc)
        fail_msg("POST /v1/reload: not JSON: %s", r.body);
    admin_response_free(&r);
    return doc;
}

/* POST /v1/reload through the real server: the same reload as SIGHUP (counters, every thread
 * sees it), answered with the outcome. */
static void test_admin_reload(void **state)
{
    (void)state;
    char dir[64], path[128], sock[128], err[512];
    snprintf(dir, sizeof(dir), "/tmp/lr-test-server-admin-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/agent.json", dir);
    snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
    write_admin_settings(path, dir, "openai");
    struct agent_settings *s = agent_settings_load(path, err, sizeof(err));
    if (!s)
        fail_msg("settings: %s", err);
    struct server_options o;
    server_options_default(&o);
    o.drain_timeout = 2.0;
    struct fixture fx = {0};
    fx.srv = server_new(s, &o, err, sizeof(err)); /* settings_path: the settings' own path */
    agent_settings_unref(s);
    if (!fx.srv)
        fail_msg("server_new: %s", err);
    assert_int_equal(pthread_create(&fx.tid, NULL, run_main, &fx), 0);
    int port = server_spoa_port(fx.srv);
    int fd = spop_handshake(port);
    classify_once(fd, 1, "/v1/embeddings", 0, "bypass", "lr_provider_openai", "openai");

    write_admin_settings(path, dir, "anthropic");
    int st;
    json_t *doc = post_reload(sock, &st);
    assert_int_equal(st, 200);
    assert_true(json_is_true(json_object_get(doc, "changed")));
    assert_string_equal(json_string_value(json_object_get(doc, "bypass_provider")), "anthropic");
    json_decref(doc);
    assert_int_equal(server_reloads_ok(fx.srv), 1); /* answered after the reload: no wait */
    classify_once(fd, 2, "/v1/embeddings", 0, "bypass", "lr_provider_anthropic", "anthropic");

    write_file(path, "{\"version\": 1, \"threads\": ");
    doc = post_reload(sock, &st);
    assert_int_equal(st, 400);
    assert_non_null(strstr(json_string_value(json_object_get(doc, "error")), path));
    json_decref(doc);
    assert_int_equal(server_reloads_failed(fx.srv), 1);
    classify_once(fd, 3, "/v1/embeddings", 0, "bypass", "lr_provider_anthropic", "anthropic");
    close(fd);

    server_stop(fx.srv);
    pthread_join(fx.tid, NULL);
    server_free(fx.srv);
    struct stat sst;
    assert_int_equal(lstat(sock, &sst), -1); /* the socket went with the server */
    unlink(path);
    rmdir(dir);
}

/* spoa_socket / engine_socket: served by every thread next to the TCP listeners, mode 0660;
 * a stale file is replaced, a live socket or a non-socket file is refused, and the files go
 * with the server. */
static void test_unix_sockets(void **state)
{
    (void)state;
    char dir[64], path[96], ssock[96], esock[96], err[512], buf[4096], extra[512];
    snprintf(dir, sizeof(dir), "/tmp/lr-test-server-unix-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/agent.json", dir);
    snprintf(ssock, sizeof(ssock), "%s/spoa.sock", dir);
    snprintf(esock, sizeof(esock), "%s/engine.sock", dir);
    snprintf(buf, sizeof(buf), settings_fmt, 2, "auto");
    snprintf(extra, sizeof(extra), "{\"spoa_socket\":\"%s\",\"engine_socket\":\"%s\",", ssock,
             esock);
    char doc[4700];
    snprintf(doc, sizeof(doc), "%s%s", extra, buf + 1);
    write_file(path, doc);

    /* a stale socket (its process died without removing it) is replaced */
    int stale = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", esock);
    assert_int_equal(bind(stale, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(stale);

    struct agent_settings *s = agent_settings_load(path, err, sizeof(err));
    if (!s)
        fail_msg("settings: %s", err);
    assert_string_equal(s->spoa_socket, ssock);
    struct server_options o;
    server_options_default(&o);
    o.drain_timeout = 2.0;
    struct fixture fx = {0};
    fx.srv = server_new(s, &o, err, sizeof(err));
    if (!fx.srv)
        fail_msg("server_new: %s", err);
    assert_int_equal(pthread_create(&fx.tid, NULL, run_main, &fx), 0);

    struct stat st;
    assert_int_equal(lstat(ssock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0660);
    assert_int_equal(lstat(esock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0660);

    /* several connections at once: both threads accept on the shared sockets */
    int fds[8];
    for (int i = 0; i < 8; i++) {
        fds[i] = connect_unix(ssock);
        assert_true(fds[i] >= 0);
        spop_hello_on(fds[i]);
    }
    for (int i = 0; i < 8; i++) {
        classify_once(fds[i], (uint64_t)i + 1, "/v1/chat/completions", 0, "engine", "lr_engine",
                      "");
        classify_once(fds[i], (uint64_t)i + 101, "/v1/embeddings", 1, "bypass",
                      "lr_provider_anthropic", "anthropic");
        close(fds[i]);
    }
    int fd = connect_unix(esock);
    assert_true(fd >= 0);
    healthz_on(fd);
    close(fd);
    /* the TCP listeners are still there */
    fd = connect_port(server_engine_port(fx.srv));
    healthz_on(fd);
    close(fd);

    /* a second agent on the same settings: the live socket is not taken over */
    struct server *twin = server_new(s, &o, err, sizeof(err));
    assert_null(twin);
    assert_non_null(strstr(err, "another process is serving it"));
    assert_int_equal(lstat(ssock, &st), 0); /* and still there */
    fd = connect_unix(ssock);
    assert_true(fd >= 0);
    spop_hello_on(fd);
    close(fd);

    server_stop(fx.srv);
    pthread_join(fx.tid, NULL);
    assert_int_equal(fx.run_rc, 0);
    server_free(fx.srv);
    assert_int_equal(lstat(ssock, &st), -1);
    assert_int_equal(lstat(esock, &st), -1);

    /* a file that is not a socket is never removed */
    write_file(esock, "not a socket\n");
    assert_null(server_new(s, &o, err, sizeof(err)));
    assert_non_null(strstr(err, "exists and is not a socket"));
    assert_int_equal(lstat(esock, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    agent_settings_unref(s);
    unlink(esock);
    unlink(ssock);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_spop_classify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_and_healthcheck, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spop_frame_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spop_split_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
        cmocka_unit_test(test_admin_reload),
        cmocka_unit_test(test_unix_sockets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
