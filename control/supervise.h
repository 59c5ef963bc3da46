/* `lunaroute-control up`: renders into the run directory, starts the agent and HAProxy
 * (master-worker, foreground, our child), restarts the agent with back-off when it dies,
 * reloads on SIGHUP or when the config file changes, and stops both cleanly on
 * SIGINT/SIGTERM. Secrets reach the children only through their environment.
 *
 * Config file changes are seen with inotify on the file's directory (and on its symlink
 * target's), filtered by name and debounced (a burst of events is one look at the file,
 * DEBOUNCE_SECS after its last event); a reload happens when the file's content differs
 * from what was last loaded. Without inotify (or with poll_config), the file is polled
 * every second.
 *
 * A reload: load + validate the file; render into <run_dir>/.reload-XXXXXX and check it with
 * `haproxy -c` and `lunaroute-agent --check` (nothing changes when either refuses); render
 * into the run directory; then apply only what changed: agent.json through the agent's admin
 * API (POST /v1/reload, synchronous, SIGHUP when the socket is unreachable), HAProxy's files
 * through the master CLI `reload` (SIGUSR2 when the CLI is unreachable) with the outcome read
 * back from `show proc`, new credentials by restarting the agent.
 *
 * External mode (`up --external`, the compose `control` service): HAProxy and the agent run
 * elsewhere (other containers sharing the run directory). Nothing is spawned or signalled:
 * the first rendering and every reload take the same checked path, and are applied through
 * <run_dir>/agent.sock and <run_dir>/haproxy-master.sock only (a missing socket: that process
 * is not running and reads the files when it starts; an unreachable one is retried every
 * 5 s). `haproxy -c` and `--check` run when haproxy / lunaroute-agent are installed next to
 * control; otherwise that check is skipped (said once at start). */
#ifndef LR_SUPERVISE_H
#define LR_SUPERVISE_H

#include <stdbool.h>
#include <stddef.h>

struct lr_config;

struct supervise_opts {
    bool external;    /* drive an agent and a HAProxy started elsewhere; spawn nothing */
    bool poll_config; /* poll the config file every second instead of inotify */
};

/* Runs until SIGINT/SIGTERM (returns 0) or a fatal failure (returns 1, after stopping what
 * was started). Takes ownership of `cfg`. `config_path` (NULL = built-in defaults) is what
 * a reload re-reads; `run_dir` is the directory chosen by the caller (created if missing).
 * opts may be NULL (standalone, inotify). */
int supervise_run(struct lr_config *cfg, const char *config_path, const char *run_dir,
                  const struct supervise_opts *opts);

/* Resolves a program: the value of env var `env_override` when set and non-empty, else
 * `name` looked up in $PATH. 0 and the path in out, or -1 when not found/executable. */
int supervise_find_program(const char *env_override, const char *name, char *out, size_t len);

/* The delay before restarting the agent after an unexpected exit, given the previous
 * delay (0 for none) and how long the agent had been up: 0.1 s first, then doubling up to
 * 5 s, and back to 0.1 s once the agent had stayed up for 30 s. */
double supervise_next_backoff(double cur, double uptime_secs);

/* What the HAProxy master CLI's `show proc` says about the master: its pid, how many reloads
 * it went through and how many of them failed (-1 when the version does not say). */
struct supervise_proc_info {
    long master_pid;
    long reloads;
    long failed_reloads;
    long worker_pid; /* the newest worker (0 when none is listed) */
};
/* 0, or -1 when text has no master line. */
int supervise_parse_show_proc(const char *text, struct supervise_proc_info *out);

#endif
