/* `lunaroute-control up`: renders into the run directory, starts the agent and HAProxy
 * (master-worker, foreground, our child), restarts the agent with back-off when it dies,
 * reloads on SIGHUP or when the config file changes, and stops both cleanly on
 * SIGINT/SIGTERM. Secrets reach the children only through their environment. */
#ifndef LR_SUPERVISE_H
#define LR_SUPERVISE_H

#include <stddef.h>

struct lr_config;

/* Runs until SIGINT/SIGTERM (returns 0) or a fatal failure (returns 1, after stopping what
 * was started). Takes ownership of `cfg`. `config_path` (NULL = built-in defaults) is what
 * a reload re-reads; `run_dir` is the directory chosen by the caller (created if missing). */
int supervise_run(struct lr_config *cfg, const char *config_path, const char *run_dir);

/* Resolves a program: the value of env var `env_override` when set and non-empty, else
 * `name` looked up in $PATH. 0 and the path in out, or -1 when not found/executable. */
int supervise_find_program(const char *env_override, const char *name, char *out, size_t len);

/* The delay before restarting the agent after an unexpected exit, given the previous
 * delay (0 for none) and how long the agent had been up: 0.1 s first, then doubling up to
 * 5 s, and back to 0.1 s once the agent had stayed up for 30 s. */
double supervise_next_backoff(double cur, double uptime_secs);

#endif
