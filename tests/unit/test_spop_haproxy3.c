/* Replayed byte-level SPOP exchanges with HAProxy 3.x (issue #6: the compose stack runs the
 * official haproxy:3.2 image).
 *
 * Every HAProxy frame below is written out byte by byte, as HAProxy 3.1+'s SPOP multiplexer
 * (src/mux_spop.c) and SPOE filter (src/flt_spoe.c) put it on the wire:
 *   - spop_conn_send_hello():  header "\0\0\0\0" 01 00000001 00 00 (length patched in, type
 *     HAPROXY-HELLO, FIN, stream-id 0, frame-id 0); "supported-versions" STR "2.0";
 *     "max-frame-size" UINT32 = the agent's max-frame-size (tune.bufsize - 4 = 16380 by
 *     default); "capabilities" STR "pipelining" when the spoe-agent has `option pipelining`
 *     (never "async" nor "fragmentation" in 3.x); "engine-id" STR when the agent has one.
 *     Without an SPOE agent attached (the `option spop-check` health check) capabilities is
 *     the empty string, there is no engine-id, and "healthcheck" BOOL true is appended:
 *     82 bytes in all, as reg-tests/checks/spop-check.vtc expects ("recv 82").
 *   - spop_strm_send_notify(): "\0\0\0\0" 03 00000001, varint stream-id, varint frame-id
 *     (fid + 1: always 1, one NOTIFY per stream), then the messages encoded by the filter.
 *     Stream ids come from spop_conn_get_next_sid(): (max_id + 1) | 1 with max_id starting
 *     at -1, so 1, 3, 5, ... on each connection, up to 20 streams in flight with
 *     pipelining.
 *   - spop_conn_send_disconnect(): "\0\0\0\0" 02 00000001 00 00; "status-code" UINT32;
 *     "message" STR with the reason of spop_err_reasons[] ("normal" for 0).
 * What 3.x checks in our answers (spop_conn_handle_hello/_ack, spop_process_demux):
 * AGENT-HELLO with FIN and ids 0, "version", "max-frame-size" not above its own, and
 * "capabilities" ("pipelining" keeps 20 streams per connection, else 1); ACK with FIN, a
 * non-zero stream-id, a non-zero frame-id equal to the stream's. Our answers are asserted
 * byte for byte: they are deterministic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "spop.h"

/* Our offer: HAProxy's default tune.bufsize (16384) minus the length prefix. */
#define OUR_MAX_FRAME 16380u

/* A byte string literal without its terminating NUL. */
#define BYTES(lit) ((const uint8_t *)(lit)), (sizeof(lit) - 1)

/* ------------------------------------------------------------------------------------ */
/* Frames sent by HAProxy 3.x                                                            */

/* HAPROXY-HELLO of a connection of the spoe-agent "lunaroute-agent" (spoe-lunaroute.conf:
 * option pipelining), engine-id as flt_spoe.c generates it (a pseudo-UUID, 36 bytes). */
static const char hello_3x[] =
    "\x00\x00\x00\x7b"   /* frame length: 123 bytes follow */
    "\x01"               /* type: HAPROXY-HELLO */
    "\x00\x00\x00\x01"   /* flags: FIN */
    "\x00"               /* stream-id: 0 (varint) */
    "\x00"               /* frame-id: 0 (varint) */
    "\x12"               /* key: length 18 */
    "supported-versions" /* */
    "\x08"               /* type: STRING */
    "\x03"               /* length 3 */
    "2.0"                /* */
    "\x0e"               /* key: length 14 */
    "max-frame-size"     /* */
    "\x03"               /* type: UINT32 */
    "\xfc\xf0\x06"       /* varint 16380: 0xfc = 0xf0|(16380&15); (16380-240)>>4 = 1008:
                            0xf0 = 0x80|(1008&127); (1008-128)>>7 = 6 */
    "\x0c"               /* key: length 12 */
    "capabilities"       /* */
    "\x08"               /* type: STRING */
    "\x0a"               /* length 10 */
    "pipelining"         /* the only capability 3.x announces */
    "\x09"               /* key: length 9 */
    "engine-id"          /* */
    "\x08"               /* type: STRING */
    "\x24"               /* length 36 */
    "8c3b1a2e-5f4d-4e6a-9b7c-0d1e2f3a4b5c";

/* The same HELLO from an agent section with `max-frame-size 1024`. */
static const char hello_3x_mfs1024[] =
    "\x00\x00\x00\x7a"   /* frame length: 122 */
    "\x01"               /* HAPROXY-HELLO */
    "\x00\x00\x00\x01"   /* FIN */
    "\x00"               /* stream-id 0 */
    "\x00"               /* frame-id 0 */
    "\x12"               /* */
    "supported-versions" /* */
    "\x08"               /* STRING */
    "\x03"               /* */
    "2.0"                /* */
    "\x0e"               /* */
    "max-frame-size"     /* */
    "\x03"               /* UINT32 */
    "\xf0\x31"           /* varint 1024: 0xf0|(1024&15); (1024-240)>>4 = 49 = 0x31 */
    "\x0c"               /* */
    "capabilities"       /* */
    "\x08"               /* STRING */
    "\x0a"               /* */
    "pipelining"         /* */
    "\x09"               /* */
    "engine-id"          /* */
    "\x08"               /* STRING */
    "\x24"               /* */
    "8c3b1a2e-5f4d-4e6a-9b7c-0d1e2f3a4b5c";

/* The same HELLO with `tune.bufsize 32768`: HAProxy offers more than we do. */
static const char hello_3x_mfs32764[] = "\x00\x00\x00\x7b"   /* frame length: 123 */
                                        "\x01"               /* HAPROXY-HELLO */
                                        "\x00\x00\x00\x01"   /* FIN */
                                        "\x00"               /* */
                                        "\x00"               /* */
                                        "\x12"               /* */
                                        "supported-versions" /* */
                                        "\x08"               /* */
                                        "\x03"               /* */
                                        "2.0"                /* */
                                        "\x0e"               /* */
                                        "max-frame-size"     /* */
                                        "\x03"               /* UINT32 */
                                        "\xfc\xf0\x0e" /* varint 32764: 0xfc; (32764-240)>>4 = 2032:
                                                          0xf0; (2032-128)>>7 = 14 */
                                        "\x0c"         /* */
                                        "capabilities" /* */
                                        "\x08"         /* */
                                        "\x0a"         /* */
                                        "pipelining"   /* */
                                        "\x09"         /* */
                                        "engine-id"    /* */
                                        "\x08"         /* */
                                        "\x24"         /* */
                                        "8c3b1a2e-5f4d-4e6a-9b7c-0d1e2f3a4b5c";

/* The `option spop-check` HELLO: no agent attached, 82 bytes with the length prefix. */
static const char hello_3x_healthcheck[] = "\x00\x00\x00\x4e"   /* frame length: 78 */
                                           "\x01"               /* HAPROXY-HELLO */
                                           "\x00\x00\x00\x01"   /* FIN */
                                           "\x00"               /* stream-id 0 */
                                           "\x00"               /* frame-id 0 */
                                           "\x12"               /* */
                                           "supported-versions" /* */
                                           "\x08"               /* STRING */
                                           "\x03"               /* */
                                           "2.0"                /* */
                                           "\x0e"               /* */
                                           "max-frame-size"     /* */
                                           "\x03"               /* UINT32 */
                                           "\xfc\xf0\x06"       /* 16380 */
                                           "\x0c"               /* */
                                           "capabilities"       /* */
                                           "\x08"               /* STRING */
                                           "\x00"        /* length 0: no agent, no capability */
                                           "\x0b"        /* key: length 11 */
                                           "healthcheck" /* */
                                           "\x11"; /* type BOOLEAN (1) with the TRUE flag (0x10) */

/* NOTIFY of stream 1 (the first stream of the connection), frame 1, carrying the
 * lunaroute-classify message of spoe-lunaroute.conf for `POST /v1/embeddings` with an
 * Authorization: Bearer header and no Anthropic header. */
static const char notify_s1[] = "\x00\x00\x00\x54"   /* frame length: 84 */
                                "\x03"               /* type: NOTIFY */
                                "\x00\x00\x00\x01"   /* flags: FIN */
                                "\x01"               /* stream-id 1 */
                                "\x01"               /* frame-id 1 */
                                "\x12"               /* message name: length 18 */
                                "lunaroute-classify" /* */
                                "\x05"               /* 5 arguments */
                                "\x06"               /* arg name: length 6 */
                                "method"             /* */
                                "\x08"           /* STRING: a known method is sent as its name */
                                "\x04"           /* */
                                "POST"           /* */
                                "\x04"           /* */
                                "path"           /* */
                                "\x08"           /* STRING */
                                "\x0e"           /* length 14 */
                                "/v1/embeddings" /* */
                                "\x02"           /* */
                                "av"             /* req.hdr_cnt(anthropic-version) */
                                "\x04"           /* INT64: a signed integer sample */
                                "\x00"           /* varint 0 */
                                "\x02"           /* */
                                "xk"             /* req.hdr_cnt(x-api-key) */
                                "\x04"           /* INT64 */
                                "\x00"           /* 0 */
                                "\x04"           /* */
                                "auth"           /* http_auth_type,lower */
                                "\x08"           /* STRING */
                                "\x06"           /* */
                                "bearer";        /* */

/* Streams 3 and 5 of the same connection (each a new stream: frame-id 1 again).
 * Stream 3: GET /healthz, no Authorization (http_auth_type has no sample: NULL). */
static const char notify_s3[] = "\x00\x00\x00\x46"   /* frame length: 70 */
                                "\x03"               /* NOTIFY */
                                "\x00\x00\x00\x01"   /* FIN */
                                "\x03"               /* stream-id 3 */
                                "\x01"               /* frame-id 1 */
                                "\x12"               /* */
                                "lunaroute-classify" /* */
                                "\x05"               /* 5 arguments */
                                "\x06"               /* */
                                "method"             /* */
                                "\x08"               /* STRING */
                                "\x03"               /* */
                                "GET"                /* */
                                "\x04"               /* */
                                "path"               /* */
                                "\x08"               /* STRING */
                                "\x08"               /* length 8 */
                                "/healthz"           /* */
                                "\x02"               /* */
                                "av"                 /* */
                                "\x04"               /* INT64 */
                                "\x00"               /* 0 */
                                "\x02"               /* */
                                "xk"                 /* */
                                "\x04"               /* INT64 */
                                "\x00"               /* 0 */
                                "\x04"               /* */
                                "auth"               /* */
                                "\x00";              /* NULL: the sample fetch found nothing */

/* Stream 5: POST /v1/messages/count_tokens with anthropic-version and x-api-key. */
static const char notify_s5[] = "\x00\x00\x00\x58"          /* frame length: 88 */
                                "\x03"                      /* NOTIFY */
                                "\x00\x00\x00\x01"          /* FIN */
                                "\x05"                      /* stream-id 5 */
                                "\x01"                      /* frame-id 1 */
                                "\x12"                      /* */
                                "lunaroute-classify"        /* */
                                "\x05"                      /* */
                                "\x06"                      /* */
                                "method"                    /* */
                                "\x08"                      /* */
                                "\x04"                      /* */
                                "POST"                      /* */
                                "\x04"                      /* */
                                "path"                      /* */
                                "\x08"                      /* STRING */
                                "\x19"                      /* length 25 */
                                "/v1/messages/count_tokens" /* */
                                "\x02"                      /* */
                                "av"                        /* */
                                "\x04"                      /* INT64 */
                                "\x01"                      /* 1 */
                                "\x02"                      /* */
                                "xk"                        /* */
                                "\x04"                      /* INT64 */
                                "\x01"                      /* 1 */
                                "\x04"                      /* */
                                "auth"                      /* */
                                "\x00";                     /* NULL */

/* A message of another SPOE engine sharing the agent: nothing for us to set. */
static const char notify_s7_unknown[] = "\x00\x00\x00\x18" /* frame length: 24 */
                                        "\x03"             /* NOTIFY */
                                        "\x00\x00\x00\x01" /* FIN */
                                        "\x07"             /* stream-id 7 */
                                        "\x01"             /* frame-id 1 */
                                        "\x0c"             /* message name: length 12 */
                                        "other-engine"     /* */
                                        "\x01"             /* 1 argument */
                                        "\x01"             /* */
                                        "x"                /* */
                                        "\x00";            /* NULL */

/* HAPROXY-DISCONNECT of a normal close (errcode SPOP_ERR_NONE). */
static const char discon_normal[] = "\x00\x00\x00\x25" /* frame length: 37 */
                                    "\x02"             /* type: HAPROXY-DISCONNECT */
                                    "\x00\x00\x00\x01" /* FIN */
                                    "\x00"             /* stream-id 0 */
                                    "\x00"             /* frame-id 0 */
                                    "\x0b"             /* key: length 11 */
                                    "status-code"      /* */
                                    "\x03"             /* UINT32 */
                                    "\x00"             /* 0: normal */
                                    "\x07"             /* */
                                    "message"          /* */
                                    "\x08"             /* STRING */
                                    "\x06"             /* */
                                    "normal";          /* spop_err_reasons[SPOP_ERR_NONE] */

/* HAPROXY-DISCONNECT sent by spop_timeout_task() (errcode SPOP_ERR_TOUT). */
static const char discon_timeout[] = "\x00\x00\x00\x31"    /* frame length: 49 */
                                     "\x02"                /* HAPROXY-DISCONNECT */
                                     "\x00\x00\x00\x01"    /* FIN */
                                     "\x00"                /* */
                                     "\x00"                /* */
                                     "\x0b"                /* */
                                     "status-code"         /* */
                                     "\x03"                /* UINT32 */
                                     "\x02"                /* 2: timeout */
                                     "\x07"                /* */
                                     "message"             /* */
                                     "\x08"                /* STRING */
                                     "\x12"                /* length 18 */
                                     "a timeout occurred"; /* */

/* ------------------------------------------------------------------------------------ */
/* What we must answer                                                                   */

/* AGENT-HELLO: version 2.0, the negotiated max-frame-size, capabilities "pipelining". */
static const char agent_hello_16380[] =
    "\x00\x00\x00\x40" /* frame length: 64 */
    "\x65"             /* type: AGENT-HELLO (101) */
    "\x00\x00\x00\x01" /* flags: FIN (3.x rejects an AGENT-HELLO without it) */
    "\x00"             /* stream-id 0 (3.x requires 0) */
    "\x00"             /* frame-id 0 (3.x requires 0) */
    "\x07"             /* */
    "version"          /* */
    "\x08"             /* STRING */
    "\x03"             /* */
    "2.0"              /* */
    "\x0e"             /* */
    "max-frame-size"   /* */
    "\x03"             /* UINT32 */
    "\xfc\xf0\x06"     /* 16380: not above HAProxy's */
    "\x0c"             /* */
    "capabilities"     /* */
    "\x08"             /* STRING */
    "\x0a"             /* */
    "pipelining";      /* 3.x: keeps 20 streams per connection */

static const char agent_hello_1024[] = "\x00\x00\x00\x3f" /* frame length: 63 */
                                       "\x65"             /* AGENT-HELLO */
                                       "\x00\x00\x00\x01" /* FIN */
                                       "\x00"             /* */
                                       "\x00"             /* */
                                       "\x07"             /* */
                                       "version"          /* */
                                       "\x08"             /* */
                                       "\x03"             /* */
                                       "2.0"              /* */
                                       "\x0e"             /* */
                                       "max-frame-size"   /* */
                                       "\x03"             /* UINT32 */
                                       "\xf0\x31"         /* 1024: negotiated down to HAProxy's */
                                       "\x0c"             /* */
                                       "capabilities"     /* */
                                       "\x08"             /* */
                                       "\x0a"             /* */
                                       "pipelining";      /* */

/* ACK of stream 1: set-var txn route=bypass, backend=lr_provider_openai, provider=openai. */
static const char ack_s1[] = "\x00\x00\x00\x4b"   /* frame length: 75 */
                             "\x67"               /* type: ACK (103) */
                             "\x00\x00\x00\x01"   /* flags: FIN (3.x has no fragmented ACK) */
                             "\x01"               /* stream-id 1, echoed */
                             "\x01"               /* frame-id 1, echoed */
                             "\x01"               /* action SET-VAR */
                             "\x03"               /* 3 arguments */
                             "\x02"               /* scope: txn */
                             "\x05"               /* name: length 5 (a STRING without type byte) */
                             "route"              /* */
                             "\x08"               /* value: STRING */
                             "\x06"               /* */
                             "bypass"             /* */
                             "\x01"               /* SET-VAR */
                             "\x03"               /* */
                             "\x02"               /* txn */
                             "\x07"               /* */
                             "backend"            /* */
                             "\x08"               /* STRING */
                             "\x12"               /* length 18 */
                             "lr_provider_openai" /* */
                             "\x01"               /* SET-VAR */
                             "\x03"               /* */
                             "\x02"               /* txn */
                             "\x08"               /* */
                             "provider"           /* */
                             "\x08"               /* STRING */
                             "\x06"               /* */
                             "openai";            /* */

/* ACK of stream 3 (GET /healthz): route=engine, backend=lr_engine, provider="". */
static const char ack_s3[] = "\x00\x00\x00\x3c" /* frame length: 60 */
                             "\x67"             /* ACK */
                             "\x00\x00\x00\x01" /* FIN */
                             "\x03"             /* stream-id 3 */
                             "\x01"             /* frame-id 1 */
                             "\x01"             /* SET-VAR */
                             "\x03"             /* */
                             "\x02"             /* txn */
                             "\x05"             /* */
                             "route"            /* */
                             "\x08"             /* STRING */
                             "\x06"             /* */
                             "engine"           /* */
                             "\x01"             /* SET-VAR */
                             "\x03"             /* */
                             "\x02"             /* txn */
                             "\x07"             /* */
                             "backend"          /* */
                             "\x08"             /* STRING */
                             "\x09"             /* */
                             "lr_engine"        /* */
                             "\x01"             /* SET-VAR */
                             "\x03"             /* */
                             "\x02"             /* txn */
                             "\x08"             /* */
                             "provider"         /* */
                             "\x08"             /* STRING */
                             "\x00";            /* "" */

/* ACK of stream 5 (Anthropic namespace + headers). */
static const char ack_s5[] = "\x00\x00\x00\x51"      /* frame length: 81 */
                             "\x67"                  /* ACK */
                             "\x00\x00\x00\x01"      /* FIN */
                             "\x05"                  /* stream-id 5 */
                             "\x01"                  /* frame-id 1 */
                             "\x01"                  /* SET-VAR */
                             "\x03"                  /* */
                             "\x02"                  /* txn */
                             "\x05"                  /* */
                             "route"                 /* */
                             "\x08"                  /* */
                             "\x06"                  /* */
                             "bypass"                /* */
                             "\x01"                  /* SET-VAR */
                             "\x03"                  /* */
                             "\x02"                  /* txn */
                             "\x07"                  /* */
                             "backend"               /* */
                             "\x08"                  /* STRING */
                             "\x15"                  /* length 21 */
                             "lr_provider_anthropic" /* */
                             "\x01"                  /* SET-VAR */
                             "\x03"                  /* */
                             "\x02"                  /* txn */
                             "\x08"                  /* */
                             "provider"              /* */
                             "\x08"                  /* STRING */
                             "\x09"                  /* */
                             "anthropic";            /* */

/* ACK of stream 7: still one action (an unset of txn "noop"): never an empty ACK. */
static const char ack_s7_noop[] = "\x00\x00\x00\x0f" /* frame length: 15 */
                                  "\x67"             /* ACK */
                                  "\x00\x00\x00\x01" /* FIN */
                                  "\x07"             /* stream-id 7 */
                                  "\x01"             /* frame-id 1 */
                                  "\x02"             /* action UNSET-VAR */
                                  "\x02"             /* 2 arguments */
                                  "\x02"             /* txn */
                                  "\x04"             /* */
                                  "noop";            /* */

/* AGENT-DISCONNECT answering HAProxy's: status 0, a short message. */
static const char agent_discon_bye[] = "\x00\x00\x00\x22" /* frame length: 34 */
                                       "\x66"             /* type: AGENT-DISCONNECT (102) */
                                       "\x00\x00\x00\x01" /* FIN */
                                       "\x00"             /* stream-id 0 */
                                       "\x00"             /* frame-id 0 */
                                       "\x0b"             /* */
                                       "status-code"      /* */
                                       "\x03"             /* UINT32 */
                                       "\x00"             /* 0 */
                                       "\x07"             /* */
                                       "message"          /* */
                                       "\x08"             /* STRING */
                                       "\x03"             /* */
                                       "bye";             /* */

/* ------------------------------------------------------------------------------------ */
/* The handler: three variables, as the agent's classifier sets them                     */

struct hstate {
    int calls;
    uint64_t last_sid, last_fid;
    char last_path[64];
    int last_av, last_auth_null;
};

static bool arg_is(const struct spop_kv *kv, const char *name)
{
    return kv->name_len == strlen(name) && memcmp(kv->name, name, kv->name_len) == 0;
}

static int handler(void *ud, const struct spop_message *m, struct spop_actions *out)
{
    struct hstate *h = ud;
    static const char msg[] = "lunaroute-classify";
    const char *path = "";
    size_t path_len = 0;
    int64_t av = 0;

    if (m->name_len != sizeof(msg) - 1 || memcmp(m->name, msg, m->name_len) != 0)
        return -1; /* not ours: no action */
    h->calls++;
    h->last_sid = m->stream_id;
    h->last_fid = m->frame_id;
    h->last_auth_null = 0;
    for (size_t i = 0; i < m->nargs; i++) {
        const struct spop_kv *kv = &m->args[i];
        if (arg_is(kv, "path") && kv->val.type == SPOP_DATA_STR) {
            path = kv->val.u.str.ptr;
            path_len = kv->val.u.str.len;
        } else if (arg_is(kv, "av") && kv->val.type == SPOP_DATA_INT64) {
            av = kv->val.u.i;
        } else if (arg_is(kv, "auth") && kv->val.type == SPOP_DATA_NULL) {
            h->last_auth_null = 1;
        }
    }
    snprintf(h->last_path, sizeof(h->last_path), "%.*s", (int)path_len, path);
    h->last_av = (int)av;

    const char *route = "bypass", *backend = "lr_provider_openai", *provider = "openai";
    if (path_len == 8 && memcmp(path, "/healthz", 8) == 0) {
        route = "engine";
        backend = "lr_engine";
        provider = "";
    } else if (av > 0) {
        backend = "lr_provider_anthropic";
        provider = "anthropic";
    }
    const char *names[3] = {"route", "backend", "provider"};
    const char *values[3] = {route, backend, provider};
    for (size_t i = 0; i < 3; i++) {
        struct spop_action *a = &out->a[out->n++];
        a->scope = SPOP_SCOPE_TXN;
        a->name = names[i];
        a->name_len = strlen(names[i]);
        a->value = values[i];
        a->value_len = strlen(values[i]);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Helpers                                                                               */

static void dump(const char *what, const uint8_t *p, size_t n)
{
    fprintf(stderr, "%s (%zu bytes):", what, n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "%s%02x", i % 16 ? " " : "\n  ", p[i]);
    fprintf(stderr, "\n");
}

/* Appends the concatenation of byte strings (ptr, len pairs, NULL-terminated). */
static size_t cat(uint8_t *dst, size_t cap, ...)
{
    va_list ap;
    size_t n = 0;
    va_start(ap, cap);
    for (;;) {
        const uint8_t *p = va_arg(ap, const uint8_t *);
        if (!p)
            break;
        size_t len = va_arg(ap, size_t);
        assert_true(n + len <= cap);
        memcpy(dst + n, p, len);
        n += len;
    }
    va_end(ap);
    return n;
}

static void assert_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len)
{
    if (got_len != want_len || memcmp(got, want, want_len) != 0) {
        dump("want", want, want_len);
        dump("got", got, got_len);
        fail_msg("answer differs from the expected bytes");
    }
}

/* Each hand-built frame: its length prefix counts exactly the bytes that follow. */
static void check_prefix(const char *name, const uint8_t *p, size_t n)
{
    assert_true(n >= 4);
    uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (len != n - 4)
        fail_msg("%s: length prefix %u, %zu bytes follow", name, len, n - 4);
}

/* Feeds `in` whole; the feed must consume all of it. */
static enum spop_feed_result feed(struct spop_conn *c, const uint8_t *in, size_t len,
                                  struct lr_buf *out, struct hstate *h)
{
    size_t consumed = 0;
    enum spop_feed_result r = spop_conn_feed(c, in, len, &consumed, out, handler, h);
    assert_int_equal(consumed, len);
    return r;
}

static void handshake(struct spop_conn *c, struct lr_buf *out, struct hstate *h)
{
    spop_conn_init(c, OUR_MAX_FRAME);
    assert_int_equal(feed(c, BYTES(hello_3x), out, h), SPOP_FEED_MORE);
    assert_bytes(out->data, out->len, BYTES(agent_hello_16380));
    assert_int_equal(c->state, SPOP_CS_READY);
    lr_buf_reset(out);
}

/* ------------------------------------------------------------------------------------ */
/* Tests                                                                                 */

static void test_frames_are_well_formed(void **state)
{
    (void)state;
#define CHECK(f) check_prefix(#f, BYTES(f))
    CHECK(hello_3x);
    CHECK(hello_3x_mfs1024);
    CHECK(hello_3x_mfs32764);
    CHECK(hello_3x_healthcheck);
    CHECK(notify_s1);
    CHECK(notify_s3);
    CHECK(notify_s5);
    CHECK(notify_s7_unknown);
    CHECK(discon_normal);
    CHECK(discon_timeout);
    CHECK(agent_hello_16380);
    CHECK(agent_hello_1024);
    CHECK(ack_s1);
    CHECK(ack_s3);
    CHECK(ack_s5);
    CHECK(ack_s7_noop);
    CHECK(agent_discon_bye);
#undef CHECK
    /* the health check HELLO is the 82 bytes reg-tests/checks/spop-check.vtc receives */
    assert_int_equal(sizeof(hello_3x_healthcheck) - 1, 82);
}

/* HELLO with "pipelining" only: AGENT-HELLO with exactly "pipelining", FIN, ids 0. */
static void test_hello_pipelining_only(void **state)
{
    (void)state;
    struct spop_conn c;
    struct lr_buf out = {0};
    struct hstate h = {0};
    spop_conn_init(&c, OUR_MAX_FRAME);
    assert_int_equal(feed(&c, BYTES(hello_3x), &out, &h), SPOP_FEED_MORE);
    assert_bytes(out.data, out.len, BYTES(agent_hello_16380));
    assert_int_equal(c.state, SPOP_CS_READY);
    assert_int_equal(c.max_frame, 16380);
    assert_false(c.healthcheck);
    assert_string_equal(c.engine_id, "8c3b1a2e-5f4d-4e6a-9b7c-0d1e2f3a4b5c");
    assert_int_equal(h.calls, 0);
    lr_buf_free(&out);
}

/* max-frame-size is negotiated down to the smaller of the two, both ways. */
static void test_max_frame_size_negotiated_down(void **state)
{
    (void)state;
    struct spop_conn c;
    struct lr_buf out = {0};
    struct hstate h = {0};

    spop_conn_init(&c, OUR_MAX_FRAME);
    assert_int_equal(feed(&c, BYTES(hello_3x_mfs1024), &out, &h), SPOP_FEED_MORE);
    assert_bytes(out.data, out.len, BYTES(agent_hello_1024));
    assert_int_equal(c.max_frame, 1024);
    lr_buf_reset(&out);

    spop_conn_init(&c, OUR_MAX_FRAME);
    assert_int_equal(feed(&c, BYTES(hello_3x_mfs32764), &out, &h), SPOP_FEED_MORE);
    assert_bytes(out.data, out.len, BYTES(agent_hello_16380));
    assert_int_equal(c.max_frame, 16380);

    /* HAProxy 3.x rejects a frame above the negotiated size (SPOP_ERR_BAD_FRAME_SIZE):
     * after a 1024 handshake, our ACKs must stay within it even for big answers. */
    lr_buf_free(&out);
}

/* The option spop-check HELLO: AGENT-HELLO, then close, no DISCONNECT. */
static void test_healthcheck_hello(void **state)
{
    (void)state;
    struct spop_conn c;
    struct lr_buf out = {0};
    struct hstate h = {0};
    spop_conn_init(&c, OUR_MAX_FRAME);
    assert_int_equal(feed(&c, BYTES(hello_3x_healthcheck), &out, &h), SPOP_FEED_CLOSE);
    /* exactly one frame: the AGENT-HELLO (HAProxy's check reads it and closes) */
    assert_bytes(out.data, out.len, BYTES(agent_hello_16380));
    assert_true(c.healthcheck);
    assert_int_equal(c.state, SPOP_CS_CLOSING);
    assert_int_equal(c.status, SPOP_ST_NONE);
    assert_string_equal(c.engine_id, "");
    lr_buf_free(&out);
}

/* First stream of a 3.x connection: stream-id 1, frame-id 1; three vars, byte-exact. */
static void test_notify_first_stream(void **state)
{
    (void)state;
    struct spop_conn c;
    struct lr_buf out = {0};
    struct hstate h = {0};
    handshake(&c, &out, &h);
    assert_int_equal(feed(&c, BYTES(notify_s1), &out, &h), SPOP_FEED_MORE);
    assert_bytes(out.data, out.len, BYTES(ack_s1));
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.last_sid, 1);
    assert_int_equal(h.last_fid, 1);
    assert_string_equal(h.last_path, "/v1/embeddings");
    assert_int_equal(c.notify_in, 1);
    assert_int_equal(c.acks_out, 1);
    lr_buf_free(&out);
}

/* Pipelining: streams 1, 3 and 5 in flight on one connection, in one read and split at
 * every byte; each ACK echoes its own ids, in order. */
static void test_interleaved_streams(void **state)
{
    (void)state;
    uint8_t in[512], want[512];
    size_t n = cat(in, sizeof(in), BYTES(notify_s1), BYTES(notify_s3), BYTES(notify_s5),
                   (const uint8_t *)NULL);
    size_t wn =
        cat(want, sizeof(want), BYTES(ack_s1), BYTES(ack_s3), BYTES(ack_s5), (const uint8_t *)NULL);

    /* one read */
    struct spop_conn c;
    struct lr_buf out = {0};
    struct hstate h = {0};
    handshake(&c, &out, &h);
    assert_int_equal(feed(&c, in, n, &out, &h), SPOP_FEED_MORE);
    assert_bytes(out.data, out.len, want, wn);
    assert_int_equal(h.calls, 3);
    assert_int_equal(h.last_sid, 5);
    assert_int_equal(h.last_fid, 1);
    assert_int_equal(h.last_av, 1);
    assert_true(h.last_auth_null);
    assert_int_equal(c.acks_out, 3);
    lr_buf_free(&out);

    /* every split point: the caller keeps the unconsumed tail, as server.c does */
    for (size_t cut = 1; cut < n; cut++) {
        struct hstate h2 = {0};
        struct lr_buf o2 = {0};
        size_t consumed = 0;
        handshake(&c, &o2, &h2);
        assert_int_equal(spop_conn_feed(&c, in, cut, &consumed, &o2, handler, &h2), SPOP_FEED_MORE);
        assert_true(consumed <= cut);
        assert_int_equal(feed(&c, in + consumed, n - consumed, &o2, &h2), SPOP_FEED_MORE);
        assert_bytes(o2.data, o2.len, want, wn);
        lr_buf_free(&o2);
    }
}

/* A message that is not ours still gets a non-empty ACK. */
static void test_notify_unknown_message_non_empty_ack(void **state)
{
    (void)state;
    struct spop_conn c;
    struct lr_buf out = {0};
    struct hstate h = {0};
    handshake(&c, &out, &h);
    assert_int_equal(feed(&c, BYTES(notify_s7_unknown), &out, &h), SPOP_FEED_MORE);
    assert_bytes(out.data, out.len, BYTES(ack_s7_noop));
    assert_int_equal(h.calls, 0);
    lr_buf_free(&out);
}

/* 3.x HAPROXY-DISCONNECT, normal and on timeout: AGENT-DISCONNECT, then close. */
static void test_haproxy_disconnect(void **state)
{
    (void)state;
    struct spop_conn c;
    struct lr_buf out = {0};
    struct hstate h = {0};

    handshake(&c, &out, &h);
    assert_int_equal(feed(&c, BYTES(notify_s1), &out, &h), SPOP_FEED_MORE);
    lr_buf_reset(&out);
    assert_int_equal(feed(&c, BYTES(discon_normal), &out, &h), SPOP_FEED_CLOSE);
    assert_bytes(out.data, out.len, BYTES(agent_discon_bye));
    assert_int_equal(c.state, SPOP_CS_CLOSING);
    assert_int_equal(c.status, SPOP_ST_NONE);
    lr_buf_reset(&out);

    handshake(&c, &out, &h);
    assert_int_equal(feed(&c, BYTES(discon_timeout), &out, &h), SPOP_FEED_CLOSE);
    assert_bytes(out.data, out.len, BYTES(agent_discon_bye));
    assert_int_equal(c.status, SPOP_ST_TIMEOUT);

    /* nothing after a DISCONNECT is read */
    lr_buf_reset(&out);
    size_t consumed = 99;
    assert_int_equal(spop_conn_feed(&c, BYTES(notify_s3), &consumed, &out, handler, &h),
                     SPOP_FEED_CLOSE);
    assert_int_equal(consumed, 0);
    assert_int_equal(out.len, 0);
    lr_buf_free(&out);
}

/* A whole 3.x connection in one go: HELLO, three pipelined streams, DISCONNECT. */
static void test_whole_connection(void **state)
{
    (void)state;
    uint8_t in[1024], want[1024];
    size_t n =
        cat(in, sizeof(in), BYTES(hello_3x), BYTES(notify_s1), BYTES(notify_s3), BYTES(notify_s5),
            BYTES(notify_s7_unknown), BYTES(discon_normal), (const uint8_t *)NULL);
    size_t wn =
        cat(want, sizeof(want), BYTES(agent_hello_16380), BYTES(ack_s1), BYTES(ack_s3),
            BYTES(ack_s5), BYTES(ack_s7_noop), BYTES(agent_discon_bye), (const uint8_t *)NULL);
    struct spop_conn c;
    struct lr_buf out = {0};
    struct hstate h = {0};
    spop_conn_init(&c, OUR_MAX_FRAME);
    assert_int_equal(feed(&c, in, n, &out, &h), SPOP_FEED_CLOSE);
    assert_bytes(out.data, out.len, want, wn);
    assert_int_equal(c.notify_in, 4);
    assert_int_equal(c.acks_out, 4);
    lr_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_are_well_formed),
        cmocka_unit_test(test_hello_pipelining_only),
        cmocka_unit_test(test_max_frame_size_negotiated_down),
        cmocka_unit_test(test_healthcheck_hello),
        cmocka_unit_test(test_notify_first_stream),
        cmocka_unit_test(test_interleaved_streams),
        cmocka_unit_test(test_notify_unknown_message_non_empty_ack),
        cmocka_unit_test(test_haproxy_disconnect),
        cmocka_unit_test(test_whole_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
