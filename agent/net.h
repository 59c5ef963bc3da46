/* Socket helpers: "host:port" parsing, listening sockets, per-socket options, and a small
 * libev acceptor that backs off on EMFILE. Helpers report errors into the caller's buffer
 * and never log (the caller has the context). Errors are negative errno values. */
#ifndef LR_NET_H
#define LR_NET_H

#include "buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <ev.h>

#define NET_HOST_MAX 256

/* Result of net_send_pending() at the socket boundary. */
enum net_send_result {
    NET_SENT_ALL = 0, /* everything pending was written */
    NET_WOULD_BLOCK,  /* the socket is full: watch for writability */
    NET_SEND_ERROR,   /* the connection is broken; errno says why */
};

/* Writes out->data[*off .. out->len) with MSG_NOSIGNAL, advancing *off, until it is all
 * written, the socket would block, or an error. */
enum net_send_result net_send_pending(int fd, const struct lr_buf *out, size_t *off);

/* Splits "host:port", "[v6]:port" or ":port"/"*:port" (any address). host receives the
 * address without brackets ("" for any). The port must be 0..65535, digits only.
 * 0, or -EINVAL with a message in err. */
int net_parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port, char *err,
                       size_t errlen);

/* Resolves "host:port" (numeric or a name, AI_PASSIVE) to the first usable address. */
int net_resolve(const char *hostport, struct sockaddr_storage *ss, socklen_t *sslen, char *err,
                size_t errlen);

/* Opens a non-blocking, close-on-exec TCP listening socket on `hostport` with SO_REUSEADDR
 * (and SO_REUSEPORT when reuseport), overriding the port with `port_override` when it is
 * not 0 (used so that every thread binds the port the first one got for ":0").
 * Returns the fd, or a negative errno with a message in err. */
int net_listen(const char *hostport, uint16_t port_override, int backlog, bool reuseport, char *err,
               size_t errlen);

/* Which file a unix socket was bound to, so that only that file is removed at exit (not one
 * a newer process bound at the same path meanwhile). */
struct net_unix_id {
    ino_t ino;
    dev_t dev;
};

/* Opens a non-blocking, close-on-exec unix stream listening socket at `path`, file mode
 * `mode`. A socket file left by a dead process is removed first; a live one (something
 * accepts on it) or a file that is not a socket is an error. `what` names the socket in
 * messages ("admin socket"). Returns the fd (and the file's identity in *id), or a negative
 * errno with a message in err. */
int net_listen_unix(const char *path, mode_t mode, int backlog, const char *what,
                    struct net_unix_id *id, char *err, size_t errlen);
/* Removes the socket file at path if it is still the one described by id. */
void net_unlink_unix(const char *path, const struct net_unix_id *id);

/* The local port of a bound socket, or a negative errno. */
int net_local_port(int fd);

int net_set_nonblock(int fd);
int net_set_nodelay(int fd);

/* Accepts connections on a listening socket owned by the acceptor. on_accept gets each new
 * fd (non-blocking, close-on-exec, TCP_NODELAY set unless `nodelay` was cleared after
 * init); it owns it. On EMFILE/ENFILE/ENOBUFS/
 * ENOMEM the acceptor logs (at most once a second) and pauses accepting for a moment. */
struct net_acceptor;
typedef void (*net_accept_fn)(void *ud, int fd);

struct net_acceptor {
    struct ev_loop *loop;
    int fd;
    ev_io io;
    ev_timer backoff;
    net_accept_fn on_accept;
    void *ud;
    const char *what; /* for logs: "spoa", "engine" */
    ev_tstamp last_log;
    unsigned max_per_event;
    bool nodelay; /* set TCP_NODELAY on accepted fds (true; false for unix sockets) */
};

/* Takes ownership of listen_fd. */
void net_acceptor_init(struct net_acceptor *a, struct ev_loop *loop, int listen_fd,
                       const char *what, net_accept_fn on_accept, void *ud);
void net_acceptor_start(struct net_acceptor *a);
/* Stops accepting and closes the listening socket (idempotent). */
void net_acceptor_close(struct net_acceptor *a);

#endif
