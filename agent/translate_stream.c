/* Streaming translation between OpenAI chat.completion.chunk events and Anthropic Messages
 * stream events (translate.h). One upstream event in, zero or more complete client events
 * out; the only state kept is what later events need (ids, the open block, the index maps,
 * the stop reason and usage), never the stream's text.
 *
 * Every upstream event is parsed with jansson. The hot events (text and argument deltas)
 * are written from pre-serialised pieces around the jansson-encoded string value, so a
 * delta costs one parse and one string encode; the rare ones are built as jansson objects.
 * A feed either appends whole events or, on error, nothing (out is rolled back); after an
 * error the stream is failed for good (the relay ends it with an error event of its own). */
#include "translate.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_io.h"

#define MAX_BLOCKS 4096 /* Anthropic content blocks / OpenAI tool calls per message */

/* Fields dropped in a stream are reported once per stream. */
enum drop_id {
    DROP_THINKING = 0,
    DROP_CITATIONS,
    DROP_STOP_SEQUENCE,
    DROP_SERVER_TOOL_USE,
    DROP_WEB_SEARCH_RESULT,
    DROP_UNKNOWN_BLOCK,
    DROP_LOGPROBS,
    DROP_N,
    DROP_COUNT
};

static const char *const drop_names[DROP_COUNT] = {
    [DROP_THINKING] = "thinking",
    [DROP_CITATIONS] = "citations",
    [DROP_STOP_SEQUENCE] = "stop_sequence",
    [DROP_SERVER_TOOL_USE] = "content.server_tool_use",
    [DROP_WEB_SEARCH_RESULT] = "content.web_search_tool_result",
    [DROP_UNKNOWN_BLOCK] = "content.unknown",
    [DROP_LOGPROBS] = "logprobs",
    [DROP_N] = "n",
};

/* Anthropic -> OpenAI: what each Anthropic content block became. */
enum a_block { AB_TEXT = 0, AB_TOOL, AB_DROPPED };

struct a_block_info {
    enum a_block kind;
    unsigned tool; /* OpenAI tool_calls index when kind == AB_TOOL */
};

struct tr_stream {
    enum tr_dialect from;
    bool include_usage;
    int64_t created;
    char *model; /* tr_stream_new's, replaced by the upstream's once known */
    bool started, done, errored;
    int failed;       /* a feed's error: the client saw less than the state says, so every
                         later feed returns it again */
    unsigned dropped; /* bit per drop_id already reported */
    json_int_t in_tokens, out_tokens, cached_tokens; /* OpenAI's view: in includes cached */
    bool cached_known; /* OpenAI -> Anthropic: the usage chunk gave cached_tokens */

    /* Anthropic -> OpenAI */
    char *prefix; /* "data: {\"id\":..,\"object\":..,\"created\":..,\"model\":..", once started */
    struct a_block_info *blocks;
    size_t nblocks, blocks_cap;
    unsigned ntools;
    bool finish_sent;

    /* OpenAI -> Anthropic */
    char *msg_id;
    long open_block; /* Anthropic index of the open block, -1 when none */
    bool open_is_text;
    unsigned next_block;
    long *tool_block; /* OpenAI tool index -> Anthropic block index, -1 when unassigned */
    size_t tool_cap;
    const char *stop_reason; /* static; NULL until a finish_reason came */
    bool delta_sent;
};

/* Appends to out; after the first failure everything is a no-op and rc keeps -ENOMEM. */
struct emit {
    struct lr_buf *b;
    int rc;
};

static void put(struct emit *e, const char *s, size_t n)
{
    if (e->rc == 0 && lr_buf_append(e->b, s, n) < 0)
        e->rc = -ENOMEM;
}

static void puts_(struct emit *e, const char *s)
{
    put(e, s, strlen(s));
}

/* Appends v serialised compactly (any JSON value; key order as inserted). */
static void put_json(struct emit *e, const json_t *v)
{
    if (e->rc == 0 && json_io_append(e->b, v) < 0)
        e->rc = -ENOMEM;
}

/* Appends one Anthropic event built from obj (stolen; NULL means out of memory). */
static void put_a_event(struct emit *e, const char *name, json_t *obj)
{
    if (!obj) {
        e->rc = -ENOMEM;
        return;
    }
    puts_(e, "event: ");
    puts_(e, name);
    puts_(e, "\ndata: ");
    put_json(e, obj);
    puts_(e, "\n\n");
    json_decref(obj);
}

static void report(struct tr_stream *s, enum drop_id id, tr_drop_fn drop, void *ud)
{
    if (s->dropped & (1u << id))
        return;
    s->dropped |= 1u << id;
    if (drop)
        drop(ud, drop_names[id]);
}

static bool is_str(const json_t *v)
{
    return json_is_string(v);
}

static const char *str_or(const json_t *v, const char *dflt)
{
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static json_int_t int_or0(const json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : 0;
}

/* Token counts are non-negative; a sum of absurd ones saturates instead of overflowing. */
static json_int_t add_sat(json_int_t a, json_int_t b)
{
    return a > LLONG_MAX - b ? LLONG_MAX : a + b;
}

static int set_str(char **dst, const char *v)
{
    char *c = strdup(v);
    if (!c)
        return -ENOMEM;
    free(*dst);
    *dst = c;
    return 0;
}

struct tr_stream *tr_stream_new(enum tr_dialect from, const char *model, bool include_usage,
                                int64_t created)
{
    struct tr_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->from = from == TR_ANTHROPIC ? TR_ANTHROPIC : TR_OPENAI;
    s->include_usage = include_usage;
    s->created = created;
    s->open_block = -1;
    json_t *check = model ? json_string(model) : NULL; /* NULL unless valid UTF-8 */
    bool valid = check != NULL;
    json_decref(check);
    if (set_str(&s->model, valid ? model : "") < 0) {
        free(s);
        return NULL;
    }
    return s;
}

void tr_stream_free(struct tr_stream *s)
{
    if (!s)
        return;
    free(s->model);
    free(s->prefix);
    free(s->blocks);
    free(s->msg_id);
    free(s->tool_block);
    free(s);
}

bool tr_stream_done(const struct tr_stream *s)
{
    return s && s->done;
}

bool tr_stream_errored(const struct tr_stream *s)
{
    return s && s->errored;
}

/* ------------------------------------------------------------------------------------
 * Anthropic upstream -> OpenAI client */

static const char *finish_from_stop(const char *stop)
{
    if (!stop)
        return "stop";
    if (strcmp(stop, "max_tokens") == 0 || strcmp(stop, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(stop, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(stop, "refusal") == 0)
        return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn */
}

/* One chunk: the cached prefix, choices[0] with delta (pre-serialised JSON text) and
 * finish_reason (NULL: null), and "usage":null when the client asked for usage (as OpenAI
 * sends it). */
static void put_o_chunk(struct emit *e, const struct tr_stream *s, const char *delta_open,
                        const json_t *value, const char *delta_close, const char *finish)
{
    puts_(e, s->prefix);
    puts_(e, ",\"choices\":[{\"index\":0,\"delta\":");
    puts_(e, delta_open);
    if (value)
        put_json(e, value);
    puts_(e, delta_close);
    puts_(e, ",\"logprobs\":null,\"finish_reason\":");
    if (finish) {
        puts_(e, "\"");
        puts_(e, finish);
        puts_(e, "\"");
    } else {
        puts_(e, "null");
    }
    puts_(e, s->include_usage ? "}],\"usage\":null}\n\n" : "}]}\n\n");
}

static void a_usage(struct tr_stream *s, const json_t *u)
{
    if (!json_is_object(u))
        return;
    /* message_start's, then message_delta's (cumulative; input counts appear there only in
     * newer API versions) */
    const json_t *in = json_object_get(u, "input_tokens");
    if (json_is_integer(in)) {
        /* OpenAI's prompt_tokens include cached ones; Anthropic's input_tokens do not */
        s->in_tokens = add_sat(
            add_sat(int_or0(in), int_or0(json_object_get(u, "cache_creation_input_tokens"))),
            int_or0(json_object_get(u, "cache_read_input_tokens")));
        s->cached_tokens = int_or0(json_object_get(u, "cache_read_input_tokens"));
    }
    if (json_is_integer(json_object_get(u, "output_tokens")))
        s->out_tokens = int_or0(json_object_get(u, "output_tokens"));
}

static int a_message_start(struct tr_stream *s, const json_t *d, struct emit *e)
{
    const json_t *msg = json_object_get(d, "message");
    if (!json_is_object(msg) || !is_str(json_object_get(msg, "id")))
        return -1;
    if (s->started)
        return 0; /* a repeated message_start carries nothing new for the client */
    const char *model = str_or(json_object_get(msg, "model"), s->model);
    if (model != s->model && set_str(&s->model, model) < 0)
        return -ENOMEM;
    a_usage(s, json_object_get(msg, "usage"));
    json_t *head = json_pack(
        "{s:s,s:s,s:I,s:s}", "id", json_string_value(json_object_get(msg, "id")), "object",
        "chat.completion.chunk", "created", (json_int_t)s->created, "model", s->model);
    char *text = head ? json_io_dumps(head, NULL) : NULL;
    json_decref(head);
    if (!text)
        return -ENOMEM;
    size_t n = strlen(text);
    s->prefix = malloc(n + 6);
    if (!s->prefix) {
        free(text);
        return -ENOMEM;
    }
    memcpy(s->prefix, "data: ", 6);
    memcpy(s->prefix + 6, text, n - 1); /* without the closing brace */
    s->prefix[n + 5] = '\0';
    free(text);
    s->started = true;
    put_o_chunk(e, s, "{\"role\":\"assistant\",\"content\":\"\"}", NULL, "", NULL);
    return 0;
}

static int a_block_start(struct tr_stream *s, const json_t *d, tr_drop_fn drop, void *ud,
                         struct emit *e)
{
    const json_t *idx = json_object_get(d, "index");
    const json_t *cb = json_object_get(d, "content_block");
    if (!json_is_integer(idx) || !json_is_object(cb))
        return -1;
    json_int_t i = json_integer_value(idx);
    /* Blocks are numbered 0, 1, ... in order: anything else is not an Anthropic stream. */
    if (i < 0 || (size_t)i != s->nblocks || s->nblocks >= MAX_BLOCKS)
        return -1;
    const char *type = str_or(json_object_get(cb, "type"), "");
    struct a_block_info b = {AB_DROPPED, 0};
    if (strcmp(type, "text") == 0) {
        b.kind = AB_TEXT;
    } else if (strcmp(type, "tool_use") == 0) {
        if (!is_str(json_object_get(cb, "id")) || !is_str(json_object_get(cb, "name")))
            return -1;
        b.kind = AB_TOOL;
        b.tool = s->ntools;
    } else if (strcmp(type, "thinking") == 0 || strcmp(type, "redacted_thinking") == 0) {
        report(s, DROP_THINKING, drop, ud);
    } else if (strcmp(type, "server_tool_use") == 0) {
        report(s, DROP_SERVER_TOOL_USE, drop, ud);
    } else if (strcmp(type, "web_search_tool_result") == 0) {
        report(s, DROP_WEB_SEARCH_RESULT, drop, ud);
    } else {
        report(s, DROP_UNKNOWN_BLOCK, drop, ud);
    }
    if (s->nblocks == s->blocks_cap) {
        size_t cap = s->blocks_cap ? s->blocks_cap * 2 : 8;
        struct a_block_info *nb = realloc(s->blocks, cap * sizeof(*nb));
        if (!nb)
            return -ENOMEM;
        s->blocks = nb;
        s->blocks_cap = cap;
    }
    s->blocks[s->nblocks++] = b;
    if (b.kind == AB_TEXT) {
        const json_t *t = json_object_get(cb, "text");
        if (is_str(t) && json_string_length(t) > 0)
            put_o_chunk(e, s, "{\"content\":", t, "}", NULL);
    } else if (b.kind == AB_TOOL) {
        s->ntools++;
        /* A start that already holds input (not streamed) sends it as the arguments. */
        const json_t *input = json_object_get(cb, "input");
        char *args = NULL;
        if (json_is_object(input) && json_object_size(input) > 0) {
            args = json_io_dumps(input, NULL);
            if (!args)
                return -ENOMEM;
        }
        json_t *tc = json_pack("[{s:I,s:O,s:s,s:{s:O,s:s}}]", "index", (json_int_t)b.tool, "id",
                               json_object_get(cb, "id"), "type", "function", "function", "name",
                               json_object_get(cb, "name"), "arguments", args ? args : "");
        free(args);
        if (!tc)
            return -ENOMEM;
        put_o_chunk(e, s, "{\"tool_calls\":", tc, "}", NULL);
        json_decref(tc);
    }
    return 0;
}

static int a_block_delta(struct tr_stream *s, const json_t *d, tr_drop_fn drop, void *ud,
                         struct emit *e)
{
    const json_t *idx = json_object_get(d, "index");
    const json_t *delta = json_object_get(d, "delta");
    if (!json_is_integer(idx) || !json_is_object(delta))
        return -1;
    json_int_t i = json_integer_value(idx);
    if (i < 0 || (size_t)i >= s->nblocks)
        return -1;
    const struct a_block_info *b = &s->blocks[i];
    const char *type = str_or(json_object_get(delta, "type"), "");
    if (strcmp(type, "thinking_delta") == 0 || strcmp(type, "signature_delta") == 0) {
        report(s, DROP_THINKING, drop, ud);
        return 0;
    }
    if (strcmp(type, "citations_delta") == 0) {
        report(s, DROP_CITATIONS, drop, ud);
        return 0;
    }
    if (b->kind == AB_DROPPED)
        return 0; /* deltas of a block already reported as dropped */
    if (strcmp(type, "text_delta") == 0) {
        const json_t *t = json_object_get(delta, "text");
        if (!is_str(t) || b->kind != AB_TEXT)
            return -1;
        if (json_string_length(t) > 0)
            put_o_chunk(e, s, "{\"content\":", t, "}", NULL);
        return 0;
    }
    if (strcmp(type, "input_json_delta") == 0) {
        const json_t *p = json_object_get(delta, "partial_json");
        if (!is_str(p) || b->kind != AB_TOOL)
            return -1;
        if (json_string_length(p) == 0)
            return 0; /* Anthropic opens with an empty fragment; OpenAI sends none */
        char head[64];
        snprintf(head, sizeof(head),
                 "{\"tool_calls\":[{\"index\":%u,\"function\":{\"arguments\":", b->tool);
        put_o_chunk(e, s, head, p, "}}]}", NULL);
        return 0;
    }
    return 0; /* a delta type added later: nothing the client can use */
}

static int a_message_delta(struct tr_stream *s, const json_t *d, tr_drop_fn drop, void *ud,
                           struct emit *e)
{
    const json_t *delta = json_object_get(d, "delta");
    if (!json_is_object(delta))
        return -1;
    a_usage(s, json_object_get(d, "usage"));
    const json_t *stop = json_object_get(delta, "stop_reason");
    if (!is_str(stop) || s->finish_sent)
        return 0;
    if (is_str(json_object_get(delta, "stop_sequence")))
        report(s, DROP_STOP_SEQUENCE, drop, ud); /* OpenAI does not say which one matched */
    s->finish_sent = true;
    put_o_chunk(e, s, "{}", NULL, "", finish_from_stop(json_string_value(stop)));
    return 0;
}

static int a_message_stop(struct tr_stream *s, struct emit *e)
{
    if (!s->finish_sent) {
        s->finish_sent = true;
        put_o_chunk(e, s, "{}", NULL, "", "stop");
    }
    if (s->include_usage) {
        json_t *u = json_pack("{s:I,s:I,s:I}", "prompt_tokens", s->in_tokens, "completion_tokens",
                              s->out_tokens, "total_tokens", add_sat(s->in_tokens, s->out_tokens));
        if (u && s->cached_tokens > 0 &&
            json_object_set_new(u, "prompt_tokens_details",
                                json_pack("{s:I}", "cached_tokens", s->cached_tokens)) < 0) {
            json_decref(u);
            u = NULL;
        }
        if (!u)
            return -ENOMEM;
        puts_(e, s->prefix);
        puts_(e, ",\"choices\":[],\"usage\":");
        put_json(e, u);
        puts_(e, "}\n\n");
        json_decref(u);
    }
    puts_(e, "data: [DONE]\n\n");
    s->done = true;
    return 0;
}

/* Anthropic error type -> OpenAI error type (the Anthropic type stays in "code"). */
static const char *o_error_type(const char *atype)
{
    static const char *const same[] = {"invalid_request_error", "authentication_error",
                                       "permission_error", "not_found_error", "rate_limit_error"};
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
        if (strcmp(atype, same[i]) == 0)
            return same[i];
    return "server_error"; /* api_error, overloaded_error, anything new */
}

static int a_error(struct tr_stream *s, const json_t *d, struct emit *e)
{
    const json_t *err = json_object_get(d, "error");
    const char *atype = str_or(json_object_get(err, "type"), "api_error");
    const char *msg = str_or(json_object_get(err, "message"), "upstream error");
    json_t *o = json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", msg, "type",
                          o_error_type(atype), "param", "code", atype);
    if (!o)
        return -ENOMEM;
    puts_(e, "data: ");
    put_json(e, o);
    puts_(e, "\n\n");
    json_decref(o);
    s->errored = true;
    return 0;
}

static bool named(const char *ev, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(ev, lit, n) == 0;
}

static int feed_anthropic(struct tr_stream *s, const char *event, size_t event_len, const json_t *d,
                          tr_drop_fn drop, void *ud, struct emit *e)
{
    char name[32] = "";
    /* The event name says what the data is; the data's "type" is the same for Anthropic
     * and serves when a relay dropped the name. */
    if (event && event_len) {
        if (event_len < sizeof(name))
            memcpy(name, event, event_len);
    } else {
        snprintf(name, sizeof(name), "%s", str_or(json_object_get(d, "type"), ""));
    }
    if (named(name, strlen(name), "error"))
        return a_error(s, d, e);
    if (named(name, strlen(name), "message_start"))
        return a_message_start(s, d, e);
    if (named(name, strlen(name), "ping") || !name[0])
        return 0;
    bool known = strcmp(name, "content_block_start") == 0 ||
                 strcmp(name, "content_block_delta") == 0 ||
                 strcmp(name, "content_block_stop") == 0 || strcmp(name, "message_delta") == 0 ||
                 strcmp(name, "message_stop") == 0;
    if (!known)
        return 0; /* Anthropic may add event types: skip them */
    if (!s->started)
        return -1; /* content before message_start */
    if (strcmp(name, "content_block_start") == 0)
        return a_block_start(s, d, drop, ud, e);
    if (strcmp(name, "content_block_delta") == 0)
        return a_block_delta(s, d, drop, ud, e);
    if (strcmp(name, "message_delta") == 0)
        return a_message_delta(s, d, drop, ud, e);
    if (strcmp(name, "message_stop") == 0)
        return a_message_stop(s, e);
    return 0; /* content_block_stop: OpenAI has no counterpart */
}

/* ------------------------------------------------------------------------------------
 * OpenAI upstream -> Anthropic client */

static const char *stop_from_finish(const char *f)
{
    if (strcmp(f, "length") == 0)
        return "max_tokens";
    if (strcmp(f, "tool_calls") == 0 || strcmp(f, "function_call") == 0)
        return "tool_use";
    if (strcmp(f, "content_filter") == 0)
        return "refusal";
    return "end_turn"; /* stop, anything new */
}

static void put_block_stop(struct tr_stream *s, struct emit *e)
{
    if (s->open_block < 0)
        return;
    char ev[128];
    snprintf(ev, sizeof(ev),
             "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":%ld}"
             "\n\n",
             s->open_block);
    puts_(e, ev);
    s->open_block = -1;
}

static void put_delta_head(struct emit *e, long index, const char *type, const char *field)
{
    char head[160];
    snprintf(head, sizeof(head),
             "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":%ld,"
             "\"delta\":{\"type\":\"%s\",\"%s\":",
             index, type, field);
    puts_(e, head);
}

static int o_start(struct tr_stream *s, const json_t *d, struct emit *e)
{
    const json_t *id = json_object_get(d, "id");
    const char *model = str_or(json_object_get(d, "model"), "");
    if (model[0] && set_str(&s->model, model) < 0)
        return -ENOMEM;
    if (set_str(&s->msg_id,
                is_str(id) && json_string_length(id) ? json_string_value(id) : "msg_lunaroute") < 0)
        return -ENOMEM;
    json_t *m = json_pack("{s:s,s:{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:{s:i,s:i}}}", "type",
                          "message_start", "message", "id", s->msg_id, "type", "message", "role",
                          "assistant", "model", s->model, "content", "stop_reason", "stop_sequence",
                          "usage", "input_tokens", 0, "output_tokens", 0);
    put_a_event(e, "message_start", m);
    s->started = true;
    return 0;
}

static void o_text(struct tr_stream *s, const json_t *t, struct emit *e)
{
    if (s->open_block < 0 || !s->open_is_text) {
        put_block_stop(s, e);
        s->open_block = s->next_block++;
        s->open_is_text = true;
        char ev[200];
        snprintf(ev, sizeof(ev),
                 "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                 "\"index\":%ld,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
                 s->open_block);
        puts_(e, ev);
    }
    put_delta_head(e, s->open_block, "text_delta", "text");
    put_json(e, t);
    puts_(e, "}}\n\n");
}

static int o_tool_calls(struct tr_stream *s, const json_t *calls, struct emit *e)
{
    size_t k;
    const json_t *c;
    json_array_foreach(calls, k, c)
    {
        const json_t *idx = json_object_get(c, "index");
        const json_t *fn = json_object_get(c, "function");
        const json_t *id = json_object_get(c, "id");
        if (!json_is_object(c) || !json_is_integer(idx) || json_integer_value(idx) < 0 ||
            json_integer_value(idx) >= MAX_BLOCKS ||
            (fn && !json_is_object(fn) && !json_is_null(fn)))
            return -1;
        size_t i = (size_t)json_integer_value(idx);
        if (i >= s->tool_cap) {
            size_t cap = s->tool_cap ? s->tool_cap : 4;
            while (cap <= i)
                cap *= 2;
            long *nt = realloc(s->tool_block, cap * sizeof(*nt));
            if (!nt)
                return -ENOMEM;
            for (size_t j = s->tool_cap; j < cap; j++)
                nt[j] = -1;
            s->tool_block = nt;
            s->tool_cap = cap;
        }
        /* OpenAI names the call (id, name) in its first fragment only; a fragment with an id
         * always starts a call, even at a reused index (some compatible servers do that). */
        if ((is_str(id) && json_string_length(id)) || s->tool_block[i] < 0) {
            if (s->next_block >= MAX_BLOCKS)
                return -1;
            char synth[48];
            snprintf(synth, sizeof(synth), "toolu_lr_%u", s->next_block);
            const char *tid = is_str(id) && json_string_length(id) ? json_string_value(id) : synth;
            put_block_stop(s, e);
            s->open_block = s->next_block++;
            s->open_is_text = false;
            s->tool_block[i] = s->open_block;
            json_t *st =
                json_pack("{s:s,s:I,s:{s:s,s:s,s:s,s:{}}}", "type", "content_block_start", "index",
                          (json_int_t)s->open_block, "content_block", "type", "tool_use", "id", tid,
                          "name", str_or(json_object_get(fn, "name"), ""), "input");
            put_a_event(e, "content_block_start", st);
        }
        const json_t *args = json_object_get(fn, "arguments");
        if (is_str(args) && json_string_length(args) > 0) {
            put_delta_head(e, s->tool_block[i], "input_json_delta", "partial_json");
            put_json(e, args);
            puts_(e, "}}\n\n");
        }
    }
    return 0;
}

static int o_choice(struct tr_stream *s, const json_t *ch, tr_drop_fn drop, void *ud,
                    struct emit *e)
{
    if (!json_is_object(ch))
        return -1;
    const json_t *idx = json_object_get(ch, "index");
    if (json_is_integer(idx) && json_integer_value(idx) != 0) {
        report(s, DROP_N, drop, ud); /* Anthropic returns one message */
        return 0;
    }
    const json_t *lp = json_object_get(ch, "logprobs");
    if (lp && !json_is_null(lp))
        report(s, DROP_LOGPROBS, drop, ud);
    const json_t *delta = json_object_get(ch, "delta");
    if (json_is_object(delta)) {
        const char *reasoning = str_or(json_object_get(delta, "reasoning_content"),
                                       str_or(json_object_get(delta, "reasoning"), ""));
        if (reasoning[0])
            report(s, DROP_THINKING, drop, ud);
        const json_t *t = json_object_get(delta, "content");
        if (is_str(t) && json_string_length(t) > 0)
            o_text(s, t, e);
        /* A refusal is the assistant's answer: Anthropic has no refusal field, so the
         * client sees it as text. */
        const json_t *r = json_object_get(delta, "refusal");
        if (is_str(r) && json_string_length(r) > 0)
            o_text(s, r, e);
        const json_t *calls = json_object_get(delta, "tool_calls");
        if (json_is_array(calls)) {
            int rc = o_tool_calls(s, calls, e);
            if (rc)
                return rc;
        } else if (calls && !json_is_null(calls)) {
            return -1;
        }
    } else if (delta && !json_is_null(delta)) {
        return -1;
    }
    const json_t *fr = json_object_get(ch, "finish_reason");
    if (is_str(fr) && !s->stop_reason) {
        put_block_stop(s, e);
        s->stop_reason = stop_from_finish(json_string_value(fr));
    }
    return 0;
}

/* Anthropic's input_tokens exclude the cached ones, reported apart (OpenAI's prompt_tokens
 * include them, counted in prompt_tokens_details.cached_tokens). */
static void o_message_delta(struct tr_stream *s, struct emit *e)
{
    json_int_t cached = s->cached_tokens < s->in_tokens ? s->cached_tokens : s->in_tokens;
    json_t *u = json_pack("{s:I}", "input_tokens", s->in_tokens - cached);
    if (u && s->cached_known &&
        json_object_set_new(u, "cache_read_input_tokens", json_integer(cached)) < 0) {
        json_decref(u);
        u = NULL;
    }
    if (u && json_object_set_new(u, "output_tokens", json_integer(s->out_tokens)) < 0) {
        json_decref(u);
        u = NULL;
    }
    json_t *m =
        u ? json_pack("{s:s,s:{s:s,s:n},s:o}", "type", "message_delta", "delta", "stop_reason",
                      s->stop_reason ? s->stop_reason : "end_turn", "stop_sequence", "usage", u)
          : NULL;
    put_a_event(e, "message_delta", m);
    s->delta_sent = true;
}

static void o_done(struct tr_stream *s, struct emit *e)
{
    put_block_stop(s, e);
    if (!s->delta_sent)
        o_message_delta(s, e);
    puts_(e, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s->done = true;
}

/* OpenAI error type/code -> Anthropic error type. */
static const char *a_error_type(const char *type, const char *code)
{
    if (strcmp(code, "rate_limit_exceeded") == 0 || strcmp(type, "rate_limit_error") == 0 ||
        strcmp(type, "requests") == 0 || strcmp(type, "tokens") == 0 ||
        strcmp(code, "insufficient_quota") == 0)
        return "rate_limit_error";
    if (strcmp(code, "invalid_api_key") == 0 || strcmp(type, "authentication_error") == 0)
        return "authentication_error";
    if (strcmp(type, "permission_error") == 0)
        return "permission_error";
    if (strcmp(type, "not_found_error") == 0 || strcmp(code, "model_not_found") == 0)
        return "not_found_error";
    if (strcmp(type, "invalid_request_error") == 0)
        return "invalid_request_error";
    if (strcmp(code, "overloaded") == 0 || strcmp(type, "overloaded_error") == 0)
        return "overloaded_error";
    return "api_error";
}

static int o_error(struct tr_stream *s, const json_t *err, struct emit *e)
{
    const char *msg = "upstream error";
    const char *type = "", *code = "";
    if (json_is_object(err)) {
        msg = str_or(json_object_get(err, "message"), msg);
        type = str_or(json_object_get(err, "type"), "");
        code = str_or(json_object_get(err, "code"), "");
    } else if (is_str(err)) {
        msg = json_string_value(err);
    }
    json_t *o = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type",
                          a_error_type(type, code), "message", msg);
    put_a_event(e, "error", o);
    s->errored = true;
    return 0;
}

static int feed_openai(struct tr_stream *s, const json_t *d, tr_drop_fn drop, void *ud,
                       struct emit *e)
{
    const json_t *err = json_object_get(d, "error");
    if (err && !json_is_null(err))
        return o_error(s, err, e);
    const json_t *choices = json_object_get(d, "choices");
    if (choices && !json_is_array(choices))
        return -1;
    if (!s->started) {
        int rc = o_start(s, d, e);
        if (rc)
            return rc;
    }
    size_t k;
    const json_t *ch;
    if (s->delta_sent)
        choices = NULL; /* the message already ended: content now would be out of order */
    json_array_foreach(choices, k, ch)
    {
        int rc = o_choice(s, ch, drop, ud, e);
        if (rc)
            return rc;
    }
    const json_t *u = json_object_get(d, "usage");
    if (json_is_object(u)) {
        s->in_tokens = int_or0(json_object_get(u, "prompt_tokens"));
        s->out_tokens = int_or0(json_object_get(u, "completion_tokens"));
        const json_t *ct =
            json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
        s->cached_known = json_is_integer(ct);
        s->cached_tokens = int_or0(ct);
        /* the usage chunk comes after the one with finish_reason: the message can end */
        if (s->stop_reason && !s->delta_sent) {
            put_block_stop(s, e);
            o_message_delta(s, e);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */

int tr_stream_feed(struct tr_stream *s, const char *event, size_t event_len, const char *data,
                   size_t data_len, tr_drop_fn drop, void *ud, struct lr_buf *out)
{
    if (!s || !out)
        return -1;
    if (s->failed)
        return s->failed;
    if (s->done || s->errored || !data)
        return 0; /* after the end, and for comments and data-less events: nothing */
    if (!event)
        event_len = 0;
    struct emit e = {out, 0};
    size_t mark = out->len;
    int rc;

    if (s->from == TR_OPENAI && data_len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        rc = s->started ? 0 : -1; /* a stream that ends before any chunk is no completion */
        if (rc == 0)
            o_done(s, &e);
    } else {
        json_error_t jerr;
        memset(&jerr, 0, sizeof(jerr));
        json_t *d = json_io_loadb(data, data_len, &jerr);
        /* a parse error always has a text; jansson leaves it empty when it could not even
         * allocate its lexer */
        if (!d && (!jerr.text[0] || json_error_code(&jerr) == json_error_out_of_memory))
            rc = -ENOMEM;
        else if (!json_is_object(d))
            rc = -1;
        else if (s->from == TR_ANTHROPIC)
            rc = feed_anthropic(s, event, event_len, d, drop, ud, &e);
        else
            rc = feed_openai(s, d, drop, ud, &e);
        json_decref(d);
    }
    if (rc == 0)
        rc = e.rc;
    if (rc != 0) {
        /* whole events or nothing; the state may have moved past what the client saw, so
         * the stream is over (the caller ends it with an error event) */
        s->failed = rc;
        s->done = s->errored = false; /* the client got neither */
        out->len = mark;
        if (out->data)
            out->data[mark] = 0;
    }
    return rc;
}
