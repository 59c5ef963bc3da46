/* libFuzzer target for the SSE splitter: the input is fed whole, then split at positions
 * derived from its own bytes, then (when short) one byte at a time. Every way must report
 * the same events (kind, raw bytes, event and data fields), the same flags and the same
 * result. Checks: no crash, no leak, raw bytes are the input's, pending stays bounded. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
    struct lr_buf log; /* every event serialised, for comparison */
    const char *in;
    size_t in_len;
    size_t raw_total;
};

static void log_field(struct lr_buf *log, const char *s, size_t n)
{
    uint8_t present = s != NULL;

    if (lr_buf_append(log, &present, 1) < 0 || lr_buf_append(log, &n, sizeof(n)) < 0 ||
        (n && lr_buf_append(log, s, n) < 0))
        abort();
}

static int on_event(void *ud, const struct sse_event *ev)
{
    struct run *r = ud;
    uint8_t kind = (uint8_t)ev->kind;

    if (ev->kind >= SSE_KIND_COUNT || ev->raw_len == 0 || ev->raw_len > SSE_MAX_EVENT_BYTES)
        abort();
    /* the terminator is a blank line */
    if (ev->raw[ev->raw_len - 1] != '\n' && ev->raw[ev->raw_len - 1] != '\r')
        abort();
    if (ev->event && (ev->event < ev->raw || ev->event + ev->event_len > ev->raw + ev->raw_len))
        abort();
    r->raw_total += ev->raw_len;
    if (r->raw_total > r->in_len)
        abort();
    if (lr_buf_append(&r->log, &kind, 1) < 0)
        abort();
    log_field(&r->log, ev->raw, ev->raw_len);
    log_field(&r->log, ev->event, ev->event_len);
    log_field(&r->log, ev->data, ev->data_len);
    return 0;
}

struct outcome {
    int rc;
    uint64_t events;
    bool at_boundary, seen_end, seen_error, failed;
};

/* Feeds r->in in chunks of the sizes in sizes[] (nsizes >= 1), cycled. */
static void feed(struct run *r, struct outcome *o, const size_t *sizes, size_t nsizes)
{
    struct sse_parser p;
    size_t off = 0, k = 0;
    int rc = 0;

    r->log = (struct lr_buf){0};
    r->raw_total = 0;
    sse_parser_init(&p);
    while (off < r->in_len && rc == 0) {
        size_t n = sizes[k++ % nsizes];

        if (n > r->in_len - off)
            n = r->in_len - off;
        rc = sse_feed(&p, r->in + off, n, on_event, r);
        off += n;
        if (p.pending.len > SSE_MAX_EVENT_BYTES)
            abort();
        if (rc == 0 && p.at_boundary != (p.pending.len == 0))
            abort();
    }
    if (rc == 0)
        rc = sse_finish(&p, on_event, r);
    *o = (struct outcome){rc, p.events, p.at_boundary, p.seen_end, p.seen_error, p.failed};
    sse_parser_free(&p);
}

static void compare(const struct run *a, const struct outcome *oa, const struct run *b,
                    const struct outcome *ob)
{
    if (oa->rc != ob->rc || oa->failed != ob->failed)
        abort();
    if (oa->rc != 0)
        return; /* an oversized event is found at different points */
    if (oa->events != ob->events || oa->at_boundary != ob->at_boundary ||
        oa->seen_end != ob->seen_end || oa->seen_error != ob->seen_error)
        abort();
    if (a->log.len != b->log.len || (a->log.len && memcmp(a->log.data, b->log.data, a->log.len)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t whole_size[1] = {SIZE_MAX}, one_byte[1] = {1};
    size_t sizes[16], nsizes;
    struct run whole, split;
    struct outcome ow, os;

    if (size < 1)
        return 0;
    /* The first byte says how many of the next bytes are chunk sizes (at least one); the
     * stream is what follows, so the sizes are fuzzed independently of the text. */
    nsizes = (size_t)(data[0] % 16) + 1;
    if (size - 1 < nsizes)
        return 0;
    whole.in = split.in = (const char *)data + 1 + nsizes;
    whole.in_len = split.in_len = size - 1 - nsizes;
    for (size_t i = 0; i < nsizes; i++)
        sizes[i] = (size_t)data[1 + i] + 1;

    feed(&whole, &ow, whole_size, 1);
    feed(&split, &os, sizes, nsizes);
    compare(&whole, &ow, &split, &os);
    lr_buf_free(&split.log);
    if (whole.in_len <= 1024) {
        feed(&split, &os, one_byte, 1);
        compare(&whole, &ow, &split, &os);
        lr_buf_free(&split.log);
    }
    lr_buf_free(&whole.log);
    return 0;
}
