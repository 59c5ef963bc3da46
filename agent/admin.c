/* The admin API server (see admin.h). One small state machine per connection:
 * AC_READING (llhttp fed until on_message_complete pauses it) -> AC_WRITING (the whole
 * response, write watcher only after EAGAIN) -> AC_CLOSED (on the reap list, freed from the
 * prepare watcher, never under its own callback). */
#include "admin.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>

#include "buf.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "settings.h"
#include "spop.h"
#include "stats.h"

#define ADMIN_MAX_CONNS    32
#define ADMIN_MAX_URL      1024
#define ADMIN_MAX_BODY     (64u * 1024u)
#define ADMIN_MAX_REQUEST  (80u * 1024u) /* header block + body, as read from the socket */
#define ADMIN_READ_CHUNK   4096
#define ADMIN_TIMEOUT_SECS 10.0
#define ADMIN_PERSIST_MAX  4096
#define ADMIN_BACKLOG      16

enum ac_state {
    AC_READING = 0,
    AC_WRITING,
    AC_CLOSED,
};

struct admin;

struct admin_conn {
    struct admin *a;
    struct admin_conn *prev, *next;
    int fd;
    ev_io io;
    ev_timer timer;
    enum ac_state state;
    llhttp_t parser;
    struct lr_buf url, body;
    size_t bytes_in;
    bool complete;
    bool too_big;
    uint8_t method;
    struct lr_buf out;
    size_t out_off;
};

struct admin {
    struct ev_loop *loop;
    struct admin_config cfg;
    char *socket_path;
    char *state_dir;
    struct net_unix_id sock_id; /* the socket file we bound (removed at exit if still ours) */
    struct net_acceptor acc;
    ev_prepare prep;
    struct admin_conn *conns, *reap;
    size_t n_conns;
    time_t started_wall;
    ev_tstamp started_mono;
    llhttp_settings_t http;
};

/* ---- small helpers ---- */

static void iso8601(time_t t, char *buf, size_t n)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, n, "%lld", (long long)t);
}

/* The directory part of path ("." when it has none). malloc'd, NULL on OOM. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static int persist_path(const char *dir, char *buf, size_t n)
{
    int w = snprintf(buf, n, "%s/%s", dir, ADMIN_PERSIST_FILE);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

/* The provider named by <dir>/bypass-provider.json: 1 and *out (malloc'd) when present,
 * 0 when there is no file, -1 with a message when it is unusable. */
static int persist_read(const char *dir, char **out, char *err, size_t errlen)
{
    char path[PATH_MAX];
    json_error_t jerr;

    *out = NULL;
    if (persist_path(dir, path, sizeof(path)) < 0) {
        snprintf(err, errlen, "%s/%s: path too long", dir, ADMIN_PERSIST_FILE);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%.300s: %s", path, strerror(errno));
        return -1;
    }
    char buf[ADMIN_PERSIST_MAX];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof(buf) - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof(buf))
            break;
    }
    close(fd);
    json_t *doc = json_loadb(buf, len, 0, &jerr);
    const json_t *p = json_is_object(doc) ? json_object_get(doc, "provider") : NULL;
    if (!json_is_string(p)) {
        snprintf(err, errlen, "%.300s: expected {\"provider\": \"NAME\"}", path);
        json_decref(doc);
        return -1;
    }
    *out = strdup(json_string_value(p));
    json_decref(doc);
    if (!*out) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 1;
}

/* Writes <dir>/bypass-provider.json (temp file, fsync, rename; 0600), or removes it when
 * provider is NULL. 0, or -1 with a message. */
static int persist_write(const char *dir, const char *provider, char *err, size_t errlen)
{
    char path[PATH_MAX], tmp[PATH_MAX + 16];

    if (persist_path(dir, path, sizeof(path)) < 0 ||
        (size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        snprintf(err, errlen, "%s/%s: path too long", dir, ADMIN_PERSIST_FILE);
        return -1;
    }
    if (!provider) {
        if (unlink(path) < 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot remove %.300s: %s", path, strerror(errno));
            return -1;
        }
        return 0;
    }
    char when[32];
    iso8601(time(NULL), when, sizeof(when));
    json_t *doc = json_pack("{s:s, s:s}", "provider", provider, "set_at", when);
    char *text = doc ? json_dumps(doc, JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %.300s: %s", tmp, strerror(errno));
        free(text);
        return -1;
    }
    size_t len = strlen(text), off = 0;
    int rc = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = -1;
            break;
        }
        off += (size_t)w;
    }
    if (rc == 0 && (write(fd, "\n", 1) != 1 || fchmod(fd, 0600) < 0 || fsync(fd) < 0))
        rc = -1;
    int e = errno;
    free(text);
    if (close(fd) < 0 && rc == 0) {
        rc = -1;
        e = errno;
    }
    if (rc == 0 && rename(tmp, path) < 0) {
        rc = -1;
        e = errno;
    }
    if (rc < 0) {
        unlink(tmp);
        snprintf(err, errlen, "cannot write %.300s: %s", path, strerror(e));
    }
    return rc;
}

struct agent_settings *admin_apply_persisted(struct agent_settings *s)
{
    char err[512];
    char *dir, *provider = NULL;

    if (!s)
        return NULL;
    if (!s->admin_socket || !(dir = dir_of(s->admin_socket))) {
        metrics_set_bypass_provider(s->bypass_provider);
        return s;
    }
    int rc = persist_read(dir, &provider, err, sizeof(err));
    if (rc < 0)
        lr_warn("ignoring the runtime bypass provider: %s", err);
    if (rc > 0) {
        struct agent_settings *ns =
            agent_settings_with_bypass_provider(s, provider, err, sizeof(err));
        if (ns) {
            lr_info("bypass provider '%s' (runtime choice from %s/%s; agent.json says '%s')",
                    ns->bypass_provider, dir, ADMIN_PERSIST_FILE,
                    agent_settings_config_bypass_provider(s));
            agent_settings_unref(s);
            s = ns;
        } else {
            lr_warn("ignoring the runtime bypass provider in %s/%s: %s; using agent.json's "
                    "'%s'",
                    dir, ADMIN_PERSIST_FILE, err, s->bypass_provider);
        }
    }
    free(provider);
    free(dir);
    metrics_set_bypass_provider(s->bypass_provider);
    return s;
}

/* ---- reload ---- */

static bool str_differs(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") != 0;
}

static void add_key(char *buf, size_t n, const char *key)
{
    size_t used = strlen(buf);
    snprintf(buf + used, n - used, "%s%s", used ? "," : "", key);
}

int admin_reload_file(const char *path, const struct agent_settings *cur,
                      int (*publish)(void *ud, struct agent_settings *s, char *err, size_t errlen),
                      void *ud, struct admin_reload_result *res, char *err, size_t errlen)
{
    char perr[512];

    memset(res, 0, sizeof(*res));
    if (!path) {
        snprintf(err, errlen,
                 "no settings file to re-read (the settings were not loaded from "
                 "a file)");
        return ADMIN_RELOAD_BAD_FILE;
    }
    struct agent_settings *ns = agent_settings_load(path, err, errlen);
    if (!ns)
        return ADMIN_RELOAD_BAD_FILE;
    ns = admin_apply_persisted(ns); /* a runtime bypass provider outlives reloads */
    if (cur) {
        if (str_differs(cur->spoa_bind, ns->spoa_bind))
            add_key(res->restart_required, sizeof(res->restart_required), "spoa_bind");
        if (str_differs(cur->engine_bind, ns->engine_bind))
            add_key(res->restart_required, sizeof(res->restart_required), "engine_bind");
        if (str_differs(cur->admin_socket, ns->admin_socket))
            add_key(res->restart_required, sizeof(res->restart_required), "admin_socket");
        if (str_differs(cur->spoa_socket, ns->spoa_socket))
            add_key(res->restart_required, sizeof(res->restart_required), "spoa_socket");
        if (str_differs(cur->engine_socket, ns->engine_socket))
            add_key(res->restart_required, sizeof(res->restart_required), "engine_socket");
        if (cur->threads != ns->threads)
            add_key(res->restart_required, sizeof(res->restart_required), "threads");
        snprintf(res->previous_digest, sizeof(res->previous_digest), "%s", cur->digest);
    }
    snprintf(res->digest, sizeof(res->digest), "%s", ns->digest);
    snprintf(res->bypass_provider, sizeof(res->bypass_provider), "%s",
             ns->bypass_provider ? ns->bypass_provider : "");
    res->changed = !cur || strcmp(cur->digest, ns->digest) != 0;
    if (publish(ud, ns, perr, sizeof(perr)) < 0) {
        snprintf(err, errlen, "%s: the settings could not be put in force: %s", path, perr);
        if (cur) /* admin_apply_persisted set the gauge for ns */
            metrics_set_bypass_provider(cur->bypass_provider);
        agent_settings_unref(ns);
        memset(res, 0, sizeof(*res));
        return ADMIN_RELOAD_PUBLISH_FAILED;
    }
    metrics_set_bypass_provider(ns->bypass_provider);
    agent_settings_unref(ns);
    return ADMIN_RELOAD_OK;
}

/* ---- status ---- */

static json_t *bypass_json(const struct admin *a, const struct agent_settings *s)
{
    char err[256], *persisted = NULL;
    json_t *b = json_object();
    if (!b)
        return NULL;
    json_object_set_new(b, "enabled", json_boolean(s->bypass_enabled));
    json_object_set_new(b, "provider", json_string(s->bypass_provider));
    json_object_set_new(b, "source", json_string(s->bypass_runtime ? "runtime" : "config"));
    json_object_set_new(b, "config_provider",
                        json_string(agent_settings_config_bypass_provider(s)));
    if (a && persist_read(a->state_dir, &persisted, err, sizeof(err)) > 0)
        json_object_set_new(b, "persisted", json_string(persisted));
    else
        json_object_set_new(b, "persisted", json_null());
    free(persisted);
    return b;
}

json_t *admin_status_json(struct admin *a)
{
    struct agent_settings *s = a->cfg.current(a->cfg.ud);
    struct stats_snapshot *snap = malloc(sizeof(*snap));
    json_t *root = json_object();
    char when[32];

    if (!s || !snap || !root) {
        agent_settings_unref(s);
        free(snap);
        json_decref(root);
        return NULL;
    }
    stats_snapshot(snap);
    double up = ev_time() - a->started_mono;
    json_object_set_new(root, "version", json_string(LR_VERSION));
    json_object_set_new(root, "pid", json_integer((json_int_t)getpid()));
    json_object_set_new(root, "uptime_secs", json_integer((json_int_t)(up < 0 ? 0 : up)));
    iso8601(a->started_wall, when, sizeof(when));
    json_object_set_new(root, "started_at", json_string(when));

    json_t *st = json_object();
    json_object_set_new(st, "path", s->path ? json_string(s->path) : json_null());
    json_object_set_new(st, "digest", json_string(s->digest));
    iso8601(s->loaded_at, when, sizeof(when));
    json_object_set_new(st, "loaded_at", json_string(when));
    json_object_set_new(root, "settings", st);
    json_object_set_new(root, "bypass", bypass_json(a, s));
    json_object_set_new(root, "threads", json_integer(a->cfg.threads));

    json_t *spop = json_object(), *errs = json_object();
    json_object_set_new(spop, "connections_open",
                        json_integer(snap->counters[STATS_SPOP_CONN_OPEN]));
    json_object_set_new(spop, "connections_total",
                        json_integer(snap->counters[STATS_SPOP_CONN_TOTAL]));
    json_object_set_new(spop, "frames", json_integer(snap->counters[STATS_SPOP_FRAMES_IN]));
    json_object_set_new(spop, "notify", json_integer(snap->counters[STATS_SPOP_NOTIFY_IN]));
    json_object_set_new(spop, "ack", json_integer(snap->counters[STATS_SPOP_ACK_OUT]));
    json_object_set_new(spop, "socket_errors",
                        json_integer(snap->counters[STATS_SPOP_READ_ERRORS]));
    for (unsigned i = 0; i < STATS_SPOP_STATUS_COUNT; i++) {
        unsigned code = stats_spop_status_of_index(i);
        if (code != SPOP_ST_NONE)
            json_object_set_new(errs, spop_status_to_str(code),
                                json_integer((json_int_t)snap->spop_errors[i]));
    }
    json_object_set_new(spop, "errors", errs);
    json_object_set_new(root, "spop", spop);

    json_t *eng = json_object();
    json_object_set_new(eng, "connections_open",
                        json_integer(snap->counters[STATS_ENGINE_CONN_OPEN]));
    json_object_set_new(eng, "connections_total",
                        json_integer(snap->counters[STATS_ENGINE_CONN_TOTAL]));
    json_object_set_new(eng, "requests", json_integer(snap->counters[STATS_ENGINE_REQUESTS]));
    json_object_set_new(eng, "responses_4xx",
                        json_integer(snap->counters[STATS_ENGINE_ERRORS_4XX]));
    json_object_set_new(eng, "responses_5xx",
                        json_integer(snap->counters[STATS_ENGINE_ERRORS_5XX]));
    json_object_set_new(root, "engine", eng);

    json_t *cls = json_object();
    for (unsigned r = 0; r < CLASSIFY_ROUTE_COUNT; r++) {
        json_t *per = json_object();
        for (unsigned p = 0; p < snap->n_providers && p < STATS_MAX_PROVIDERS; p++) {
            const char *name = stats_provider_name(p);
            if (name && snap->classified[r][p])
                json_object_set_new(per, *name ? name : "none",
                                    json_integer((json_int_t)snap->classified[r][p]));
        }
        json_object_set_new(cls, classify_route_to_str(r), per);
    }
    json_object_set_new(root, "classifications", cls);

    free(snap);
    agent_settings_unref(s);
    return root;
}

/* ---- responses ---- */

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Content Too Large";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

static void ac_flush(struct admin_conn *c);

/* Queues the response (takes doc) and starts writing it. */
static void ac_respond(struct admin_conn *c, int status, json_t *doc, const char *allow)
{
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!text) {
        status = 500;
        text = strdup("{\"error\": \"out of memory\"}");
    }
    size_t len = text ? strlen(text) + 1 : 0;
    lr_buf_reset(&c->out);
    if (lr_buf_printf(&c->out,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nCache-Control: no-store\r\n%s%s%s"
                      "Connection: close\r\n\r\n%s\n",
                      status, reason_of(status), len, allow ? "Allow: " : "", allow ? allow : "",
                      allow ? "\r\n" : "", text ? text : "") < 0)
        lr_buf_reset(&c->out); /* nothing to send: the close tells the client */
    free(text);
    c->out_off = 0;
    c->state = AC_WRITING;
    ev_io_stop(c->a->loop, &c->io);
    ac_flush(c);
}

static void ac_error(struct admin_conn *c, int status, const char *msg, const char *allow)
{
    ac_respond(c, status, json_pack("{s:s}", "error", msg), allow);
}

/* ---- handlers ---- */

/* POST/DELETE /v1/bypass-provider. provider NULL: clear the runtime choice. */
static void handle_switch(struct admin_conn *c, const char *provider)
{
    struct admin *a = c->a;
    char err[512], perr[512];
    struct agent_settings *cur = a->cfg.current(a->cfg.ud);
    if (!cur) {
        ac_error(c, 503, "no settings loaded", NULL);
        return;
    }
    struct agent_settings *ns =
        agent_settings_with_bypass_provider(cur, provider, err, sizeof(err));
    if (!ns) {
        agent_settings_unref(cur);
        ac_error(c, 400, err, NULL);
        return;
    }
    /* Persist first: a switch that would not survive a restart is refused, not half done. */
    if (persist_write(a->state_dir, provider, err, sizeof(err)) < 0) {
        lr_err("admin: bypass provider switch refused: %s", err);
        agent_settings_unref(ns);
        agent_settings_unref(cur);
        ac_error(c, 500, err, NULL);
        return;
    }
    if (a->cfg.publish(a->cfg.ud, ns, err, sizeof(err)) < 0) {
        /* Put the file back the way it was. */
        if (persist_write(a->state_dir, cur->bypass_runtime ? cur->bypass_provider : NULL, perr,
                          sizeof(perr)) < 0)
            lr_err("admin: %s", perr);
        lr_err("admin: bypass provider switch failed: %s", err);
        agent_settings_unref(ns);
        agent_settings_unref(cur);
        ac_error(c, 500, err, NULL);
        return;
    }
    metrics_set_bypass_provider(ns->bypass_provider);
    lr_info("bypass provider switched at runtime: '%s' -> '%s'%s", cur->bypass_provider,
            ns->bypass_provider, provider ? "" : " (runtime choice cleared: agent.json's value)");
    json_t *doc = json_pack("{s:s, s:s, s:s}", "provider", ns->bypass_provider, "previous",
                            cur->bypass_provider, "source", provider ? "runtime" : "config");
    agent_settings_unref(ns);
    agent_settings_unref(cur);
    ac_respond(c, 200, doc, NULL);
}

/* POST /v1/reload */
static void handle_reload(struct admin_conn *c)
{
    struct admin *a = c->a;
    char err[640];
    struct admin_reload_result res;
    if (!a->cfg.reload) {
        ac_error(c, 501, "this agent cannot reload its settings (no settings file)", NULL);
        return;
    }
    int rc = a->cfg.reload(a->cfg.ud, &res, err, sizeof(err));
    if (rc != ADMIN_RELOAD_OK) {
        ac_error(c, rc == ADMIN_RELOAD_BAD_FILE ? 400 : 500, err, NULL);
        return;
    }
    json_t *restart = json_array();
    for (const char *p = res.restart_required; restart && *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        json_array_append_new(restart, json_stringn(p, n));
        p += n + (comma ? 1 : 0);
    }
    json_t *doc = json_pack("{s:s, s:s, s:b, s:s, s:o*}", "digest", res.digest, "previous_digest",
                            res.previous_digest, "changed", res.changed, "bypass_provider",
                            res.bypass_provider, "restart_required", restart);
    ac_respond(c, 200, doc, NULL);
}

static void handle_post_bypass(struct admin_conn *c)
{
    json_error_t jerr;
    char msg[300];
    json_t *doc =
        json_loadb((const char *)c->body.data, c->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        snprintf(msg, sizeof(msg), "invalid JSON: %d:%d: %s", jerr.line, jerr.column, jerr.text);
        ac_error(c, 400, msg, NULL);
        return;
    }
    const json_t *p = json_is_object(doc) ? json_object_get(doc, "provider") : NULL;
    if (!p || !(json_is_string(p) || json_is_null(p))) {
        json_decref(doc);
        ac_error(c, 400, "expected {\"provider\": \"auto\" | NAME | null}", NULL);
        return;
    }
    handle_switch(c, json_is_string(p) ? json_string_value(p) : NULL);
    json_decref(doc);
}

static void ac_dispatch(struct admin_conn *c)
{
    struct admin *a = c->a;
    size_t n = c->url.len;
    const char *url = c->url.len ? (const char *)c->url.data : "";
    const char *q = memchr(url, '?', n);
    if (q)
        n = (size_t)(q - url);
#define PATH_IS(lit) (n == sizeof(lit) - 1 && memcmp(url, lit, n) == 0)
    if (PATH_IS("/v1/status")) {
        if (c->method != HTTP_GET) {
            ac_error(c, 405, "use GET", "GET");
            return;
        }
        json_t *doc = admin_status_json(a);
        if (!doc)
            ac_error(c, 500, "out of memory", NULL);
        else
            ac_respond(c, 200, doc, NULL);
        return;
    }
    if (PATH_IS("/v1/bypass-provider")) {
        if (c->method == HTTP_POST) {
            handle_post_bypass(c);
        } else if (c->method == HTTP_DELETE) {
            handle_switch(c, NULL);
        } else if (c->method == HTTP_GET) {
            struct agent_settings *s = a->cfg.current(a->cfg.ud);
            json_t *doc = s ? bypass_json(a, s) : NULL;
            agent_settings_unref(s);
            if (!doc)
                ac_error(c, 500, "out of memory", NULL);
            else
                ac_respond(c, 200, doc, NULL);
        } else {
            ac_error(c, 405, "use GET, POST or DELETE", "GET, POST, DELETE");
        }
        return;
    }
    if (PATH_IS("/v1/reload")) {
        if (c->method != HTTP_POST) {
            ac_error(c, 405, "use POST", "POST");
            return;
        }
        handle_reload(c);
        return;
    }
#undef PATH_IS
    char msg[160];
    snprintf(msg, sizeof(msg), "not found: %.*s (try GET /v1/status)", (int)(n > 100 ? 100 : n),
             url);
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    ac_error(c, 404, msg, NULL);
}

/* ---- connections ---- */

static void ac_close(struct admin_conn *c)
{
    struct admin *a = c->a;
    if (c->state == AC_CLOSED)
        return;
    ev_io_stop(a->loop, &c->io);
    ev_timer_stop(a->loop, &c->timer);
    close(c->fd);
    c->fd = -1;
    c->state = AC_CLOSED;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = a->reap;
    a->reap = c;
    a->n_conns--;
}

static void ac_free(struct admin_conn *c)
{
    lr_buf_free(&c->url);
    lr_buf_free(&c->body);
    lr_buf_free(&c->out);
    free(c);
}

static void ac_flush(struct admin_conn *c)
{
    struct ev_loop *loop = c->a->loop;
    switch (net_send_pending(c->fd, &c->out, &c->out_off)) {
    case NET_WOULD_BLOCK:
        if (!ev_is_active(&c->io)) {
            ev_io_set(&c->io, c->fd, EV_WRITE);
            ev_io_start(loop, &c->io);
        }
        return;
    case NET_SEND_ERROR:
        ac_close(c);
        return;
    case NET_SENT_ALL:
        break;
    }
    shutdown(c->fd, SHUT_WR);
    ac_close(c);
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = p->data;
    if (c->url.len + len > ADMIN_MAX_URL) {
        c->too_big = true;
        return -1;
    }
    return lr_buf_append(&c->url, at, len) < 0 ? -1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct admin_conn *c = p->data;
    if (c->body.len + len > ADMIN_MAX_BODY) {
        c->too_big = true;
        return -1;
    }
    return lr_buf_append(&c->body, at, len) < 0 ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct admin_conn *c = p->data;
    c->complete = true;
    c->method = (uint8_t)llhttp_get_method(p);
    /* NUL-terminate for the handlers (lr_buf keeps room past len). */
    if (lr_buf_reserve(&c->url, 1) < 0 || lr_buf_reserve(&c->body, 1) < 0)
        return -1;
    c->url.data[c->url.len] = 0;
    c->body.data[c->body.len] = 0;
    return HPE_PAUSED; /* one request per connection: stop at its end */
}

/* Feeds n bytes (n == 0: EOF) to the parser; answers once the request is complete. */
static void ac_feed(struct admin_conn *c, const char *data, size_t n)
{
    llhttp_errno_t e = n ? llhttp_execute(&c->parser, data, n) : llhttp_finish(&c->parser);
    if (c->complete) {
        ac_dispatch(c);
        return;
    }
    if (c->too_big || (e == HPE_OK && c->bytes_in > ADMIN_MAX_REQUEST)) {
        ac_error(c, 413, "request too large", NULL);
        return;
    }
    if (e != HPE_OK) {
        char msg[200];
        snprintf(msg, sizeof(msg), "bad HTTP request: %s", llhttp_errno_name(e));
        ac_error(c, 400, msg, NULL);
        return;
    }
    if (!n) /* EOF before a complete request: nobody to answer */
        ac_close(c);
}

static void ac_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct admin_conn *c = w->data;
    if (c->state == AC_WRITING) {
        ac_flush(c);
        return;
    }
    char buf[ADMIN_READ_CHUNK];
    for (int i = 0; i < 4 && c->state == AC_READING; i++) {
        ssize_t r = read(c->fd, buf, sizeof(buf));
        if (r > 0) {
            c->bytes_in += (size_t)r;
            ac_feed(c, buf, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r == 0)
            ac_feed(c, NULL, 0);
        else
            ac_close(c);
        return;
    }
}

static void ac_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    ac_close(w->data);
}

static void admin_on_accept(void *ud, int fd)
{
    struct admin *a = ud;
    if (a->n_conns >= ADMIN_MAX_CONNS) {
        lr_warn("admin: %d connections open: refusing one", ADMIN_MAX_CONNS);
        close(fd);
        return;
    }
    struct admin_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->a = a;
    c->fd = fd;
    c->state = AC_READING;
    llhttp_init(&c->parser, HTTP_REQUEST, &a->http);
    c->parser.data = c;
    ev_io_init(&c->io, ac_io_cb, fd, EV_READ);
    c->io.data = c;
    ev_timer_init(&c->timer, ac_timer_cb, ADMIN_TIMEOUT_SECS, 0.);
    c->timer.data = c;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->n_conns++;
    ev_io_start(a->loop, &c->io);
    ev_timer_start(a->loop, &c->timer);
}

static void admin_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct admin *a = w->data;
    while (a->reap) {
        struct admin_conn *c = a->reap;
        a->reap = c->next;
        ac_free(c);
    }
}

/* ---- lifecycle ---- */

struct admin *admin_new(struct ev_loop *loop, const struct admin_config *cfg, char *err,
                        size_t errlen)
{
    if (!cfg || !cfg->socket_path || !cfg->current || !cfg->publish) {
        snprintf(err, errlen, "admin: incomplete configuration");
        return NULL;
    }
    struct admin *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->loop = loop;
    a->cfg = *cfg;
    a->acc.fd = -1;
    a->socket_path = strdup(cfg->socket_path);
    a->state_dir = cfg->state_dir ? strdup(cfg->state_dir) : dir_of(cfg->socket_path);
    if (!a->socket_path || !a->state_dir) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    a->cfg.socket_path = a->socket_path;
    a->cfg.state_dir = a->state_dir;
    llhttp_settings_init(&a->http);
    a->http.on_url = on_url;
    a->http.on_body = on_body;
    a->http.on_message_complete = on_message_complete;
    int fd = net_listen_unix(a->socket_path, 0600, ADMIN_BACKLOG, "admin socket", &a->sock_id, err,
                             errlen);
    if (fd < 0)
        goto fail;
    net_acceptor_init(&a->acc, loop, fd, "admin", admin_on_accept, a);
    a->acc.nodelay = false;
    ev_prepare_init(&a->prep, admin_prepare_cb);
    a->prep.data = a;
    ev_prepare_start(loop, &a->prep);
    net_acceptor_start(&a->acc);
    a->started_wall = time(NULL);
    a->started_mono = ev_time();
    return a;
fail:
    free(a->socket_path);
    free(a->state_dir);
    free(a);
    return NULL;
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    if (a->acc.loop) {
        net_acceptor_close(&a->acc);
        ev_prepare_stop(a->loop, &a->prep);
        while (a->conns)
            ac_close(a->conns);
        while (a->reap) {
            struct admin_conn *c = a->reap;
            a->reap = c->next;
            ac_free(c);
        }
        net_unlink_unix(a->socket_path, &a->sock_id);
    }
    free(a->socket_path);
    free(a->state_dir);
    free(a);
}
