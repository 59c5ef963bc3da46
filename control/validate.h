/* HAProxy's own check of what lunaroute-control renders (`validate`, and `up` before it
 * applies a reload): `haproxy -c` on the standalone haproxy.cfg, and on the bolt-on files
 * wrapped in a minimal fleet configuration (the "harness": a global section, defaults and
 * one HTTP frontend with the snippet pasted in, loaded together with lunaroute-backends.cfg),
 * since the bolt-on files are not a configuration on their own. */
#ifndef LR_VALIDATE_H
#define LR_VALIDATE_H

#include <stddef.h>

struct lr_buf;

#define VALIDATE_HARNESS_FILE "validate-harness.cfg"

/* The harness around a frontend snippet (the text of frontend-snippet.cfg, pasted as is).
 * malloc'd NUL-terminated text, NULL on allocation failure. Pure. */
char *validate_boltin_harness(const char *snippet);

/* Reads <dir>/frontend-snippet.cfg (as rendered in boltin mode) and writes the harness into
 * <dir>/VALIDATE_HARNESS_FILE; its path goes into path_out. 0, or -1 with a message. */
int validate_write_boltin_harness(const char *dir, char *path_out, size_t path_len, char *err,
                                  size_t errlen);

/* Runs argv[0] (a path, not looked up in $PATH) with envp (NULL: our environment), stdin
 * from /dev/null, stdout and stderr collected in output (bounded to 1 MiB; may be NULL).
 * Returns its exit status, 128 + the signal that killed it, 127 when it could not be
 * started, or -1 on a local failure. Waits for that one child only. */
int validate_run(const char *const argv[], char *const envp[], struct lr_buf *output);

/* Runs `haproxy -c -f cfgs[0] -f cfgs[1] ...` with envp (NULL: our environment), its stdout
 * and stderr collected in output (bounded to 1 MiB). Returns its exit status (0: valid), 127
 * when it could not be started, or -1 on a local failure. */
int validate_haproxy_check(const char *bin, const char *const cfgs[], size_t ncfgs,
                           char *const envp[], struct lr_buf *output);

#endif
