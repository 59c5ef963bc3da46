#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#define NET_BACKOFF_SECS 0.1

int net_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port, char *err,
                       size_t errlen)
{
    if (!s || !*s) {
        snprintf(err, errlen, "empty address");
        return -EINVAL;
    }
    const char *h, *hend, *p;
    if (s[0] == '[') {
        h = s + 1;
        hend = strchr(h, ']');
        if (!hend || hend[1] != ':') {
            snprintf(err, errlen, "bad address '%s': expected [ipv6]:port", s);
            return -EINVAL;
        }
        if (hend == h) {
            snprintf(err, errlen, "bad address '%s': empty IPv6 host", s);
            return -EINVAL;
        }
        p = hend + 2;
    } else {
        h = s;
        hend = strrchr(s, ':');
        if (!hend) {
            snprintf(err, errlen, "bad address '%s': missing port", s);
            return -EINVAL;
        }
        if (memchr(s, ':', (size_t)(hend - s))) {
            snprintf(err, errlen, "bad address '%s': put IPv6 hosts in brackets", s);
            return -EINVAL;
        }
        p = hend + 1;
    }
    size_t hl = (size_t)(hend - h);
    if (hl == 1 && h[0] == '*')
        hl = 0;
    if (hl + 1 > hostlen) {
        snprintf(err, errlen, "bad address '%s': host too long", s);
        return -EINVAL;
    }
    if (!*p) {
        snprintf(err, errlen, "bad address '%s': missing port", s);
        return -EINVAL;
    }
    unsigned long v = 0;
    for (const char *q = p; *q; q++) {
        if (*q < '0' || *q > '9' || q - p >= 5) {
            snprintf(err, errlen, "bad address '%s': bad port", s);
            return -EINVAL;
        }
        v = v * 10 + (unsigned long)(*q - '0');
    }
    if (v > 65535) {
        snprintf(err, errlen, "bad address '%s': port out of range", s);
        return -EINVAL;
    }
    if (h != host) {
        memcpy(host, h, hl);
    }
    host[hl] = 0;
    *port = (uint16_t)v;
    return 0;
}

int net_resolve(const char *hostport, struct sockaddr_storage *ss, socklen_t *sslen, char *err,
                size_t errlen)
{
    char host[NET_HOST_MAX];
    uint16_t port;
    int rc = net_parse_hostport(hostport, host, sizeof(host), &port, err, errlen);
    if (rc < 0)
        return rc;
    char serv[8];
    snprintf(serv, sizeof(serv), "%u", (unsigned)port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host[0] ? host : NULL, serv, &hints, &res);
    if (gai != 0 || !res) {
        snprintf(err, errlen, "cannot resolve '%s': %s", hostport,
                 gai ? gai_strerror(gai) : "no address");
        if (res)
            freeaddrinfo(res);
        return -EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int net_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

int net_set_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        return -errno;
    return 0;
}

int net_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}

int net_listen(const char *hostport, uint16_t port_override, int backlog, bool reuseport, char *err,
               size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int rc = net_resolve(hostport, &ss, &sslen, err, errlen);
    if (rc < 0)
        return rc;
    if (port_override) {
        if (ss.ss_family == AF_INET)
            ((struct sockaddr_in *)&ss)->sin_port = htons(port_override);
        else if (ss.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons(port_override);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "socket for '%s': %s", hostport, strerror(errno));
        return rc;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)) {
        rc = -errno;
        snprintf(err, errlen, "setsockopt on '%s': %s", hostport, strerror(errno));
        goto fail;
    }
    if (bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
        rc = -errno;
        snprintf(err, errlen, "bind %s: %s", hostport, strerror(errno));
        goto fail;
    }
    if (listen(fd, backlog) < 0) {
        rc = -errno;
        snprintf(err, errlen, "listen %s: %s", hostport, strerror(errno));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return rc;
}

/* ---- unix sockets ---- */

/* Removes a socket file left by a dead process; refuses to touch a live socket (someone
 * accepts on it) or a file that is not a socket. */
static int clear_stale_socket(const char *path, const char *what, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        int e = errno;
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
        return -e;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s %s: exists and is not a socket", what, path);
        return -EEXIST;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "socket: %s", strerror(e));
        return -e;
    }
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    close(fd);
    if (rc == 0) {
        snprintf(err, errlen, "%s %s: another process is serving it", what, path);
        return -EADDRINUSE;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        int e = errno;
        snprintf(err, errlen, "cannot remove stale %s %s: %s", what, path, strerror(e));
        return -e;
    }
    return 0;
}

int net_listen_unix(const char *path, mode_t mode, int backlog, const char *what,
                    struct net_unix_id *id, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "%s path must be 1 to %zu bytes", what, sizeof(sun.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(sun.sun_path, path, len + 1);
    int rc = clear_stale_socket(path, what, err, errlen);
    if (rc < 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "socket: %s", strerror(-rc));
        return rc;
    }
    /* Created with no more than `mode` from the start: the umask covers the window before
     * chmod. */
    mode_t old = umask((mode_t)(~mode & 0777));
    rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    int e = errno;
    umask(old);
    if (rc < 0) {
        snprintf(err, errlen, "bind %s %s: %s", what, path, strerror(e));
        close(fd);
        return -e;
    }
    struct stat st;
    if (chmod(path, mode) < 0 || lstat(path, &st) < 0 || listen(fd, backlog) < 0) {
        e = errno;
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
        close(fd);
        unlink(path);
        return -e;
    }
    id->ino = st.st_ino;
    id->dev = st.st_dev;
    return fd;
}

void net_unlink_unix(const char *path, const struct net_unix_id *id)
{
    struct stat st;
    if (lstat(path, &st) == 0 && st.st_ino == id->ino && st.st_dev == id->dev)
        unlink(path);
}

/* ---- acceptor ---- */

static void acceptor_backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct net_acceptor *a = w->data;
    if (a->fd >= 0)
        ev_io_start(loop, &a->io);
}

static void acceptor_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct net_acceptor *a = w->data;
    /* Bounded so a connection storm does not starve established connections. */
    for (unsigned i = 0; i < a->max_per_event && a->fd >= 0; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED || e == EPROTO)
                return;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                ev_tstamp now = ev_now(loop);
                if (now - a->last_log >= 1.0) {
                    lr_warn("%s: accept: %s; pausing accepts for %.0f ms", a->what, strerror(e),
                            NET_BACKOFF_SECS * 1000);
                    a->last_log = now;
                }
                ev_io_stop(loop, &a->io);
                ev_timer_set(&a->backoff, NET_BACKOFF_SECS, 0.);
                ev_timer_start(loop, &a->backoff);
                return;
            }
            lr_warn("%s: accept: %s", a->what, strerror(e));
            return;
        }
        if (a->nodelay)
            (void)net_set_nodelay(fd);
        a->on_accept(a->ud, fd);
    }
}

void net_acceptor_init(struct net_acceptor *a, struct ev_loop *loop, int listen_fd,
                       const char *what, net_accept_fn on_accept, void *ud)
{
    memset(a, 0, sizeof(*a));
    a->loop = loop;
    a->fd = listen_fd;
    a->what = what;
    a->on_accept = on_accept;
    a->ud = ud;
    a->last_log = -10;
    a->max_per_event = 64;
    a->nodelay = true;
    ev_io_init(&a->io, acceptor_io_cb, listen_fd, EV_READ);
    a->io.data = a;
    ev_timer_init(&a->backoff, acceptor_backoff_cb, NET_BACKOFF_SECS, 0.);
    a->backoff.data = a;
}

void net_acceptor_start(struct net_acceptor *a)
{
    if (a->fd >= 0)
        ev_io_start(a->loop, &a->io);
}

void net_acceptor_close(struct net_acceptor *a)
{
    if (!a->loop)
        return;
    ev_io_stop(a->loop, &a->io);
    ev_timer_stop(a->loop, &a->backoff);
    if (a->fd >= 0) {
        close(a->fd);
        a->fd = -1;
    }
}

enum net_send_result net_send_pending(int fd, const struct lr_buf *out, size_t *off)
{
    while (*off < out->len) {
        ssize_t n = send(fd, out->data + *off, out->len - *off, MSG_NOSIGNAL);
        if (n > 0) {
            *off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return NET_WOULD_BLOCK;
        if (n == 0)
            errno = EPIPE; /* no progress on a non-empty write */
        return NET_SEND_ERROR;
    }
    return NET_SENT_ALL;
}
