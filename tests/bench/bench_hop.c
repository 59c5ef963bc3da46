/* What one message between two processes costs on this machine: the floor under every hop
 * the engine path adds. Two processes ping-pong a 200-byte message over loopback TCP
 * (TCP_NODELAY) and over a unix stream socket pair; the echoing side sleeps in epoll_wait
 * between messages, as HAProxy and the agent do. Prints the round trip (two hops) p50, p90
 * and p99 in microseconds, and the CPU (user + system, both processes) per round trip.
 *
 * An intercepted request crosses four more hops than plain HAProxy (HAProxy -> agent SPOP
 * NOTIFY, the ACK back, HAProxy -> the engine, its response back): two of these round trips.
 *
 * Usage: build/bench/bench_hop [round trips, default 20000] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 200

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int full_io(int fd, char *b, int writing)
{
    size_t off = 0;
    while (off < MSG) {
        ssize_t n = writing ? write(fd, b + off, MSG - off) : read(fd, b + off, MSG - off);
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return 0;
}

static int tcp_pair(int sv[2])
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0)
        return -1;
    sv[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (sv[0] < 0 || connect(sv[0], (struct sockaddr *)&a, sizeof(a)) < 0)
        return -1;
    sv[1] = accept(l, NULL, NULL);
    close(l);
    int one = 1;
    if (sv[1] < 0 || setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        return -1;
    return 0;
}

/* The echoing side: epoll_wait, read one message, write it back, until EOF. */
static void echo_loop(int fd)
{
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        _exit(1);
    char b[MSG];
    for (;;) {
        struct epoll_event out;
        if (epoll_wait(ep, &out, 1, -1) < 0)
            _exit(1);
        if (full_io(fd, b, 0) < 0)
            _exit(0);
        if (full_io(fd, b, 1) < 0)
            _exit(1);
    }
}

static double cpu_us(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int run(const char *name, int is_unix, int n)
{
    int sv[2];
    if (is_unix ? socketpair(AF_UNIX, SOCK_STREAM, 0, sv) : tcp_pair(sv)) {
        perror(name);
        return -1;
    }
    double cpu0 = cpu_us(RUSAGE_SELF) + cpu_us(RUSAGE_CHILDREN);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(sv[0]);
        echo_loop(sv[1]);
    }
    close(sv[1]);
    double *v = malloc(sizeof(double) * (size_t)n);
    char b[MSG];
    memset(b, 'x', sizeof(b));
    int warm = n / 10;
    for (int i = -warm; i < n; i++) {
        double t = now_us();
        if (full_io(sv[0], b, 1) < 0 || full_io(sv[0], b, 0) < 0) {
            perror(name);
            free(v);
            return -1;
        }
        if (i >= 0)
            v[i] = now_us() - t;
    }
    close(sv[0]);
    waitpid(pid, NULL, 0);
    double cpu = cpu_us(RUSAGE_SELF) + cpu_us(RUSAGE_CHILDREN) - cpu0;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    printf("%-22s p50 %6.1f  p90 %6.1f  p99 %6.1f us   CPU %5.1f us per round trip\n", name,
           v[n / 2], v[n * 9 / 10], v[n * 99 / 100], cpu / (n + warm));
    free(v);
    return 0;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    if (n < 100)
        n = 100;
    printf("round trip of a %d-byte message between two processes (two hops), %d times\n", MSG, n);
    if (run("loopback TCP", 0, n) < 0 || run("unix stream socket", 1, n) < 0)
        return 1;
    return 0;
}
