/* Streaming translation (translate_stream.c), data-driven: every
 * tests/data/translate/stream-<case>/ holds input.sse (an upstream transcript as the real API
 * sends it), expected.sse (the client's transcript) and case.json
 *   {"from":"openai"|"anthropic","model":..,"include_usage":bool,"created":N,
 *    "dropped":[..],"done":bool,"errored":bool[,"result":-1]}.
 * The input is split into events by the real SSE splitter (sse.c) and fed to tr_stream_feed;
 * the output is split the same way and compared event by event with expected.sse (event
 * names equal, data compared as JSON when both sides are JSON, literally otherwise, same
 * count). The input is fed whole, in random-size chunks (fixed seed) and byte by byte: the
 * output must be the same bytes every time. "result":-1 means one event is invalid: that
 * feed returns -1, appends nothing, and feeding stops there (as the relay does). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"
#include "translate.h"

#define MIN_CASES  28
#define MAX_CASES  128
#define MAX_EVENTS 512

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct lr_buf b = {0};
    char chunk[4096];
    size_t got;

    if (!f)
        return NULL;
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0)
        assert_int_equal(lr_buf_append(&b, chunk, got), 0);
    fclose(f);
    if (len)
        *len = b.len;
    char *s = lr_buf_steal_str(&b);
    assert_non_null(s);
    return s;
}

/* ---------------------------------------------------------------- splitting output */

struct ev_copy {
    char *event; /* NULL when none */
    char *data;  /* NULL when none */
};

struct ev_list {
    struct ev_copy v[MAX_EVENTS];
    size_t n;
};

static char *dup_n(const char *s, size_t n)
{
    if (!s)
        return NULL;
    char *c = strndup(s, n);
    assert_non_null(c);
    return c;
}

static int collect(void *ud, const struct sse_event *ev)
{
    struct ev_list *l = ud;
    if (ev->kind == SSE_EVENT_COMMENT)
        return 0;
    assert_true(l->n < MAX_EVENTS);
    l->v[l->n].event = dup_n(ev->event, ev->event_len);
    l->v[l->n].data = dup_n(ev->data, ev->data_len);
    l->n++;
    return 0;
}

/* Splits a transcript; it must consist of whole events only. */
static void split_events(const char *text, size_t len, struct ev_list *l)
{
    struct sse_parser p;
    sse_parser_init(&p);
    l->n = 0;
    assert_int_equal(sse_feed(&p, text, len, collect, l), 0);
    assert_int_equal(sse_finish(&p, collect, l), 0);
    assert_true(p.at_boundary);
    sse_parser_free(&p);
}

static void free_events(struct ev_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].event);
        free(l->v[i].data);
    }
    l->n = 0;
}

static bool data_equal(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL);
    bool eq = ja && jb ? json_equal(ja, jb) : strcmp(a, b) == 0;
    json_decref(ja);
    json_decref(jb);
    return eq;
}

static bool str_equal(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

/* ---------------------------------------------------------------- feeding input */

struct run {
    struct tr_stream *s;
    struct lr_buf out;
    struct lr_buf drops; /* "a,b," */
    int rc;              /* the first nonzero feed result */
    size_t feeds;
};

static void on_drop(void *ud, const char *field)
{
    struct run *r = ud;
    assert_non_null(field);
    assert_int_equal(lr_buf_puts(&r->drops, field), 0);
    assert_int_equal(lr_buf_puts(&r->drops, ","), 0);
}

static bool at_event_boundary(const struct lr_buf *b)
{
    return b->len == 0 ||
           (b->len >= 2 && b->data[b->len - 1] == '\n' && b->data[b->len - 2] == '\n');
}

static int feed_event(void *ud, const struct sse_event *ev)
{
    struct run *r = ud;
    size_t before = r->out.len;
    int rc =
        tr_stream_feed(r->s, ev->event, ev->event_len, ev->data, ev->data_len, on_drop, r, &r->out);
    r->feeds++;
    if (rc != 0) {
        assert_int_equal(r->out.len, before); /* nothing appended on error */
        r->rc = rc;
        return rc; /* stops the splitter: the relay ends the stream here */
    }
    assert_true(at_event_boundary(&r->out));
    if (ev->kind == SSE_EVENT_COMMENT || !ev->data)
        assert_int_equal(r->out.len, before);
    return 0;
}

struct case_def {
    enum tr_dialect from;
    const char *model;
    bool include_usage, done, errored;
    json_int_t created;
    int result;
    char dropped[256]; /* "a,b," as on_drop writes them */
};

/* chunk: 0 = whole, SIZE_MAX = random sizes, otherwise that size. */
static void run_input(const struct case_def *c, const char *in, size_t in_len, size_t chunk,
                      unsigned seed, struct run *r)
{
    struct sse_parser p;
    size_t off = 0;
    int rc = 0;

    memset(r, 0, sizeof(*r));
    r->s = tr_stream_new(c->from, c->model, c->include_usage, c->created);
    assert_non_null(r->s);
    sse_parser_init(&p);
    while (off < in_len && rc == 0) {
        size_t n = in_len - off;
        if (chunk == SIZE_MAX) {
            seed = seed * 1103515245u + 12345u;
            n = (seed >> 16) % 97 + 1;
        } else if (chunk) {
            n = chunk;
        }
        if (n > in_len - off)
            n = in_len - off;
        rc = sse_feed(&p, in + off, n, feed_event, r);
        off += n;
    }
    if (rc == 0)
        rc = sse_finish(&p, feed_event, r);
    assert_int_equal(rc, r->rc); /* only the translator stops the splitter */
    assert_true(at_event_boundary(&r->out));
    sse_parser_free(&p);
}

static void free_run(struct run *r)
{
    tr_stream_free(r->s);
    lr_buf_free(&r->out);
    lr_buf_free(&r->drops);
}

static void join(char *buf, size_t len, const char *dir, const char *file)
{
    int n = snprintf(buf, len, "%s/%s", dir, file);
    assert_true(n > 0 && (size_t)n < len);
}

static void load_case(const char *dir, struct case_def *c, json_t **root)
{
    char path[PATH_MAX];
    json_error_t jerr;

    join(path, sizeof(path), dir, "case.json");
    *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!*root)
        fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
    const char *from = json_string_value(json_object_get(*root, "from"));
    assert_non_null(from);
    if (strcmp(from, "openai") == 0)
        c->from = TR_OPENAI;
    else if (strcmp(from, "anthropic") == 0)
        c->from = TR_ANTHROPIC;
    else
        fail_msg("%s: from must be openai or anthropic", path);
    c->model = json_string_value(json_object_get(*root, "model"));
    assert_true(json_is_boolean(json_object_get(*root, "include_usage")));
    c->include_usage = json_is_true(json_object_get(*root, "include_usage"));
    assert_true(json_is_integer(json_object_get(*root, "created")));
    c->created = json_integer_value(json_object_get(*root, "created"));
    assert_true(json_is_boolean(json_object_get(*root, "done")));
    c->done = json_is_true(json_object_get(*root, "done"));
    assert_true(json_is_boolean(json_object_get(*root, "errored")));
    c->errored = json_is_true(json_object_get(*root, "errored"));
    c->result = (int)json_integer_value(json_object_get(*root, "result"));
    const json_t *dropped = json_object_get(*root, "dropped");
    assert_true(json_is_array(dropped));
    c->dropped[0] = 0;
    size_t i;
    const json_t *d;
    json_array_foreach(dropped, i, d)
    {
        assert_true(json_is_string(d));
        strncat(c->dropped, json_string_value(d), sizeof(c->dropped) - strlen(c->dropped) - 2);
        strcat(c->dropped, ",");
    }
}

static void compare_events(const char *name, const struct ev_list *got, const struct ev_list *want)
{
    size_t n = got->n < want->n ? got->n : want->n;
    for (size_t i = 0; i < n; i++) {
        if (!str_equal(got->v[i].event, want->v[i].event) ||
            !data_equal(got->v[i].data, want->v[i].data))
            fail_msg("%s: event %zu differs\n  expected: event=%s data=%s\n  got:      "
                     "event=%s data=%s",
                     name, i, want->v[i].event ? want->v[i].event : "(none)", want->v[i].data,
                     got->v[i].event ? got->v[i].event : "(none)", got->v[i].data);
    }
    if (got->n != want->n)
        fail_msg("%s: %zu events, expected %zu (first extra/missing: %s)", name, got->n, want->n,
                 got->n > want->n ? got->v[n].data : want->v[n].data);
}

/* ---------------------------------------------------------------- meaning, not bytes
 * What a client would assemble from a transcript in either dialect: the text, the tool
 * calls (id, name, concatenated arguments, in order) and the stop reason in OpenAI's terms.
 * Every complete case must say the same thing on both sides, and again after a round trip
 * through both translators. Independent of the goldens. */

#define SUM_TOOLS 8

struct summary {
    struct lr_buf text;
    struct lr_buf tool_id[SUM_TOOLS], tool_name[SUM_TOOLS], tool_args[SUM_TOOLS];
    int block_tool[SUM_TOOLS]; /* Anthropic block index -> tool slot, -1 when not a tool */
    size_t ntools;
    char stop[32];
};

static void sum_init(struct summary *m)
{
    memset(m, 0, sizeof(*m));
    for (size_t i = 0; i < SUM_TOOLS; i++)
        m->block_tool[i] = -1;
}

static void sum_free(struct summary *m)
{
    lr_buf_free(&m->text);
    for (size_t i = 0; i < SUM_TOOLS; i++) {
        lr_buf_free(&m->tool_id[i]);
        lr_buf_free(&m->tool_name[i]);
        lr_buf_free(&m->tool_args[i]);
    }
}

static void sum_put(struct lr_buf *b, const json_t *v)
{
    if (json_is_string(v))
        assert_int_equal(lr_buf_append(b, json_string_value(v), json_string_length(v)), 0);
}

static const char *finish_of(const char *stop_reason)
{
    static const char *const map[][2] = {{"end_turn", "stop"},
                                         {"stop_sequence", "stop"},
                                         {"max_tokens", "length"},
                                         {"tool_use", "tool_calls"},
                                         {"refusal", "content_filter"}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(stop_reason, map[i][0]) == 0)
            return map[i][1];
    fail_msg("unknown stop_reason %s", stop_reason);
    return NULL;
}

static void summarize(const struct ev_list *l, bool anthropic, struct summary *m)
{
    sum_init(m);
    for (size_t i = 0; i < l->n; i++) {
        if ((l->v[i].data && strcmp(l->v[i].data, "[DONE]") == 0) ||
            (l->v[i].event && strcmp(l->v[i].event, "message_stop") == 0))
            break; /* what follows the end means nothing */
        if (!l->v[i].data)
            continue;
        json_t *d = json_loads(l->v[i].data, 0, NULL);
        assert_non_null(d);
        if (anthropic) {
            const char *type = json_string_value(json_object_get(d, "type"));
            size_t idx = (size_t)json_integer_value(json_object_get(d, "index"));
            const json_t *cb = json_object_get(d, "content_block");
            const json_t *delta = json_object_get(d, "delta");
            if (type && strcmp(type, "content_block_start") == 0 &&
                strcmp(json_string_value(json_object_get(cb, "type")), "tool_use") == 0) {
                assert_true(idx < SUM_TOOLS && m->ntools < SUM_TOOLS);
                m->block_tool[idx] = (int)m->ntools;
                sum_put(&m->tool_id[m->ntools], json_object_get(cb, "id"));
                sum_put(&m->tool_name[m->ntools++], json_object_get(cb, "name"));
            } else if (type && strcmp(type, "content_block_delta") == 0) {
                const char *dt = json_string_value(json_object_get(delta, "type"));
                if (strcmp(dt, "text_delta") == 0)
                    sum_put(&m->text, json_object_get(delta, "text"));
                else if (strcmp(dt, "input_json_delta") == 0 && idx < SUM_TOOLS &&
                         m->block_tool[idx] >= 0)
                    sum_put(&m->tool_args[m->block_tool[idx]],
                            json_object_get(delta, "partial_json"));
            } else if (type && strcmp(type, "message_delta") == 0 &&
                       json_is_string(json_object_get(delta, "stop_reason"))) {
                snprintf(m->stop, sizeof(m->stop), "%s",
                         finish_of(json_string_value(json_object_get(delta, "stop_reason"))));
            }
        } else {
            const json_t *ch = json_array_get(json_object_get(d, "choices"), 0);
            const json_t *delta = json_object_get(ch, "delta");
            sum_put(&m->text, json_object_get(delta, "content"));
            sum_put(&m->text, json_object_get(delta, "refusal")); /* becomes text */
            size_t k;
            const json_t *tc;
            json_array_foreach(json_object_get(delta, "tool_calls"), k, tc)
            {
                size_t t = (size_t)json_integer_value(json_object_get(tc, "index"));
                assert_true(t < SUM_TOOLS);
                if (t >= m->ntools)
                    m->ntools = t + 1;
                sum_put(&m->tool_id[t], json_object_get(tc, "id"));
                sum_put(&m->tool_name[t], json_object_get(json_object_get(tc, "function"), "name"));
                sum_put(&m->tool_args[t],
                        json_object_get(json_object_get(tc, "function"), "arguments"));
            }
            if (json_is_string(json_object_get(ch, "finish_reason")))
                snprintf(m->stop, sizeof(m->stop), "%s",
                         json_string_value(json_object_get(ch, "finish_reason")));
        }
        json_decref(d);
    }
    if (!m->stop[0])
        snprintf(m->stop, sizeof(m->stop), "stop");      /* ended without a reason: end_turn */
    assert_int_equal(lr_buf_append(&m->text, "", 0), 0); /* NUL-terminated, even if empty */
    for (size_t t = 0; t < m->ntools; t++) {
        assert_int_equal(lr_buf_append(&m->tool_id[t], "", 0), 0);
        assert_int_equal(lr_buf_append(&m->tool_name[t], "", 0), 0);
        assert_int_equal(lr_buf_append(&m->tool_args[t], "", 0), 0);
    }
}

static void sum_equal(const char *name, const char *what, const struct summary *a,
                      const struct summary *b)
{
    if (strcmp((char *)a->text.data, (char *)b->text.data) != 0)
        fail_msg("%s (%s): text \"%s\" vs \"%s\"", name, what, a->text.data, b->text.data);
    if (strcmp(a->stop, b->stop) != 0)
        fail_msg("%s (%s): stop %s vs %s", name, what, a->stop, b->stop);
    if (a->ntools != b->ntools)
        fail_msg("%s (%s): %zu tool calls vs %zu", name, what, a->ntools, b->ntools);
    for (size_t t = 0; t < a->ntools; t++)
        if (strcmp((char *)a->tool_id[t].data, (char *)b->tool_id[t].data) != 0 ||
            strcmp((char *)a->tool_name[t].data, (char *)b->tool_name[t].data) != 0 ||
            strcmp((char *)a->tool_args[t].data, (char *)b->tool_args[t].data) != 0)
            fail_msg("%s (%s): tool %zu: %s %s(%s) vs %s %s(%s)", name, what, t, a->tool_id[t].data,
                     a->tool_name[t].data, a->tool_args[t].data, b->tool_id[t].data,
                     b->tool_name[t].data, b->tool_args[t].data);
}

/* Feeds a whole transcript (already translated, in `from`'s dialect) through a new stream. */
static void translate_text(enum tr_dialect from, const struct lr_buf *in, struct run *r)
{
    struct case_def c = {.from = from, .model = "m", .include_usage = true, .created = 7};
    run_input(&c, (const char *)in->data, in->len, 0, 1, r);
    assert_int_equal(r->rc, 0);
    assert_true(tr_stream_done(r->s));
}

static void check_meaning(const char *name, const struct case_def *c, const char *in, size_t in_len,
                          const struct run *whole)
{
    struct ev_list *l = calloc(1, sizeof(*l));
    struct summary *sin = calloc(1, sizeof(*sin)), *sout = calloc(1, sizeof(*sout));
    struct run back;
    bool a_in = c->from == TR_ANTHROPIC;

    assert_non_null(l);
    assert_non_null(sin);
    assert_non_null(sout);
    split_events(in, in_len, l);
    summarize(l, a_in, sin);
    free_events(l);
    split_events((const char *)whole->out.data, whole->out.len, l);
    summarize(l, !a_in, sout);
    free_events(l);
    sum_equal(name, "translated", sin, sout);
    sum_free(sout);

    translate_text(a_in ? TR_OPENAI : TR_ANTHROPIC, &whole->out, &back);
    split_events((const char *)back.out.data, back.out.len, l);
    summarize(l, a_in, sout);
    free_events(l);
    sum_equal(name, "round trip", sin, sout);
    free_run(&back);
    sum_free(sin);
    sum_free(sout);
    free(sin);
    free(sout);
    free(l);
}

static void run_case(const char *dir, const char *name)
{
    struct case_def c;
    json_t *root;
    char path[PATH_MAX];
    size_t in_len, exp_len;

    load_case(dir, &c, &root);
    join(path, sizeof(path), dir, "input.sse");
    char *in = read_all(path, &in_len);
    assert_non_null(in);
    join(path, sizeof(path), dir, "expected.sse");
    char *exp = read_all(path, &exp_len);
    assert_non_null(exp);

    struct run whole, other;
    run_input(&c, in, in_len, 0, 1, &whole);
    if (whole.rc != c.result)
        fail_msg("%s: feed result %d, expected %d", name, whole.rc, c.result);
    if (tr_stream_done(whole.s) != c.done || tr_stream_errored(whole.s) != c.errored)
        fail_msg("%s: done=%d errored=%d, expected done=%d errored=%d", name,
                 tr_stream_done(whole.s), tr_stream_errored(whole.s), c.done, c.errored);
    const char *drops = whole.drops.len ? (const char *)whole.drops.data : "";
    if (strcmp(drops, c.dropped) != 0)
        fail_msg("%s: dropped \"%s\", expected \"%s\"", name, drops, c.dropped);

    struct ev_list *got = calloc(1, sizeof(*got)), *want = calloc(1, sizeof(*want));
    assert_non_null(got);
    assert_non_null(want);
    split_events((const char *)whole.out.data, whole.out.len, got);
    split_events(exp, exp_len, want);
    compare_events(name, got, want);
    /* The client dialect's framing: Anthropic events are named, OpenAI chunks are not. */
    for (size_t i = 0; i < got->n; i++)
        assert_true(c.from == TR_OPENAI ? got->v[i].event != NULL : got->v[i].event == NULL);
    free_events(got);
    free_events(want);
    free(got);
    free(want);

    /* The same bytes however the input arrives. */
    static const size_t chunks[] = {SIZE_MAX, 1, 7};
    for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
        run_input(&c, in, in_len, chunks[k], 0x5eed + (unsigned)k, &other);
        if (other.rc != whole.rc || other.out.len != whole.out.len ||
            memcmp(other.out.data, whole.out.data, whole.out.len) != 0 ||
            other.drops.len != whole.drops.len ||
            (whole.drops.len && memcmp(other.drops.data, whole.drops.data, whole.drops.len)) ||
            tr_stream_done(other.s) != c.done || tr_stream_errored(other.s) != c.errored)
            fail_msg("%s: output differs when fed in chunks (mode %zu)", name, k);
        free_run(&other);
    }
    if (c.done && !c.errored)
        check_meaning(name, &c, in, in_len, &whole);
    free_run(&whole);
    free(in);
    free(exp);
    json_decref(root);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_cases(void **state)
{
    (void)state;
    const char *base = LR_TEST_DATA_DIR "/translate";
    DIR *d = opendir(base);
    char *names[MAX_CASES] = {0};
    size_t n = 0, openai = 0, anthropic = 0;
    struct dirent *de;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "stream-", 7) != 0)
            continue;
        assert_true(n < MAX_CASES);
        names[n] = strdup(de->d_name);
        assert_non_null(names[n]);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_names);
    for (size_t i = 0; i < n; i++) {
        char dir[PATH_MAX];
        join(dir, sizeof(dir), base, names[i]);
        run_case(dir, names[i]);
        if (strncmp(names[i], "stream-openai-", 14) == 0)
            openai++;
        else if (strncmp(names[i], "stream-anthropic-", 17) == 0)
            anthropic++;
        free(names[i]);
    }
    print_message("%zu stream cases (%zu from OpenAI, %zu from Anthropic)\n", n, openai, anthropic);
    assert_true(n >= MIN_CASES);
    assert_true(openai >= MIN_CASES / 2 && anthropic >= MIN_CASES / 3);
}

/* ---------------------------------------------------------------- direct tests */

static int feed_str(struct tr_stream *s, const char *event, const char *data, struct lr_buf *out)
{
    return tr_stream_feed(s, event, event ? strlen(event) : 0, data, data ? strlen(data) : 0, NULL,
                          NULL, out);
}

static const char *A_START =
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":"
    "\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,"
    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}";
static const char *O_CHUNK =
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"finish_reason\":null}]}";

static void test_null_safe(void **state)
{
    (void)state;
    struct lr_buf out = {0};
    tr_stream_free(NULL);
    assert_false(tr_stream_done(NULL));
    assert_false(tr_stream_errored(NULL));
    assert_int_equal(tr_stream_feed(NULL, NULL, 0, "{}", 2, NULL, NULL, &out), -1);
    struct tr_stream *s = tr_stream_new(TR_ANTHROPIC, NULL, true, 0);
    assert_non_null(s);
    assert_int_equal(tr_stream_feed(s, NULL, 0, "{}", 2, NULL, NULL, NULL), -1);
    /* no data (a comment, an event line alone): nothing, not an error */
    assert_int_equal(feed_str(s, "ping", NULL, &out), 0);
    assert_int_equal(feed_str(s, NULL, NULL, &out), 0);
    assert_int_equal(out.len, 0);
    assert_false(tr_stream_done(s));
    tr_stream_free(s);
}

/* Invalid events return -1 and append nothing, whatever was appended before. */
static void test_invalid_events(void **state)
{
    (void)state;
    static const struct {
        enum tr_dialect from;
        const char *event, *data;
    } bad[] = {
        {TR_ANTHROPIC, "message_start", "not json"},
        {TR_ANTHROPIC, "message_start", "[1,2]"},
        {TR_ANTHROPIC, "message_start", "{\"type\":\"message_start\"}"},
        {TR_ANTHROPIC, "content_block_start",
         "{\"type\":\"content_block_start\",\"index\":5,\"content_block\":{\"type\":\"text\"}}"},
        {TR_ANTHROPIC, "content_block_start",
         "{\"type\":\"content_block_start\",\"index\":-1,\"content_block\":{\"type\":\"text\"}}"},
        {TR_ANTHROPIC, "content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"text_delta\","
         "\"text\":\"x\"}}"},
        {TR_ANTHROPIC, "content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\","
         "\"partial_json\":\"{\"}}"},
        {TR_ANTHROPIC, "content_block_delta",
         "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
         "\"text\":7}}"},
        {TR_ANTHROPIC, "message_delta", "{\"type\":\"message_delta\",\"delta\":\"end_turn\"}"},
        {TR_OPENAI, NULL, "{\"choices\":[{\"delta\":{\"content\":\"trunc"},
        {TR_OPENAI, NULL, "\"just a string\""},
        {TR_OPENAI, NULL, "{\"choices\":{}}"},
        {TR_OPENAI, NULL, "{\"choices\":[7]}"},
        {TR_OPENAI, NULL,
         "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"c\"}]}}]}"},
        {TR_OPENAI, NULL,
         "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":-2}]}}]}"},
        {TR_OPENAI, NULL,
         "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":100000}]}}]}"},
        {TR_OPENAI, NULL, "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":{}}}]}"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct tr_stream *s = tr_stream_new(bad[i].from, "m", true, 1);
        struct lr_buf out = {0};
        assert_non_null(s);
        if (strcmp(bad[i].event ? bad[i].event : "", "message_start") != 0) {
            if (bad[i].from == TR_ANTHROPIC) {
                assert_int_equal(feed_str(s, "message_start", A_START, &out), 0);
                assert_int_equal(
                    feed_str(s, "content_block_start",
                             "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                             "{\"type\":\"text\",\"text\":\"\"}}",
                             &out),
                    0);
            } else {
                assert_int_equal(feed_str(s, NULL, O_CHUNK, &out), 0);
            }
        }
        size_t before = out.len;
        if (feed_str(s, bad[i].event, bad[i].data, &out) != -1)
            fail_msg("bad event %zu (%s) accepted", i, bad[i].data);
        assert_int_equal(out.len, before);
        assert_false(tr_stream_done(s));
        assert_false(tr_stream_errored(s));
        tr_stream_free(s);
        lr_buf_free(&out);
    }
}

/* Streams that do not begin properly. */
static void test_bad_beginnings(void **state)
{
    (void)state;
    struct lr_buf out = {0};
    struct tr_stream *s = tr_stream_new(TR_OPENAI, NULL, false, 0);
    assert_non_null(s);
    assert_int_equal(feed_str(s, NULL, "[DONE]", &out), -1); /* no chunk at all */
    assert_false(tr_stream_done(s));
    tr_stream_free(s);

    s = tr_stream_new(TR_ANTHROPIC, NULL, false, 0);
    assert_non_null(s);
    /* ping and unknown event types before message_start are harmless */
    assert_int_equal(feed_str(s, "ping", "{\"type\":\"ping\"}", &out), 0);
    assert_int_equal(feed_str(s, "future_event", "{\"type\":\"future_event\"}", &out), 0);
    assert_int_equal(feed_str(s, "content_block_delta",
                              "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                              "\"text_delta\",\"text\":\"x\"}}",
                              &out),
                     -1);
    assert_int_equal(out.len, 0);
    tr_stream_free(s);

    s = tr_stream_new(TR_ANTHROPIC, NULL, false, 0);
    assert_non_null(s);
    assert_int_equal(feed_str(s, "message_stop", "{\"type\":\"message_stop\"}", &out), -1);
    assert_int_equal(out.len, 0);
    assert_false(tr_stream_done(s));
    tr_stream_free(s);
    lr_buf_free(&out);
}

/* After a rejected event the stream is over: every later feed fails the same way and
 * appends nothing, even a valid one. */
static void test_failure_sticks(void **state)
{
    (void)state;
    struct lr_buf out = {0};
    struct tr_stream *s = tr_stream_new(TR_ANTHROPIC, NULL, true, 0);
    assert_non_null(s);
    assert_int_equal(feed_str(s, "message_start", A_START, &out), 0);
    size_t before = out.len;
    assert_int_equal(feed_str(s, "content_block_start", "{\"type\":", &out), -1);
    assert_int_equal(feed_str(s, "message_stop", "{\"type\":\"message_stop\"}", &out), -1);
    assert_int_equal(feed_str(s, "ping", NULL, &out), -1);
    assert_int_equal(out.len, before);
    assert_false(tr_stream_done(s));
    assert_false(tr_stream_errored(s));
    tr_stream_free(s);

    s = tr_stream_new(TR_OPENAI, NULL, false, 0);
    assert_non_null(s);
    lr_buf_reset(&out);
    assert_int_equal(feed_str(s, NULL, O_CHUNK, &out), 0);
    before = out.len;
    assert_int_equal(feed_str(s, NULL,
                              "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":"
                              "[{\"index\":0,\"id\":\"a\"},{\"index\":\"x\"}]}}]}",
                              &out),
                     -1);
    assert_int_equal(feed_str(s, NULL, "[DONE]", &out), -1);
    assert_int_equal(out.len, before);
    assert_false(tr_stream_done(s));
    tr_stream_free(s);
    lr_buf_free(&out);
}

/* Without an "event:" line the Anthropic data's "type" names the event. */
static void test_anthropic_unnamed(void **state)
{
    (void)state;
    struct lr_buf out = {0};
    struct tr_stream *s = tr_stream_new(TR_ANTHROPIC, NULL, false, 42);
    assert_non_null(s);
    assert_int_equal(feed_str(s, NULL, A_START, &out), 0);
    assert_int_equal(feed_str(s, NULL, "{\"type\":\"message_stop\"}", &out), 0);
    assert_true(tr_stream_done(s));
    struct ev_list *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    split_events((const char *)out.data, out.len, l);
    assert_int_equal(l->n, 3); /* role chunk, finish chunk, [DONE] */
    json_t *j = json_loads(l->v[0].data, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "msg_1");
    assert_string_equal(json_string_value(json_object_get(j, "model")), "claude-x");
    assert_int_equal(json_integer_value(json_object_get(j, "created")), 42);
    assert_null(json_object_get(j, "usage")); /* only with include_usage */
    json_decref(j);
    assert_string_equal(l->v[2].data, "[DONE]");
    free_events(l);
    free(l);
    tr_stream_free(s);
    lr_buf_free(&out);
}

/* A tool_use start that already carries its input (not streamed) sends it as arguments;
 * an OpenAI tool call without an id gets one. */
static void test_tool_edges(void **state)
{
    (void)state;
    struct lr_buf out = {0};
    struct tr_stream *s = tr_stream_new(TR_ANTHROPIC, NULL, false, 1);
    assert_non_null(s);
    assert_int_equal(feed_str(s, "message_start", A_START, &out), 0);
    lr_buf_reset(&out);
    assert_int_equal(feed_str(s, "content_block_start",
                              "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{"
                              "\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"f\",\"input\":{"
                              "\"a\":1}}}",
                              &out),
                     0);
    assert_non_null(strstr((const char *)out.data, "\"arguments\":\"{\\\"a\\\":1}\""));
    tr_stream_free(s);
    lr_buf_reset(&out);

    s = tr_stream_new(TR_OPENAI, NULL, false, 1);
    assert_non_null(s);
    assert_int_equal(feed_str(s, NULL,
                              "{\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{"
                              "\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\","
                              "\"arguments\":\"{}\"}}]}}]}",
                              &out),
                     0);
    assert_non_null(strstr((const char *)out.data, "\"id\":\"toolu_lr_0\""));
    assert_non_null(strstr((const char *)out.data, "\"partial_json\":\"{}\""));
    /* a second id at the same index starts a new block (index 1) */
    lr_buf_reset(&out);
    assert_int_equal(
        feed_str(s, NULL,
                 "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{"
                 "\"index\":0,\"id\":\"call_2\",\"function\":{\"name\":\"g\"}}]}}]}",
                 &out),
        0);
    assert_non_null(strstr((const char *)out.data, "\"type\":\"content_block_stop\",\"index\":0"));
    assert_non_null(strstr((const char *)out.data, "\"index\":1,\"content_block\""));
    tr_stream_free(s);
    lr_buf_free(&out);
}

/* A second choice (n > 1) is dropped and reported once. */
static void count_drop(void *ud, const char *field)
{
    assert_string_equal(field, "n");
    (*(int *)ud)++;
}

static void test_openai_n(void **state)
{
    (void)state;
    struct lr_buf out = {0};
    int drops = 0;
    struct tr_stream *s = tr_stream_new(TR_OPENAI, NULL, false, 1);
    const char *c2 =
        "{\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":1,\"delta\":{\"content\":"
        "\"other\"},\"finish_reason\":null}]}";
    assert_non_null(s);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tr_stream_feed(s, NULL, 0, c2, strlen(c2), count_drop, &drops, &out), 0);
    assert_int_equal(drops, 1);
    assert_null(strstr((const char *)out.data, "other"));
    tr_stream_free(s);
    lr_buf_free(&out);
}

/* Token counts saturate instead of overflowing. */
static void test_usage_saturates(void **state)
{
    (void)state;
    struct lr_buf out = {0};
    struct tr_stream *s = tr_stream_new(TR_ANTHROPIC, NULL, true, 0);
    assert_non_null(s);
    assert_int_equal(
        feed_str(s, "message_start",
                 "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\","
                 "\"usage\":{\"input_tokens\":9223372036854775807,\"cache_read_input_tokens\":"
                 "9223372036854775807,\"output_tokens\":-5}}}",
                 &out),
        0);
    assert_int_equal(
        feed_str(s, "message_delta",
                 "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
                 "\"usage\":{\"output_tokens\":9223372036854775807}}",
                 &out),
        0);
    assert_int_equal(feed_str(s, "message_stop", "{\"type\":\"message_stop\"}", &out), 0);
    assert_non_null(strstr((const char *)out.data, "\"prompt_tokens\":9223372036854775807,"
                                                   "\"completion_tokens\":9223372036854775807,"
                                                   "\"total_tokens\":9223372036854775807"));
    tr_stream_free(s);
    lr_buf_free(&out);
}

/* Allocation failure inside jansson at every possible point: each feed returns 0, -ENOMEM or
 * (jansson's parser cannot always tell) -1,
 * a failed feed appends nothing (checked in feed_event) and the stream stays failed; with
 * enough memory the output is the normal one. */
static size_t alloc_budget;
static bool alloc_limited;

static void *limited_malloc(size_t n)
{
    if (alloc_limited) {
        if (alloc_budget == 0)
            return NULL;
        alloc_budget--;
    }
    return malloc(n);
}

static void test_alloc_failures(void **state)
{
    (void)state;
    static const char *const cases[] = {"stream-anthropic-text-two-tools",
                                        "stream-anthropic-text-usage", "stream-openai-tool-two",
                                        "stream-openai-text-then-tool", "stream-openai-error"};
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char dir[PATH_MAX], path[PATH_MAX];
        struct case_def c;
        json_t *root;
        size_t in_len;
        struct run normal, r;

        join(dir, sizeof(dir), LR_TEST_DATA_DIR "/translate", cases[k]);
        load_case(dir, &c, &root);
        join(path, sizeof(path), dir, "input.sse");
        char *in = read_all(path, &in_len);
        assert_non_null(in);
        run_input(&c, in, in_len, 0, 1, &normal);
        size_t failures = 0, enomem = 0;
        for (size_t budget = 0;; budget++) {
            json_set_alloc_funcs(limited_malloc, free);
            alloc_budget = budget;
            alloc_limited = true;
            run_input(&c, in, in_len, 0, 1, &r);
            alloc_limited = false;
            json_set_alloc_funcs(malloc, free);
            if (r.rc == 0) {
                assert_int_equal(r.out.len, normal.out.len);
                assert_memory_equal(r.out.data, normal.out.data, normal.out.len);
                free_run(&r);
                break;
            }
            /* jansson's parser reports some allocation failures as syntax errors: -1 */
            if (r.rc != -ENOMEM && r.rc != -1)
                fail_msg("%s: budget %zu: feed returned %d", cases[k], budget, r.rc);
            assert_false(tr_stream_done(r.s));
            /* the failed stream stays failed, even for an event that needs no memory */
            assert_int_equal(tr_stream_feed(r.s, NULL, 0, "{}", 2, NULL, NULL, &r.out), r.rc);
            failures++;
            enomem += r.rc == -ENOMEM;
            free_run(&r);
            assert_true(budget < 100000);
        }
        /* the injection reached the translator, and its own allocations report -ENOMEM */
        if (failures <= 10 || enomem == 0)
            fail_msg("%s: %zu failures, %zu -ENOMEM", cases[k], failures, enomem);
        print_message("%s: %zu allocation failures injected (%zu -ENOMEM, %zu -1)\n", cases[k],
                      failures, enomem, failures - enomem);
        free_run(&normal);
        free(in);
        json_decref(root);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),           cmocka_unit_test(test_null_safe),
        cmocka_unit_test(test_invalid_events),  cmocka_unit_test(test_bad_beginnings),
        cmocka_unit_test(test_failure_sticks),  cmocka_unit_test(test_anthropic_unnamed),
        cmocka_unit_test(test_tool_edges),      cmocka_unit_test(test_openai_n),
        cmocka_unit_test(test_usage_saturates), cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
