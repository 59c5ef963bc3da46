/* libFuzzer target for the SPOP core: the input is a byte stream from "HAProxy", delivered to
 * a fresh connection in chunks whose sizes come from the first bytes of the input, with a
 * caller-side pending buffer as the socket layer keeps one. Checks: no crash, no leak, every
 * output frame well-formed and never larger than the frame-size limit, the pending buffer
 * never holds more than one frame's worth. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int handler(void *ud, const struct spop_message *msg, struct spop_actions *out)
{
    (void)ud;
    if (out->n + 3 > SPOP_MAX_ACTIONS)
        return -1;
    out->a[out->n++] = (struct spop_action){SPOP_SCOPE_TXN, "route", 5, "engine", 6};
    out->a[out->n++] = (struct spop_action){SPOP_SCOPE_TXN, "backend", 7, "lr_engine", 9};
    /* echo the message name back: output size depends on the input */
    out->a[out->n++] =
        (struct spop_action){SPOP_SCOPE_TXN, "provider", 8, msg->name, msg->name_len};
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Checks the frames appended to out since `from`. */
static void check_out(const struct lr_buf *out, size_t from, uint32_t limit)
{
    size_t off = from;

    while (off < out->len) {
        uint32_t flen;

        if (out->len - off < 4)
            abort();
        flen = be32(out->data + off);
        if (flen > limit || flen < 7 || out->len - off - 4 < flen)
            abort();
        /* every frame we send carries FIN */
        if (!(be32(out->data + off + 5) & SPOP_FLAG_FIN))
            abort();
        off += 4 + flen;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct spop_conn c;
    struct lr_buf out = {0};
    uint8_t *pend;
    size_t npend = 0, pos = 0;
    uint32_t seed, our_max;

    if (size < 3)
        return 0;
    /* first byte: chunking pattern; second: our frame size (256..16380) */
    seed = data[0] | 1u;
    our_max = 256u + (uint32_t)data[1] * 64u;
    if (our_max > 16380u)
        our_max = 16380u;
    data += 2;
    size -= 2;

    spop_conn_init(&c, our_max);
    pend = malloc(size ? size : 1);
    if (!pend)
        return 0;

    while (pos < size) {
        size_t chunk, consumed = 0, before = out.len;
        uint32_t limit;
        enum spop_feed_result r;
        uint8_t *in;

        seed = seed * 1103515245u + 12345u;
        chunk = 1 + (seed >> 16) % 97;
        if (chunk > size - pos)
            chunk = size - pos;
        memcpy(pend + npend, data + pos, chunk);
        npend += chunk;
        pos += chunk;

        /* exact-size copy: ASan flags any read past the bytes "received" */
        in = malloc(npend);
        if (!in)
            break;
        memcpy(in, pend, npend);
        limit = c.state == SPOP_CS_READY ? c.max_frame : c.our_max_frame;
        r = spop_conn_feed(&c, in, npend, &consumed, &out, handler, NULL);
        free(in);
        if (consumed > npend)
            abort();
        check_out(&out, before, c.state == SPOP_CS_READY ? c.max_frame : limit);
        if (c.max_frame > c.our_max_frame)
            abort();
        memmove(pend, pend + consumed, npend - consumed);
        npend -= consumed;
        if (r == SPOP_FEED_CLOSE) {
            if (c.state != SPOP_CS_CLOSING)
                abort();
            break;
        }
        /* need-more never leaves more than one incomplete frame (prefix + body) */
        if (npend > (size_t)c.max_frame + 3)
            abort();
        /* the socket layer writes and drops the output */
        lr_buf_reset(&out);
    }
    free(pend);
    lr_buf_free(&out);
    return 0;
}
