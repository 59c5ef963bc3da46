#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "admin.h"
#include "buf.h"
#include "classify.h"
#include "log.h"
#include "lr_defaults.h"
#include "net.h"
#include "proxy.h"
#include "settings.h"
#include "spop.h"
#include "stats.h"
#include "upstream.h"

#define SC_READ_CHUNK          (64u * 1024u)
#define SC_MAX_READS_PER_EVENT 4 /* then yield to the other connections of the loop */
#define LISTEN_BACKLOG         1024
/* spoa_socket / engine_socket: owner and group (HAProxy runs as the agent's user or group). */
#define UNIX_SOCKET_MODE 0660
#define PROV_CACHE       8

struct server_thread;

/* SPOP connection states, changed only through sc_set_state(). */
enum sc_state {
    SC_READING = 0, /* normal operation */
    SC_FLUSH_CLOSE, /* our last frame is queued: write it, then linger */
    SC_LINGER,      /* write side shut: discard input until EOF or timeout */
    SC_CLOSED,      /* on the reap list */
};

struct spop_client {
    struct server_thread *t;
    struct spop_client *prev, *next;
    uint64_t id;
    int fd;
    ev_io rio, wio;
    ev_timer timer; /* frame timeout while reading, linger after our last frame */
    enum sc_state state;
    struct spop_conn proto;
    struct lr_buf in, out;
    size_t out_off;
    size_t in_limit; /* max_frame + 4 + one read */
    /* `in` holds only a partial frame carried over between reads (≤ max_frame + 4): reads
     * land in the thread's scratch buffer, complete frames are handled from there, so a
     * connection costs no input buffer unless a frame straddles two reads. */
    uint64_t seen_frames, seen_notify, seen_acks;
};

struct server_thread {
    struct server *srv;
    unsigned idx;
    struct ev_loop *loop;
    pthread_t tid;
    bool running;
    struct net_acceptor spoa_acc, engine_acc;
    struct net_acceptor spoa_uacc, engine_uacc; /* the unix sockets (fd -1: none) */
    struct engine_http *engine;
    struct upstream *up;             /* this thread's egress (libcurl multi on `loop`) */
    struct agent_settings *settings; /* this thread's own reference */
    struct engine_gen *gen;          /* the same generation's router and keys (own ref) */
    unsigned settings_gen;
    ev_async wake;
    ev_timer deadline;
    ev_prepare prep;
    struct spop_client *clients, *reap;
    size_t n_clients;
    uint8_t *scratch; /* SC_READ_CHUNK bytes: every SPOP read of this thread lands here */
    bool draining;
    /* classify result provider pointer -> stats index, valid for `settings` */
    const char *prov_ptr[PROV_CACHE];
    unsigned prov_idx[PROV_CACHE];
    unsigned n_prov;
};

/* A unix listening socket of the server: `fd` is -1 when not configured or once every thread
 * holds its own dup; `path` is the file we bound, removed at exit if it is still ours. */
struct unix_listener {
    int fd;
    char *path;
    struct net_unix_id id;
};

struct server {
    struct server_options opt;
    char *settings_path;
    unsigned nthreads;
    struct server_thread *threads;
    pthread_mutex_t lock; /* guards `current` and `current_gen` (cold path only) */
    struct agent_settings *current;
    struct engine_gen *current_gen; /* router + resolved keys for `current` */
    atomic_uint gen;
    atomic_bool stop_requested;
    atomic_bool reload_requested;
    atomic_uint reloads_ok, reloads_failed;
    _Atomic uint64_t next_conn_id;
    /* spoa_socket / engine_socket: one listening socket each, shared by every thread (each
     * accepts on its own dup); -1 when not configured. */
    struct unix_listener spoa_u, engine_u;
    bool default_loop;
    ev_signal sighup, sigterm, sigint;
    struct admin *admin; /* admin API on thread 0 (NULL without admin_socket) */
    int spoa_port, engine_port;
};

void server_options_default(struct server_options *o)
{
    memset(o, 0, sizeof(*o));
    o->drain_timeout = 5.0;
    o->spop_linger = 1.0;
    o->spop_frame_timeout = 5.0;
    engine_http_config_default(&o->engine);
}

void server_apply_log_level(const struct agent_settings *s)
{
    const char *env = getenv("LUNAROUTE_LOG_LEVEL");
    enum lr_log_level l;
    if (env && *env) {
        if (lr_log_level_from_str(env, &l) == 0) {
            lr_log_set_level(l);
            return;
        }
        lr_warn("LUNAROUTE_LOG_LEVEL: unknown level '%s' ignored", env);
    }
    if (s && s->log_level && lr_log_level_from_str(s->log_level, &l) == 0)
        lr_log_set_level(l);
}

/* ---- SPOP connections ---- */

static void sc_flush(struct spop_client *c);
static void thread_sync_settings(struct server_thread *t);

static void sc_set_state(struct spop_client *c, enum sc_state st)
{
    c->state = st;
}

static void sc_close(struct spop_client *c)
{
    struct server_thread *t = c->t;
    if (c->state == SC_CLOSED)
        return;
    ev_io_stop(t->loop, &c->rio);
    ev_io_stop(t->loop, &c->wio);
    ev_timer_stop(t->loop, &c->timer);
    close(c->fd);
    c->fd = -1;
    sc_set_state(c, SC_CLOSED);
    if (c->prev)
        c->prev->next = c->next;
    else
        t->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = t->reap; /* freed from the prepare watcher, never under its own callback */
    t->reap = c;
    t->n_clients--;
    stats_dec(STATS_SPOP_CONN_OPEN);
}

static void sc_free(struct spop_client *c)
{
    lr_buf_free(&c->in);
    lr_buf_free(&c->out);
    free(c);
}

static unsigned provider_stats_index(struct server_thread *t, const char *name)
{
    for (unsigned i = 0; i < t->n_prov; i++)
        if (t->prov_ptr[i] == name)
            return t->prov_idx[i];
    unsigned idx = stats_provider_index(name);
    if (t->n_prov < PROV_CACHE) {
        t->prov_ptr[t->n_prov] = name;
        t->prov_idx[t->n_prov++] = idx;
    }
    return idx;
}

static bool arg_is(const struct spop_kv *kv, const char *name, size_t len)
{
    return kv->name_len == len && memcmp(kv->name, name, len) == 0;
}

static unsigned arg_uint(const struct spop_data *d)
{
    switch (d->type) {
    case SPOP_DATA_INT32:
    case SPOP_DATA_INT64:
        return d->u.i <= 0 ? 0 : d->u.i > 0xffffffffll ? 0xffffffffu : (unsigned)d->u.i;
    case SPOP_DATA_UINT32:
    case SPOP_DATA_UINT64:
        return d->u.u > 0xffffffffull ? 0xffffffffu : (unsigned)d->u.u;
    case SPOP_DATA_BOOL:
        return d->u.b ? 1 : 0;
    default:
        return 0;
    }
}

static void arg_str(const struct spop_data *d, const char **p, size_t *len)
{
    if (d->type == SPOP_DATA_STR || d->type == SPOP_DATA_BIN) {
        *p = d->u.str.ptr;
        *len = d->u.str.len;
    } else {
        *p = NULL;
        *len = 0;
    }
}

#define LIT_LEN(s) (sizeof(s) - 1)

static void put_action(struct spop_actions *out, const char *name, size_t name_len,
                       const char *value)
{
    struct spop_action *a = &out->a[out->n++];
    a->scope = SPOP_SCOPE_TXN;
    a->name = name;
    a->name_len = name_len;
    a->value = value ? value : "";
    a->value_len = value ? strlen(value) : 0;
}

/* The lunaroute-classify handler: arguments -> classify() -> three txn set-vars. */
static int sc_on_notify(void *ud, const struct spop_message *msg, struct spop_actions *out)
{
    struct spop_client *c = ud;
    struct server_thread *t = c->t;
    if (msg->name_len != LIT_LEN(LR_SPOE_MESSAGE) ||
        memcmp(msg->name, LR_SPOE_MESSAGE, LIT_LEN(LR_SPOE_MESSAGE)) != 0)
        return -1;
    if (out->n + 3 > SPOP_MAX_ACTIONS)
        return -1;
    struct classify_input in;
    memset(&in, 0, sizeof(in));
    for (size_t i = 0; i < msg->nargs; i++) {
        const struct spop_kv *kv = &msg->args[i];
        if (arg_is(kv, LR_ARG_PATH, LIT_LEN(LR_ARG_PATH)))
            arg_str(&kv->val, &in.path, &in.path_len);
        else if (arg_is(kv, LR_ARG_METHOD, LIT_LEN(LR_ARG_METHOD)))
            arg_str(&kv->val, &in.method, &in.method_len);
        else if (arg_is(kv, LR_ARG_ANTHROPIC_VERSION, LIT_LEN(LR_ARG_ANTHROPIC_VERSION)))
            in.anthropic_version_count = arg_uint(&kv->val);
        else if (arg_is(kv, LR_ARG_X_API_KEY, LIT_LEN(LR_ARG_X_API_KEY)))
            in.x_api_key_count = arg_uint(&kv->val);
        else if (arg_is(kv, LR_ARG_AUTH_SCHEME, LIT_LEN(LR_ARG_AUTH_SCHEME)))
            arg_str(&kv->val, &in.auth_scheme, &in.auth_scheme_len);
    }
    struct classify_result res;
    thread_sync_settings(t); /* a runtime switch applies to the very next request */
    classify(t->settings, &in, &res);
    put_action(out, LR_VAR_ROUTE, LIT_LEN(LR_VAR_ROUTE), classify_route_to_str(res.route));
    put_action(out, LR_VAR_BACKEND, LIT_LEN(LR_VAR_BACKEND), res.backend);
    put_action(out, LR_VAR_PROVIDER, LIT_LEN(LR_VAR_PROVIDER), res.provider);
    stats_classification(res.route, provider_stats_index(t, res.provider ? res.provider : ""));
    return 0;
}

static void sc_count(struct spop_client *c)
{
    if (c->proto.frames_in != c->seen_frames) {
        stats_add(STATS_SPOP_FRAMES_IN, (int64_t)(c->proto.frames_in - c->seen_frames));
        c->seen_frames = c->proto.frames_in;
    }
    if (c->proto.notify_in != c->seen_notify) {
        stats_add(STATS_SPOP_NOTIFY_IN, (int64_t)(c->proto.notify_in - c->seen_notify));
        c->seen_notify = c->proto.notify_in;
    }
    if (c->proto.acks_out != c->seen_acks) {
        stats_add(STATS_SPOP_ACK_OUT, (int64_t)(c->proto.acks_out - c->seen_acks));
        c->seen_acks = c->proto.acks_out;
    }
}

/* Hands every complete frame of (what `in` carried over) + data[0..n) to the protocol core;
 * answers land in `out`; a partial frame left at the end is kept in `in`. */
static void sc_process(struct spop_client *c, const uint8_t *data, size_t n)
{
    size_t consumed = 0;
    const uint8_t *p = data;
    size_t len = n;
    if (c->in.len) {
        if (lr_buf_append(&c->in, data, n) < 0) {
            lr_err("spop conn %llu: out of memory", (unsigned long long)c->id);
            sc_close(c);
            return;
        }
        p = c->in.data;
        len = c->in.len;
    }
    enum spop_feed_result r =
        spop_conn_feed(&c->proto, p, len, &consumed, &c->out, sc_on_notify, c);
    if (p != data) {
        lr_buf_consume(&c->in, consumed);
    } else if (r != SPOP_FEED_CLOSE && consumed < len &&
               lr_buf_append(&c->in, data + consumed, len - consumed) < 0) {
        lr_err("spop conn %llu: out of memory", (unsigned long long)c->id);
        sc_close(c);
        return;
    }
    sc_count(c);
    if (r == SPOP_FEED_CLOSE) {
        if (c->proto.status != SPOP_ST_NONE) {
            stats_spop_error(c->proto.status);
            lr_warn("spop conn %llu: closing: %s%s%s", (unsigned long long)c->id,
                    spop_status_to_str(c->proto.status),
                    c->proto.engine_id[0] ? ", engine-id " : "", c->proto.engine_id);
        } else {
            lr_debug("spop conn %llu: closing normally", (unsigned long long)c->id);
        }
        sc_set_state(c, SC_FLUSH_CLOSE);
        return;
    }
    /* The frame timer runs while a HELLO or a begun frame is incomplete; only a complete
     * frame restarts it, so trickling bytes does not keep a connection alive. */
    struct ev_loop *loop = c->t->loop;
    if (c->proto.state == SPOP_CS_READY && c->in.len == 0) {
        ev_timer_stop(loop, &c->timer);
    } else if (consumed || !ev_is_active(&c->timer)) {
        ev_timer_stop(loop, &c->timer);
        ev_timer_set(&c->timer, c->t->srv->opt.spop_frame_timeout, 0.);
        ev_timer_start(loop, &c->timer);
    }
    if (c->in.len + SC_READ_CHUNK > c->in_limit) {
        /* The core bounds a partial frame by max_frame + 4; this cannot happen. */
        lr_err("spop conn %llu: %zu bytes pending without a complete frame",
               (unsigned long long)c->id, c->in.len);
        stats_spop_error(SPOP_ST_TOO_BIG);
        (void)spop_conn_disconnect(&c->proto, SPOP_ST_TOO_BIG, "frame too big", &c->out);
        lr_buf_reset(&c->in);
        sc_set_state(c, SC_FLUSH_CLOSE);
    }
}

/* Reads what the socket has (bounded) and processes it. Does not write. */
static void sc_read_some(struct spop_client *c)
{
    uint8_t *buf = c->t->scratch;
    for (int i = 0; i < SC_MAX_READS_PER_EVENT && c->state == SC_READING; i++) {
        size_t room = c->in_limit - c->in.len;
        if (room > SC_READ_CHUNK)
            room = SC_READ_CHUNK;
        ssize_t n = read(c->fd, buf, room);
        if (n > 0) {
            sc_process(c, buf, (size_t)n);
            if ((size_t)n < room)
                return; /* drained the socket */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n == 0) {
            if (c->proto.state == SPOP_CS_READY && c->in.len)
                lr_warn("spop conn %llu: peer closed in the middle of a frame",
                        (unsigned long long)c->id);
            else
                lr_debug("spop conn %llu: peer closed", (unsigned long long)c->id);
        } else {
            stats_inc(STATS_SPOP_READ_ERRORS);
            lr_warn("spop conn %llu: read: %s", (unsigned long long)c->id, strerror(errno));
        }
        sc_close(c);
        return;
    }
}

static void sc_linger_discard(struct spop_client *c)
{
    char buf[4096];
    for (int i = 0; i < SC_MAX_READS_PER_EVENT; i++) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        sc_close(c);
        return;
    }
}

static void sc_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct spop_client *c = w->data;
    if (c->state == SC_LINGER) {
        sc_linger_discard(c);
        return;
    }
    sc_read_some(c);
    if (c->state != SC_CLOSED)
        sc_flush(c); /* everything this event produced, in one write */
}

static void sc_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    sc_flush(w->data);
}

static void sc_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct spop_client *c = w->data;
    if (c->state != SC_READING) {
        sc_close(c); /* the linger is over */
        return;
    }
    stats_spop_error(SPOP_ST_TIMEOUT);
    lr_warn("spop conn %llu: closing: %s (%s, %zu bytes pending)", (unsigned long long)c->id,
            spop_status_to_str(SPOP_ST_TIMEOUT),
            c->proto.state == SPOP_CS_READY ? "frame incomplete" : "no HELLO", c->in.len);
    (void)spop_conn_disconnect(&c->proto, SPOP_ST_TIMEOUT, "frame timeout", &c->out);
    lr_buf_reset(&c->in);
    sc_set_state(c, SC_FLUSH_CLOSE);
    sc_flush(c);
}

static void sc_flush(struct spop_client *c)
{
    struct ev_loop *loop = c->t->loop;
    switch (net_send_pending(c->fd, &c->out, &c->out_off)) {
    case NET_WOULD_BLOCK:
        /* Stop reading until HAProxy takes our answers: bounds the output buffer. */
        ev_io_stop(loop, &c->rio);
        ev_io_start(loop, &c->wio);
        return;
    case NET_SEND_ERROR:
        stats_inc(STATS_SPOP_READ_ERRORS);
        lr_warn("spop conn %llu: write: %s", (unsigned long long)c->id, strerror(errno));
        sc_close(c);
        return;
    case NET_SENT_ALL:
        break;
    }
    c->out.len = 0;
    c->out_off = 0;
    ev_io_stop(loop, &c->wio);
    if (c->state == SC_FLUSH_CLOSE) {
        /* Half-close and wait for the peer's close so our last frame is not lost to a RST. */
        shutdown(c->fd, SHUT_WR);
        sc_set_state(c, SC_LINGER);
        ev_timer_stop(loop, &c->timer);
        ev_timer_set(&c->timer, c->t->srv->opt.spop_linger, 0.);
        ev_timer_start(loop, &c->timer);
    }
    ev_io_start(loop, &c->rio);
}

static void spoa_on_accept(void *ud, int fd)
{
    struct server_thread *t = ud;
    struct spop_client *c = calloc(1, sizeof(*c));
    if (!c) {
        lr_err("spoa: out of memory accepting a connection");
        close(fd);
        return;
    }
    c->t = t;
    c->fd = fd;
    c->id = atomic_fetch_add_explicit(&t->srv->next_conn_id, 1, memory_order_relaxed);
    uint32_t maxf =
        t->settings->max_frame_size ? t->settings->max_frame_size : LR_SPOP_MAX_FRAME_SIZE;
    spop_conn_init(&c->proto, maxf);
    c->in_limit = (size_t)maxf + 4 + SC_READ_CHUNK;
    ev_io_init(&c->rio, sc_read_cb, fd, EV_READ);
    c->rio.data = c;
    ev_io_init(&c->wio, sc_write_cb, fd, EV_WRITE);
    c->wio.data = c;
    ev_timer_init(&c->timer, sc_timer_cb, t->srv->opt.spop_frame_timeout, 0.);
    c->timer.data = c;
    c->next = t->clients;
    if (t->clients)
        t->clients->prev = c;
    t->clients = c;
    t->n_clients++;
    stats_inc(STATS_SPOP_CONN_OPEN);
    stats_inc(STATS_SPOP_CONN_TOTAL);
    lr_debug("spop conn %llu: accepted on thread %u", (unsigned long long)c->id, t->idx);
    ev_io_start(t->loop, &c->rio);
    ev_timer_start(t->loop, &c->timer); /* the HELLO must come in time */
}

static void engine_on_accept(void *ud, int fd)
{
    struct server_thread *t = ud;
    uint64_t id = atomic_fetch_add_explicit(&t->srv->next_conn_id, 1, memory_order_relaxed);
    engine_http_accept(t->engine, fd, id);
}

/* ---- per-thread control ---- */

static void thread_sync_settings(struct server_thread *t)
{
    struct server *srv = t->srv;
    unsigned gen = atomic_load(&srv->gen);
    if (gen == t->settings_gen)
        return;
    pthread_mutex_lock(&srv->lock);
    struct agent_settings *s = agent_settings_ref(srv->current);
    struct engine_gen *g = engine_gen_ref(srv->current_gen);
    gen = atomic_load(&srv->gen);
    pthread_mutex_unlock(&srv->lock);
    struct agent_settings *old = t->settings;
    struct engine_gen *old_gen = t->gen;
    t->settings = s;
    t->gen = g;
    t->settings_gen = gen;
    t->n_prov = 0; /* the cache keys point into the old settings */
    agent_settings_unref(old);
    engine_gen_unref(old_gen); /* requests in flight keep their own reference */
}

static void thread_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct server_thread *t = w->data;
    if (t->n_clients || engine_http_conn_count(t->engine))
        lr_warn("thread %u: drain deadline reached with %zu spop and %zu http connections open",
                t->idx, t->n_clients, engine_http_conn_count(t->engine));
    ev_break(loop, EVBREAK_ALL);
}

static void thread_close_acceptors(struct server_thread *t)
{
    net_acceptor_close(&t->spoa_acc);
    net_acceptor_close(&t->engine_acc);
    net_acceptor_close(&t->spoa_uacc);
    net_acceptor_close(&t->engine_uacc);
}

static void thread_start_drain(struct server_thread *t)
{
    if (t->draining)
        return;
    t->draining = true;
    thread_close_acceptors(t);
    engine_http_drain(t->engine);
    struct spop_client *c = t->clients;
    while (c) {
        struct spop_client *next = c->next;
        if (c->state == SC_READING) {
            /* Answer what HAProxy already sent, then say goodbye. */
            if (!ev_is_active(&c->wio))
                sc_read_some(c);
            if (c->state == SC_READING) {
                (void)spop_conn_disconnect(&c->proto, SPOP_ST_NONE, "agent shutting down", &c->out);
                sc_set_state(c, SC_FLUSH_CLOSE);
            }
            if (c->state != SC_CLOSED)
                sc_flush(c);
        }
        c = next;
    }
    ev_timer_set(&t->deadline, t->srv->opt.drain_timeout, 0.);
    ev_timer_start(t->loop, &t->deadline);
}

static void server_do_reload(struct server *srv);

static void thread_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server_thread *t = w->data;
    struct server *srv = t->srv;
    if (t->idx == 0 && atomic_exchange(&srv->reload_requested, false))
        server_do_reload(srv);
    thread_sync_settings(t);
    if (atomic_load(&srv->stop_requested) && !t->draining) {
        if (t->idx == 0)
            for (unsigned i = 1; i < srv->nthreads; i++)
                ev_async_send(srv->threads[i].loop, &srv->threads[i].wake);
        thread_start_drain(t);
    }
}

/* Before each poll: free closed connections; end the loop once drained. */
static void thread_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    struct server_thread *t = w->data;
    while (t->reap) {
        struct spop_client *c = t->reap;
        t->reap = c->next;
        sc_free(c);
    }
    if (t->draining && t->n_clients == 0 && engine_http_conn_count(t->engine) == 0)
        ev_break(loop, EVBREAK_ALL);
}

static void *thread_main(void *arg)
{
    struct server_thread *t = arg;
    stats_thread_bind(t->idx);
    ev_run(t->loop, 0);
    return NULL;
}

/* ---- reload and signals (thread 0) ---- */

/* Makes ns the settings in force on every thread, with a new engine generation (routing
 * state starts fresh). Consumes the caller's reference to ns. Thread 0 only. 0, or -1 with a
 * message (ns released, nothing changed). */
static int server_publish(struct server *srv, struct agent_settings *ns, char *err, size_t errlen)
{
    struct engine_gen *ng = engine_gen_new(ns, err, errlen);
    if (!ng) {
        agent_settings_unref(ns);
        return -1;
    }
    pthread_mutex_lock(&srv->lock);
    struct agent_settings *old = srv->current;
    struct engine_gen *old_gen = srv->current_gen;
    srv->current = ns;
    srv->current_gen = ng;
    atomic_fetch_add(&srv->gen, 1);
    pthread_mutex_unlock(&srv->lock);
    agent_settings_unref(old);
    engine_gen_unref(old_gen);
    thread_sync_settings(&srv->threads[0]);
    for (unsigned i = 1; i < srv->nthreads; i++)
        ev_async_send(srv->threads[i].loop, &srv->threads[i].wake);
    return 0;
}

static int admin_publish_cb(void *ud, struct agent_settings *s, char *err, size_t errlen);

/* Re-reads the settings file: the one reload of SIGHUP and POST /v1/reload (thread 0). An
 * admin_reload_status; logs the outcome once, here. */
static int server_reload_settings(struct server *srv, struct admin_reload_result *res, char *err,
                                  size_t errlen)
{
    const char *path = srv->settings_path;
    /* A new router (routing state starts fresh: circuits closed, no rate-limit windows) and
     * the keys re-read from the environment. */
    int rc = admin_reload_file(path, srv->current, admin_publish_cb, srv, res, err, errlen);
    if (rc != ADMIN_RELOAD_OK) {
        lr_err("reload failed, keeping the current settings: %s", err);
        atomic_fetch_add(&srv->reloads_failed, 1);
        return rc;
    }
    if (res->restart_required[0])
        lr_warn("reload: %s changed; the listeners (spoa_bind, engine_bind, spoa_socket, "
                "engine_socket), admin_socket and threads take effect only on restart",
                res->restart_required);
    server_apply_log_level(srv->current);
    atomic_fetch_add(&srv->reloads_ok, 1);
    lr_info("settings reloaded from %s (%s, sha256 %.12s)", path,
            res->changed ? "changed" : "unchanged", res->digest);
    return ADMIN_RELOAD_OK;
}

static void server_do_reload(struct server *srv)
{
    char err[640];
    struct admin_reload_result res;
    (void)server_reload_settings(srv, &res, err, sizeof(err));
}

/* ---- admin API callbacks (thread 0) ---- */

static struct agent_settings *admin_current_cb(void *ud)
{
    struct server *srv = ud;
    pthread_mutex_lock(&srv->lock);
    struct agent_settings *s = agent_settings_ref(srv->current);
    pthread_mutex_unlock(&srv->lock);
    return s;
}

static int admin_publish_cb(void *ud, struct agent_settings *s, char *err, size_t errlen)
{
    return server_publish(ud, agent_settings_ref(s), err, errlen);
}

static int admin_reload_cb(void *ud, struct admin_reload_result *res, char *err, size_t errlen)
{
    lr_info("admin: POST /v1/reload: reloading settings");
    return server_reload_settings(ud, res, err, errlen);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    if (w->signum == SIGHUP) {
        lr_info("SIGHUP: reloading settings");
        server_do_reload(srv);
        return;
    }
    lr_info("%s: draining", w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
    server_stop(srv);
}

/* ---- lifecycle ---- */

/* This thread's acceptor on a shared unix listening socket (none when shared_fd < 0). */
static int thread_unix_acceptor(struct server_thread *t, struct net_acceptor *a, int shared_fd,
                                const char *what, net_accept_fn on_accept, char *err, size_t errlen)
{
    if (shared_fd < 0)
        return 0;
    int fd = fcntl(shared_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "dup of the %s unix socket: %s", what, strerror(errno));
        return -1;
    }
    net_acceptor_init(a, t->loop, fd, what, on_accept, t);
    a->nodelay = false;
    return 0;
}

static int unix_listener_open(struct unix_listener *u, const char *path, const char *what,
                              char *err, size_t errlen)
{
    if (!path)
        return 0;
    if (!(u->path = strdup(path))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    u->fd = net_listen_unix(path, UNIX_SOCKET_MODE, LISTEN_BACKLOG, what, &u->id, err, errlen);
    if (u->fd < 0) {
        free(u->path); /* not ours: never unlinked */
        u->path = NULL;
        return -1;
    }
    return 0;
}

/* Closes the server's own copy once every thread holds its dup: then the socket stops
 * accepting as soon as every thread closed its acceptor (drain), so a successor agent sees
 * it as stale at once. */
static void unix_listener_close(struct unix_listener *u)
{
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
}

static void unix_listener_free(struct unix_listener *u)
{
    unix_listener_close(u);
    if (u->path)
        net_unlink_unix(u->path, &u->id);
    free(u->path);
    u->path = NULL;
}

static int thread_init(struct server *srv, struct server_thread *t, unsigned idx, char *err,
                       size_t errlen)
{
    t->srv = srv;
    t->idx = idx;
    t->spoa_acc.fd = t->engine_acc.fd = t->spoa_uacc.fd = t->engine_uacc.fd = -1;
    if (idx == 0 && srv->default_loop)
        t->loop = ev_default_loop(EVFLAG_AUTO);
    else
        t->loop = ev_loop_new(EVFLAG_AUTO);
    if (!t->loop) {
        snprintf(err, errlen, "cannot create an event loop");
        return -1;
    }
    t->scratch = malloc(SC_READ_CHUNK);
    if (!t->scratch) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const struct agent_settings *s = srv->current;
    int sfd = net_listen(s->spoa_bind, (uint16_t)srv->spoa_port, LISTEN_BACKLOG, true, err, errlen);
    if (sfd < 0)
        return -1;
    if (!srv->spoa_port)
        srv->spoa_port = net_local_port(sfd);
    net_acceptor_init(&t->spoa_acc, t->loop, sfd, "spoa", spoa_on_accept, t);
    int efd =
        net_listen(s->engine_bind, (uint16_t)srv->engine_port, LISTEN_BACKLOG, true, err, errlen);
    if (efd < 0)
        return -1;
    if (!srv->engine_port)
        srv->engine_port = net_local_port(efd);
    net_acceptor_init(&t->engine_acc, t->loop, efd, "engine", engine_on_accept, t);
    if (thread_unix_acceptor(t, &t->spoa_uacc, srv->spoa_u.fd, "spoa", spoa_on_accept, err,
                             errlen) < 0 ||
        thread_unix_acceptor(t, &t->engine_uacc, srv->engine_u.fd, "engine", engine_on_accept, err,
                             errlen) < 0)
        return -1;
    t->settings = agent_settings_ref(srv->current);
    t->gen = engine_gen_ref(srv->current_gen);
    t->settings_gen = atomic_load(&srv->gen);
    t->up = upstream_new(t->loop);
    if (!t->up) {
        snprintf(err, errlen, "cannot create the upstream client");
        return -1;
    }
    t->engine = engine_http_new(t->loop, &srv->opt.engine, &t->gen, t->up);
    if (!t->engine) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ev_async_init(&t->wake, thread_wake_cb);
    t->wake.data = t;
    ev_async_start(t->loop, &t->wake);
    ev_init(&t->deadline, thread_deadline_cb);
    t->deadline.data = t;
    ev_prepare_init(&t->prep, thread_prepare_cb);
    t->prep.data = t;
    ev_prepare_start(t->loop, &t->prep);
    net_acceptor_start(&t->spoa_acc);
    net_acceptor_start(&t->engine_acc);
    if (t->spoa_uacc.fd >= 0)
        net_acceptor_start(&t->spoa_uacc);
    if (t->engine_uacc.fd >= 0)
        net_acceptor_start(&t->engine_uacc);
    return 0;
}

static void thread_destroy(struct server_thread *t)
{
    if (!t->loop) {
        agent_settings_unref(t->settings);
        engine_gen_unref(t->gen);
        return;
    }
    thread_close_acceptors(t);
    while (t->clients)
        sc_close(t->clients);
    while (t->reap) {
        struct spop_client *c = t->reap;
        t->reap = c->next;
        sc_free(c);
    }
    engine_http_free(t->engine); /* owners of requests in flight cancel their transfers */
    t->engine = NULL;
    upstream_free(t->up);
    t->up = NULL;
    ev_async_stop(t->loop, &t->wake);
    ev_timer_stop(t->loop, &t->deadline);
    ev_prepare_stop(t->loop, &t->prep);
    ev_loop_destroy(t->loop);
    t->loop = NULL;
    free(t->scratch);
    t->scratch = NULL;
    agent_settings_unref(t->settings);
    t->settings = NULL;
    engine_gen_unref(t->gen);
    t->gen = NULL;
}

struct server *server_new(struct agent_settings *s, const struct server_options *o, char *err,
                          size_t errlen)
{
    if (!s) {
        snprintf(err, errlen, "no settings");
        return NULL;
    }
    signal(SIGPIPE, SIG_IGN);
    struct server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (o)
        srv->opt = *o;
    else
        server_options_default(&srv->opt);
    if (srv->opt.drain_timeout <= 0)
        srv->opt.drain_timeout = 5.0;
    if (srv->opt.spop_frame_timeout <= 0)
        srv->opt.spop_frame_timeout = 5.0;
    if (srv->opt.spop_linger <= 0)
        srv->opt.spop_linger = 1.0;
    if (!srv->opt.engine.header_timeout)
        engine_http_config_default(&srv->opt.engine);
    const char *path = srv->opt.settings_path ? srv->opt.settings_path : s->path;
    if (path && !(srv->settings_path = strdup(path))) {
        snprintf(err, errlen, "out of memory");
        free(srv);
        return NULL;
    }
    srv->opt.settings_path = srv->settings_path;
    srv->spoa_u.fd = srv->engine_u.fd = -1;
    pthread_mutex_init(&srv->lock, NULL);
    srv->current = admin_apply_persisted(agent_settings_ref(s));
    srv->current_gen = engine_gen_new(srv->current, err, errlen);
    if (!srv->current_gen)
        goto fail;
    srv->default_loop = srv->opt.handle_signals;
    srv->nthreads = s->threads < 1 ? 1 : s->threads > 64 ? 64 : s->threads;
    srv->threads = calloc(srv->nthreads, sizeof(*srv->threads));
    if (!srv->threads) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* The unix sockets before the threads, which accept on dups of them. */
    if (unix_listener_open(&srv->spoa_u, srv->current->spoa_socket, "spoa socket", err, errlen) <
            0 ||
        unix_listener_open(&srv->engine_u, srv->current->engine_socket, "engine socket", err,
                           errlen) < 0)
        goto fail;
    for (unsigned i = 0; i < srv->nthreads; i++)
        if (thread_init(srv, &srv->threads[i], i, err, errlen) < 0)
            goto fail;
    unix_listener_close(&srv->spoa_u);
    unix_listener_close(&srv->engine_u);
    if (srv->opt.handle_signals) {
        struct ev_loop *loop = srv->threads[0].loop;
        ev_signal_init(&srv->sighup, signal_cb, SIGHUP);
        ev_signal_init(&srv->sigterm, signal_cb, SIGTERM);
        ev_signal_init(&srv->sigint, signal_cb, SIGINT);
        srv->sighup.data = srv->sigterm.data = srv->sigint.data = srv;
        ev_signal_start(loop, &srv->sighup);
        ev_signal_start(loop, &srv->sigterm);
        ev_signal_start(loop, &srv->sigint);
    }
    if (srv->current->admin_socket) {
        struct admin_config ac = {
            .socket_path = srv->current->admin_socket,
            .threads = srv->nthreads,
            .current = admin_current_cb,
            .publish = admin_publish_cb,
            .reload = srv->settings_path ? admin_reload_cb : NULL,
            .ud = srv,
        };
        if (!(srv->admin = admin_new(srv->threads[0].loop, &ac, err, errlen)))
            goto fail;
    }
    return srv;
fail:
    server_free(srv);
    return NULL;
}

int server_run(struct server *srv)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    /* Workers inherit a mask without the control signals: thread 0 gets them. */
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = 0;
    for (unsigned i = 1; i < srv->nthreads; i++) {
        struct server_thread *t = &srv->threads[i];
        int e = pthread_create(&t->tid, NULL, thread_main, t);
        if (e != 0) {
            lr_err("cannot start thread %u: %s", i, strerror(e));
            atomic_store(&srv->stop_requested, true);
            rc = -1;
            break;
        }
        t->running = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    struct server_thread *t0 = &srv->threads[0];
    stats_thread_bind(0);
    lr_info("listening: spoa %s (port %d)%s%s, engine %s (port %d)%s%s, %u thread%s",
            srv->current->spoa_bind, srv->spoa_port, srv->spoa_u.path ? " and " : "",
            srv->spoa_u.path ? srv->spoa_u.path : "", srv->current->engine_bind, srv->engine_port,
            srv->engine_u.path ? " and " : "", srv->engine_u.path ? srv->engine_u.path : "",
            srv->nthreads, srv->nthreads > 1 ? "s" : "");
    if (atomic_load(&srv->stop_requested))
        ev_async_send(t0->loop, &t0->wake);
    ev_run(t0->loop, 0);
    /* Thread 0 is done; make sure every worker drains too, then join. */
    atomic_store(&srv->stop_requested, true);
    for (unsigned i = 1; i < srv->nthreads; i++) {
        struct server_thread *t = &srv->threads[i];
        if (!t->running)
            continue;
        ev_async_send(t->loop, &t->wake);
        pthread_join(t->tid, NULL);
        t->running = false;
    }
    stats_thread_bind(STATS_MAX_THREADS);
    lr_info("stopped");
    return rc;
}

void server_stop(struct server *srv)
{
    atomic_store(&srv->stop_requested, true);
    for (unsigned i = 0; i < srv->nthreads; i++)
        if (srv->threads[i].loop)
            ev_async_send(srv->threads[i].loop, &srv->threads[i].wake);
}

void server_reload(struct server *srv)
{
    atomic_store(&srv->reload_requested, true);
    ev_async_send(srv->threads[0].loop, &srv->threads[0].wake);
}

unsigned server_reloads_ok(const struct server *srv)
{
    return atomic_load(&srv->reloads_ok);
}

unsigned server_reloads_failed(const struct server *srv)
{
    return atomic_load(&srv->reloads_failed);
}

int server_spoa_port(const struct server *srv)
{
    return srv->spoa_port;
}

int server_engine_port(const struct server *srv)
{
    return srv->engine_port;
}

void server_free(struct server *srv)
{
    if (!srv)
        return;
    admin_free(srv->admin); /* before thread 0's loop goes */
    srv->admin = NULL;
    unix_listener_free(&srv->spoa_u);
    unix_listener_free(&srv->engine_u);
    if (srv->threads) {
        if (srv->opt.handle_signals && srv->threads[0].loop) {
            ev_signal_stop(srv->threads[0].loop, &srv->sighup);
            ev_signal_stop(srv->threads[0].loop, &srv->sigterm);
            ev_signal_stop(srv->threads[0].loop, &srv->sigint);
        }
        for (unsigned i = 0; i < srv->nthreads; i++)
            thread_destroy(&srv->threads[i]);
        free(srv->threads);
    }
    agent_settings_unref(srv->current);
    engine_gen_unref(srv->current_gen);
    pthread_mutex_destroy(&srv->lock);
    free(srv->settings_path);
    free(srv);
}
