/* Retry-After parsing (RFC 9110 10.2.3 and 5.6.7), by hand: no locale, no strptime. */
#include "retry_after.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

struct ra_cur {
    const char *p, *end;
};

static bool ra_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool ra_lit(struct ra_cur *c, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(c->end - c->p) < n || strncasecmp(c->p, s, n) != 0)
        return false;
    c->p += n;
    return true;
}

/* Exactly n digits. */
static bool ra_digits(struct ra_cur *c, unsigned n, int *out)
{
    if ((size_t)(c->end - c->p) < n)
        return false;
    int v = 0;
    for (unsigned i = 0; i < n; i++) {
        char d = c->p[i];
        if (d < '0' || d > '9')
            return false;
        v = v * 10 + (d - '0');
    }
    c->p += n;
    *out = v;
    return true;
}

static const char *const ra_months[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const ra_days[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const ra_days_long[7] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                            "Friday", "Saturday", "Sunday"};

static bool ra_month(struct ra_cur *c, int *mon)
{
    for (int i = 0; i < 12; i++) {
        if (ra_lit(c, ra_months[i])) {
            *mon = i;
            return true;
        }
    }
    return false;
}

static bool ra_day_name(struct ra_cur *c, bool long_form)
{
    const char *const *names = long_form ? ra_days_long : ra_days;
    for (int i = 0; i < 7; i++)
        if (ra_lit(c, names[i]))
            return true;
    return false;
}

/* "HH:MM:SS" */
static bool ra_time(struct ra_cur *c, struct tm *tm)
{
    return ra_digits(c, 2, &tm->tm_hour) && ra_lit(c, ":") && ra_digits(c, 2, &tm->tm_min) &&
           ra_lit(c, ":") && ra_digits(c, 2, &tm->tm_sec);
}

static bool ra_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static bool ra_valid(const struct tm *tm, int year)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int dim = mdays[tm->tm_mon] + (tm->tm_mon == 1 && ra_leap(year));
    /* second 60: a leap second (RFC 9110 allows it) */
    return tm->tm_mday >= 1 && tm->tm_mday <= dim && tm->tm_hour <= 23 && tm->tm_min <= 59 &&
           tm->tm_sec <= 60;
}

/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (after the day name) */
static bool ra_imf(struct ra_cur *c, struct tm *tm, int *year)
{
    return ra_lit(c, ", ") && ra_digits(c, 2, &tm->tm_mday) && ra_lit(c, " ") &&
           ra_month(c, &tm->tm_mon) && ra_lit(c, " ") && ra_digits(c, 4, year) && ra_lit(c, " ") &&
           ra_time(c, tm) && ra_lit(c, " GMT");
}

/* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" (after the day name); two-digit year resolved by
 * RFC 9110 5.6.7: never more than 50 years in the future. */
static bool ra_rfc850(struct ra_cur *c, struct tm *tm, int *year, time_t now)
{
    int yy;
    if (!(ra_lit(c, ", ") && ra_digits(c, 2, &tm->tm_mday) && ra_lit(c, "-") &&
          ra_month(c, &tm->tm_mon) && ra_lit(c, "-") && ra_digits(c, 2, &yy) && ra_lit(c, " ") &&
          ra_time(c, tm) && ra_lit(c, " GMT")))
        return false;
    struct tm nt;
    int now_year = gmtime_r(&now, &nt) ? nt.tm_year + 1900 : 1970;
    int y = now_year - now_year % 100 + yy;
    if (y > now_year + 50)
        y -= 100;
    else if (y <= now_year - 50)
        y += 100;
    *year = y;
    return true;
}

/* asctime: "Sun Nov  6 08:49:37 1994" (after the day name) */
static bool ra_asctime(struct ra_cur *c, struct tm *tm, int *year)
{
    if (!(ra_lit(c, " ") && ra_month(c, &tm->tm_mon) && ra_lit(c, " ")))
        return false;
    if (c->p < c->end && *c->p == ' ') {
        c->p++;
        if (!ra_digits(c, 1, &tm->tm_mday))
            return false;
    } else if (!ra_digits(c, 2, &tm->tm_mday)) {
        return false;
    }
    return ra_lit(c, " ") && ra_time(c, tm) && ra_lit(c, " ") && ra_digits(c, 4, year);
}

static int ra_date(struct ra_cur *c, time_t now, double *secs)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int year = 0;
    struct ra_cur save = *c;
    bool ok;
    if (ra_day_name(c, true)) {
        ok = ra_rfc850(c, &tm, &year, now);
    } else {
        *c = save;
        if (!ra_day_name(c, false))
            return -1;
        ok = (c->p < c->end && *c->p == ',') ? ra_imf(c, &tm, &year) : ra_asctime(c, &tm, &year);
    }
    if (!ok || c->p != c->end || !ra_valid(&tm, year))
        return -1;
    tm.tm_year = year - 1900;
    tm.tm_isdst = 0;
    time_t t = timegm(&tm);
    double d = difftime(t, now);
    *secs = d <= 0 ? 0.0 : (d > RETRY_AFTER_MAX_SECS ? RETRY_AFTER_MAX_SECS : d);
    return 0;
}

int retry_after_parse(const char *v, size_t len, time_t now, double *secs)
{
    if (!v)
        return -1;
    struct ra_cur c = {v, v + len};
    while (c.p < c.end && ra_ows(*c.p))
        c.p++;
    while (c.end > c.p && ra_ows(c.end[-1]))
        c.end--;
    if (c.p == c.end)
        return -1;
    if (*c.p >= '0' && *c.p <= '9') {
        /* delay-seconds = 1*DIGIT; saturate instead of overflowing */
        uint64_t n = 0;
        for (; c.p < c.end; c.p++) {
            if (*c.p < '0' || *c.p > '9')
                return -1;
            if (n <= (uint64_t)RETRY_AFTER_MAX_SECS)
                n = n * 10 + (uint64_t)(*c.p - '0');
        }
        *secs = n > (uint64_t)RETRY_AFTER_MAX_SECS ? RETRY_AFTER_MAX_SECS : (double)n;
        return 0;
    }
    return ra_date(&c, now, secs);
}
