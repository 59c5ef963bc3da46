/* libFuzzer target for the stream translator (translate_stream.c). The first byte picks the
 * upstream dialect (bit 0: Anthropic) and include_usage (bit 1); the rest is an upstream
 * text/event-stream, split into events by sse.c and fed one by one (feeding goes on after a
 * -1: every later feed must fail the same way). Checks: no crash, no leak; a rejected event
 * appends nothing; the output is always whole events, each one's data valid
 * JSON or "[DONE]" (Anthropic events named, OpenAI ones not); nothing after done/errored. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"
#include "translate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct run {
    struct tr_stream *s;
    enum tr_dialect from;
    struct lr_buf out;
    bool ended;
    int failed; /* the first nonzero feed result */
};

static void on_drop(void *ud, const char *field)
{
    (void)ud;
    if (!field || !field[0])
        abort();
}

static int check_out_event(void *ud, const struct sse_event *ev)
{
    const struct run *r = ud;
    if (!ev->data || ev->kind == SSE_EVENT_COMMENT)
        abort();
    /* the client's dialect is the other one */
    if ((r->from == TR_OPENAI) != (ev->event != NULL))
        abort();
    if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0)
        return 0;
    json_t *j = json_loadb(ev->data, ev->data_len, 0, NULL);
    if (!json_is_object(j))
        abort();
    json_decref(j);
    return 0;
}

static int on_event(void *ud, const struct sse_event *ev)
{
    struct run *r = ud;
    size_t before = r->out.len;
    int rc = tr_stream_feed(r->s, ev->event, ev->event_len, ev->data, ev->data_len, on_drop, NULL,
                            &r->out);
    if (rc != 0 && rc != -1)
        abort(); /* -ENOMEM is not expected here */
    if (r->failed && rc != r->failed)
        abort(); /* a failed stream stays failed */
    if (rc != 0)
        r->failed = rc;
    if (rc != 0 && r->out.len != before)
        abort();
    if (r->ended && r->out.len != before)
        abort();
    if (r->out.len > before) {
        struct sse_parser p;
        sse_parser_init(&p);
        if (sse_feed(&p, (const char *)r->out.data + before, r->out.len - before, check_out_event,
                     r) != 0 ||
            !p.at_boundary)
            abort();
        sse_parser_free(&p);
    }
    if (tr_stream_done(r->s) || tr_stream_errored(r->s))
        r->ended = true;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run r = {0};
    struct sse_parser p;

    if (size < 1)
        return 0;
    r.from = (data[0] & 1) ? TR_ANTHROPIC : TR_OPENAI;
    r.s = tr_stream_new(r.from, (data[0] & 4) ? "fallback-model" : NULL, (data[0] & 2) != 0,
                        1764000000);
    if (!r.s)
        return 0;
    sse_parser_init(&p);
    if (sse_feed(&p, (const char *)data + 1, size - 1, on_event, &r) == 0)
        sse_finish(&p, on_event, &r);
    sse_parser_free(&p);
    tr_stream_free(r.s);
    lr_buf_free(&r.out);
    return 0;
}
