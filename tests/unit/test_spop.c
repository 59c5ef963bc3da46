/* Unit tests for agent/spop.c: codec round-trips, then a data-driven table of protocol
 * conformance cases (input built by helpers, output frames decoded by an independent
 * decoder written here), then prefix / byte-at-a-time feeding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "spop.h"

/* ------------------------------------------------------------------------------------ */
/* Byte builder for test inputs (independent of the code under test).                   */

struct tb {
    uint8_t b[65536];
    size_t len;
    size_t frame_start; /* offset of the length prefix of the open frame */
};

static void tb_u8(struct tb *t, uint8_t v)
{
    assert_true(t->len < sizeof(t->b));
    t->b[t->len++] = v;
}

static void tb_bytes(struct tb *t, const void *p, size_t n)
{
    assert_true(t->len + n <= sizeof(t->b));
    memcpy(t->b + t->len, p, n);
    t->len += n;
}

static void tb_be32(struct tb *t, uint32_t v)
{
    tb_u8(t, (uint8_t)(v >> 24));
    tb_u8(t, (uint8_t)(v >> 16));
    tb_u8(t, (uint8_t)(v >> 8));
    tb_u8(t, (uint8_t)v);
}

/* Reference varint encoder, written from SPOE.txt's table, not from spop.c. */
static void tb_varint(struct tb *t, uint64_t v)
{
    if (v < 240) {
        tb_u8(t, (uint8_t)v);
        return;
    }
    tb_u8(t, (uint8_t)(0xf0 | (v & 0x0f)));
    v = (v - 240) >> 4;
    while (v >= 128) {
        tb_u8(t, (uint8_t)(0x80 | (v & 0x7f)));
        v = (v - 128) >> 7;
    }
    tb_u8(t, (uint8_t)v);
}

static void tb_str(struct tb *t, const char *s)
{
    size_t n = strlen(s);
    tb_varint(t, n);
    tb_bytes(t, s, n);
}

static void tb_kv_str(struct tb *t, const char *k, const char *v)
{
    tb_str(t, k);
    tb_u8(t, SPOP_DATA_STR);
    tb_str(t, v);
}

static void tb_kv_u32(struct tb *t, const char *k, uint32_t v)
{
    tb_str(t, k);
    tb_u8(t, SPOP_DATA_UINT32);
    tb_varint(t, v);
}

static void tb_kv_bool(struct tb *t, const char *k, int v)
{
    tb_str(t, k);
    tb_u8(t, (uint8_t)(SPOP_DATA_BOOL | (v ? 0x10 : 0)));
}

static void tb_frame_begin(struct tb *t, uint8_t type, uint32_t flags, uint64_t sid, uint64_t fid)
{
    t->frame_start = t->len;
    tb_be32(t, 0);
    tb_u8(t, type);
    tb_be32(t, flags);
    tb_varint(t, sid);
    tb_varint(t, fid);
}

static void tb_frame_end(struct tb *t)
{
    uint32_t n = (uint32_t)(t->len - t->frame_start - 4);
    t->b[t->frame_start] = (uint8_t)(n >> 24);
    t->b[t->frame_start + 1] = (uint8_t)(n >> 16);
    t->b[t->frame_start + 2] = (uint8_t)(n >> 8);
    t->b[t->frame_start + 3] = (uint8_t)n;
}

/* HELLO as HAProxy 2.6 sends it (flt_spoe.c: FIN, ids 0, these keys in this order). */
static void hello_26(struct tb *t)
{
    tb_frame_begin(t, SPOP_FRM_HAPROXY_HELLO, SPOP_FLAG_FIN, 0, 0);
    tb_kv_str(t, "supported-versions", "2.0");
    tb_kv_u32(t, "max-frame-size", 16380);
    tb_kv_str(t, "capabilities", "pipelining,async");
    tb_kv_str(t, "engine-id", "371d3c51-c748-4cf9-8451-fd14e398d110");
    tb_frame_end(t);
}

/* HELLO as HAProxy 3.1+ sends it (mux_spop.c spop_conn_send_hello): same keys, capabilities
 * "pipelining" only when the agent has "option pipelining", engine-id when known. */
static void hello_3x(struct tb *t)
{
    tb_frame_begin(t, SPOP_FRM_HAPROXY_HELLO, SPOP_FLAG_FIN, 0, 0);
    tb_kv_str(t, "supported-versions", "2.0");
    tb_kv_u32(t, "max-frame-size", 16380);
    tb_kv_str(t, "capabilities", "pipelining");
    tb_kv_str(t, "engine-id", "lunaroute");
    tb_frame_end(t);
}

/* The 3.x health check HELLO: no agent attached, so empty capabilities, no engine-id. */
static void hello_hc(struct tb *t)
{
    tb_frame_begin(t, SPOP_FRM_HAPROXY_HELLO, SPOP_FLAG_FIN, 0, 0);
    tb_kv_str(t, "supported-versions", "2.0");
    tb_kv_u32(t, "max-frame-size", 16380);
    tb_kv_str(t, "capabilities", "");
    tb_kv_bool(t, "healthcheck", 1);
    tb_frame_end(t);
}

/* A NOTIFY carrying one lunaroute-classify message with typical args. */
static void notify(struct tb *t, uint64_t sid, uint64_t fid, uint32_t flags)
{
    tb_frame_begin(t, SPOP_FRM_NOTIFY, flags, sid, fid);
    tb_str(t, "lunaroute-classify");
    tb_u8(t, 3);
    tb_str(t, "method");
    tb_u8(t, SPOP_DATA_STR);
    tb_str(t, "POST");
    tb_str(t, "path");
    tb_u8(t, SPOP_DATA_STR);
    tb_str(t, "/v1/chat/completions");
    tb_str(t, "av");
    tb_u8(t, SPOP_DATA_INT32);
    tb_varint(t, 0);
    tb_frame_end(t);
}

static void discon(struct tb *t, uint32_t code, const char *msg)
{
    tb_frame_begin(t, SPOP_FRM_HAPROXY_DISCON, SPOP_FLAG_FIN, 0, 0);
    tb_kv_u32(t, "status-code", code);
    tb_kv_str(t, "message", msg);
    tb_frame_end(t);
}

/* ------------------------------------------------------------------------------------ */
/* Independent decoder for output frames.                                               */

struct oframe {
    uint8_t type;
    uint32_t flags;
    uint64_t sid, fid;
    const uint8_t *pl; /* payload */
    size_t pl_len;
    size_t flen; /* length prefix value */
};

static int rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    const uint8_t *q = *p;
    uint64_t x;
    int shift = 4;

    if (q >= end)
        return -1;
    x = *q++;
    if (x >= 240) {
        for (;;) {
            if (q >= end || shift > 60)
                return -1;
            x += (uint64_t)*q << shift;
            shift += 7;
            if (*q++ < 128)
                break;
        }
    }
    *v = x;
    *p = q;
    return 0;
}

static int rd_str(const uint8_t **p, const uint8_t *end, const char **s, size_t *n)
{
    uint64_t l;
    if (rd_varint(p, end, &l) < 0 || l > (uint64_t)(end - *p))
        return -1;
    *s = (const char *)*p;
    *n = (size_t)l;
    *p += l;
    return 0;
}

/* Splits buf into frames; fails the test on any structural problem. */
static size_t split_frames(const uint8_t *buf, size_t len, struct oframe *f, size_t max)
{
    size_t n = 0, off = 0;

    while (off < len) {
        const uint8_t *p, *end;
        uint32_t flen;

        assert_true(len - off >= 4);
        flen = (uint32_t)buf[off] << 24 | (uint32_t)buf[off + 1] << 16 |
               (uint32_t)buf[off + 2] << 8 | buf[off + 3];
        assert_true(len - off - 4 >= flen);
        assert_true(flen >= 7);
        assert_true(n < max);
        p = buf + off + 4;
        end = p + flen;
        f[n].flen = flen;
        f[n].type = *p++;
        f[n].flags = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        p += 4;
        assert_int_equal(rd_varint(&p, end, &f[n].sid), 0);
        assert_int_equal(rd_varint(&p, end, &f[n].fid), 0);
        f[n].pl = p;
        f[n].pl_len = (size_t)(end - p);
        off += 4 + flen;
        n++;
    }
    return n;
}

/* Finds key in a KV-list payload. Returns the type byte or -1; value decoded to *u / *s. */
static int kv_find(const struct oframe *f, const char *key, uint64_t *u, const char **s, size_t *sl)
{
    const uint8_t *p = f->pl, *end = f->pl + f->pl_len;

    while (p < end) {
        const char *k = NULL;
        size_t kl = 0;
        uint8_t t;
        uint64_t v = 0;
        const char *sv = NULL;
        size_t svl = 0;

        assert_int_equal(rd_str(&p, end, &k, &kl), 0);
        assert_true(p < end);
        t = *p++;
        switch (t & 0x0f) {
        case SPOP_DATA_UINT32:
        case SPOP_DATA_INT32:
        case SPOP_DATA_UINT64:
        case SPOP_DATA_INT64:
            assert_int_equal(rd_varint(&p, end, &v), 0);
            break;
        case SPOP_DATA_STR:
            assert_int_equal(rd_str(&p, end, &sv, &svl), 0);
            break;
        case SPOP_DATA_BOOL:
        case SPOP_DATA_NULL:
            break;
        default:
            fail_msg("unexpected type %u in KV list", t);
        }
        if (kl == strlen(key) && memcmp(k, key, kl) == 0) {
            if (u)
                *u = v;
            if (s) {
                *s = sv;
                *sl = svl;
            }
            return t;
        }
    }
    return -1;
}

static void assert_kv_str(const struct oframe *f, const char *key, const char *want)
{
    const char *s = NULL;
    size_t sl = 0;
    assert_int_equal(kv_find(f, key, NULL, &s, &sl), SPOP_DATA_STR);
    assert_int_equal(sl, strlen(want));
    assert_memory_equal(s, want, sl);
}

static uint64_t kv_uint(const struct oframe *f, const char *key)
{
    uint64_t v = 0;
    assert_int_equal(kv_find(f, key, &v, NULL, NULL), SPOP_DATA_UINT32);
    return v;
}

struct oaction {
    uint8_t type, nargs, scope;
    char name[64];
    char value[256];
};

/* Decodes an ACK payload into actions; fails on malformed payloads. */
static size_t ack_actions(const struct oframe *f, struct oaction *a, size_t max)
{
    const uint8_t *p = f->pl, *end = f->pl + f->pl_len;
    size_t n = 0;

    while (p < end) {
        const char *s = NULL;
        size_t sl = 0;

        assert_true(n < max);
        memset(&a[n], 0, sizeof(a[n]));
        assert_true(end - p >= 3);
        a[n].type = *p++;
        a[n].nargs = *p++;
        a[n].scope = *p++;
        assert_int_equal(rd_str(&p, end, &s, &sl), 0);
        assert_true(sl < sizeof(a[n].name));
        memcpy(a[n].name, s, sl);
        if (a[n].type == 1) {
            assert_int_equal(a[n].nargs, 3);
            assert_true(p < end);
            assert_int_equal(*p++, SPOP_DATA_STR);
            assert_int_equal(rd_str(&p, end, &s, &sl), 0);
            if (sl >= sizeof(a[n].value))
                sl = sizeof(a[n].value) - 1;
            memcpy(a[n].value, s, sl);
        } else {
            assert_int_equal(a[n].type, 2);
            assert_int_equal(a[n].nargs, 2);
        }
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------------------------ */
/* Handlers                                                                             */

struct hstate {
    int calls;
    char last_name[64];
    size_t last_nargs;
    uint64_t last_sid, last_fid;
    int mode; /* 0: classify 3 vars, 1: decline, 2: huge values, 3: 8 mid-size vars */
};

static char big_value[20000];

static int handler(void *ud, const struct spop_message *msg, struct spop_actions *out)
{
    struct hstate *h = ud;
    static const char *names[8] = {"v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"};

    h->calls++;
    snprintf(h->last_name, sizeof(h->last_name), "%.*s", (int)msg->name_len, msg->name);
    h->last_nargs = msg->nargs;
    h->last_sid = msg->stream_id;
    h->last_fid = msg->frame_id;
    switch (h->mode) {
    case 1:
        return -1;
    case 2:
    case 3:
        for (size_t i = 0; i < 8 && out->n < SPOP_MAX_ACTIONS; i++) {
            struct spop_action *a = &out->a[out->n++];
            a->scope = SPOP_SCOPE_TXN;
            a->name = names[i];
            a->name_len = 2;
            a->value = big_value;
            a->value_len = h->mode == 2 ? sizeof(big_value) : 200;
        }
        return 0;
    default:
        if (out->n + 3 > SPOP_MAX_ACTIONS)
            return -1;
        out->a[out->n++] = (struct spop_action){SPOP_SCOPE_TXN, "route", 5, "engine", 6};
        out->a[out->n++] = (struct spop_action){SPOP_SCOPE_TXN, "backend", 7, "lr_engine", 9};
        out->a[out->n++] = (struct spop_action){SPOP_SCOPE_TXN, "provider", 8, "", 0};
        return 0;
    }
}

/* ------------------------------------------------------------------------------------ */
/* Codec tests                                                                          */

static void test_varint_roundtrip(void **state)
{
    (void)state;
    static const struct {
        uint64_t v;
        size_t len;
    } cases[] = {
        {0, 1},
        {1, 1},
        {239, 1},
        {240, 2},
        {2287, 2},
        {2288, 3},
        {264431, 3},
        {264432, 4},
        {33818863, 4},
        {33818864, 5},
        {4328786159ULL, 5},
        {4328786160ULL, 6},
        {UINT32_MAX, 5},
        {(1ULL << 32), 5},
        {554084600047ULL, 6},
        {554084600048ULL, 7},
        {70922828777711ULL, 7},
        {70922828777712ULL, 8},
        {9078122083518703ULL, 8},
        {9078122083518704ULL, 9},
        {1161999626690365679ULL, 9},
        {1161999626690365680ULL, 10},
        {1ULL << 63, 10},
        {UINT64_MAX - 1, 10},
        {UINT64_MAX, 10},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[16], *p = buf;
        const uint8_t *q = buf;
        uint64_t out = 0;
        struct tb ref = {.len = 0};

        assert_int_equal(spop_varint_encode(cases[i].v, &p, buf + sizeof(buf)), SPOP_OK);
        assert_int_equal((size_t)(p - buf), cases[i].len);
        /* byte-exact with the reference encoder */
        tb_varint(&ref, cases[i].v);
        assert_int_equal(ref.len, cases[i].len);
        assert_memory_equal(ref.b, buf, ref.len);
        assert_int_equal(spop_varint_decode(&q, p, &out), SPOP_OK);
        assert_true(out == cases[i].v);
        assert_ptr_equal(q, p);

        /* every shorter output room fails without writing past it */
        for (size_t room = 0; room < cases[i].len; room++) {
            uint8_t small[16];
            uint8_t *sp = small;
            assert_int_equal(spop_varint_encode(cases[i].v, &sp, small + room), SPOP_ERR_TRUNC);
            assert_ptr_equal(sp, small);
        }
        /* every truncation of the encoding is TRUNC and leaves *p alone */
        for (size_t cut = 0; cut < cases[i].len; cut++) {
            const uint8_t *tq = buf;
            assert_int_equal(spop_varint_decode(&tq, buf + cut, &out), SPOP_ERR_TRUNC);
            assert_ptr_equal(tq, buf);
        }
    }
}

static void test_varint_invalid(void **state)
{
    (void)state;
    uint64_t v;
    /* 11 bytes: continuation on the 10th byte */
    uint8_t overlong[11] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00};
    const uint8_t *p = overlong;
    assert_int_equal(spop_varint_decode(&p, overlong + sizeof(overlong), &v), SPOP_ERR_INVALID);
    assert_ptr_equal(p, overlong);

    /* 10 bytes whose value exceeds UINT64_MAX: UINT64_MAX's encoding with the last byte + 1 */
    uint8_t buf[16], *w = buf;
    assert_int_equal(spop_varint_encode(UINT64_MAX, &w, buf + sizeof(buf)), SPOP_OK);
    assert_int_equal(w - buf, 10);
    buf[9]++;
    p = buf;
    assert_int_equal(spop_varint_decode(&p, buf + 10, &v), SPOP_ERR_INVALID);
    /* last byte with high bits set (shift 60: anything > 15 overflows) */
    buf[9] = 0x10;
    p = buf;
    assert_int_equal(spop_varint_decode(&p, buf + 10, &v), SPOP_ERR_INVALID);
    /* empty input */
    p = buf;
    assert_int_equal(spop_varint_decode(&p, buf, &v), SPOP_ERR_TRUNC);
}

static void data_roundtrip(const struct spop_data *in, size_t want_len, uint8_t want_first)
{
    uint8_t buf[64], *p = buf;
    const uint8_t *q = buf;
    struct spop_data out;

    assert_int_equal(spop_data_encode(in, &p, buf + sizeof(buf)), SPOP_OK);
    assert_int_equal((size_t)(p - buf), want_len);
    assert_int_equal(buf[0], want_first);
    memset(&out, 0xaa, sizeof(out));
    assert_int_equal(spop_data_decode(&q, p, &out), SPOP_OK);
    assert_ptr_equal(q, p);
    assert_int_equal(out.type, in->type);
    switch (in->type) {
    case SPOP_DATA_BOOL:
        assert_int_equal(out.u.b, in->u.b);
        break;
    case SPOP_DATA_INT32:
    case SPOP_DATA_INT64:
        assert_true(out.u.i == in->u.i);
        break;
    case SPOP_DATA_UINT32:
    case SPOP_DATA_UINT64:
        assert_true(out.u.u == in->u.u);
        break;
    case SPOP_DATA_IPV4:
        assert_memory_equal(out.u.ip, in->u.ip, 4);
        break;
    case SPOP_DATA_IPV6:
        assert_memory_equal(out.u.ip, in->u.ip, 16);
        break;
    case SPOP_DATA_STR:
    case SPOP_DATA_BIN:
        assert_int_equal(out.u.str.len, in->u.str.len);
        if (in->u.str.len)
            assert_memory_equal(out.u.str.ptr, in->u.str.ptr, in->u.str.len);
        /* strings point into the input */
        assert_true((const uint8_t *)out.u.str.ptr >= buf && (const uint8_t *)out.u.str.ptr <= p);
        break;
    default:
        break;
    }
    /* every truncation is TRUNC */
    for (size_t cut = 0; cut < want_len; cut++) {
        const uint8_t *tq = buf;
        assert_int_equal(spop_data_decode(&tq, buf + cut, &out), SPOP_ERR_TRUNC);
        assert_ptr_equal(tq, buf);
    }
}

static void test_data_types(void **state)
{
    (void)state;
    struct spop_data d;

    memset(&d, 0, sizeof(d));
    d.type = SPOP_DATA_NULL;
    data_roundtrip(&d, 1, 0x00);
    d.type = SPOP_DATA_BOOL;
    d.u.b = true;
    data_roundtrip(&d, 1, 0x11);
    d.u.b = false;
    data_roundtrip(&d, 1, 0x01);
    d.type = SPOP_DATA_INT32;
    d.u.i = -1;
    data_roundtrip(&d, 11, 0x02);
    d.u.i = 42;
    data_roundtrip(&d, 2, 0x02);
    d.type = SPOP_DATA_UINT32;
    d.u.u = UINT32_MAX;
    data_roundtrip(&d, 6, 0x03);
    d.type = SPOP_DATA_INT64;
    d.u.i = INT64_MIN;
    data_roundtrip(&d, 11, 0x04);
    d.type = SPOP_DATA_UINT64;
    d.u.u = UINT64_MAX;
    data_roundtrip(&d, 11, 0x05);
    d.type = SPOP_DATA_IPV4;
    memcpy(d.u.ip, "\x7f\x00\x00\x01", 4);
    data_roundtrip(&d, 5, 0x06);
    d.type = SPOP_DATA_IPV6;
    memcpy(d.u.ip, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
    data_roundtrip(&d, 17, 0x07);
    d.type = SPOP_DATA_STR;
    d.u.str.ptr = "hello";
    d.u.str.len = 5;
    data_roundtrip(&d, 7, 0x08);
    d.u.str.ptr = "";
    d.u.str.len = 0;
    data_roundtrip(&d, 2, 0x08);
    d.type = SPOP_DATA_BIN;
    d.u.str.ptr = "\x00\x01\x02";
    d.u.str.len = 3;
    data_roundtrip(&d, 5, 0x09);
}

static void test_data_invalid(void **state)
{
    (void)state;
    struct spop_data d;
    const uint8_t *p;

    /* reserved types 10..15 */
    for (uint8_t t = 10; t < 16; t++) {
        uint8_t b[4] = {t, 0, 0, 0};
        p = b;
        assert_int_equal(spop_data_decode(&p, b + sizeof(b), &d), SPOP_ERR_INVALID);
        assert_ptr_equal(p, b);
    }
    /* boolean: only bit 0x10 matters, other flag bits ignored */
    uint8_t bt[1] = {0x31};
    p = bt;
    assert_int_equal(spop_data_decode(&p, bt + 1, &d), SPOP_OK);
    assert_true(d.u.b);
    uint8_t bf[1] = {0x21};
    p = bf;
    assert_int_equal(spop_data_decode(&p, bf + 1, &d), SPOP_OK);
    assert_false(d.u.b);
    /* string whose length runs past the end */
    uint8_t s[] = {SPOP_DATA_STR, 10, 'a', 'b', 'c'};
    p = s;
    assert_int_equal(spop_data_decode(&p, s + sizeof(s), &d), SPOP_ERR_TRUNC);
    assert_ptr_equal(p, s);
    /* string with a huge varint length (2^63): checked before use */
    struct tb t = {.len = 0};
    tb_u8(&t, SPOP_DATA_STR);
    tb_varint(&t, 1ULL << 63);
    tb_bytes(&t, "abc", 3);
    p = t.b;
    assert_int_equal(spop_data_decode(&p, t.b + t.len, &d), SPOP_ERR_TRUNC);
    /* spop_str_decode on its own */
    const char *sp;
    size_t sl;
    uint8_t s2[] = {3, 'a', 'b'};
    p = s2;
    assert_int_equal(spop_str_decode(&p, s2 + sizeof(s2), &sp, &sl), SPOP_ERR_TRUNC);
    uint8_t s3[] = {2, 'a', 'b'};
    p = s3;
    assert_int_equal(spop_str_decode(&p, s3 + sizeof(s3), &sp, &sl), SPOP_OK);
    assert_int_equal(sl, 2);
    assert_ptr_equal(p, s3 + 3);
    /* str encode into a too-small buffer */
    uint8_t o[4], *op = o;
    assert_int_equal(spop_str_encode("abcd", 4, &op, o + sizeof(o)), SPOP_ERR_TRUNC);
    assert_ptr_equal(op, o);
}

static void test_to_str(void **state)
{
    (void)state;
    assert_string_equal(spop_frame_type_to_str(SPOP_FRM_NOTIFY), "NOTIFY");
    assert_string_equal(spop_frame_type_to_str(SPOP_FRM_ACK), "ACK");
    assert_string_equal(spop_frame_type_to_str(200), "unknown");
    assert_string_equal(spop_status_to_str(SPOP_ST_TOO_BIG), "frame is too big");
    assert_string_equal(spop_status_to_str(1234), "unknown status");
    assert_string_equal(spop_conn_state_to_str(SPOP_CS_READY), "READY");
    assert_string_equal(spop_conn_state_to_str(SPOP_CS_COUNT), "unknown");
}

/* ------------------------------------------------------------------------------------ */
/* Conformance table                                                                    */

#define MAX_OF 16

struct exp_frame {
    uint8_t type;
    uint64_t sid, fid;
    int status; /* AGENT-DISCONNECT: expected status-code; -1: do not check */
};

struct conf_case {
    const char *name;
    void (*build)(struct tb *t);
    uint32_t our_max;
    int hmode;
    enum spop_feed_result result;
    enum spop_conn_state state;
    enum spop_status status;
    size_t nframes;
    struct exp_frame frames[MAX_OF];
    /* extra checks on the decoded output, may be NULL */
    void (*check)(const struct spop_conn *c, const struct oframe *f, size_t n,
                  const struct hstate *h);
    /* bytes that must stay unconsumed (-1: all consumed) */
    long unconsumed;
};

static void b_hello26_notify(struct tb *t)
{
    hello_26(t);
    notify(t, 1, 1, SPOP_FLAG_FIN);
}

static void c_agent_hello(const struct spop_conn *c, const struct oframe *f, size_t n,
                          const struct hstate *h)
{
    (void)c;
    (void)h;
    assert_true(n >= 1);
    assert_int_equal(f[0].type, SPOP_FRM_AGENT_HELLO);
    assert_int_equal(f[0].flags, SPOP_FLAG_FIN);
    assert_kv_str(&f[0], "version", "2.0");
    assert_kv_str(&f[0], "capabilities", "pipelining");
}

static void c_hello26(const struct spop_conn *c, const struct oframe *f, size_t n,
                      const struct hstate *h)
{
    struct oaction a[16];
    size_t na;

    c_agent_hello(c, f, n, h);
    assert_int_equal(kv_uint(&f[0], "max-frame-size"), 16380);
    assert_int_equal(c->max_frame, 16380);
    assert_string_equal(c->engine_id, "371d3c51-c748-4cf9-8451-fd14e398d110");
    assert_int_equal(h->calls, 1);
    assert_string_equal(h->last_name, "lunaroute-classify");
    assert_int_equal(h->last_nargs, 3);
    assert_int_equal(f[1].flags, SPOP_FLAG_FIN);
    na = ack_actions(&f[1], a, 16);
    assert_int_equal(na, 3);
    assert_int_equal(a[0].type, 1);
    assert_int_equal(a[0].scope, SPOP_SCOPE_TXN);
    assert_string_equal(a[0].name, "route");
    assert_string_equal(a[0].value, "engine");
    assert_string_equal(a[1].name, "backend");
    assert_string_equal(a[1].value, "lr_engine");
    assert_string_equal(a[2].name, "provider");
    assert_string_equal(a[2].value, "");
    assert_int_equal(c->notify_in, 1);
    assert_int_equal(c->acks_out, 1);
}

static void b_hello3x_notify(struct tb *t)
{
    hello_3x(t);
    /* 3.x: stream ids are odd and frame ids start at 1 */
    notify(t, 3, 1, SPOP_FLAG_FIN);
}

static void c_hello3x(const struct spop_conn *c, const struct oframe *f, size_t n,
                      const struct hstate *h)
{
    c_agent_hello(c, f, n, h);
    assert_string_equal(c->engine_id, "lunaroute");
    assert_int_equal(h->last_sid, 3);
    assert_int_equal(h->last_fid, 1);
}

static void b_hc(struct tb *t)
{
    hello_hc(t);
}

static void c_hc(const struct spop_conn *c, const struct oframe *f, size_t n,
                 const struct hstate *h)
{
    c_agent_hello(c, f, n, h);
    assert_true(c->healthcheck);
}

static void b_hc_then_notify(struct tb *t)
{
    hello_hc(t);
    notify(t, 1, 1, SPOP_FLAG_FIN); /* must not be consumed nor answered */
}

static void hello_without(struct tb *t, const char *skip)
{
    tb_frame_begin(t, SPOP_FRM_HAPROXY_HELLO, SPOP_FLAG_FIN, 0, 0);
    if (strcmp(skip, "supported-versions") != 0)
        tb_kv_str(t, "supported-versions", "2.0");
    if (strcmp(skip, "max-frame-size") != 0)
        tb_kv_u32(t, "max-frame-size", 16380);
    if (strcmp(skip, "capabilities") != 0)
        tb_kv_str(t, "capabilities", "pipelining");
    tb_frame_end(t);
}

static void b_no_vsn(struct tb *t)
{
    hello_without(t, "supported-versions");
}

static void b_no_mfs(struct tb *t)
{
    hello_without(t, "max-frame-size");
}

static void b_no_cap(struct tb *t)
{
    hello_without(t, "capabilities");
}

static void hello_custom(struct tb *t, const char *vsn, uint32_t mfs, const char *caps)
{
    tb_frame_begin(t, SPOP_FRM_HAPROXY_HELLO, SPOP_FLAG_FIN, 0, 0);
    tb_kv_str(t, "supported-versions", vsn);
    tb_kv_u32(t, "max-frame-size", mfs);
    tb_kv_str(t, "capabilities", caps);
    tb_frame_end(t);
}

static void b_bad_vsn(struct tb *t)
{
    hello_custom(t, "1.0", 16380, "");
}

static void b_vsn_list(struct tb *t)
{
    hello_custom(t, " 3.0 , 2.0 ,1.0", 16380, "fragmentation, pipelining");
}

static void b_vsn_21(struct tb *t)
{
    hello_custom(t, "2.1", 16380, "");
}

static void b_vsn_20x(struct tb *t)
{
    hello_custom(t, "2.0x,12.0", 16380, "");
}

static void b_small_mfs(struct tb *t)
{
    hello_custom(t, "2.0", 100, "pipelining");
}

static void b_big_mfs(struct tb *t)
{
    hello_custom(t, "2.0", 65532, "pipelining");
}

static void c_big_mfs(const struct spop_conn *c, const struct oframe *f, size_t n,
                      const struct hstate *h)
{
    c_agent_hello(c, f, n, h);
    assert_int_equal(kv_uint(&f[0], "max-frame-size"), 4096);
    assert_int_equal(c->max_frame, 4096);
}

static void b_small_mfs_ok(struct tb *t)
{
    hello_custom(t, "2.0", 256, "pipelining");
}

static void c_small_mfs_ok(const struct spop_conn *c, const struct oframe *f, size_t n,
                           const struct hstate *h)
{
    c_agent_hello(c, f, n, h);
    assert_int_equal(kv_uint(&f[0], "max-frame-size"), 256);
    assert_int_equal(c->max_frame, 256);
}

static void b_too_big_prefix(struct tb *t)
{
    /* only the length prefix and the type: the body never arrives */
    tb_be32(t, 16381);
    tb_u8(t, SPOP_FRM_HAPROXY_HELLO);
}

static void b_too_big_after_hello(struct tb *t)
{
    hello_custom(t, "2.0", 1000, "pipelining");
    tb_be32(t, 1001);
}

static void b_len_zero(struct tb *t)
{
    tb_be32(t, 0);
}

static void b_len_small(struct tb *t)
{
    tb_be32(t, 6);
    tb_bytes(t, "\x01\x00\x00\x00\x01\x00", 6);
}

static void b_frag_notify(struct tb *t)
{
    hello_26(t);
    notify(t, 1, 1, 0);
}

static void b_abort_notify(struct tb *t)
{
    hello_26(t);
    notify(t, 1, 1, SPOP_FLAG_ABRT | SPOP_FLAG_FIN);
    notify(t, 1, 2, SPOP_FLAG_FIN);
}

static void b_notify_first(struct tb *t)
{
    notify(t, 1, 1, SPOP_FLAG_FIN);
}

static void b_hello_twice(struct tb *t)
{
    hello_26(t);
    hello_26(t);
}

static void b_notify_trunc_meta(struct tb *t)
{
    hello_26(t);
    /* NOTIFY whose frame ends inside the frame-id varint */
    tb_be32(t, 7);
    tb_u8(t, SPOP_FRM_NOTIFY);
    tb_be32(t, SPOP_FLAG_FIN);
    tb_u8(t, 1);
    tb_u8(t, 0xf5);                 /* needs a continuation byte that is not in the frame */
    notify(t, 1, 1, SPOP_FLAG_FIN); /* the next frame's bytes must not be used */
}

static void b_str_past_end(struct tb *t)
{
    hello_26(t);
    tb_frame_begin(t, SPOP_FRM_NOTIFY, SPOP_FLAG_FIN, 1, 1);
    tb_varint(t, 50); /* message name: 50 bytes announced, 4 present */
    tb_bytes(t, "abcd", 4);
    tb_frame_end(t);
    notify(t, 1, 2, SPOP_FLAG_FIN);
}

static void b_unknown_dtype(struct tb *t)
{
    hello_26(t);
    tb_frame_begin(t, SPOP_FRM_NOTIFY, SPOP_FLAG_FIN, 1, 1);
    tb_str(t, "m");
    tb_u8(t, 1);
    tb_str(t, "a");
    tb_u8(t, 12); /* reserved type */
    tb_frame_end(t);
}

static void b_unknown_ftype(struct tb *t)
{
    hello_26(t);
    tb_frame_begin(t, 42, SPOP_FLAG_FIN, 1, 1);
    tb_frame_end(t);
}

static void b_trailing_garbage(struct tb *t)
{
    hello_26(t);
    tb_frame_begin(t, SPOP_FRM_NOTIFY, SPOP_FLAG_FIN, 1, 1);
    tb_str(t, "m");
    tb_u8(t, 0);
    tb_u8(t, 0xff); /* a dangling byte: not a complete message */
    tb_frame_end(t);
}

static void b_nargs_missing(struct tb *t)
{
    hello_26(t);
    tb_frame_begin(t, SPOP_FRM_NOTIFY, SPOP_FLAG_FIN, 1, 1);
    tb_str(t, "m");
    tb_frame_end(t);
}

static void b_hello_garbage(struct tb *t)
{
    tb_frame_begin(t, SPOP_FRM_HAPROXY_HELLO, SPOP_FLAG_FIN, 0, 0);
    tb_kv_str(t, "supported-versions", "2.0");
    tb_kv_u32(t, "max-frame-size", 16380);
    tb_kv_str(t, "capabilities", "");
    tb_u8(t, 5); /* a key of 5 bytes, missing */
    tb_frame_end(t);
}

static void b_pipelined(struct tb *t)
{
    hello_26(t);
    notify(t, 1, 1, SPOP_FLAG_FIN);
    notify(t, 3, 1, SPOP_FLAG_FIN);
    notify(t, 5, 7, SPOP_FLAG_FIN);
    notify(t, 300, 70000, SPOP_FLAG_FIN);
}

static void b_discon(struct tb *t)
{
    hello_3x(t);
    discon(t, 2, "a timeout occurred");
    notify(t, 1, 1, SPOP_FLAG_FIN); /* after DISCONNECT: ignored */
}

static void c_discon(const struct spop_conn *c, const struct oframe *f, size_t n,
                     const struct hstate *h)
{
    (void)h;
    assert_int_equal(n, 2);
    assert_int_equal(kv_uint(&f[1], "status-code"), 0);
    assert_kv_str(&f[1], "message", "bye");
    assert_int_equal(f[1].flags, SPOP_FLAG_FIN);
    assert_int_equal(c->status, SPOP_ST_TIMEOUT);
}

static void b_notify_multi_msg(struct tb *t)
{
    hello_26(t);
    tb_frame_begin(t, SPOP_FRM_NOTIFY, SPOP_FLAG_FIN, 9, 2);
    /* message 1: 40 args (only SPOP_MAX_ARGS kept, the rest still validated) */
    tb_str(t, "many");
    tb_u8(t, 40);
    for (int i = 0; i < 40; i++) {
        tb_str(t, "x");
        tb_u8(t, SPOP_DATA_UINT64);
        tb_varint(t, (uint64_t)i * 1000003);
    }
    /* message 2: every data type */
    tb_str(t, "lunaroute-classify");
    tb_u8(t, 10);
    tb_str(t, "n");
    tb_u8(t, SPOP_DATA_NULL);
    tb_str(t, "b");
    tb_u8(t, 0x11);
    tb_str(t, "i32");
    tb_u8(t, SPOP_DATA_INT32);
    tb_varint(t, (uint64_t)-5);
    tb_str(t, "u32");
    tb_u8(t, SPOP_DATA_UINT32);
    tb_varint(t, 7);
    tb_str(t, "i64");
    tb_u8(t, SPOP_DATA_INT64);
    tb_varint(t, 1ULL << 40);
    tb_str(t, "u64");
    tb_u8(t, SPOP_DATA_UINT64);
    tb_varint(t, UINT64_MAX);
    tb_str(t, "ip4");
    tb_u8(t, SPOP_DATA_IPV4);
    tb_bytes(t, "\x0a\x00\x00\x01", 4);
    tb_str(t, "ip6");
    tb_u8(t, SPOP_DATA_IPV6);
    tb_bytes(t, "0123456789abcdef", 16);
    tb_str(t, "s");
    tb_u8(t, SPOP_DATA_STR);
    tb_str(t, "");
    tb_str(t, "bin");
    tb_u8(t, SPOP_DATA_BIN);
    tb_str(t, "\x01\x02");
    tb_frame_end(t);
}

static void c_multi_msg(const struct spop_conn *c, const struct oframe *f, size_t n,
                        const struct hstate *h)
{
    struct oaction a[16];
    (void)c;
    assert_int_equal(n, 2);
    assert_int_equal(h->calls, 2);
    assert_string_equal(h->last_name, "lunaroute-classify");
    assert_int_equal(h->last_nargs, 10);
    /* 3 + 3 actions from the two messages, in one ACK */
    assert_int_equal(ack_actions(&f[1], a, 16), 6);
}

static void b_decline(struct tb *t)
{
    hello_26(t);
    notify(t, 1, 1, SPOP_FLAG_FIN);
}

static void c_noop(const struct spop_conn *c, const struct oframe *f, size_t n,
                   const struct hstate *h)
{
    struct oaction a[4];
    (void)c;
    assert_int_equal(n, 2);
    assert_int_equal(h->calls, 1);
    assert_int_equal(ack_actions(&f[1], a, 4), 1);
    assert_int_equal(a[0].type, 2);
    assert_int_equal(a[0].scope, SPOP_SCOPE_TXN);
    assert_string_equal(a[0].name, "noop");
}

static void b_empty_notify(struct tb *t)
{
    hello_26(t);
    tb_frame_begin(t, SPOP_FRM_NOTIFY, SPOP_FLAG_FIN, 1, 1);
    tb_frame_end(t);
}

static void c_empty_notify(const struct spop_conn *c, const struct oframe *f, size_t n,
                           const struct hstate *h)
{
    c_noop(c, f, n, &(struct hstate){.calls = 1});
    assert_int_equal(h->calls, 0);
}

static void b_ack_too_big(struct tb *t)
{
    hello_custom(t, "2.0", 1024, "pipelining");
    notify(t, 1, 1, SPOP_FLAG_FIN);
}

static void c_ack_truncated(const struct spop_conn *c, const struct oframe *f, size_t n,
                            const struct hstate *h)
{
    struct oaction a[16];
    size_t na;
    (void)h;
    assert_int_equal(n, 2);
    assert_int_equal(c->max_frame, 1024);
    assert_true(f[1].flen <= 1024);
    na = ack_actions(&f[1], a, 16);
    /* 8 actions of 208 bytes each: only a prefix (4) fits in 1024 */
    assert_int_equal(na, 4);
    assert_string_equal(a[0].name, "v0");
    for (size_t i = 0; i < na; i++)
        assert_int_equal(a[i].type, 1);
}

static void c_ack_noop_only(const struct spop_conn *c, const struct oframe *f, size_t n,
                            const struct hstate *h)
{
    (void)h;
    assert_true(f[1].flen <= c->max_frame);
    c_noop(c, f, n, &(struct hstate){.calls = 1});
}

static void b_hello_nonzero_ids(struct tb *t)
{
    tb_frame_begin(t, SPOP_FRM_HAPROXY_HELLO, SPOP_FLAG_FIN, 1, 0);
    tb_kv_str(t, "supported-versions", "2.0");
    tb_kv_u32(t, "max-frame-size", 16380);
    tb_kv_str(t, "capabilities", "");
    tb_frame_end(t);
}

static void b_hello_no_fin(struct tb *t)
{
    tb_frame_begin(t, SPOP_FRM_HAPROXY_HELLO, 0, 0, 0);
    tb_kv_str(t, "supported-versions", "2.0");
    tb_kv_u32(t, "max-frame-size", 16380);
    tb_kv_str(t, "capabilities", "");
    tb_frame_end(t);
}

static void b_hello_bad_vsn_type(struct tb *t)
{
    tb_frame_begin(t, SPOP_FRM_HAPROXY_HELLO, SPOP_FLAG_FIN, 0, 0);
    tb_kv_u32(t, "supported-versions", 2);
    tb_kv_u32(t, "max-frame-size", 16380);
    tb_kv_str(t, "capabilities", "");
    tb_frame_end(t);
}

static void b_partial_notify(struct tb *t)
{
    hello_26(t);
    notify(t, 1, 1, SPOP_FLAG_FIN);
    t->len -= 3; /* the last 3 bytes have not arrived yet */
}

static void c_partial(const struct spop_conn *c, const struct oframe *f, size_t n,
                      const struct hstate *h)
{
    (void)f;
    (void)c;
    assert_int_equal(n, 1); /* AGENT-HELLO only */
    assert_int_equal(h->calls, 0);
}

static void b_unset_frame(struct tb *t)
{
    hello_26(t);
    tb_frame_begin(t, SPOP_FRM_UNSET, SPOP_FLAG_FIN, 1, 1);
    tb_frame_end(t);
}

#define AH                                                                                         \
    {                                                                                              \
        SPOP_FRM_AGENT_HELLO, 0, 0, -1                                                             \
    }
#define AD(st)                                                                                     \
    {                                                                                              \
        SPOP_FRM_AGENT_DISCON, 0, 0, st                                                            \
    }
#define ACK(s, f)                                                                                  \
    {                                                                                              \
        SPOP_FRM_ACK, s, f, -1                                                                     \
    }

static const struct conf_case conf_cases[] = {
    {"hello 2.6 + notify",
     b_hello26_notify,
     16380,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     2,
     {AH, ACK(1, 1)},
     c_hello26,
     -1},
    {"hello 3.x + notify",
     b_hello3x_notify,
     16380,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     2,
     {AH, ACK(3, 1)},
     c_hello3x,
     -1},
    {"health check",
     b_hc,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_NONE,
     1,
     {AH},
     c_hc,
     -1},
    {"health check then notify",
     b_hc_then_notify,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_NONE,
     1,
     {AH},
     c_hc,
     -2},
    {"missing supported-versions",
     b_no_vsn,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_NO_VSN,
     1,
     {AD(5)},
     NULL,
     -1},
    {"missing max-frame-size",
     b_no_mfs,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_NO_FRAME_SIZE,
     1,
     {AD(6)},
     NULL,
     -1},
    {"missing capabilities",
     b_no_cap,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_NO_CAP,
     1,
     {AD(7)},
     NULL,
     -1},
    {"version 1.0 only",
     b_bad_vsn,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_BAD_VSN,
     1,
     {AD(8)},
     NULL,
     -1},
    {"version list with spaces",
     b_vsn_list,
     16380,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     1,
     {AH},
     c_agent_hello,
     -1},
    {"version 2.1 implies 2.0",
     b_vsn_21,
     16380,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     1,
     {AH},
     c_agent_hello,
     -1},
    {"version look-alikes",
     b_vsn_20x,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_BAD_VSN,
     1,
     {AD(8)},
     NULL,
     -1},
    {"version wrong type",
     b_hello_bad_vsn_type,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     1,
     {AD(4)},
     NULL,
     -1},
    {"max-frame-size 100",
     b_small_mfs,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_BAD_FRAME_SIZE,
     1,
     {AD(9)},
     NULL,
     -1},
    {"max-frame-size 256 accepted",
     b_small_mfs_ok,
     16380,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     1,
     {AH},
     c_small_mfs_ok,
     -1},
    {"haproxy max bigger: negotiate down",
     b_big_mfs,
     4096,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     1,
     {AH},
     c_big_mfs,
     -1},
    {"too-big length before body",
     b_too_big_prefix,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_TOO_BIG,
     1,
     {AD(3)},
     NULL,
     5},
    {"too-big vs negotiated",
     b_too_big_after_hello,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_TOO_BIG,
     2,
     {AH, AD(3)},
     NULL,
     4},
    {"length 0",
     b_len_zero,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     1,
     {AD(4)},
     NULL,
     4},
    {"length too small for header",
     b_len_small,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     1,
     {AD(4)},
     NULL,
     10},
    {"fragmented notify",
     b_frag_notify,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_FRAG_NOT_SUPPORTED,
     2,
     {AH, AD(10)},
     NULL,
     -1},
    {"hello without FIN",
     b_hello_no_fin,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_FRAG_NOT_SUPPORTED,
     1,
     {AD(10)},
     NULL,
     -1},
    {"aborted notify ignored",
     b_abort_notify,
     16380,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     2,
     {AH, ACK(1, 2)},
     NULL,
     -1},
    {"notify before hello",
     b_notify_first,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     1,
     {AD(4)},
     NULL,
     -1},
    {"hello twice",
     b_hello_twice,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     2,
     {AH, AD(4)},
     NULL,
     -1},
    {"hello with stream-id 1",
     b_hello_nonzero_ids,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     1,
     {AD(4)},
     NULL,
     -1},
    {"truncated varint in metadata",
     b_notify_trunc_meta,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     2,
     {AH, AD(4)},
     NULL,
     -2},
    {"string length past frame end",
     b_str_past_end,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     2,
     {AH, AD(4)},
     NULL,
     -2},
    {"unknown data type",
     b_unknown_dtype,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     2,
     {AH, AD(4)},
     NULL,
     -1},
    {"unknown frame type",
     b_unknown_ftype,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     2,
     {AH, AD(4)},
     NULL,
     -1},
    {"UNSET frame without fragment",
     b_unset_frame,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     2,
     {AH, AD(4)},
     NULL,
     -1},
    {"trailing garbage in notify",
     b_trailing_garbage,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     2,
     {AH, AD(4)},
     NULL,
     -1},
    {"nb-args missing",
     b_nargs_missing,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     2,
     {AH, AD(4)},
     NULL,
     -1},
    {"trailing garbage in hello",
     b_hello_garbage,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_INVALID,
     1,
     {AD(4)},
     NULL,
     -1},
    {"pipelined notifies",
     b_pipelined,
     16380,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     5,
     {AH, ACK(1, 1), ACK(3, 1), ACK(5, 7), ACK(300, 70000)},
     NULL,
     -1},
    {"haproxy disconnect",
     b_discon,
     16380,
     0,
     SPOP_FEED_CLOSE,
     SPOP_CS_CLOSING,
     SPOP_ST_TIMEOUT,
     2,
     {AH, AD(0)},
     c_discon,
     -2},
    {"several messages, many args, all types",
     b_notify_multi_msg,
     16380,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     2,
     {AH, ACK(9, 2)},
     c_multi_msg,
     -1},
    {"handler declines: noop",
     b_decline,
     16380,
     1,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     2,
     {AH, ACK(1, 1)},
     c_noop,
     -1},
    {"empty notify: noop",
     b_empty_notify,
     16380,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     2,
     {AH, ACK(1, 1)},
     c_empty_notify,
     -1},
    {"ack truncated to max-frame-size",
     b_ack_too_big,
     16380,
     3,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     2,
     {AH, ACK(1, 1)},
     c_ack_truncated,
     -1},
    {"ack with no fitting action: noop",
     b_ack_too_big,
     16380,
     2,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     2,
     {AH, ACK(1, 1)},
     c_ack_noop_only,
     -1},
    {"partial frame waits",
     b_partial_notify,
     16380,
     0,
     SPOP_FEED_MORE,
     SPOP_CS_READY,
     SPOP_ST_NONE,
     1,
     {AH},
     c_partial,
     -3},
};

/* Feeds everything in one call (plus the leftovers once more) and checks the case. */
static void run_case(const struct conf_case *cc)
{
    static struct tb t;
    struct spop_conn c;
    struct lr_buf out = {0};
    struct hstate h = {.mode = cc->hmode};
    struct oframe f[MAX_OF];
    size_t consumed = 0, n;
    enum spop_feed_result r;

    print_message("case: %s\n", cc->name);
    memset(&t, 0, sizeof(t));
    cc->build(&t);
    spop_conn_init(&c, cc->our_max);
    r = spop_conn_feed(&c, t.b, t.len, &consumed, &out, handler, &h);
    assert_int_equal(r, cc->result);
    assert_int_equal(c.state, cc->state);
    assert_int_equal(c.status, cc->status);
    if (cc->unconsumed == -1) {
        assert_int_equal(consumed, t.len);
    } else if (cc->unconsumed >= 0) {
        assert_int_equal(t.len - consumed, (size_t)cc->unconsumed);
    } else {
        assert_true(consumed < t.len); /* something was left */
    }
    n = split_frames(out.data, out.len, f, MAX_OF);
    assert_int_equal(n, cc->nframes);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(f[i].type, cc->frames[i].type);
        assert_true(f[i].sid == cc->frames[i].sid);
        assert_true(f[i].fid == cc->frames[i].fid);
        assert_true(f[i].flags & SPOP_FLAG_FIN);
        assert_true(f[i].flen <= c.max_frame);
        if (f[i].type == SPOP_FRM_AGENT_DISCON) {
            assert_true(f[i].flen <= SPOP_MIN_FRAME_SIZE || c.state == SPOP_CS_READY);
            if (cc->frames[i].status >= 0)
                assert_int_equal(kv_uint(&f[i], "status-code"), cc->frames[i].status);
            (void)kv_find(&f[i], "message", NULL, NULL, NULL);
        }
    }
    if (cc->check)
        cc->check(&c, f, n, &h);

    /* after CLOSING nothing more is consumed or produced */
    if (c.state == SPOP_CS_CLOSING) {
        size_t before = out.len, cons2 = 99;
        assert_int_equal(spop_conn_feed(&c, t.b, t.len, &cons2, &out, handler, &h),
                         SPOP_FEED_CLOSE);
        assert_int_equal(cons2, 0);
        assert_int_equal(out.len, before);
    }
    lr_buf_free(&out);
}

static void test_conformance_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(conf_cases) / sizeof(conf_cases[0]); i++)
        run_case(&conf_cases[i]);
}

/* Same table, fed one byte at a time the way a slow socket would deliver it: the result
 * (frames, state, status) must be identical. */
static void run_case_bytewise(const struct conf_case *cc)
{
    static struct tb t;
    struct spop_conn c1, c2;
    struct lr_buf o1 = {0}, o2 = {0};
    struct hstate h1 = {.mode = cc->hmode}, h2 = {.mode = cc->hmode};
    size_t consumed, pos = 0, pending = 0;
    enum spop_feed_result r1, r2 = SPOP_FEED_MORE;
    uint8_t *buf;

    memset(&t, 0, sizeof(t));
    cc->build(&t);
    spop_conn_init(&c1, cc->our_max);
    spop_conn_init(&c2, cc->our_max);
    r1 = spop_conn_feed(&c1, t.b, t.len, &consumed, &o1, handler, &h1);

    /* exact-size heap copy so ASan catches any read past the bytes received */
    while (pos < t.len && r2 == SPOP_FEED_MORE) {
        pending++;
        buf = malloc(pending);
        assert_non_null(buf);
        memcpy(buf, t.b + pos, pending);
        r2 = spop_conn_feed(&c2, buf, pending, &consumed, &o2, handler, &h2);
        free(buf);
        assert_true(consumed <= pending);
        pos += consumed;
        pending -= consumed;
        if (pos + pending >= t.len)
            break;
    }
    assert_int_equal(r1, r2);
    assert_int_equal(c1.state, c2.state);
    assert_int_equal(c1.status, c2.status);
    assert_int_equal(o1.len, o2.len);
    assert_memory_equal(o1.data, o2.data, o1.len);
    assert_int_equal(h1.calls, h2.calls);
    lr_buf_free(&o1);
    lr_buf_free(&o2);
}

static void test_conformance_bytewise(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(conf_cases) / sizeof(conf_cases[0]); i++)
        run_case_bytewise(&conf_cases[i]);
}

/* Handshake + NOTIFY fed one byte per call with a caller-side buffer, as server.c does. */
static void test_handshake_one_byte_at_a_time(void **state)
{
    (void)state;
    static struct tb t;
    uint8_t pend[512];
    size_t npend = 0, consumed;
    struct spop_conn c;
    struct lr_buf out = {0};
    struct hstate h = {0};
    struct oframe f[4];

    memset(&t, 0, sizeof(t));
    hello_3x(&t);
    notify(&t, 1, 1, SPOP_FLAG_FIN);
    notify(&t, 3, 1, SPOP_FLAG_FIN);
    spop_conn_init(&c, 16380);
    for (size_t i = 0; i < t.len; i++) {
        pend[npend++] = t.b[i];
        assert_int_equal(spop_conn_feed(&c, pend, npend, &consumed, &out, handler, &h),
                         SPOP_FEED_MORE);
        memmove(pend, pend + consumed, npend - consumed);
        npend -= consumed;
    }
    assert_int_equal(npend, 0);
    assert_int_equal(split_frames(out.data, out.len, f, 4), 3);
    assert_int_equal(f[0].type, SPOP_FRM_AGENT_HELLO);
    assert_int_equal(f[1].type, SPOP_FRM_ACK);
    assert_int_equal(f[1].sid, 1);
    assert_int_equal(f[2].sid, 3);
    assert_int_equal(h.calls, 2);
    lr_buf_free(&out);
}

/* Every prefix of a valid stream: need-more, no output beyond the complete frames, and no
 * read past the prefix (the prefix sits right before a PROT_NONE guard page). */
static void test_every_prefix(void **state)
{
    (void)state;
    static struct tb t;
    long pg = sysconf(_SC_PAGESIZE);
    size_t region;
    uint8_t *mem;
    size_t frame_ends[8], nends = 0, off = 0;

    memset(&t, 0, sizeof(t));
    hello_26(&t);
    notify(&t, 1, 1, SPOP_FLAG_FIN);
    notify(&t, 3, 2, SPOP_FLAG_FIN);
    discon(&t, 0, "normal");
    while (off < t.len) {
        uint32_t fl = (uint32_t)t.b[off] << 24 | (uint32_t)t.b[off + 1] << 16 |
                      (uint32_t)t.b[off + 2] << 8 | t.b[off + 3];
        off += 4 + fl;
        frame_ends[nends++] = off;
    }
    assert_int_equal(nends, 4);

    region = ((t.len + (size_t)pg - 1) / (size_t)pg) * (size_t)pg;
    mem =
        mmap(NULL, region + (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);
    assert_int_equal(mprotect(mem + region, (size_t)pg, PROT_NONE), 0);

    for (size_t plen = 0; plen <= t.len; plen++) {
        uint8_t *in = mem + region - plen;
        struct spop_conn c;
        struct lr_buf out = {0};
        struct hstate h = {0};
        struct oframe f[8];
        size_t consumed = 0, complete = 0, want_consumed = 0, n;
        enum spop_feed_result r;

        memcpy(in, t.b, plen);
        spop_conn_init(&c, 16380);
        r = spop_conn_feed(&c, in, plen, &consumed, &out, handler, &h);
        for (size_t i = 0; i < nends; i++)
            if (frame_ends[i] <= plen) {
                complete++;
                want_consumed = frame_ends[i];
            }
        assert_int_equal(consumed, want_consumed);
        n = split_frames(out.data, out.len, f, 8);
        /* HELLO->AGENT-HELLO, 2 NOTIFY->ACK, DISCON->AGENT-DISCON: one answer per frame */
        assert_int_equal(n, complete);
        if (complete == nends) {
            assert_int_equal(r, SPOP_FEED_CLOSE);
        } else {
            assert_int_equal(r, SPOP_FEED_MORE);
            assert_int_equal(c.state, complete ? SPOP_CS_READY : SPOP_CS_WAIT_HELLO);
        }
        lr_buf_free(&out);
    }
    munmap(mem, region + (size_t)pg);
}

static void test_disconnect_api(void **state)
{
    (void)state;
    struct spop_conn c;
    struct lr_buf out = {0};
    struct oframe f[2];
    char longmsg[1000];
    size_t consumed;
    static struct tb t;

    /* before the handshake: the frame stays within 256 bytes even with a long message */
    memset(longmsg, 'x', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = 0;
    spop_conn_init(&c, 16380);
    assert_int_equal(spop_conn_disconnect(&c, SPOP_ST_NONE, longmsg, &out), 0);
    assert_int_equal(c.state, SPOP_CS_CLOSING);
    assert_int_equal(split_frames(out.data, out.len, f, 2), 1);
    assert_int_equal(f[0].type, SPOP_FRM_AGENT_DISCON);
    assert_int_equal(f[0].sid, 0);
    assert_int_equal(f[0].fid, 0);
    assert_int_equal(f[0].flags, SPOP_FLAG_FIN);
    assert_true(f[0].flen <= SPOP_MIN_FRAME_SIZE);
    assert_true(f[0].flen >= SPOP_MIN_FRAME_SIZE - 2);
    assert_int_equal(kv_uint(&f[0], "status-code"), 0);
    /* a second call does not add a second frame */
    assert_int_equal(spop_conn_disconnect(&c, SPOP_ST_IO, "x", &out), 0);
    assert_int_equal(split_frames(out.data, out.len, f, 2), 1);
    /* feeding after CLOSING consumes nothing */
    memset(&t, 0, sizeof(t));
    hello_26(&t);
    assert_int_equal(spop_conn_feed(&c, t.b, t.len, &consumed, &out, handler, NULL),
                     SPOP_FEED_CLOSE);
    assert_int_equal(consumed, 0);
    lr_buf_free(&out);

    /* after the handshake: message kept whole (fits), status and NULL message */
    spop_conn_init(&c, 16380);
    memset(&t, 0, sizeof(t));
    hello_26(&t);
    assert_int_equal(spop_conn_feed(&c, t.b, t.len, &consumed, &out, handler, NULL),
                     SPOP_FEED_MORE);
    lr_buf_reset(&out);
    assert_int_equal(spop_conn_disconnect(&c, SPOP_ST_TIMEOUT, NULL, &out), 0);
    assert_int_equal(split_frames(out.data, out.len, f, 2), 1);
    assert_int_equal(kv_uint(&f[0], "status-code"), 2);
    assert_kv_str(&f[0], "message", "");
    assert_int_equal(c.status, SPOP_ST_TIMEOUT);
    lr_buf_free(&out);
}

/* The init clamps our size to the protocol minimum. */
static void test_init_clamp(void **state)
{
    (void)state;
    struct spop_conn c;
    spop_conn_init(&c, 10);
    assert_int_equal(c.our_max_frame, SPOP_MIN_FRAME_SIZE);
    assert_int_equal(c.state, SPOP_CS_WAIT_HELLO);
}

int main(void)
{
    memset(big_value, 'v', sizeof(big_value));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint_roundtrip),
        cmocka_unit_test(test_varint_invalid),
        cmocka_unit_test(test_data_types),
        cmocka_unit_test(test_data_invalid),
        cmocka_unit_test(test_to_str),
        cmocka_unit_test(test_conformance_table),
        cmocka_unit_test(test_conformance_bytewise),
        cmocka_unit_test(test_handshake_one_byte_at_a_time),
        cmocka_unit_test(test_every_prefix),
        cmocka_unit_test(test_disconnect_api),
        cmocka_unit_test(test_init_clamp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
