/* Retry-After (RFC 9110 10.2.3): delay-seconds or an HTTP-date. Pure. */
#ifndef LR_RETRY_AFTER_H
#define LR_RETRY_AFTER_H

#include <stddef.h>
#include <time.h>

#define RETRY_AFTER_MAX_SECS (48.0 * 3600.0) /* longer values are capped */

/* Parses v[0..len) at wall-clock time now. Returns 0 and *secs >= 0 (a past date gives 0;
 * huge values are capped at RETRY_AFTER_MAX_SECS), or -1 for garbage (empty, negative,
 * trailing junk, malformed date). Accepts IMF-fixdate, RFC 850 and asctime forms. */
int retry_after_parse(const char *v, size_t len, time_t now, double *secs);

#endif
