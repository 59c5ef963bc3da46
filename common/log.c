#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = LR_LOG_INFO;
static const char *log_ident = "lunaroute";

static const char *const level_names[LR_LOG_COUNT] = {
    [LR_LOG_ERROR] = "error",
    [LR_LOG_WARN] = "warn",
    [LR_LOG_INFO] = "info",
    [LR_LOG_DEBUG] = "debug",
};

const char *lr_log_level_to_str(enum lr_log_level l)
{
    return (unsigned)l < LR_LOG_COUNT ? level_names[l] : "?";
}

int lr_log_level_from_str(const char *s, enum lr_log_level *out)
{
    static const struct {
        const char *name;
        enum lr_log_level level;
    } names[] = {
        {"error", LR_LOG_ERROR}, {"warn", LR_LOG_WARN},   {"warning", LR_LOG_WARN},
        {"info", LR_LOG_INFO},   {"debug", LR_LOG_DEBUG}, {"trace", LR_LOG_DEBUG},
    };
    for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

void lr_log_set_level(enum lr_log_level l)
{
    log_level = (int)l;
}

enum lr_log_level lr_log_get_level(void)
{
    return (enum lr_log_level)log_level;
}

void lr_log_set_ident(const char *ident)
{
    log_ident = ident;
}

void lr_log(enum lr_log_level l, const char *fmt, ...)
{
    if ((int)l > log_level)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, log_ident, (int)getpid(), lr_log_level_to_str(l));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write() per line so lines from different threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
