#include "body_peek.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "json_io.h"

/* Deeper nesting is left to jansson, which has its own limit (2048). */
#define BP_MAX_DEPTH 1000u
/* The body is checked as UTF-8 by jansson in pieces of about this size. */
#define BP_UTF8_CHUNK 4096u
/* yajl's allocations for one body (handle, lexer, buffers, the bracket stack) come from this
 * much stack before the heap: five mallocs and frees fewer per request. */
#define BP_ARENA_BYTES 3072u

const char *body_peek_result_to_str(enum body_peek_result r)
{
    switch (r) {
    case BODY_PEEK_OK:
        return "ok";
    case BODY_PEEK_INVALID:
        return "invalid";
    case BODY_PEEK_NOT_OBJECT:
        return "not-object";
    case BODY_PEEK_UNSURE:
        return "unsure";
    case BODY_PEEK_RESULT_COUNT:
    default:
        return "?";
    }
}

static void bp_set_model(const char *s, size_t len, char *model, size_t model_size,
                         struct body_peek *out)
{
    size_t n = len < model_size - 1 ? len : model_size - 1;
    memcpy(model, s, n);
    model[n] = 0;
    out->has_model = true;
    out->model_len = len;
}

/* ---- the reference: jansson ---- */

enum body_peek_result body_peek_tree(const char *body, size_t len, char *model, size_t model_size,
                                     struct body_peek *out, json_t **keep)
{
    *out = (struct body_peek){0};
    model[0] = 0;
    json_error_t e;
    json_t *root = json_loadb(body ? body : "", len, 0, &e);
    if (!root)
        return BODY_PEEK_INVALID;
    if (!json_is_object(root)) {
        json_decref(root);
        return BODY_PEEK_NOT_OBJECT;
    }
    const json_t *m = json_object_get(root, "model");
    if (json_is_string(m))
        bp_set_model(json_string_value(m), json_string_length(m), model, model_size, out);
    out->stream = json_is_true(json_object_get(root, "stream"));
    if (keep)
        *keep = root;
    else
        json_decref(root);
    return BODY_PEEK_OK;
}

/* ---- the fast path: yajl ---- */

/* A bump allocator for yajl over a caller's buffer; what does not fit goes to the heap.
 * Each arena block is preceded by its size (for realloc); free of an arena block is a no-op,
 * the buffer goes when body_peek returns. */
struct bp_arena {
    unsigned char *base;
    size_t used, cap;
};

#define BP_ALIGN alignof(max_align_t)
#define BP_HDR   ((sizeof(size_t) + BP_ALIGN - 1) / BP_ALIGN * BP_ALIGN)

static bool bp_in_arena(const struct bp_arena *a, const void *p)
{
    const unsigned char *c = p;
    return c >= a->base && c < a->base + a->cap;
}

static void *bp_malloc(void *ctx, size_t sz)
{
    struct bp_arena *a = ctx;
    size_t need = (sz + BP_ALIGN - 1) / BP_ALIGN * BP_ALIGN;
    if (need < sz || need > a->cap - a->used || a->cap - a->used - need < BP_HDR)
        return malloc(sz);
    unsigned char *p = a->base + a->used + BP_HDR;
    memcpy(p - BP_HDR, &sz, sizeof(sz));
    a->used += BP_HDR + need;
    return p;
}

static void bp_free(void *ctx, void *p)
{
    if (!bp_in_arena(ctx, p))
        free(p);
}

static void *bp_realloc(void *ctx, void *p, size_t sz)
{
    struct bp_arena *a = ctx;
    if (!p)
        return bp_malloc(ctx, sz);
    if (!bp_in_arena(a, p))
        return realloc(p, sz);
    size_t old;
    memcpy(&old, (unsigned char *)p - BP_HDR, sizeof(old));
    if (sz <= old)
        return p;
    void *n = bp_malloc(ctx, sz);
    if (n)
        memcpy(n, p, old);
    return n;
}

enum bp_key { BP_KEY_OTHER = 0, BP_KEY_MODEL, BP_KEY_STREAM };

enum bp_kind { BP_STRING = 0, BP_TRUE, BP_OTHER, BP_CONTAINER };

struct bp_state {
    yajl_handle h;
    size_t top_end; /* offset just after the top-level value's closing bracket */
    bool top_closed;
    char *model;
    size_t model_size;
    struct body_peek *out;
    unsigned depth;  /* containers open */
    bool top_array;  /* the top level is an array */
    enum bp_key key; /* the top-level member whose value comes next */
    bool invalid;    /* something jansson refuses that yajl accepts */
    bool unsure;     /* something only jansson can decide */
};

/* A value starts. 0 stops the parse. */
static int bp_value(struct bp_state *st, enum bp_kind kind, const unsigned char *s, size_t len)
{
    if (st->depth == 0) {
        if (kind != BP_CONTAINER) {
            st->invalid = true; /* jansson wants '[' or '{' first */
            return 0;
        }
        return 1;
    }
    if (st->depth == 1 && !st->top_array) {
        if (st->key == BP_KEY_MODEL) {
            if (kind == BP_STRING)
                bp_set_model((const char *)s, len, st->model, st->model_size, st->out);
            else {
                st->out->has_model = false; /* the last duplicate wins */
                st->out->model_len = 0;
                st->model[0] = 0;
            }
        } else if (st->key == BP_KEY_STREAM) {
            st->out->stream = kind == BP_TRUE;
        }
        st->key = BP_KEY_OTHER;
    }
    return 1;
}

static int bp_null(void *ctx)
{
    return bp_value(ctx, BP_OTHER, NULL, 0);
}

static int bp_boolean(void *ctx, int v)
{
    return bp_value(ctx, v ? BP_TRUE : BP_OTHER, NULL, 0);
}

/* jansson converts every number and refuses one that overflows. */
static int bp_number(void *ctx, const char *s, size_t len)
{
    struct bp_state *st = ctx;
    json_int_t i;
    double d;
    enum jio_num n = json_io_number(s, len, &i, &d);
    if (n == JIO_NUM_OVERFLOW) {
        st->invalid = true;
        return 0;
    }
    st->unsure = st->unsure || n == JIO_NUM_UNSURE;
    return bp_value(st, BP_OTHER, NULL, 0);
}

static int bp_string(void *ctx, const unsigned char *s, size_t len)
{
    struct bp_state *st = ctx;
    if (memchr(s, 0, len)) {
        st->invalid = true; /* "\u0000": jansson refuses it without JSON_ALLOW_NUL */
        return 0;
    }
    return bp_value(st, BP_STRING, s, len);
}

static int bp_start(struct bp_state *st, bool array)
{
    if (!bp_value(st, BP_CONTAINER, NULL, 0))
        return 0;
    if (st->depth == 0)
        st->top_array = array;
    if (++st->depth > BP_MAX_DEPTH) {
        st->unsure = true;
        return 0;
    }
    return 1;
}

static int bp_start_map(void *ctx)
{
    return bp_start(ctx, false);
}

static int bp_start_array(void *ctx)
{
    return bp_start(ctx, true);
}

static int bp_end(void *ctx)
{
    struct bp_state *st = ctx;
    if (--st->depth == 0) {
        st->top_closed = true;
        st->top_end = yajl_get_bytes_consumed(st->h); /* the offset of the current token's end */
    }
    return 1;
}

static int bp_map_key(void *ctx, const unsigned char *s, size_t len)
{
    struct bp_state *st = ctx;
    if (memchr(s, 0, len)) {
        st->invalid = true;
        return 0;
    }
    if (st->depth == 1 && !st->top_array) {
        if (len == 5 && memcmp(s, "model", 5) == 0)
            st->key = BP_KEY_MODEL;
        else if (len == 6 && memcmp(s, "stream", 6) == 0)
            st->key = BP_KEY_STREAM;
        else
            st->key = BP_KEY_OTHER;
    }
    return 1;
}

static const yajl_callbacks bp_callbacks = {
    .yajl_null = bp_null,
    .yajl_boolean = bp_boolean,
    .yajl_number = bp_number, /* raw text: no conversion, and checked as jansson does */
    .yajl_string = bp_string,
    .yajl_start_map = bp_start_map,
    .yajl_map_key = bp_map_key,
    .yajl_end_map = bp_end,
    .yajl_start_array = bp_start_array,
    .yajl_end_array = bp_end,
};

/* yajl checks UTF-8 less strictly than jansson (overlong forms, surrogates, > U+10FFFF):
 * the body goes through jansson's own check (json_stringn validates what it copies), in
 * pieces that end after an ASCII byte so that no sequence is split. */
static bool bp_utf8_ok(const unsigned char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t end = len - i > BP_UTF8_CHUNK ? i + BP_UTF8_CHUNK : len;
        while (end < len && (p[end - 1] & 0x80))
            end++;
        if (json_io_scan(p + i, end - i) & JIO_SCAN_HIGH) {
            json_t *s = json_stringn((const char *)p + i, end - i);
            if (!s)
                return false;
            json_decref(s);
        }
        i = end;
    }
    return true;
}

enum body_peek_result body_peek(const char *body, size_t len, char *model, size_t model_size,
                                struct body_peek *out)
{
    *out = (struct body_peek){0};
    model[0] = 0;
    if (!body)
        body = "";
    /* Raw control bytes: jansson refuses them anywhere (no token outside a string, control
     * characters inside one), while yajl takes \v and \f for whitespace. A NUL byte is left
     * to jansson: right after a number or a literal, json_loadb skips it. */
    unsigned scan = json_io_scan((const unsigned char *)body, len);
    if (scan & JIO_SCAN_BAD_CTL)
        return BODY_PEEK_INVALID;
    if (scan & JIO_SCAN_NUL)
        return BODY_PEEK_UNSURE;
    struct bp_state st = {.model = model, .model_size = model_size, .out = out};
    alignas(max_align_t) unsigned char mem[BP_ARENA_BYTES];
    struct bp_arena arena = {.base = mem, .cap = sizeof(mem)};
    yajl_alloc_funcs af = {
        .malloc = bp_malloc, .realloc = bp_realloc, .free = bp_free, .ctx = &arena};
    yajl_handle h = yajl_alloc(&bp_callbacks, &af, &st);
    if (!h)
        return BODY_PEEK_UNSURE;
    st.h = h;
    yajl_status ys = yajl_parse(h, (const unsigned char *)body, len);
    if (ys == yajl_status_ok)
        ys = yajl_complete_parse(h);
    yajl_free(h);
    if (st.invalid)
        return BODY_PEEK_INVALID;
    if (ys == yajl_status_error)
        return BODY_PEEK_INVALID;
    if (ys != yajl_status_ok || st.unsure || !st.top_closed)
        return BODY_PEEK_UNSURE;
    if (!json_io_only_ws(body + st.top_end, len - st.top_end))
        return BODY_PEEK_INVALID;
    if ((scan & JIO_SCAN_HIGH) && !bp_utf8_ok((const unsigned char *)body, len))
        return BODY_PEEK_INVALID;
    if (json_io_maybe_surrogate(body, len))
        return BODY_PEEK_UNSURE;
    if (st.top_array)
        return BODY_PEEK_NOT_OBJECT;
    return BODY_PEEK_OK;
}
