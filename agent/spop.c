/* SPOP 2.0 codec and per-connection protocol core (agent side).
 *
 * Everything here works on (p, end) pointers over bytes that are already in memory: no I/O,
 * no logging, and the only allocation is the growth of the caller's output buffer, bounded by
 * the frame size limit per answer. Every length read from the wire is checked against the
 * bytes left in the frame before it is used.
 *
 * Compatibility notes (see the report in the commit for details):
 * - HAProxy 2.6 (flt_spoe.c) and 3.1+ (mux_spop.c) both send HAPROXY-HELLO with
 *   stream-id 0, frame-id 0 and FIN, "supported-versions" "2.0", "max-frame-size" (uint32),
 *   "capabilities" (2.6: "pipelining,async"; 3.x: "pipelining" or ""), optional "engine-id";
 *   the 3.x health check adds "healthcheck" = true and has no engine-id.
 * - 3.x rejects any agent frame without FIN (fragmentation not supported), an ACK with
 *   stream-id 0, and any frame longer than the negotiated max-frame-size; it checks that
 *   our max-frame-size is >= 256 and <= its own.
 */
#include "spop.h"

#include <errno.h>
#include <string.h>

/* Frame header: type (1) + flags (4) + stream-id (varint) + frame-id (varint). */
#define SPOP_HDR_MIN    7u
#define SPOP_HDR_MAX    (1u + 4u + 10u + 10u)
#define SPOP_VARINT_MAX 10u

/* ---- enum names ---- */

const char *spop_frame_type_to_str(unsigned t)
{
    switch (t) {
    case SPOP_FRM_UNSET:
        return "UNSET";
    case SPOP_FRM_HAPROXY_HELLO:
        return "HAPROXY-HELLO";
    case SPOP_FRM_HAPROXY_DISCON:
        return "HAPROXY-DISCONNECT";
    case SPOP_FRM_NOTIFY:
        return "NOTIFY";
    case SPOP_FRM_AGENT_HELLO:
        return "AGENT-HELLO";
    case SPOP_FRM_AGENT_DISCON:
        return "AGENT-DISCONNECT";
    case SPOP_FRM_ACK:
        return "ACK";
    default:
        return "unknown";
    }
}

const char *spop_status_to_str(unsigned st)
{
    switch (st) {
    case SPOP_ST_NONE:
        return "normal";
    case SPOP_ST_IO:
        return "I/O error";
    case SPOP_ST_TIMEOUT:
        return "a timeout occurred";
    case SPOP_ST_TOO_BIG:
        return "frame is too big";
    case SPOP_ST_INVALID:
        return "invalid frame received";
    case SPOP_ST_NO_VSN:
        return "version value not found";
    case SPOP_ST_NO_FRAME_SIZE:
        return "max-frame-size value not found";
    case SPOP_ST_NO_CAP:
        return "capabilities value not found";
    case SPOP_ST_BAD_VSN:
        return "unsupported version";
    case SPOP_ST_BAD_FRAME_SIZE:
        return "max-frame-size too big or too small";
    case SPOP_ST_FRAG_NOT_SUPPORTED:
        return "fragmentation not supported";
    case SPOP_ST_INTERLACED_FRAMES:
        return "invalid interlaced frames";
    case SPOP_ST_FRAMEID_NOTFOUND:
        return "frame-id not found";
    case SPOP_ST_RES:
        return "resource allocation error";
    case SPOP_ST_UNKNOWN:
        return "an unknown error occurred";
    default:
        return "unknown status";
    }
}

const char *spop_conn_state_to_str(unsigned st)
{
    switch (st) {
    case SPOP_CS_WAIT_HELLO:
        return "WAIT_HELLO";
    case SPOP_CS_READY:
        return "READY";
    case SPOP_CS_CLOSING:
        return "CLOSING";
    default:
        return "unknown";
    }
}

/* ---- codec ---- */

int spop_varint_encode(uint64_t v, uint8_t **p, const uint8_t *end)
{
    uint8_t *q = *p;

    if (q >= end)
        return SPOP_ERR_TRUNC;
    if (v < 240) {
        *q++ = (uint8_t)v;
        *p = q;
        return SPOP_OK;
    }
    *q++ = (uint8_t)v | 240;
    v = (v - 240) >> 4;
    while (v >= 128) {
        if (q >= end)
            return SPOP_ERR_TRUNC;
        *q++ = (uint8_t)v | 128;
        v = (v - 128) >> 7;
    }
    if (q >= end)
        return SPOP_ERR_TRUNC;
    *q++ = (uint8_t)v;
    *p = q;
    return SPOP_OK;
}

int spop_varint_decode(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    const uint8_t *q = *p;
    uint64_t val;
    unsigned shift = 4;

    if (q >= end)
        return SPOP_ERR_TRUNC;
    val = *q++;
    if (val >= 240) {
        for (unsigned n = 1;; n++) {
            uint64_t b, term;

            if (n >= SPOP_VARINT_MAX)
                return SPOP_ERR_INVALID; /* longer than any uint64 encoding */
            if (q >= end)
                return SPOP_ERR_TRUNC;
            b = *q++;
            /* shift <= 60 here; the term must fit and the sum must not wrap */
            if (b > (UINT64_MAX >> shift))
                return SPOP_ERR_INVALID;
            term = b << shift;
            if (val > UINT64_MAX - term)
                return SPOP_ERR_INVALID;
            val += term;
            if (b < 128)
                break;
            shift += 7;
        }
    }
    *v = val;
    *p = q;
    return SPOP_OK;
}

/* Bytes needed to encode v as a varint. */
static size_t varint_len(uint64_t v)
{
    size_t n = 1;

    if (v < 240)
        return 1;
    v = (v - 240) >> 4;
    while (v >= 128) {
        n++;
        v = (v - 128) >> 7;
    }
    return n + 1;
}

int spop_str_encode(const char *s, size_t len, uint8_t **p, const uint8_t *end)
{
    uint8_t *q = *p;

    if (spop_varint_encode(len, &q, end) != SPOP_OK)
        return SPOP_ERR_TRUNC;
    if ((size_t)(end - q) < len)
        return SPOP_ERR_TRUNC;
    if (len)
        memcpy(q, s, len);
    *p = q + len;
    return SPOP_OK;
}

int spop_str_decode(const uint8_t **p, const uint8_t *end, const char **s, size_t *len)
{
    const uint8_t *q = *p;
    uint64_t n;
    int rc = spop_varint_decode(&q, end, &n);

    if (rc != SPOP_OK)
        return rc;
    if (n > (uint64_t)(end - q))
        return SPOP_ERR_TRUNC;
    *s = (const char *)q;
    *len = (size_t)n;
    *p = q + n;
    return SPOP_OK;
}

int spop_data_encode(const struct spop_data *d, uint8_t **p, const uint8_t *end)
{
    uint8_t *q = *p;
    int rc = SPOP_OK;

    if (q >= end)
        return SPOP_ERR_TRUNC;
    switch (d->type) {
    case SPOP_DATA_NULL:
        *q++ = SPOP_DATA_NULL;
        break;
    case SPOP_DATA_BOOL:
        *q++ = SPOP_DATA_BOOL | (d->u.b ? 0x10 : 0);
        break;
    case SPOP_DATA_INT32:
    case SPOP_DATA_INT64:
        *q++ = (uint8_t)d->type;
        rc = spop_varint_encode((uint64_t)d->u.i, &q, end);
        break;
    case SPOP_DATA_UINT32:
    case SPOP_DATA_UINT64:
        *q++ = (uint8_t)d->type;
        rc = spop_varint_encode(d->u.u, &q, end);
        break;
    case SPOP_DATA_IPV4:
    case SPOP_DATA_IPV6: {
        size_t n = d->type == SPOP_DATA_IPV4 ? 4 : 16;
        *q++ = (uint8_t)d->type;
        if ((size_t)(end - q) < n)
            return SPOP_ERR_TRUNC;
        memcpy(q, d->u.ip, n);
        q += n;
        break;
    }
    case SPOP_DATA_STR:
    case SPOP_DATA_BIN:
        *q++ = (uint8_t)d->type;
        rc = spop_str_encode(d->u.str.ptr, d->u.str.len, &q, end);
        break;
    default:
        return SPOP_ERR_INVALID;
    }
    if (rc != SPOP_OK)
        return rc;
    *p = q;
    return SPOP_OK;
}

int spop_data_decode(const uint8_t **p, const uint8_t *end, struct spop_data *d)
{
    const uint8_t *q = *p;
    struct spop_data tmp;
    uint64_t v;
    int rc = SPOP_OK;
    unsigned type, flags;

    if (q >= end)
        return SPOP_ERR_TRUNC;
    type = *q & 0x0f;
    flags = *q & 0xf0;
    q++;
    memset(&tmp, 0, sizeof(tmp));
    switch (type) {
    case SPOP_DATA_NULL:
        tmp.type = SPOP_DATA_NULL;
        break;
    case SPOP_DATA_BOOL:
        tmp.type = SPOP_DATA_BOOL;
        tmp.u.b = (flags & 0x10) != 0;
        break;
    case SPOP_DATA_INT32:
    case SPOP_DATA_INT64:
        tmp.type = (enum spop_data_type)type;
        rc = spop_varint_decode(&q, end, &v);
        /* HAProxy encodes negative values as their 64-bit two's complement */
        tmp.u.i = (int64_t)v;
        break;
    case SPOP_DATA_UINT32:
    case SPOP_DATA_UINT64:
        tmp.type = (enum spop_data_type)type;
        rc = spop_varint_decode(&q, end, &v);
        tmp.u.u = v;
        break;
    case SPOP_DATA_IPV4:
    case SPOP_DATA_IPV6: {
        size_t n = type == SPOP_DATA_IPV4 ? 4 : 16;
        tmp.type = (enum spop_data_type)type;
        if ((size_t)(end - q) < n)
            return SPOP_ERR_TRUNC;
        memcpy(tmp.u.ip, q, n);
        q += n;
        break;
    }
    case SPOP_DATA_STR:
    case SPOP_DATA_BIN:
        tmp.type = (enum spop_data_type)type;
        rc = spop_str_decode(&q, end, &tmp.u.str.ptr, &tmp.u.str.len);
        break;
    default:
        return SPOP_ERR_INVALID; /* types 10..15 are reserved */
    }
    if (rc != SPOP_OK)
        return rc;
    *d = tmp;
    *p = q;
    return SPOP_OK;
}

/* ---- frame writing ---- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* A frame being built directly in the output buffer: `room` bytes are reserved, the
 * 4-byte length is patched in by frame_end(). */
struct frame_w {
    struct lr_buf *out;
    uint8_t *start; /* the length prefix */
    uint8_t *p;
    uint8_t *end;
};

static int frame_begin(struct frame_w *w, struct lr_buf *out, size_t room, uint8_t type,
                       uint64_t sid, uint64_t fid)
{
    if (lr_buf_reserve(out, room + 4) < 0)
        return -ENOMEM;
    w->out = out;
    w->start = out->data + out->len;
    w->p = w->start + 4;
    w->end = w->start + 4 + room;
    *w->p++ = type;
    put_be32(w->p, SPOP_FLAG_FIN);
    w->p += 4;
    /* room >= SPOP_HDR_MAX always (callers reserve it), so these cannot fail */
    if (spop_varint_encode(sid, &w->p, w->end) != SPOP_OK ||
        spop_varint_encode(fid, &w->p, w->end) != SPOP_OK)
        return -ENOMEM;
    return 0;
}

static void frame_end(struct frame_w *w)
{
    size_t flen = (size_t)(w->p - w->start) - 4;

    put_be32(w->start, (uint32_t)flen);
    w->out->len += flen + 4;
    w->out->data[w->out->len] = 0; /* lr_buf keeps a NUL past len */
}

static int put_kv_str(struct frame_w *w, const char *key, const char *val, size_t val_len)
{
    struct spop_data d = {.type = SPOP_DATA_STR};

    d.u.str.ptr = val;
    d.u.str.len = val_len;
    if (spop_str_encode(key, strlen(key), &w->p, w->end) != SPOP_OK)
        return -1;
    return spop_data_encode(&d, &w->p, w->end) == SPOP_OK ? 0 : -1;
}

static int put_kv_u32(struct frame_w *w, const char *key, uint32_t val)
{
    struct spop_data d = {.type = SPOP_DATA_UINT32};

    d.u.u = val;
    if (spop_str_encode(key, strlen(key), &w->p, w->end) != SPOP_OK)
        return -1;
    return spop_data_encode(&d, &w->p, w->end) == SPOP_OK ? 0 : -1;
}

/* Size of a KV item with a string key and an encoded value of `val_size` bytes. */
static size_t kv_size(const char *key, size_t val_size)
{
    size_t k = strlen(key);
    return varint_len(k) + k + val_size;
}

int spop_conn_disconnect(struct spop_conn *c, enum spop_status status, const char *msg,
                         struct lr_buf *out)
{
    static const char key_status[] = "status-code";
    static const char key_msg[] = "message";
    struct frame_w w;
    size_t limit, fixed, msg_len, room;

    if (c->state == SPOP_CS_CLOSING)
        return 0; /* already said goodbye */
    if (!msg)
        msg = "";
    msg_len = strlen(msg);
    /* Before the handshake we do not know HAProxy's limit: stay within the protocol's
     * minimum, which every peer accepts. */
    limit = c->state == SPOP_CS_READY ? c->max_frame : SPOP_MIN_FRAME_SIZE;
    fixed =
        1 + 4 + 1 + 1 + kv_size(key_status, 1 + varint_len((uint32_t)status)) + kv_size(key_msg, 1);
    /* message: type byte already counted; varint length + bytes must fit in the rest */
    while (msg_len && fixed + varint_len(msg_len) + msg_len > limit)
        msg_len--;
    room = fixed + varint_len(msg_len) + msg_len;

    c->state = SPOP_CS_CLOSING;
    c->status = status;
    if (frame_begin(&w, out, room, SPOP_FRM_AGENT_DISCON, 0, 0) < 0)
        return -ENOMEM;
    if (put_kv_u32(&w, key_status, (uint32_t)status) < 0 ||
        put_kv_str(&w, key_msg, msg, msg_len) < 0)
        return -ENOMEM; /* cannot happen: room was computed above */
    frame_end(&w);
    return 0;
}

/* Error exit of the feed loop: queue the DISCONNECT (best effort) and close. */
static enum spop_feed_result fail(struct spop_conn *c, enum spop_status st, struct lr_buf *out)
{
    (void)spop_conn_disconnect(c, st, spop_status_to_str(st), out);
    c->state = SPOP_CS_CLOSING;
    c->status = st;
    return SPOP_FEED_CLOSE;
}

/* ---- HELLO ---- */

static bool key_is(const char *k, size_t klen, const char *lit)
{
    size_t n = strlen(lit);
    return klen == n && memcmp(k, lit, n) == 0;
}

/* "supported-versions" is a comma-separated list of "Major.Minor" with optional spaces.
 * Announcing a major version means all its minor versions are supported, so any 2.x
 * lets us speak 2.0. */
static bool versions_have_2(const char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        size_t a, b;

        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        a = i;
        while (i < len && s[i] != ',')
            i++;
        b = i;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
            b--;
        /* exactly "2.<digits>" */
        if (b - a >= 3 && s[a] == '2' && s[a + 1] == '.') {
            size_t j = a + 2;
            while (j < b && s[j] >= '0' && s[j] <= '9')
                j++;
            if (j == b)
                return true;
        }
        i++; /* skip the comma */
    }
    return false;
}

static bool is_int_type(enum spop_data_type t)
{
    return t == SPOP_DATA_INT32 || t == SPOP_DATA_UINT32 || t == SPOP_DATA_INT64 ||
           t == SPOP_DATA_UINT64;
}

static enum spop_feed_result handle_hello(struct spop_conn *c, const uint8_t *p, const uint8_t *end,
                                          struct lr_buf *out)
{
    static const char caps[] = "pipelining";
    bool have_vsn = false, vsn_ok = false, have_mfs = false, have_cap = false, hc = false;
    uint64_t mfs = 0;
    bool mfs_neg = false;
    struct frame_w w;
    size_t room;

    while (p < end) {
        const char *k;
        size_t klen;
        struct spop_data d;

        if (spop_str_decode(&p, end, &k, &klen) != SPOP_OK ||
            spop_data_decode(&p, end, &d) != SPOP_OK)
            return fail(c, SPOP_ST_INVALID, out);
        if (key_is(k, klen, "supported-versions")) {
            if (d.type != SPOP_DATA_STR)
                return fail(c, SPOP_ST_INVALID, out);
            have_vsn = true;
            vsn_ok = versions_have_2(d.u.str.ptr, d.u.str.len);
        } else if (key_is(k, klen, "max-frame-size")) {
            if (!is_int_type(d.type))
                return fail(c, SPOP_ST_INVALID, out);
            have_mfs = true;
            if ((d.type == SPOP_DATA_INT32 || d.type == SPOP_DATA_INT64) && d.u.i < 0)
                mfs_neg = true;
            else
                mfs = d.type == SPOP_DATA_INT32 || d.type == SPOP_DATA_INT64 ? (uint64_t)d.u.i
                                                                             : d.u.u;
        } else if (key_is(k, klen, "capabilities")) {
            if (d.type != SPOP_DATA_STR)
                return fail(c, SPOP_ST_INVALID, out);
            have_cap = true; /* we use none of HAProxy's capabilities */
        } else if (key_is(k, klen, "healthcheck")) {
            if (d.type == SPOP_DATA_BOOL)
                hc = d.u.b;
        } else if (key_is(k, klen, "engine-id")) {
            if (d.type == SPOP_DATA_STR) {
                size_t n =
                    d.u.str.len < sizeof(c->engine_id) - 1 ? d.u.str.len : sizeof(c->engine_id) - 1;
                for (size_t i = 0; i < n; i++) {
                    unsigned char ch = (unsigned char)d.u.str.ptr[i];
                    c->engine_id[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
                }
                c->engine_id[n] = 0;
            }
        }
        /* unknown keys are ignored (SPOE.txt: "silently ignored, when possible") */
    }

    if (!have_vsn)
        return fail(c, SPOP_ST_NO_VSN, out);
    if (!have_mfs)
        return fail(c, SPOP_ST_NO_FRAME_SIZE, out);
    if (!have_cap)
        return fail(c, SPOP_ST_NO_CAP, out);
    if (!vsn_ok)
        return fail(c, SPOP_ST_BAD_VSN, out);
    if (mfs_neg || mfs < SPOP_MIN_FRAME_SIZE)
        return fail(c, SPOP_ST_BAD_FRAME_SIZE, out);

    c->max_frame = mfs < c->our_max_frame ? (uint32_t)mfs : c->our_max_frame;
    c->healthcheck = hc;

    room = 1 + 4 + 1 + 1 + kv_size("version", 1 + 1 + 3) +
           kv_size("max-frame-size", 1 + varint_len(c->max_frame)) +
           kv_size("capabilities", 1 + 1 + sizeof(caps) - 1);
    if (frame_begin(&w, out, room, SPOP_FRM_AGENT_HELLO, 0, 0) < 0 ||
        put_kv_str(&w, "version", "2.0", 3) < 0 ||
        put_kv_u32(&w, "max-frame-size", c->max_frame) < 0 ||
        put_kv_str(&w, "capabilities", caps, sizeof(caps) - 1) < 0) {
        c->state = SPOP_CS_CLOSING;
        c->status = SPOP_ST_RES;
        return SPOP_FEED_CLOSE;
    }
    frame_end(&w);

    if (hc) {
        /* Health check: AGENT-HELLO, then close without DISCONNECT (SPOE.txt 3.2.5). */
        c->state = SPOP_CS_CLOSING;
        c->status = SPOP_ST_NONE;
        return SPOP_FEED_CLOSE;
    }
    c->state = SPOP_CS_READY;
    return SPOP_FEED_MORE;
}

/* ---- HAPROXY-DISCONNECT ---- */

static enum spop_feed_result handle_discon(struct spop_conn *c, const uint8_t *p,
                                           const uint8_t *end, struct lr_buf *out)
{
    uint64_t code = SPOP_ST_NONE;

    while (p < end) {
        const char *k;
        size_t klen;
        struct spop_data d;

        if (spop_str_decode(&p, end, &k, &klen) != SPOP_OK ||
            spop_data_decode(&p, end, &d) != SPOP_OK)
            return fail(c, SPOP_ST_INVALID, out);
        if (key_is(k, klen, "status-code") && is_int_type(d.type))
            code = d.u.u; /* same bits for the signed types */
        /* "message" is informative only */
    }
    (void)spop_conn_disconnect(c, SPOP_ST_NONE, "bye", out);
    /* Record HAProxy's reason; codes outside the known table are folded into UNKNOWN so the
     * enum only ever holds declared values. */
    c->status = code <= SPOP_ST_RES ? (enum spop_status)code : SPOP_ST_UNKNOWN;
    c->state = SPOP_CS_CLOSING;
    return SPOP_FEED_CLOSE;
}

/* ---- NOTIFY ---- */

/* Walks the LIST-OF-MESSAGES in [p, end). With fn == NULL only validates; otherwise calls
 * fn once per message. Returns SPOP_OK or an error (any error means an invalid frame). */
static int walk_messages(const uint8_t *p, const uint8_t *end, struct spop_message *msg,
                         spop_notify_fn fn, void *ud, struct spop_actions *acts)
{
    while (p < end) {
        unsigned nargs;

        if (spop_str_decode(&p, end, &msg->name, &msg->name_len) != SPOP_OK)
            return SPOP_ERR_INVALID;
        if (p >= end)
            return SPOP_ERR_TRUNC;
        nargs = *p++;
        msg->nargs = 0;
        for (unsigned i = 0; i < nargs; i++) {
            struct spop_kv kv;

            if (spop_str_decode(&p, end, &kv.name, &kv.name_len) != SPOP_OK ||
                spop_data_decode(&p, end, &kv.val) != SPOP_OK)
                return SPOP_ERR_INVALID;
            if (msg->nargs < SPOP_MAX_ARGS)
                msg->args[msg->nargs++] = kv;
        }
        if (fn) {
            size_t before = acts->n;
            if (fn(ud, msg, acts) < 0 || acts->n > SPOP_MAX_ACTIONS)
                acts->n = before; /* declined (or overflowed): drop what it added */
        }
    }
    return SPOP_OK;
}

static size_t action_size(const struct spop_action *a)
{
    return 1 + 1 + 1 + varint_len(a->name_len) + a->name_len + 1 + varint_len(a->value_len) +
           a->value_len;
}

static bool action_ok(const struct spop_action *a)
{
    return (unsigned)a->scope <= SPOP_SCOPE_RES && (a->name || !a->name_len) &&
           (a->value || !a->value_len);
}

static enum spop_feed_result handle_notify(struct spop_conn *c, uint64_t sid, uint64_t fid,
                                           const uint8_t *p, const uint8_t *end, struct lr_buf *out,
                                           spop_notify_fn fn, void *ud)
{
    static const char noop[] = "noop";
    struct spop_message msg;
    struct spop_actions acts;
    const struct spop_action *keep[SPOP_MAX_ACTIONS];
    size_t nkeep = 0, size, room;
    struct frame_w w;

    /* validate the whole frame before any handler runs */
    if (walk_messages(p, end, &msg, NULL, NULL, NULL) != SPOP_OK)
        return fail(c, SPOP_ST_INVALID, out);
    c->notify_in++;
    msg.stream_id = sid;
    msg.frame_id = fid;
    acts.n = 0;
    if (fn)
        (void)walk_messages(p, end, &msg, fn, ud, &acts);

    /* keep the longest prefix of actions that fits in one frame */
    size = 1 + 4 + varint_len(sid) + varint_len(fid);
    for (size_t i = 0; i < acts.n; i++) {
        const struct spop_action *a = &acts.a[i];
        size_t sz;

        if (!action_ok(a))
            continue;
        sz = action_size(a);
        if (sz > c->max_frame || size + sz > c->max_frame)
            break;
        size += sz;
        keep[nkeep++] = a;
    }
    room = size;
    if (!nkeep)
        room += 1 + 1 + 1 + 1 + sizeof(noop) - 1; /* unset-var txn "noop" */

    if (frame_begin(&w, out, room, SPOP_FRM_ACK, sid, fid) < 0) {
        c->state = SPOP_CS_CLOSING;
        c->status = SPOP_ST_RES;
        return SPOP_FEED_CLOSE;
    }
    for (size_t i = 0; i < nkeep; i++) {
        const struct spop_action *a = keep[i];
        struct spop_data d = {.type = SPOP_DATA_STR};

        d.u.str.ptr = a->value;
        d.u.str.len = a->value_len;
        *w.p++ = 1; /* set-var */
        *w.p++ = 3;
        *w.p++ = (uint8_t)a->scope;
        (void)spop_str_encode(a->name, a->name_len, &w.p, w.end);
        (void)spop_data_encode(&d, &w.p, w.end);
    }
    if (!nkeep) {
        *w.p++ = 2; /* unset-var */
        *w.p++ = 2;
        *w.p++ = SPOP_SCOPE_TXN;
        (void)spop_str_encode(noop, sizeof(noop) - 1, &w.p, w.end);
    }
    frame_end(&w);
    c->acks_out++;
    return SPOP_FEED_MORE;
}

/* ---- connection ---- */

void spop_conn_init(struct spop_conn *c, uint32_t our_max_frame)
{
    memset(c, 0, sizeof(*c));
    if (our_max_frame < SPOP_MIN_FRAME_SIZE)
        our_max_frame = SPOP_MIN_FRAME_SIZE;
    c->state = SPOP_CS_WAIT_HELLO;
    c->our_max_frame = our_max_frame;
    c->max_frame = our_max_frame;
    c->status = SPOP_ST_NONE;
}

/* Handles one complete frame f[0..flen). */
static enum spop_feed_result handle_frame(struct spop_conn *c, const uint8_t *f, size_t flen,
                                          struct lr_buf *out, spop_notify_fn fn, void *ud)
{
    const uint8_t *p = f, *end = f + flen;
    uint8_t type;
    uint32_t flags;
    uint64_t sid, fid;

    type = *p++;
    flags = get_be32(p);
    p += 4;
    if (spop_varint_decode(&p, end, &sid) != SPOP_OK ||
        spop_varint_decode(&p, end, &fid) != SPOP_OK)
        return fail(c, SPOP_ST_INVALID, out);
    c->frames_in++;

    switch (c->state) {
    case SPOP_CS_WAIT_HELLO:
        if (type != SPOP_FRM_HAPROXY_HELLO || sid != 0 || fid != 0)
            return fail(c, SPOP_ST_INVALID, out);
        if (!(flags & SPOP_FLAG_FIN))
            return fail(c, SPOP_ST_FRAG_NOT_SUPPORTED, out);
        return handle_hello(c, p, end, out);
    case SPOP_CS_READY:
        switch (type) {
        case SPOP_FRM_NOTIFY:
        case SPOP_FRM_UNSET:
            /* an aborted (fragmented) payload: nothing to answer */
            if (flags & SPOP_FLAG_ABRT)
                return SPOP_FEED_MORE;
            if (type == SPOP_FRM_UNSET)
                return fail(c, SPOP_ST_INVALID, out); /* no fragment was ever started */
            if (!(flags & SPOP_FLAG_FIN))
                return fail(c, SPOP_ST_FRAG_NOT_SUPPORTED, out);
            return handle_notify(c, sid, fid, p, end, out, fn, ud);
        case SPOP_FRM_HAPROXY_DISCON:
            return handle_discon(c, p, end, out);
        default:
            return fail(c, SPOP_ST_INVALID, out);
        }
    default:
        return SPOP_FEED_CLOSE;
    }
}

enum spop_feed_result spop_conn_feed(struct spop_conn *c, const uint8_t *in, size_t len,
                                     size_t *consumed, struct lr_buf *out, spop_notify_fn fn,
                                     void *ud)
{
    size_t off = 0;
    enum spop_feed_result r = SPOP_FEED_MORE;

    while (c->state != SPOP_CS_CLOSING) {
        size_t avail = len - off;
        uint32_t flen, limit;

        if (avail < 4)
            break;
        flen = get_be32(in + off);
        limit = c->state == SPOP_CS_READY ? c->max_frame : c->our_max_frame;
        /* judged on the prefix alone: never wait for (or buffer) an oversized body */
        if (flen > limit) {
            r = fail(c, SPOP_ST_TOO_BIG, out);
            break;
        }
        if (flen < SPOP_HDR_MIN) {
            r = fail(c, SPOP_ST_INVALID, out);
            break;
        }
        if (avail - 4 < flen)
            break;
        r = handle_frame(c, in + off + 4, flen, out, fn, ud);
        off += 4 + (size_t)flen;
        if (r == SPOP_FEED_CLOSE)
            break;
    }
    *consumed = off;
    return c->state == SPOP_CS_CLOSING ? SPOP_FEED_CLOSE : r;
}
