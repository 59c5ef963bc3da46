/* net.c: host:port parsing table, resolving, listening on loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "net.h"

struct hp_case {
    const char *in;
    int ok;
    const char *host;
    unsigned port;
};

static const struct hp_case hp_cases[] = {
    {"127.0.0.1:12345", 1, "127.0.0.1", 12345},
    {"0.0.0.0:0", 1, "0.0.0.0", 0},
    {"localhost:8081", 1, "localhost", 8081},
    {"example.com:65535", 1, "example.com", 65535},
    {"[::1]:8080", 1, "::1", 8080},
    {"[fe80::1%lo]:1", 1, "fe80::1%lo", 1},
    {":9000", 1, "", 9000},
    {"*:9000", 1, "", 9000},
    {"127.0.0.1:65536", 0, NULL, 0},
    {"127.0.0.1:99999999", 0, NULL, 0},
    {"127.0.0.1:-1", 0, NULL, 0},
    {"127.0.0.1:80a", 0, NULL, 0},
    {"127.0.0.1:", 0, NULL, 0},
    {"127.0.0.1", 0, NULL, 0},
    {"12345", 0, NULL, 0},
    {"", 0, NULL, 0},
    {"::1:80", 0, NULL, 0},
    {"[::1]", 0, NULL, 0},
    {"[::1]80", 0, NULL, 0},
    {"[::1:80", 0, NULL, 0},
    {"[]:80", 0, NULL, 0},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(hp_cases) / sizeof(hp_cases[0]); i++) {
        const struct hp_case *c = &hp_cases[i];
        char host[NET_HOST_MAX] = "unset", err[256] = "";
        uint16_t port = 7;
        int rc = net_parse_hostport(c->in, host, sizeof(host), &port, err, sizeof(err));
        if (c->ok) {
            if (rc != 0)
                fail_msg("'%s' should parse, got: %s", c->in, err);
            assert_string_equal(host, c->host);
            assert_int_equal(port, c->port);
        } else {
            if (rc == 0)
                fail_msg("'%s' should not parse", c->in);
            assert_int_not_equal(err[0], 0);
        }
    }
    char tiny[4], err[128];
    uint16_t port;
    assert_true(net_parse_hostport("longhost:1", tiny, sizeof(tiny), &port, err, sizeof(err)) < 0);
    assert_true(net_parse_hostport(NULL, tiny, sizeof(tiny), &port, err, sizeof(err)) < 0);
}

static void test_resolve(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256];
    assert_int_equal(net_resolve("127.0.0.1:8081", &ss, &len, err, sizeof(err)), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8081);
    assert_int_equal(net_resolve("[::1]:8082", &ss, &len, err, sizeof(err)), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 8082);
    assert_int_equal(net_resolve("localhost:1", &ss, &len, err, sizeof(err)), 0);
    assert_true(net_resolve("127.0.0.1", &ss, &len, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "missing port"));
}

static void test_listen_loopback(void **state)
{
    (void)state;
    char err[256];
    int fd = net_listen("127.0.0.1:0", 0, 16, true, err, sizeof(err));
    assert_true(fd >= 0);
    int port = net_local_port(fd);
    assert_true(port > 0);

    /* A second SO_REUSEPORT socket can share the port (one per loop thread). */
    int fd2 = net_listen("127.0.0.1:0", (uint16_t)port, 16, true, err, sizeof(err));
    assert_true(fd2 >= 0);
    assert_int_equal(net_local_port(fd2), port);

    int cfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(cfd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    close(cfd);
    close(fd2);
    close(fd);

    /* A port in use without SO_REUSEPORT on both sides fails with a message. */
    fd = net_listen("127.0.0.1:0", 0, 16, false, err, sizeof(err));
    assert_true(fd >= 0);
    port = net_local_port(fd);
    err[0] = 0;
    fd2 = net_listen("127.0.0.1:0", (uint16_t)port, 16, false, err, sizeof(err));
    assert_true(fd2 < 0);
    assert_non_null(strstr(err, "bind"));
    close(fd);

    assert_true(net_listen("127.0.0.1", 0, 16, true, err, sizeof(err)) < 0);
    int ip6 = net_listen("[::1]:0", 0, 16, true, err, sizeof(err));
    if (ip6 >= 0) /* hosts without IPv6 loopback skip this part */
        close(ip6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_listen_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
