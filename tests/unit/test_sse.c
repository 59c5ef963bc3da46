/* SSE splitter: every stream is fed whole, a byte at a time, split in two at every point and
 * in random chunkings; each way must give the same events (kind, raw bytes, fields) and the
 * same at_boundary after every feed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sse.h"

#define MAX_EVENTS 64

struct got_event {
    enum sse_kind kind;
    char *raw, *event, *data;
    size_t raw_len, event_len, data_len;
    bool has_event, has_data;
};

struct collector {
    struct got_event ev[MAX_EVENTS];
    size_t n;
    size_t stop_at; /* return stop_rc from the callback for event number stop_at (1-based) */
    int stop_rc;
};

static char *dup_bytes(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    assert_non_null(d);
    if (n)
        memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static int collect(void *ud, const struct sse_event *e)
{
    struct collector *c = ud;
    struct got_event *g;

    assert_true(c->n < MAX_EVENTS);
    g = &c->ev[c->n++];
    g->kind = e->kind;
    g->raw = dup_bytes(e->raw, e->raw_len);
    g->raw_len = e->raw_len;
    g->has_event = e->event != NULL;
    g->event = dup_bytes(e->event ? e->event : "", e->event_len);
    g->event_len = e->event_len;
    g->has_data = e->data != NULL;
    g->data = dup_bytes(e->data ? e->data : "", e->data_len);
    g->data_len = e->data_len;
    if (c->stop_at && c->n == c->stop_at)
        return c->stop_rc;
    return 0;
}

static void collector_free(struct collector *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->ev[i].raw);
        free(c->ev[i].event);
        free(c->ev[i].data);
    }
    c->n = 0;
}

struct expect {
    enum sse_kind kind;
    const char *raw;
    const char *event; /* NULL: no event field */
    const char *data;  /* NULL: no data field */
};

enum endings { END_LF, END_CRLF, END_CR };

struct stream {
    const struct expect *ev;
    size_t n;
    enum endings endings;
    char *input; /* concatenation of the raws */
    size_t len;
    size_t ends[MAX_EVENTS]; /* offset just past each event */
};

static void stream_build(struct stream *s, const struct expect *ev, size_t n, enum endings e)
{
    size_t off = 0;

    memset(s, 0, sizeof(*s));
    s->ev = ev;
    s->n = n;
    s->endings = e;
    for (size_t i = 0; i < n; i++)
        s->len += strlen(ev[i].raw);
    s->input = malloc(s->len + 1);
    assert_non_null(s->input);
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(ev[i].raw);
        memcpy(s->input + off, ev[i].raw, l);
        off += l;
        s->ends[i] = off;
    }
    s->input[off] = 0;
}

/* at_boundary after `fed` bytes: at an event end. With lone-CR endings an event's final \r
 * may still gain a \n, so the parser only knows it is complete once the next byte arrives. */
static bool expected_boundary(const struct stream *s, size_t fed)
{
    if (fed == 0)
        return true;
    if (s->endings == END_CR)
        return false;
    for (size_t i = 0; i < s->n; i++)
        if (s->ends[i] == fed)
            return true;
    return false;
}

static void check_events(const struct stream *s, const struct collector *c)
{
    assert_int_equal(c->n, s->n);
    for (size_t i = 0; i < s->n; i++) {
        const struct expect *x = &s->ev[i];
        const struct got_event *g = &c->ev[i];

        assert_int_equal(g->kind, x->kind);
        assert_int_equal(g->raw_len, strlen(x->raw));
        assert_memory_equal(g->raw, x->raw, g->raw_len);
        assert_int_equal(g->has_event, x->event != NULL);
        if (x->event) {
            assert_int_equal(g->event_len, strlen(x->event));
            assert_string_equal(g->event, x->event);
        }
        assert_int_equal(g->has_data, x->data != NULL);
        if (x->data) {
            assert_int_equal(g->data_len, strlen(x->data));
            assert_string_equal(g->data, x->data);
        }
    }
}

/* Feeds s->input cut at the given offsets (ascending, each in (0, len)). */
static void run_cuts(const struct stream *s, const size_t *cuts, size_t ncuts)
{
    struct sse_parser p;
    struct collector c = {0};
    size_t from = 0;
    bool end = false, err = false;

    sse_parser_init(&p);
    assert_true(p.at_boundary);
    for (size_t k = 0; k <= ncuts; k++) {
        size_t to = k < ncuts ? cuts[k] : s->len;

        assert_int_equal(sse_feed(&p, s->input + from, to - from, collect, &c), 0);
        from = to;
        assert_int_equal(p.at_boundary, expected_boundary(s, from));
    }
    assert_int_equal(sse_finish(&p, collect, &c), 0);
    assert_true(p.at_boundary);
    check_events(s, &c);
    for (size_t i = 0; i < s->n; i++) {
        end |= s->ev[i].kind == SSE_EVENT_DONE || s->ev[i].kind == SSE_EVENT_MESSAGE_STOP;
        err |= s->ev[i].kind == SSE_EVENT_ERROR;
    }
    assert_int_equal(p.events, s->n);
    assert_int_equal(p.seen_end, end);
    assert_int_equal(p.seen_error, err);
    assert_false(p.failed);
    collector_free(&c);
    sse_parser_free(&p);
}

static uint32_t rng_state;

static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

static void check_all_chunkings(const struct expect *ev, size_t n, enum endings e)
{
    struct stream s;
    size_t *cuts;

    stream_build(&s, ev, n, e);
    cuts = malloc((s.len + 1) * sizeof(*cuts));
    assert_non_null(cuts);

    /* (a) whole */
    run_cuts(&s, cuts, 0);
    /* (b) one byte at a time */
    for (size_t i = 1; i < s.len; i++)
        cuts[i - 1] = i;
    run_cuts(&s, cuts, s.len ? s.len - 1 : 0);
    /* (c) two chunks, at every split point */
    for (size_t i = 1; i < s.len; i++) {
        cuts[0] = i;
        run_cuts(&s, cuts, 1);
    }
    /* (d) random chunkings, fixed seed */
    rng_state = 12345;
    for (int round = 0; round < 300; round++) {
        size_t nc = 0, at = 0;
        uint32_t maxstep = 1 + rng() % 24;

        for (;;) {
            at += 1 + rng() % maxstep;
            if (at >= s.len)
                break;
            cuts[nc++] = at;
        }
        run_cuts(&s, cuts, nc);
    }
    free(cuts);
    free(s.input);
}

#define CHECK_ALL(arr, endings)                                                                    \
    check_all_chunkings((arr), sizeof(arr) / sizeof((arr)[0]), (endings))

static const struct expect openai_lf[] = {
    {SSE_EVENT_DATA, "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
     NULL, "{\"id\":\"c1\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}"},
    {SSE_EVENT_DATA, "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
     NULL, "{\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}"},
    {SSE_EVENT_DATA, "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
     NULL, "{\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}"},
    {SSE_EVENT_DONE, "data: [DONE]\n\n", NULL, "[DONE]"},
};

static const struct expect anthropic_lf[] = {
    {SSE_EVENT_DATA,
     "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\"}}\n\n",
     "message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"m1\"}}"},
    {SSE_EVENT_DATA,
     "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
     "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
     "content_block_delta",
     "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
     "\"text\":\"Hi\"}}"},
    {SSE_EVENT_MESSAGE_STOP, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
     "message_stop", "{\"type\":\"message_stop\"}"},
};

static void test_openai_stream(void **state)
{
    (void)state;
    CHECK_ALL(openai_lf, END_LF);
}

static void test_anthropic_stream(void **state)
{
    (void)state;
    CHECK_ALL(anthropic_lf, END_LF);
}

static const struct expect openai_crlf[] = {
    {SSE_EVENT_DATA, "data: {\"a\":1}\r\n\r\n", NULL, "{\"a\":1}"},
    {SSE_EVENT_DATA, "data: {\"a\":2}\r\n\r\n", NULL, "{\"a\":2}"},
    {SSE_EVENT_DONE, "data: [DONE]\r\n\r\n", NULL, "[DONE]"},
};

static const struct expect anthropic_crlf[] = {
    {SSE_EVENT_DATA, "event: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\n", "ping",
     "{\"type\":\"ping\"}"},
    {SSE_EVENT_MESSAGE_STOP, "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n",
     "message_stop", "{\"type\":\"message_stop\"}"},
};

static void test_crlf(void **state)
{
    (void)state;
    CHECK_ALL(openai_crlf, END_CRLF);
    CHECK_ALL(anthropic_crlf, END_CRLF);
}

static const struct expect openai_cr[] = {
    {SSE_EVENT_DATA, "data: {\"a\":1}\r\r", NULL, "{\"a\":1}"},
    {SSE_EVENT_DATA, "event: x\rdata: {\"a\":2}\r\r", "x", "{\"a\":2}"},
    {SSE_EVENT_DONE, "data: [DONE]\r\r", NULL, "[DONE]"},
};

static void test_lone_cr(void **state)
{
    (void)state;
    CHECK_ALL(openai_cr, END_CR);
}

/* Every ending in one stream, including a CRLF whose \r and \n may land in different
 * chunks right after a lone CR. */
static const struct expect mixed[] = {
    {SSE_EVENT_DATA, "data: a\r\ndata: b\rdata: c\n\r\n", NULL, "a\nb\nc"},
    {SSE_EVENT_DATA, "data: d\r\r\n", NULL, "d"},
    {SSE_EVENT_DATA, "event: e\n\n", "e", NULL},
    {SSE_EVENT_DONE, "data: [DONE]\n\r\n", NULL, "[DONE]"},
};

static void test_mixed_endings(void **state)
{
    (void)state;
    CHECK_ALL(mixed, END_LF);
}

/* The \r of a CRLF blank line ends a chunk; the \n comes in the next: one event, raw bytes
 * include both, and no extra blank line is seen. */
static void test_cr_then_lf_in_next_chunk(void **state)
{
    struct sse_parser p;
    struct collector c = {0};

    (void)state;
    sse_parser_init(&p);
    assert_int_equal(sse_feed(&p, "data: x\r\n\r", 10, collect, &c), 0);
    assert_int_equal(c.n, 0);
    assert_false(p.at_boundary);
    assert_int_equal(sse_feed(&p, "\n", 1, collect, &c), 0);
    assert_int_equal(c.n, 1);
    assert_true(p.at_boundary);
    assert_string_equal(c.ev[0].raw, "data: x\r\n\r\n");
    /* content line's \r at the end, then \n: same line, not a blank line */
    assert_int_equal(sse_feed(&p, "data: y\r", 8, collect, &c), 0);
    assert_int_equal(sse_feed(&p, "\ndata: z\r\n\r\n", 12, collect, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.ev[1].raw, "data: y\r\ndata: z\r\n\r\n");
    assert_string_equal(c.ev[1].data, "y\nz");
    assert_true(p.at_boundary);
    collector_free(&c);
    sse_parser_free(&p);
}

static const struct expect multiline[] = {
    {SSE_EVENT_DATA, "data: a\ndata: b\ndata:c\ndata\ndata:  d\n\n", NULL, "a\nb\nc\n\n d"},
    {SSE_EVENT_DATA, "data:\n\n", NULL, ""},
    {SSE_EVENT_DATA, "id: 7\nretry: 100\nfoo: bar\n\n", NULL, NULL},
    {SSE_EVENT_DATA, ": c\nevent: one\nevent: two\ndata: x\n: d\n\n", "two", "x"},
};

static void test_multiline_data(void **state)
{
    (void)state;
    CHECK_ALL(multiline, END_LF);
}

static const struct expect comments[] = {
    {SSE_EVENT_COMMENT, ": keep-alive\n\n", NULL, NULL},
    {SSE_EVENT_COMMENT, ":\n:ping\n\n", NULL, NULL},
    {SSE_EVENT_DATA, ": note\ndata: x\n\n", NULL, "x"},
};

static void test_comment_only(void **state)
{
    (void)state;
    CHECK_ALL(comments, END_LF);
}

static const struct expect errors_anthropic[] = {
    {SSE_EVENT_DATA, "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
     "message_start", "{\"type\":\"message_start\"}"},
    {SSE_EVENT_ERROR,
     "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
     "\"message\":\"Overloaded\"}}\n\n",
     "error",
     "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}"},
};

static const struct expect errors_openai[] = {
    {SSE_EVENT_DATA, "data: {\"x\":{\"error\":1}}\n\n", NULL, "{\"x\":{\"error\":1}}"},
    {SSE_EVENT_DATA, "data: {\"errors\":1}\n\n", NULL, "{\"errors\":1}"},
    {SSE_EVENT_DATA, "data: [DONE] \n\n", NULL, "[DONE] "},
    {SSE_EVENT_ERROR, "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
     NULL, "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}"},
    {SSE_EVENT_ERROR, "data: \t { \"error\" : 1}\n\n", NULL, "\t { \"error\" : 1}"},
};

static void test_error_events(void **state)
{
    (void)state;
    CHECK_ALL(errors_anthropic, END_LF);
    CHECK_ALL(errors_openai, END_LF);
}

static const struct expect stops[] = {
    {SSE_EVENT_MESSAGE_STOP, "event: message_stop\n\n", "message_stop", NULL},
};

static void test_message_stop_without_data(void **state)
{
    (void)state;
    CHECK_ALL(stops, END_LF);
}

static void test_flags(void **state)
{
    struct sse_parser p;
    struct collector c = {0};
    const char *s1 = "data: {}\n\n";
    const char *s2 = "data: {\"error\":{}}\n\n";

    (void)state;
    sse_parser_init(&p);
    assert_false(p.seen_end);
    assert_false(p.seen_error);
    assert_int_equal(sse_feed(&p, s1, strlen(s1), collect, &c), 0);
    assert_false(p.seen_end);
    assert_false(p.seen_error);
    assert_int_equal(sse_feed(&p, s2, strlen(s2), collect, &c), 0);
    assert_false(p.seen_end);
    assert_true(p.seen_error);
    assert_int_equal(sse_feed(&p, "data: [DONE]\n\n", 14, collect, &c), 0);
    assert_true(p.seen_end);
    assert_int_equal(p.events, 3);
    collector_free(&c);
    sse_parser_free(&p);
}

/* Blank lines outside any event belong to none and are skipped. */
static void test_stray_blank_lines(void **state)
{
    const char *in = "\n\r\n\r\rdata: x\n\n\n\r\n\n";
    struct sse_parser p;
    struct collector c = {0};

    (void)state;
    for (size_t cut = 0; cut <= strlen(in); cut++) {
        sse_parser_init(&p);
        assert_int_equal(sse_feed(&p, in, cut, collect, &c), 0);
        assert_int_equal(sse_feed(&p, in + cut, strlen(in) - cut, collect, &c), 0);
        assert_true(p.at_boundary);
        assert_int_equal(sse_finish(&p, collect, &c), 0);
        assert_int_equal(c.n, 1);
        assert_string_equal(c.ev[0].raw, "data: x\n\n");
        collector_free(&c);
        sse_parser_free(&p);
    }
}

static void test_partial_event_at_finish(void **state)
{
    struct sse_parser p;
    struct collector c = {0};

    (void)state;
    sse_parser_init(&p);
    assert_int_equal(sse_feed(&p, "data: x\n", 8, collect, &c), 0);
    assert_false(p.at_boundary);
    assert_int_equal(sse_finish(&p, collect, &c), 0);
    assert_int_equal(c.n, 0);
    assert_false(p.at_boundary);
    /* lone CR at the very end: held, then reported by sse_finish */
    sse_parser_free(&p);
    sse_parser_init(&p);
    assert_int_equal(sse_feed(&p, "data: [DONE]\r\r", 14, collect, &c), 0);
    assert_int_equal(c.n, 0);
    assert_false(p.seen_end);
    assert_int_equal(sse_finish(&p, collect, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.ev[0].kind, SSE_EVENT_DONE);
    assert_string_equal(c.ev[0].raw, "data: [DONE]\r\r");
    assert_true(p.seen_end);
    assert_true(p.at_boundary);
    assert_int_equal(sse_finish(&p, collect, &c), 0);
    assert_int_equal(c.n, 1);
    collector_free(&c);
    sse_parser_free(&p);
}

static void test_callback_stop(void **state)
{
    const char *in = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    struct sse_parser p;
    struct collector c = {0};

    (void)state;
    c.stop_at = 2;
    c.stop_rc = 42;
    sse_parser_init(&p);
    assert_int_equal(sse_feed(&p, in, strlen(in), collect, &c), 42);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.ev[1].data, "2");
    assert_int_equal(p.events, 2);
    collector_free(&c);
    sse_parser_free(&p);

    /* stop from an event that was held for a possible \n */
    c.stop_at = 1;
    c.stop_rc = -5;
    sse_parser_init(&p);
    assert_int_equal(sse_feed(&p, "data: 1\r\r", 9, collect, &c), 0);
    assert_int_equal(sse_feed(&p, "\ndata: 2\n\n", 10, collect, &c), -5);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.ev[0].raw, "data: 1\r\r\n");
    collector_free(&c);
    sse_parser_free(&p);
}

static void feed_big(size_t payload, size_t chunk, int want)
{
    /* "data: " + payload x 'a' + "\n\n" */
    size_t len = 6 + payload + 2;
    char *in = malloc(len);
    struct sse_parser p;
    struct collector c = {0};
    int rc = 0;

    assert_non_null(in);
    memcpy(in, "data: ", 6);
    memset(in + 6, 'a', payload);
    memcpy(in + 6 + payload, "\n\n", 2);
    sse_parser_init(&p);
    for (size_t off = 0; off < len && rc == 0; off += chunk)
        rc = sse_feed(&p, in + off, len - off < chunk ? len - off : chunk, collect, &c);
    assert_int_equal(rc, want);
    if (want == 0) {
        assert_int_equal(c.n, 1);
        assert_int_equal(c.ev[0].raw_len, len);
        assert_int_equal(c.ev[0].data_len, payload);
        assert_false(p.failed);
    } else {
        assert_int_equal(c.n, 0);
        assert_true(p.failed);
        assert_true(p.pending.len <= SSE_MAX_EVENT_BYTES);
        /* sticky */
        assert_int_equal(sse_feed(&p, "data: x\n\n", 9, collect, &c), SSE_ERR_TOO_BIG);
        assert_int_equal(sse_finish(&p, collect, &c), SSE_ERR_TOO_BIG);
        assert_int_equal(c.n, 0);
    }
    collector_free(&c);
    sse_parser_free(&p);
    free(in);
}

static void test_too_big(void **state)
{
    (void)state;
    /* exactly the limit is fine, one byte more is not; whole and chunked */
    feed_big(SSE_MAX_EVENT_BYTES - 8, SIZE_MAX, 0);
    feed_big(SSE_MAX_EVENT_BYTES - 8, 4096, 0);
    feed_big(SSE_MAX_EVENT_BYTES - 7, SIZE_MAX, SSE_ERR_TOO_BIG);
    feed_big(SSE_MAX_EVENT_BYTES - 7, 4093, SSE_ERR_TOO_BIG);
    /* a line that never ends */
    feed_big(4 * SSE_MAX_EVENT_BYTES, 65536, SSE_ERR_TOO_BIG);
}

/* Many events in one chunk and in small chunks: linear, and raw points at the input when
 * the event lies inside one chunk. */
static void test_many_events(void **state)
{
    enum { N = 20000 };
    const char *one = "data: {\"k\":1}\n\n";
    size_t l = strlen(one), len = N * l;
    char *in = malloc(len);
    struct sse_parser p;

    (void)state;
    assert_non_null(in);
    for (size_t i = 0; i < N; i++)
        memcpy(in + i * l, one, l);
    sse_parser_init(&p);
    assert_int_equal(sse_feed(&p, in, len, NULL, NULL), 0);
    assert_int_equal(p.events, N);
    assert_int_equal(p.pending.len, 0);
    for (size_t off = 0; off < len; off += 7)
        assert_int_equal(sse_feed(&p, in + off, len - off < 7 ? len - off : 7, NULL, NULL), 0);
    assert_int_equal(p.events, 2 * N);
    assert_true(p.at_boundary);
    sse_parser_free(&p);
    free(in);
}

static void test_kind_to_str(void **state)
{
    (void)state;
    assert_string_equal(sse_kind_to_str(SSE_EVENT_DATA), "data");
    assert_string_equal(sse_kind_to_str(SSE_EVENT_DONE), "done");
    assert_string_equal(sse_kind_to_str(SSE_EVENT_MESSAGE_STOP), "message_stop");
    assert_string_equal(sse_kind_to_str(SSE_EVENT_ERROR), "error");
    assert_string_equal(sse_kind_to_str(SSE_EVENT_COMMENT), "comment");
    assert_string_equal(sse_kind_to_str(SSE_KIND_COUNT), "unknown");
    sse_parser_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_openai_stream),
        cmocka_unit_test(test_anthropic_stream),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_lone_cr),
        cmocka_unit_test(test_mixed_endings),
        cmocka_unit_test(test_cr_then_lf_in_next_chunk),
        cmocka_unit_test(test_multiline_data),
        cmocka_unit_test(test_comment_only),
        cmocka_unit_test(test_error_events),
        cmocka_unit_test(test_message_stop_without_data),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_stray_blank_lines),
        cmocka_unit_test(test_partial_event_at_finish),
        cmocka_unit_test(test_callback_stop),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_many_events),
        cmocka_unit_test(test_kind_to_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
