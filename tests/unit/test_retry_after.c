/* Retry-After: delay-seconds and the three HTTP-date forms, caps, and garbage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "retry_after.h"

/* Sun, 06 Nov 1994 08:49:37 GMT */
#define T1994 ((time_t)784111777)

static time_t utc(int y, int mon, int d, int h, int mi, int s)
{
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mon - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = s};
    return timegm(&tm);
}

static int parse(const char *v, time_t now, double *secs)
{
    *secs = -12345;
    return retry_after_parse(v, strlen(v), now, secs);
}

static void ok(const char *v, time_t now, double want)
{
    double secs;
    int rc = parse(v, now, &secs);
    if (rc != 0 || secs != want)
        fail_msg("'%s': rc %d secs %f, want %f", v, rc, secs, want);
}

static void bad(const char *v, time_t now)
{
    double secs;
    int rc = parse(v, now, &secs);
    if (rc != -1)
        fail_msg("'%s': accepted (%f), want -1", v, secs);
}

static void test_seconds(void **state)
{
    (void)state;
    ok("0", T1994, 0);
    ok("1", T1994, 1);
    ok("120", T1994, 120);
    ok("007", T1994, 7);
    ok(" 30", T1994, 30);
    ok("30 ", T1994, 30);
    ok("\t 30 \t", T1994, 30);
    ok("172800", T1994, 172800);
    ok("172801", T1994, RETRY_AFTER_MAX_SECS);
    ok("999999999", T1994, RETRY_AFTER_MAX_SECS);
    ok("99999999999999999999999999999999999999999", T1994, RETRY_AFTER_MAX_SECS);
    ok("18446744073709551617", T1994, RETRY_AFTER_MAX_SECS);
    assert_true(RETRY_AFTER_MAX_SECS == 172800.0);
}

static void test_seconds_garbage(void **state)
{
    (void)state;
    bad("", T1994);
    bad("   ", T1994);
    bad("-1", T1994);
    bad("+1", T1994);
    bad("1.5", T1994);
    bad("1e3", T1994);
    bad("10s", T1994);
    bad("10 s", T1994);
    bad("1 2", T1994);
    bad("0x10", T1994);
    bad("abc", T1994);
    bad("\n5", T1994);
    double secs;
    assert_int_equal(retry_after_parse(NULL, 0, T1994, &secs), -1);
    /* an embedded NUL is not a terminator */
    assert_int_equal(retry_after_parse("5\0"
                                       "0",
                                       3, T1994, &secs),
                     -1);
    /* only len bytes are read */
    assert_int_equal(retry_after_parse("12junk", 2, T1994, &secs), 0);
    assert_true(secs == 12);
}

static void test_imf_fixdate(void **state)
{
    (void)state;
    ok("Sun, 06 Nov 1994 08:49:37 GMT", T1994 - 100, 100);
    ok("  Sun, 06 Nov 1994 08:49:37 GMT  ", T1994 - 1, 1);
    ok("Sun, 06 Nov 1994 08:49:37 GMT", T1994, 0);
    ok("Sun, 06 Nov 1994 08:49:37 GMT", T1994 + 5000, 0); /* past */
    ok("Sun, 06 Nov 1994 08:49:37 GMT", 0, RETRY_AFTER_MAX_SECS);
    ok("Fri, 31 Dec 9999 23:59:59 GMT", T1994, RETRY_AFTER_MAX_SECS);
    ok("Thu, 01 Jan 1970 00:00:00 GMT", T1994, 0);
    ok("Mon, 07 Nov 1994 08:49:37 GMT", T1994, 86400);
    ok("Tue, 08 Nov 1994 08:49:37 GMT", T1994, 172800);
    ok("Tue, 08 Nov 1994 08:49:38 GMT", T1994, RETRY_AFTER_MAX_SECS);
    ok("Thu, 29 Feb 1996 00:00:00 GMT", utc(1996, 2, 28, 23, 59, 0), 60);
    ok("Sat, 31 Dec 2016 23:59:60 GMT", utc(2016, 12, 31, 23, 59, 0), 60);
    ok("sun, 06 nov 1994 08:49:37 gmt", T1994 - 3, 3); /* names case-insensitive */
}

static void test_rfc850(void **state)
{
    (void)state;
    ok("Sunday, 06-Nov-94 08:49:37 GMT", T1994 - 80, 80);
    ok("Sunday, 06-Nov-94 08:49:37 GMT", T1994 + 80, 0);
    ok("Sunday, 06-Nov-94 08:49:37 GMT", T1994 - 200000, RETRY_AFTER_MAX_SECS);
    bad("Sunday, 06-Nov-1994 08:49:37 GMT", T1994);
    bad("Sun, 06-Nov-94 08:49:37 GMT", T1994);
    bad("Sunday, 06 Nov 94 08:49:37 GMT", T1994);
    bad("Sunday, 06-Nov-94 08:49:37", T1994);
}

/* RFC 9110 5.6.7: a two-digit year more than 50 years in the future is the most recent past
 * year with those digits. */
static void test_two_digit_year(void **state)
{
    (void)state;
    time_t now = utc(2025, 6, 1, 0, 0, 0);
    /* 70 -> 2070 (45 years ahead): future, capped */
    ok("Thursday, 01-Jan-70 00:00:00 GMT", now, RETRY_AFTER_MAX_SECS);
    /* 75 -> 2075 (exactly 50 ahead): still the future */
    ok("Tuesday, 01-Jan-75 00:00:00 GMT", now, RETRY_AFTER_MAX_SECS);
    /* 76 -> 1976: past */
    ok("Thursday, 01-Jan-76 00:00:00 GMT", now, 0);
    ok("Sunday, 06-Nov-94 08:49:37 GMT", now, 0);
    /* 25 -> 2025 */
    ok("Sunday, 01-Jun-25 00:01:00 GMT", now, 60);
    ok("Sunday, 01-Jun-25 00:00:00 GMT", now + 10, 0);
    /* late in a century: 01 is 2101, not 2001 */
    time_t late = utc(2099, 12, 31, 23, 59, 0);
    ok("Saturday, 01-Jan-00 00:00:00 GMT", late, 60);
    ok("Saturday, 01-Jan-01 00:00:00 GMT", late, RETRY_AFTER_MAX_SECS);
    ok("Saturday, 01-Jan-60 00:00:00 GMT", late, 0); /* 2060 */
    time_t y2080 = utc(2080, 1, 1, 0, 0, 0);
    ok("Monday, 01-Jan-30 00:00:00 GMT", y2080, RETRY_AFTER_MAX_SECS); /* 2130 */
    ok("Monday, 01-Jan-31 00:00:00 GMT", y2080, 0);                    /* 2031 */
}

static void test_asctime(void **state)
{
    (void)state;
    ok("Sun Nov  6 08:49:37 1994", T1994 - 9, 9);
    ok("Sun Nov 06 08:49:37 1994", T1994 - 9, 9);
    ok("Sun Nov  6 08:49:37 1994", T1994 + 9, 0);
    ok("Sun Nov  6 08:49:37 2994", T1994, RETRY_AFTER_MAX_SECS);
    bad("Sun Nov 6 08:49:37 1994", T1994);
    bad("Sun Nov  6 08:49:37 94", T1994);
    bad("Sun Nov  6 08:49:37 1994 GMT", T1994);
    bad("Sun Nov   6 08:49:37 1994", T1994);
}

static void test_bad_dates(void **state)
{
    (void)state;
    bad("Sun, 06 Foo 1994 08:49:37 GMT", T1994); /* month */
    bad("Sun, 32 Nov 1994 08:49:37 GMT", T1994); /* day */
    bad("Sun, 00 Nov 1994 08:49:37 GMT", T1994);
    bad("Sun, 31 Nov 1994 08:49:37 GMT", T1994);
    bad("Thu, 29 Feb 1995 00:00:00 GMT", T1994); /* not a leap year */
    bad("Thu, 29 Feb 1900 00:00:00 GMT", T1994);
    bad("Sun, 06 Nov 1994 24:00:00 GMT", T1994); /* time */
    bad("Sun, 06 Nov 1994 08:60:37 GMT", T1994);
    bad("Sun, 06 Nov 1994 08:49:61 GMT", T1994);
    bad("Sun, 06 Nov 1994 8:49:37 GMT", T1994);
    bad("Sun, 06 Nov 1994 08:49 GMT", T1994);
    bad("Sun, 06 Nov 1994 08:49:37 UTC", T1994); /* zone */
    bad("Sun, 06 Nov 1994 08:49:37 +0000", T1994);
    bad("Sun, 06 Nov 1994 08:49:37", T1994);
    bad("Sun, 06 Nov 1994 08:49:37 GMTx", T1994); /* trailing junk */
    bad("Sun, 06 Nov 1994 08:49:37 GMT 5", T1994);
    bad("Sun, 6 Nov 1994 08:49:37 GMT", T1994); /* 2DIGIT day */
    bad("Sun,06 Nov 1994 08:49:37 GMT", T1994);
    bad("Sun, 06 Nov 94 08:49:37 GMT", T1994);
    bad("Xyz, 06 Nov 1994 08:49:37 GMT", T1994); /* day name */
    bad("Sun", T1994);
    bad("Sun,", T1994);
    bad("Sunday", T1994);
    bad("Sun, 06 Nov 1994 08:49:3", T1994);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seconds),        cmocka_unit_test(test_seconds_garbage),
        cmocka_unit_test(test_imf_fixdate),    cmocka_unit_test(test_rfc850),
        cmocka_unit_test(test_two_digit_year), cmocka_unit_test(test_asctime),
        cmocka_unit_test(test_bad_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
