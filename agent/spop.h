/* SPOP 2.0 (HAProxy Stream Processing Offload Protocol): codec and per-connection protocol
 * core. Pure: no I/O, no allocation proportional to untrusted lengths, no logging.
 * The socket layer (server.c) reads bytes, hands them to spop_conn_feed(), writes what it
 * appended to the output buffer in one write, and closes when told to.
 *
 * Reference: HAProxy doc/SPOE.txt (2.6) and src/mux_spop.c (3.1+). */
#ifndef LR_SPOP_H
#define LR_SPOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum spop_frame_type {
    SPOP_FRM_UNSET = 0,
    SPOP_FRM_HAPROXY_HELLO = 1,
    SPOP_FRM_HAPROXY_DISCON = 2,
    SPOP_FRM_NOTIFY = 3,
    SPOP_FRM_AGENT_HELLO = 101,
    SPOP_FRM_AGENT_DISCON = 102,
    SPOP_FRM_ACK = 103,
};
const char *spop_frame_type_to_str(unsigned t);

#define SPOP_FLAG_FIN  0x00000001u
#define SPOP_FLAG_ABRT 0x00000002u

/* DISCONNECT status codes (SPOE.txt "Errors & timeouts"). */
enum spop_status {
    SPOP_ST_NONE = 0,
    SPOP_ST_IO = 1,
    SPOP_ST_TIMEOUT = 2,
    SPOP_ST_TOO_BIG = 3,
    SPOP_ST_INVALID = 4,
    SPOP_ST_NO_VSN = 5,
    SPOP_ST_NO_FRAME_SIZE = 6,
    SPOP_ST_NO_CAP = 7,
    SPOP_ST_BAD_VSN = 8,
    SPOP_ST_BAD_FRAME_SIZE = 9,
    SPOP_ST_FRAG_NOT_SUPPORTED = 10,
    SPOP_ST_INTERLACED_FRAMES = 11,
    SPOP_ST_FRAMEID_NOTFOUND = 12,
    SPOP_ST_RES = 13,
    SPOP_ST_UNKNOWN = 99,
};
const char *spop_status_to_str(unsigned st);

/* Typed data (low 4 bits of the type byte; high 4 bits are flags, bit 4 = boolean value). */
enum spop_data_type {
    SPOP_DATA_NULL = 0,
    SPOP_DATA_BOOL = 1,
    SPOP_DATA_INT32 = 2,
    SPOP_DATA_UINT32 = 3,
    SPOP_DATA_INT64 = 4,
    SPOP_DATA_UINT64 = 5,
    SPOP_DATA_IPV4 = 6,
    SPOP_DATA_IPV6 = 7,
    SPOP_DATA_STR = 8,
    SPOP_DATA_BIN = 9,
    SPOP_DATA_COUNT
};

/* A decoded value. Strings/binaries point into the frame being decoded (valid only during
 * the callback that receives them); they are not NUL-terminated. */
struct spop_data {
    enum spop_data_type type;
    union {
        bool b;
        int64_t i;  /* INT32, INT64 */
        uint64_t u; /* UINT32, UINT64 */
        uint8_t ip[16];
        struct {
            const char *ptr;
            size_t len;
        } str; /* STR, BIN */
    } u;
};

/* ---- codec: (p, end) style; decoders advance *p only on success ---- */

/* Return values of the decoders. */
#define SPOP_OK          0
#define SPOP_ERR_TRUNC   (-1) /* ran past end: within a frame this is an invalid frame */
#define SPOP_ERR_INVALID (-2) /* malformed (bad type, overflow, ...) */

/* HAProxy's varint: values < 240 in one byte, then 4+7+7+... bits. Max 10 bytes. */
int spop_varint_encode(uint64_t v, uint8_t **p, const uint8_t *end);
int spop_varint_decode(const uint8_t **p, const uint8_t *end, uint64_t *v);
/* Encodes/decodes one typed value. Encode returns SPOP_OK or SPOP_ERR_TRUNC (no room). */
int spop_data_encode(const struct spop_data *d, uint8_t **p, const uint8_t *end);
int spop_data_decode(const uint8_t **p, const uint8_t *end, struct spop_data *d);
/* String (varint length + bytes); the length is checked against end before use. */
int spop_str_decode(const uint8_t **p, const uint8_t *end, const char **s, size_t *len);
int spop_str_encode(const char *s, size_t len, uint8_t **p, const uint8_t *end);

/* ---- protocol core ---- */

#define SPOP_MIN_FRAME_SIZE 256u
#define SPOP_MAX_ARGS       32 /* args kept per message; further args are ignored */
#define SPOP_MAX_ACTIONS    8  /* actions per message answer */

struct spop_kv {
    const char *name;
    size_t name_len;
    struct spop_data val;
};

/* One message of a NOTIFY frame, handed to the handler. */
struct spop_message {
    const char *name;
    size_t name_len;
    uint64_t stream_id;
    uint64_t frame_id;
    size_t nargs;
    struct spop_kv args[SPOP_MAX_ARGS];
};

enum spop_var_scope {
    SPOP_SCOPE_PROC = 0,
    SPOP_SCOPE_SESS = 1,
    SPOP_SCOPE_TXN = 2,
    SPOP_SCOPE_REQ = 3,
    SPOP_SCOPE_RES = 4,
};

/* set-var actions with string values; name/value must stay valid until the handler returns
 * to spop_conn_feed (it copies them into the ACK frame). */
struct spop_action {
    enum spop_var_scope scope;
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct spop_actions {
    size_t n;
    struct spop_action a[SPOP_MAX_ACTIONS];
};

/* Called once per message of each NOTIFY; appends set-var actions to `out` (which may hold
 * actions from earlier messages of the same frame). Returns 0, or -1 to ignore the message.
 * If a NOTIFY ends with no action at all (unknown message, handler declined), the core adds
 * an unset-var of txn "noop" (harmless) so every ACK carries at least one action, which
 * HAProxy 3.x requires. */
typedef int (*spop_notify_fn)(void *ud, const struct spop_message *msg, struct spop_actions *out);

enum spop_conn_state {
    SPOP_CS_WAIT_HELLO = 0, /* nothing received yet */
    SPOP_CS_READY,          /* handshake done, NOTIFY accepted */
    SPOP_CS_CLOSING,        /* a DISCONNECT was queued: write it, then close */
    SPOP_CS_COUNT
};
const char *spop_conn_state_to_str(unsigned st);

struct spop_conn {
    enum spop_conn_state state;
    uint32_t our_max_frame;  /* what we accept before/while negotiating */
    uint32_t max_frame;      /* negotiated (min of ours and HAProxy's) once READY */
    bool healthcheck;        /* HELLO had healthcheck=true: close after AGENT-HELLO */
    enum spop_status status; /* status we disconnected with, or HAProxy's on its DISCON */
    char engine_id[64];      /* HAProxy's engine-id, truncated, for logs */
    uint64_t frames_in, notify_in, acks_out;
};

/* Result of spop_conn_feed(). */
enum spop_feed_result {
    SPOP_FEED_MORE = 0, /* all complete frames handled; wait for more bytes */
    SPOP_FEED_CLOSE,    /* write what was appended to out, then close the connection */
};

void spop_conn_init(struct spop_conn *c, uint32_t our_max_frame);

/* Consumes as many complete frames as `in[0..len)` holds, appending every answer frame
 * (AGENT-HELLO, ACKs, AGENT-DISCONNECT) to `out`, each frame whole. *consumed is set to the
 * bytes used; the caller keeps the rest for the next call. The 4-byte length prefix is
 * checked against the frame-size limit before anything else, so a partial frame never needs
 * more than max_frame + 4 bytes of buffer. On malformed input, appends an AGENT-DISCONNECT
 * with the right status and returns SPOP_FEED_CLOSE. */
enum spop_feed_result spop_conn_feed(struct spop_conn *c, const uint8_t *in, size_t len,
                                     size_t *consumed, struct lr_buf *out, spop_notify_fn fn,
                                     void *ud);

/* Appends an AGENT-DISCONNECT with `status` (used for shutdown: SPOP_ST_NONE) and moves the
 * connection to CLOSING. 0 or -ENOMEM. */
int spop_conn_disconnect(struct spop_conn *c, enum spop_status status, const char *msg,
                         struct lr_buf *out);

#endif
