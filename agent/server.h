/* The agent's runtime: one libev loop per thread, each with its own SO_REUSEPORT listeners
 * for the SPOP port and the routing-engine port; SPOP connections; settings reload (SIGHUP)
 * and drain (SIGTERM/SIGINT).
 *
 * Thread 0 runs on the thread that calls server_run() (the default loop when the server
 * handles signals); threads 1..N-1 run their own loops and learn about reload/stop through
 * an ev_async. The hot path takes no lock: each thread holds its own settings reference. */
#ifndef LR_SERVER_H
#define LR_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine_http.h"

struct agent_settings;

struct server_options {
    const char *settings_path; /* re-read on reload; NULL: the settings' own path */
    bool handle_signals;       /* SIGHUP/SIGTERM/SIGINT on the default loop (the binary) */
    double drain_timeout;      /* seconds to wait for connections on stop (default 5) */
    double spop_linger;        /* after our last SPOP frame, wait this long for the peer's close */
    double spop_frame_timeout; /* a HELLO, or a frame begun, must be complete within this
                                * (default 5 s; HAProxy writes whole frames): else a
                                * DISCONNECT with status 2 (timeout) */
    struct engine_http_config engine;
};
void server_options_default(struct server_options *o);

struct server;

/* Opens every thread's listening sockets (so address errors show before running) and takes
 * a new reference on s. Ignores SIGPIPE process-wide. NULL with a message on error. */
struct server *server_new(struct agent_settings *s, const struct server_options *o, char *err,
                          size_t errlen);
/* Runs until stopped and drained; joins the worker threads. 0, or -1 if threads could not
 * be started. */
int server_run(struct server *srv);
/* From any thread (not from a signal handler): start the drain. */
void server_stop(struct server *srv);
/* From any thread: re-read the settings file (thread 0 does the work). */
void server_reload(struct server *srv);
/* Completed reloads, successful and failed (tests poll these). */
unsigned server_reloads_ok(const struct server *srv);
unsigned server_reloads_failed(const struct server *srv);
/* The ports actually bound (useful with ":0"). */
int server_spoa_port(const struct server *srv);
int server_engine_port(const struct server *srv);
/* Frees everything; call after server_run() returned (or instead of it). NULL-safe. */
void server_free(struct server *srv);

/* Sets the log level from s->log_level unless LUNAROUTE_LOG_LEVEL is set (it wins). */
void server_apply_log_level(const struct agent_settings *s);

#endif
