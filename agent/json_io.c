#include "json_io.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "buf.h"

/* Deeper nesting is left to jansson, which has its own limit (2048). */
#define JIO_MAX_DEPTH 1000u
/* A number this long is left to jansson (its overflow rules decide). */
#define JIO_NUM_MAX 64u

/* ---- shared checks ---- */

#define JIO_ONES  0x0101010101010101ull
#define JIO_HIGHS 0x8080808080808080ull

static unsigned scan_byte(unsigned char c)
{
    if (c >= 0x80)
        return JIO_SCAN_HIGH;
    if (c >= 0x20 || c == '\t' || c == '\n' || c == '\r')
        return 0;
    return c == 0 ? JIO_SCAN_NUL : JIO_SCAN_BAD_CTL;
}

unsigned json_io_scan(const unsigned char *p, size_t len)
{
    unsigned f = 0;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & JIO_HIGHS)
            f |= JIO_SCAN_HIGH;
        /* some byte < 0x20 (exact as a yes/no for bytes < 0x80) */
        if ((w - 0x20 * JIO_ONES) & ~w & JIO_HIGHS)
            for (size_t k = 0; k < 8; k++)
                f |= scan_byte(p[i + k]);
    }
    for (; i < len; i++)
        f |= scan_byte(p[i]);
    return f;
}

bool json_io_maybe_surrogate(const char *p, size_t len)
{
    const char *end = p + len;
    while ((p = memchr(p, '\\', (size_t)(end - p)))) {
        if (end - p >= 4 && p[1] == 'u' && (p[2] | 0x20) == 'd' &&
            ((p[3] >= '8' && p[3] <= '9') || ((p[3] | 0x20) >= 'a' && (p[3] | 0x20) <= 'f')))
            return true;
        p++;
    }
    return false;
}

bool json_io_only_ws(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
            return false;
    return true;
}

enum jio_num json_io_number(const char *s, size_t len, json_int_t *i, double *d)
{
    bool real = memchr(s, '.', len) || memchr(s, 'e', len) || memchr(s, 'E', len);
    char buf[JIO_NUM_MAX];
    if (len >= sizeof(buf)) /* JSON has no leading zeros: an integer this long overflows */
        return real ? JIO_NUM_UNSURE : JIO_NUM_OVERFLOW;
    memcpy(buf, s, len);
    buf[len] = 0;
    errno = 0;
    if (!real) {
        long long v = strtoll(buf, NULL, 10);
        if (errno == ERANGE)
            return JIO_NUM_OVERFLOW;
        *i = (json_int_t)v;
        return JIO_NUM_INT;
    }
    double v = strtod(buf, NULL);
    if ((v == HUGE_VAL || v == -HUGE_VAL) && errno == ERANGE)
        return JIO_NUM_OVERFLOW;
    *d = v;
    return JIO_NUM_REAL;
}

/* ---- reading: yajl events -> jansson values ---- */

struct jio_rd {
    yajl_handle h;
    json_t *root;
    json_t **stack; /* open containers (borrowed: root owns them) */
    size_t depth, cap;
    struct lr_buf key; /* the member name whose value comes next */
    bool have_key;
    bool high;      /* the text has bytes >= 0x80: strings are checked as jansson does */
    bool bail;      /* something only jansson can decide (or out of memory) */
    size_t top_end; /* offset just after the top-level value */
    bool top_closed;
};

/* Adds v (a new reference) where the parse is. 0 stops the parse. */
static int rd_add(struct jio_rd *r, json_t *v)
{
    if (!v) {
        r->bail = true;
        return 0;
    }
    if (r->depth == 0) {
        if (r->root || !(json_is_object(v) || json_is_array(v))) {
            json_decref(v); /* jansson wants one '[' or '{' */
            r->bail = true;
            return 0;
        }
        r->root = v;
        return 1;
    }
    json_t *top = r->stack[r->depth - 1];
    int rc;
    if (json_is_array(top)) {
        rc = json_array_append_new(top, v);
    } else {
        if (!r->have_key) {
            json_decref(v);
            r->bail = true;
            return 0;
        }
        r->have_key = false;
        /* the last duplicate wins, as in json_loadb without JSON_REJECT_DUPLICATES */
        rc = r->high ? json_object_setn_new(top, (const char *)r->key.data, r->key.len, v)
                     : json_object_setn_new_nocheck(top, (const char *)r->key.data, r->key.len, v);
    }
    if (rc != 0) {
        r->bail = true;
        return 0;
    }
    return 1;
}

static int rd_null(void *ctx)
{
    return rd_add(ctx, json_null());
}

static int rd_boolean(void *ctx, int v)
{
    return rd_add(ctx, json_boolean(v));
}

static int rd_number(void *ctx, const char *s, size_t len)
{
    struct jio_rd *r = ctx;
    json_int_t i = 0;
    double d = 0;
    switch (json_io_number(s, len, &i, &d)) {
    case JIO_NUM_INT:
        return rd_add(r, json_integer(i));
    case JIO_NUM_REAL:
        return rd_add(r, json_real(d));
    default:
        r->bail = true;
        return 0;
    }
}

static int rd_string(void *ctx, const unsigned char *s, size_t len)
{
    struct jio_rd *r = ctx;
    if (memchr(s, 0, len)) { /* "\u0000": refused without JSON_ALLOW_NUL */
        r->bail = true;
        return 0;
    }
    return rd_add(r, r->high ? json_stringn((const char *)s, len)
                             : json_stringn_nocheck((const char *)s, len));
}

static int rd_open(struct jio_rd *r, json_t *c)
{
    if (!c || r->depth >= JIO_MAX_DEPTH) {
        json_decref(c);
        r->bail = true;
        return 0;
    }
    if (r->depth == r->cap) {
        size_t n = r->cap ? r->cap * 2 : 16;
        json_t **s = realloc(r->stack, n * sizeof(*s));
        if (!s) {
            json_decref(c);
            r->bail = true;
            return 0;
        }
        r->stack = s;
        r->cap = n;
    }
    json_incref(c); /* rd_add hands one reference to the parent */
    if (!rd_add(r, c)) {
        json_decref(c);
        return 0;
    }
    r->stack[r->depth++] = c;
    json_decref(c); /* the parent (or root) keeps it alive */
    return 1;
}

static int rd_start_map(void *ctx)
{
    return rd_open(ctx, json_object());
}

static int rd_start_array(void *ctx)
{
    return rd_open(ctx, json_array());
}

static int rd_end(void *ctx)
{
    struct jio_rd *r = ctx;
    if (r->depth == 0) {
        r->bail = true;
        return 0;
    }
    if (--r->depth == 0) {
        r->top_closed = true;
        r->top_end = yajl_get_bytes_consumed(r->h);
    }
    return 1;
}

static int rd_map_key(void *ctx, const unsigned char *s, size_t len)
{
    struct jio_rd *r = ctx;
    lr_buf_reset(&r->key);
    /* a NUL in a key is refused by jansson in any mode */
    if (memchr(s, 0, len) || lr_buf_append(&r->key, s, len) < 0 ||
        lr_buf_append(&r->key, "", 1) < 0) {
        r->bail = true;
        return 0;
    }
    r->key.len = len;
    r->have_key = true;
    return 1;
}

static const yajl_callbacks rd_callbacks = {
    .yajl_null = rd_null,
    .yajl_boolean = rd_boolean,
    .yajl_number = rd_number, /* raw text, converted as jansson does */
    .yajl_string = rd_string,
    .yajl_start_map = rd_start_map,
    .yajl_map_key = rd_map_key,
    .yajl_end_map = rd_end,
    .yajl_start_array = rd_start_array,
    .yajl_end_array = rd_end,
};

/* The tree, or NULL when jansson has to decide. */
static json_t *fast_load(const char *buf, size_t len)
{
    unsigned scan = json_io_scan((const unsigned char *)buf, len);
    /* raw control bytes: jansson refuses them, yajl takes \v and \f for whitespace; a NUL
     * right after a literal is skipped by json_loadb */
    if (scan & (JIO_SCAN_BAD_CTL | JIO_SCAN_NUL))
        return NULL;
    if (json_io_maybe_surrogate(buf, len))
        return NULL;
    struct jio_rd r = {.high = (scan & JIO_SCAN_HIGH) != 0};
    yajl_handle h = yajl_alloc(&rd_callbacks, NULL, &r);
    if (!h)
        return NULL;
    r.h = h;
    /* strings are checked by jansson's own json_stringn (stricter than yajl) */
    yajl_config(h, yajl_dont_validate_strings, 1);
    yajl_status ys = yajl_parse(h, (const unsigned char *)buf, len);
    if (ys == yajl_status_ok)
        ys = yajl_complete_parse(h);
    yajl_free(h);
    free(r.stack);
    lr_buf_free(&r.key);
    if (ys != yajl_status_ok || r.bail || !r.top_closed || !r.root ||
        !json_io_only_ws(buf + r.top_end, len - r.top_end)) {
        json_decref(r.root);
        return NULL;
    }
    return r.root;
}

static _Thread_local unsigned long fallbacks;

unsigned long json_io_fallbacks(void)
{
    return fallbacks;
}

json_t *json_io_loadb(const char *buf, size_t len, json_error_t *err)
{
    if (!buf)
        buf = "";
    json_t *v = fast_load(buf, len);
    if (v)
        return v;
    fallbacks++;
    json_error_t e;
    return json_loadb(buf, len, 0, err ? err : &e);
}

/* ---- writing: what json_dumps(v, JSON_COMPACT) writes ---- */

struct jio_wr {
    struct lr_buf *b;
    bool failed;
};

static void wr(struct jio_wr *w, const void *p, size_t n)
{
    if (!w->failed && lr_buf_append(w->b, p, n) < 0)
        w->failed = true;
}

/* jansson's escaping: '"', '\\' and control characters; the rest as is (UTF-8). */
static void wr_string(struct jio_wr *w, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    wr(w, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        wr(w, s + run, i - run);
        run = i + 1;
        char e[6] = {'\\', 0};
        size_t n = 2;
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            memcpy(e + 1, "u00", 3);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            n = 6;
        }
        wr(w, e, n);
    }
    wr(w, s + run, len - run);
    wr(w, "\"", 1);
}

/* jansson's jsonp_dtostr at its default precision (17 digits): a '.0' when the text would
 * read back as an integer, and no '+' or leading zeros in the exponent. */
static void wr_real(struct jio_wr *w, double v)
{
    char b[64];
    int n = snprintf(b, sizeof(b) - 3, "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof(b) - 3) {
        w->failed = true;
        return;
    }
    size_t len = (size_t)n;
    if (!strchr(b, '.') && !strchr(b, 'e')) {
        memcpy(b + len, ".0", 3);
        len += 2;
    }
    char *start = strchr(b, 'e');
    if (start) {
        start++;
        char *end = start + 1;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - b) + 1);
            len -= (size_t)(end - start);
        }
    }
    wr(w, b, len);
}

static void wr_int(struct jio_wr *w, json_int_t v)
{
    char b[24];
    char *p = b + sizeof(b);
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    wr(w, p, (size_t)(b + sizeof(b) - p));
}

static void wr_value(struct jio_wr *w, const json_t *v, unsigned depth)
{
    if (w->failed)
        return;
    if (depth > 2048) { /* jansson's dump refuses this too */
        w->failed = true;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        wr(w, "{", 1);
        bool first = true;
        /* insertion order, as json_dumps without JSON_SORT_KEYS */
        for (void *it = json_object_iter((json_t *)v); it && !w->failed;
             it = json_object_iter_next((json_t *)v, it)) {
            if (!first)
                wr(w, ",", 1);
            first = false;
            wr_string(w, json_object_iter_key(it), json_object_iter_key_len(it));
            wr(w, ":", 1);
            wr_value(w, json_object_iter_value(it), depth + 1);
        }
        wr(w, "}", 1);
        break;
    }
    case JSON_ARRAY: {
        wr(w, "[", 1);
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n && !w->failed; i++) {
            if (i)
                wr(w, ",", 1);
            wr_value(w, json_array_get(v, i), depth + 1);
        }
        wr(w, "]", 1);
        break;
    }
    case JSON_STRING:
        wr_string(w, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        wr_int(w, json_integer_value(v));
        break;
    case JSON_REAL:
        wr_real(w, json_real_value(v));
        break;
    case JSON_TRUE:
        wr(w, "true", 4);
        break;
    case JSON_FALSE:
        wr(w, "false", 5);
        break;
    case JSON_NULL:
        wr(w, "null", 4);
        break;
    default:
        w->failed = true;
    }
}

int json_io_append(struct lr_buf *b, const json_t *v)
{
    size_t mark = b->len;
    struct jio_wr w = {b, false};
    wr_value(&w, v, 0);
    if (w.failed) {
        b->len = mark;
        return -ENOMEM;
    }
    return 0;
}

char *json_io_dumps(const json_t *v, size_t *len)
{
    if (!json_is_object(v) && !json_is_array(v)) /* json_dumps without JSON_ENCODE_ANY */
        return NULL;
    struct lr_buf b = {0};
    if (json_io_append(&b, v) < 0) {
        lr_buf_free(&b);
        return NULL;
    }
    size_t n = b.len;
    char *s = lr_buf_steal_str(&b);
    lr_buf_free(&b);
    if (s && len)
        *len = n;
    return s;
}
