/* libFuzzer target for the engine's HTTP request path: the input is a client's byte stream
 * (possibly several pipelined requests) written into one end of a socketpair whose other end
 * the engine listener owns. The loop runs with EVRUN_NOWAIT until the engine has closed the
 * connection. Providers are configured but there is no upstream (NULL): proxied requests get
 * their 400/413/502/503 without network I/O. Checks: no crash, no leak, no hang. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "engine_http.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "settings.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ev_loop *loop;
static struct engine_gen *gen;

static void init_once(void)
{
    static const char json[] =
        "{\"providers\":[{\"name\":\"openai\",\"type\":\"openai\","
        "\"base_url\":\"http://127.0.0.1:1\",\"max_retries\":0},"
        "{\"name\":\"anthropic\",\"type\":\"anthropic\",\"base_url\":\"http://127.0.0.1:1\","
        "\"max_retries\":0}],\"http_server\":{\"max_request_body_bytes\":4096}}";
    char err[256];
    lr_log_set_level(LR_LOG_ERROR);
    struct agent_settings *s = agent_settings_parse(json, strlen(json), err, sizeof(err));
    if (!s)
        abort();
    gen = engine_gen_new(s, err, sizeof(err));
    agent_settings_unref(s);
    if (!gen)
        abort();
    loop = ev_loop_new(EVFLAG_AUTO);
}

static void drain_out(int fd)
{
    char buf[16384];
    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!loop)
        init_once();
    if (size > 65536)
        return 0;
    struct engine_http_config cfg;
    engine_http_config_default(&cfg);
    cfg.linger_timeout = 0.001;
    struct engine_http *eh = engine_http_new(loop, &cfg, &gen, NULL);
    int sv[2];
    if (!eh || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    engine_http_accept(eh, sv[0], 1);
    size_t off = 0;
    int rounds = 0;
    while (off < size && rounds++ < 10000) {
        ssize_t n = send(sv[1], data + off, size - off, MSG_NOSIGNAL);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            break; /* the engine closed early (error response) */
        ev_run(loop, EVRUN_NOWAIT);
        drain_out(sv[1]);
    }
    shutdown(sv[1], SHUT_WR);
    for (int i = 0; i < 1000 && engine_http_conn_count(eh); i++) {
        ev_run(loop, EVRUN_NOWAIT);
        drain_out(sv[1]);
    }
    close(sv[1]);
    engine_http_free(eh);
    ev_run(loop, EVRUN_NOWAIT);
    return 0;
}
