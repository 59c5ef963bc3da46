#include "admin_client.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <llhttp.h>

#include "buf.h"

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A connected, non-blocking unix socket, or -1 with a message. */
static int unix_connect(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "%s: socket path too long", path);
        return -1;
    }
    memcpy(sun.sun_path, path, len + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    /* A unix connect completes (or fails) at once; non-blocking afterwards for the timeout. */
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "fcntl: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Waits for `events` on fd until the deadline. 0 ready, -1 timeout/error (message set). */
static int wait_fd(int fd, short events, double deadline, const char *what, char *err,
                   size_t errlen)
{
    for (;;) {
        double left = deadline - now_mono();
        if (left <= 0) {
            snprintf(err, errlen, "%s: timed out", what);
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, (int)(left * 1000) + 1);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR) {
            snprintf(err, errlen, "%s: poll: %s", what, strerror(errno));
            return -1;
        }
    }
}

static int send_all(int fd, const char *p, size_t len, double deadline, const char *what, char *err,
                    size_t errlen)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, p + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline, what, err, errlen) < 0)
                return -1;
            continue;
        }
        snprintf(err, errlen, "%s: write: %s", what, n < 0 ? strerror(errno) : "no progress");
        return -1;
    }
    return 0;
}

/* Reads until EOF (bounded). 0, or -1 with a message. */
static int read_all(int fd, struct lr_buf *out, double deadline, const char *what, char *err,
                    size_t errlen)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0) {
            if (out->len + (size_t)n > ADMIN_CLIENT_MAX_RESPONSE) {
                snprintf(err, errlen, "%s: response larger than %u bytes", what,
                         ADMIN_CLIENT_MAX_RESPONSE);
                return -1;
            }
            if (lr_buf_append(out, buf, (size_t)n) < 0) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            continue;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (wait_fd(fd, POLLIN, deadline, what, err, errlen) < 0)
                return -1;
            continue;
        }
        snprintf(err, errlen, "%s: read: %s", what, strerror(errno));
        return -1;
    }
}

/* ---- HTTP response parsing (llhttp, HTTP_RESPONSE) ---- */

struct resp_ctx {
    struct lr_buf body;
    bool complete;
    bool oom;
};

static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
    struct resp_ctx *c = p->data;
    if (lr_buf_append(&c->body, at, len) < 0) {
        c->oom = true;
        return -1;
    }
    return 0;
}

static int on_resp_complete(llhttp_t *p)
{
    struct resp_ctx *c = p->data;
    c->complete = true;
    return HPE_PAUSED;
}

int admin_client_request(const char *socket_path, const char *method, const char *path,
                         const char *json_body, double timeout_secs, struct admin_response *out,
                         char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    double deadline = now_mono() + (timeout_secs > 0 ? timeout_secs : ADMIN_CLIENT_TIMEOUT_SECS);
    int fd = unix_connect(socket_path, err, errlen);
    if (fd < 0)
        return ADMIN_CLIENT_UNREACHABLE;

    struct lr_buf req = {0}, raw = {0};
    size_t blen = json_body ? strlen(json_body) : 0;
    int rc = ADMIN_CLIENT_UNREACHABLE;
    if (lr_buf_printf(&req,
                      "%s %s HTTP/1.1\r\nHost: lunaroute-agent\r\nUser-Agent: lunaroute-control/%s"
                      "\r\nAccept: application/json\r\nConnection: close\r\n",
                      method, path, LR_VERSION) < 0 ||
        (json_body &&
         lr_buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen) <
             0) ||
        lr_buf_puts(&req, "\r\n") < 0 || (json_body && lr_buf_append(&req, json_body, blen) < 0)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (send_all(fd, (const char *)req.data, req.len, deadline, socket_path, err, errlen) < 0 ||
        read_all(fd, &raw, deadline, socket_path, err, errlen) < 0)
        goto out;

    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_body = on_resp_body;
    settings.on_message_complete = on_resp_complete;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &settings);
    struct resp_ctx ctx = {0};
    parser.data = &ctx;
    llhttp_errno_t e = raw.len ? llhttp_execute(&parser, (const char *)raw.data, raw.len) : HPE_OK;
    if (!ctx.complete && e == HPE_OK)
        e = llhttp_finish(&parser); /* a body delimited by the close */
    if (!ctx.complete || ctx.oom) {
        rc = ADMIN_CLIENT_BAD_RESPONSE;
        snprintf(err, errlen, "%s: %s", socket_path,
                 ctx.oom   ? "out of memory"
                 : raw.len ? (e != HPE_OK && e != HPE_PAUSED ? llhttp_errno_name(e)
                                                             : "incomplete HTTP response")
                           : "connection closed without a response");
        lr_buf_free(&ctx.body);
        goto out;
    }
    out->status = parser.status_code;
    out->body_len = ctx.body.len;
    out->body = lr_buf_steal_str(&ctx.body);
    if (!out->body) {
        out->body = strdup("");
        if (!out->body) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    rc = ADMIN_CLIENT_OK;
out:
    lr_buf_free(&req);
    lr_buf_free(&raw);
    close(fd);
    return rc;
}

void admin_response_free(struct admin_response *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

int admin_client_socket_path(const char *run_dir, char *out, size_t len, char *err, size_t errlen)
{
    char path[PATH_MAX];
    json_error_t jerr;
    if ((size_t)snprintf(path, sizeof(path), "%s/agent.json", run_dir) >= sizeof(path)) {
        snprintf(err, errlen, "%s: path too long", run_dir);
        return -1;
    }
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        if (jerr.line > 0)
            snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        else
            snprintf(err, errlen, "%s", jerr.text);
        return -1;
    }
    const json_t *s = json_object_get(doc, "admin_socket");
    int rc = -1;
    if (!json_is_string(s) || !*json_string_value(s))
        snprintf(err, errlen, "%s: no \"admin_socket\"", path);
    else if ((size_t)snprintf(out, len, "%s", json_string_value(s)) >= len)
        snprintf(err, errlen, "%s: admin_socket too long", path);
    else
        rc = 0;
    json_decref(doc);
    return rc;
}

int haproxy_cli_command(const char *socket_path, const char *cmd, double timeout_secs, char **out,
                        char *err, size_t errlen)
{
    *out = NULL;
    double deadline = now_mono() + (timeout_secs > 0 ? timeout_secs : ADMIN_CLIENT_TIMEOUT_SECS);
    int fd = unix_connect(socket_path, err, errlen);
    if (fd < 0)
        return ADMIN_CLIENT_UNREACHABLE;
    struct lr_buf raw = {0};
    int rc = ADMIN_CLIENT_UNREACHABLE;
    /* The half-close ends the session: the master CLI (haproxy-master.sock) answers and then
     * waits for more commands until the client closes its side; the runtime API closes after
     * one command either way. */
    if (send_all(fd, cmd, strlen(cmd), deadline, socket_path, err, errlen) == 0 &&
        send_all(fd, "\n", 1, deadline, socket_path, err, errlen) == 0 &&
        (shutdown(fd, SHUT_WR) == 0 || errno == ENOTCONN) &&
        read_all(fd, &raw, deadline, socket_path, err, errlen) == 0) {
        *out = raw.len ? lr_buf_steal_str(&raw) : strdup("");
        if (*out)
            rc = ADMIN_CLIENT_OK;
        else
            snprintf(err, errlen, "out of memory");
    }
    lr_buf_free(&raw);
    close(fd);
    return rc;
}
