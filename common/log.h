/* Process-wide logging to stderr: one line, one write(), safe across threads.
 * Never pass a secret (API key, authorization value) to these functions. */
#ifndef LR_LOG_H
#define LR_LOG_H

enum lr_log_level { LR_LOG_ERROR = 0, LR_LOG_WARN, LR_LOG_INFO, LR_LOG_DEBUG, LR_LOG_COUNT };

const char *lr_log_level_to_str(enum lr_log_level l);
/* Parses error|warn|warning|info|debug|trace (case-insensitive). 0 or -1. */
int lr_log_level_from_str(const char *s, enum lr_log_level *out);
void lr_log_set_level(enum lr_log_level l);
enum lr_log_level lr_log_get_level(void);
/* Program name shown in each line ("agent", "control"). */
void lr_log_set_ident(const char *ident);
void lr_log(enum lr_log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define lr_err(...)  lr_log(LR_LOG_ERROR, __VA_ARGS__)
#define lr_warn(...) lr_log(LR_LOG_WARN, __VA_ARGS__)
#define lr_info(...) lr_log(LR_LOG_INFO, __VA_ARGS__)
#define lr_debug(...)                                                                              \
    do {                                                                                           \
        if (lr_log_get_level() >= LR_LOG_DEBUG)                                                    \
            lr_log(LR_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)

#endif
