#include "lr_regex.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define DEPTH_MAX 64
#define CAP       ((size_t)LR_REGEX_MAX_COST + 1)

static size_t sat_add(size_t a, size_t b)
{
    return a + b > CAP ? CAP : a + b;
}

static size_t sat_mul(size_t a, size_t b)
{
    return b && a > CAP / b ? CAP : (a * b > CAP ? CAP : a * b);
}

/* Reads "{n}", "{n,}", "{n,m}" at *p; returns the copies regcomp makes (max(n, m) + 1 for
 * an open bound, at least 1) and advances *p, or 0 when it is not a bound (a literal `{`). */
static size_t bound_copies(const char **p)
{
    const char *s = *p + 1;
    unsigned long n = 0, m = 0;
    bool comma = false, digits = false;
    for (; *s && *s != '}'; s++) {
        if (*s == ',' && !comma) {
            comma = true;
        } else if (*s >= '0' && *s <= '9') {
            unsigned long *v = comma ? &m : &n;
            *v = *v * 10 + (unsigned long)(*s - '0');
            if (*v > CAP)
                *v = CAP;
            digits = true;
        } else {
            return 0;
        }
    }
    if (*s != '}' || !digits)
        return 0;
    *p = s;
    size_t c = n > m ? n : m;
    if (comma && !m)
        c = n + 1;
    return c ? c : 1;
}

size_t lr_regex_cost(const char *pattern)
{
    /* sum[d]: cost of the group being built at depth d; last[d]: cost of its last atom
     * (what a quantifier multiplies). */
    size_t sum[DEPTH_MAX], last[DEPTH_MAX];
    int d = 0;
    sum[0] = last[0] = 0;
    for (const char *p = pattern; *p; p++) {
        size_t k = 0; /* copies made by a quantifier here, 0 = not a quantifier */
        bool atom = true;
        switch (*p) {
        case '(':
            if (d + 1 >= DEPTH_MAX)
                return CAP;
            d++;
            sum[d] = last[d] = 0;
            continue;
        case ')':
            if (d == 0) {
                atom = false; /* unbalanced: regcomp reports it */
                break;
            }
            d--;
            last[d] = sum[d + 1] ? sum[d + 1] : 1;
            sum[d] = sat_add(sum[d], last[d]);
            continue;
        case '|':
            last[d] = 0;
            continue;
        case '+':
            k = 2;
            break;
        case '*':
        case '?':
            k = 1;
            break;
        case '{':
            k = bound_copies(&p);
            break;
        case '\\':
            if (p[1])
                p++;
            break;
        case '[': {
            /* a bracket expression is one atom: skip to its `]` (a leading `]` is literal;
             * `[:class:]`, `[=x=]` and `[.x.]` may hold one) */
            const char *s = p + 1;
            if (*s == '^')
                s++;
            if (*s == ']')
                s++;
            while (*s && *s != ']') {
                if (*s == '[' && (s[1] == ':' || s[1] == '=' || s[1] == '.')) {
                    const char *e = strchr(s + 2, s[1]);
                    s = e && e[1] == ']' ? e + 2 : s + 1;
                } else {
                    s++;
                }
            }
            p = *s ? s : s - 1;
            break;
        }
        default:
            break;
        }
        if (k) {
            /* the last atom is copied k times (in place of the one already counted) */
            size_t extra = sat_mul(last[d] ? last[d] : 1, k - 1);
            last[d] = sat_add(last[d], extra);
            sum[d] = sat_add(sum[d], extra);
        } else if (atom) {
            last[d] = 1;
            sum[d] = sat_add(sum[d], 1);
        }
        if (sum[d] >= CAP)
            return CAP;
    }
    size_t total = 0;
    for (int i = 0; i <= d; i++)
        total = sat_add(total, sum[i]);
    return total;
}

int lr_regex_compile(regex_t *re, const char *pattern, int flags, char *err, size_t errlen)
{
    size_t len = strlen(pattern);
    if (len > LR_REGEX_MAX_LEN) {
        snprintf(err, errlen, "pattern longer than %u bytes", LR_REGEX_MAX_LEN);
        return -1;
    }
    if (lr_regex_cost(pattern) > LR_REGEX_MAX_COST) {
        snprintf(err, errlen,
                 "pattern too complex (nested or stacked repetitions expand "
                 "beyond %u atoms)",
                 LR_REGEX_MAX_COST);
        return -1;
    }
    int rc = regcomp(re, pattern, flags);
    if (rc != 0) {
        regerror(rc, re, err, errlen);
        return -1;
    }
    return 0;
}
