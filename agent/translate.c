/* OpenAI Chat Completions <-> Anthropic Messages: requests, non-streaming responses and error
 * bodies (the mapping is in translate.h; the streaming half is translate_stream.c).
 *
 * Conventions: a JSON null is treated as an absent field (clients send "logprobs": null,
 * "stop": null, ...; nothing is reported for them). Values copied into the result are deep
 * copies, so the input is never shared nor modified. Strings are copied with their length so
 * an embedded NUL survives. Text blocks an Anthropic message splits its output into are joined
 * with "" (the same text a stream of deltas gives); system and tool-result text with "\n\n". */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate.h"

/* json_int_t is long long or long (jansson_config.h) */
#define TR_INT_MAX ((json_int_t)(sizeof(json_int_t) == sizeof(long long) ? LLONG_MAX : LONG_MAX))

/* Longest upstream error message copied into a translated error body. */
#define TR_MAX_ERROR_MESSAGE 4096

struct ctx {
    tr_drop_fn drop;
    void *ud;
    char *err;
    size_t errlen;
    bool cache_reported; /* "cache_control" is reported once per request */
    /* Drops are held until the translation succeeds: a request answered 400 or a response
     * answered 502 translated nothing, so it must not count dropped fields. */
    struct lr_buf pending; /* const char * each */
    bool pending_failed;
};

static void dropped(struct ctx *c, const char *field)
{
    if (c->drop && lr_buf_append(&c->pending, &field, sizeof(field)) < 0)
        c->pending_failed = true;
}

static void drop_cache_control(struct ctx *c, const json_t *o)
{
    if (!c->cache_reported && json_is_object(o) && json_object_get(o, "cache_control") &&
        !json_is_null(json_object_get(o, "cache_control"))) {
        c->cache_reported = true;
        dropped(c, "cache_control");
    }
}

static int fail(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct ctx *c, const char *fmt, ...)
{
    va_list ap;

    if (c->err && c->errlen) {
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int oom(struct ctx *c)
{
    return fail(c, "out of memory");
}

/* A present, non-null member. */
static const json_t *get(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_null(v) ? NULL : v;
}

/* A copy of a jansson string (NULL for a non-string). It is UTF-8 already: checking it again
 * cost ~15% of a 1 KiB request's translation. */
static json_t *str_copy(const json_t *s)
{
    return json_is_string(s) ? json_stringn_nocheck(json_string_value(s), json_string_length(s))
                             : NULL;
}

static bool str_eq(const json_t *s, const char *lit)
{
    size_t n = strlen(lit);
    return json_is_string(s) && json_string_length(s) == n &&
           memcmp(json_string_value(s), lit, n) == 0;
}

static json_t *buf_string(const struct lr_buf *b)
{
    return b->len ? json_stringn((const char *)b->data, b->len) : json_string("");
}

/* Appends the string s to b, after sep when b is not empty. */
static int join(struct lr_buf *b, const char *sep, const json_t *s)
{
    if (b->len && *sep && lr_buf_puts(b, sep) < 0)
        return -1;
    return lr_buf_append(b, json_string_value(s), json_string_length(s));
}

/* {"type":"text","text":s} */
static json_t *text_block(const json_t *s)
{
    return json_pack("{s:s,s:o}", "type", "text", "text", str_copy(s));
}

/* Parses tool-call "arguments" text into an object; anything that is not a JSON object gives
 * {} and a report. An empty string (some clients send it for a call without arguments) is
 * {} without a report. NULL when out of memory. */
static json_t *parse_arguments(struct ctx *c, const json_t *args)
{
    json_t *v;
    size_t n = json_string_length(args);

    if (json_is_string(args)) {
        const char *s = json_string_value(args);
        size_t i = 0;

        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
            i++;
        if (i == n)
            return json_object();
        json_error_t je;

        v = json_loadb(s, n, 0, &je);
        /* jansson's lexer reports a failed string allocation as an invalid token: a text
         * that fails to parse is parsed once more, and only a second failure at the same
         * place is the client's */
        if (!v && json_error_code(&je) != json_error_out_of_memory) {
            json_error_t je2;

            v = json_loadb(s, n, 0, &je2);
            if (!v && je2.position == je.position && json_error_code(&je2) == json_error_code(&je))
                je = je2;
            else if (!v)
                return NULL;
        }
        if (json_is_object(v))
            return v;
        json_decref(v);
        if (!v && json_error_code(&je) == json_error_out_of_memory)
            return NULL; /* not the client's fault: no report, the caller fails */
    } else if (json_is_object(args)) {
        return json_deep_copy(args);
    }
    dropped(c, "tool_calls.arguments");
    return json_object();
}

/* ------------------------------------------------------------------------------------------ */
/* Requests, OpenAI -> Anthropic                                                              */

/* Consecutive messages of one role become one Anthropic turn. A turn made of one message
 * whose content was a plain string keeps the string. */
struct turns {
    json_t *out;      /* the "messages" array */
    const char *role; /* current turn's role (a static string), NULL before the first */
    json_t *plain;    /* the current turn's content while it is one plain string */
    json_t *blocks;   /* the current turn's content blocks otherwise */
};

/* Ends the current turn: appends it to t->out. */
static int turns_finish(struct turns *t)
{
    json_t *content, *msg;

    if (!t->role)
        return 0;
    content = t->plain ? t->plain : t->blocks;
    if (t->plain)
        json_decref(t->blocks);
    msg = json_pack("{s:s,s:o}", "role", t->role, "content", content);
    t->plain = t->blocks = NULL;
    t->role = NULL;
    return json_array_append_new(t->out, msg) ? -1 : 0;
}

/* Adds one message's content, plain (a string) or blocks (an array), never both; takes
 * the reference. -1 when out of memory. */
static int turns_add(struct turns *t, const char *role, json_t *plain, json_t *blocks)
{
    int rc;

    if (!plain && (!blocks || json_array_size(blocks) == 0)) {
        json_decref(blocks);
        return 0; /* nothing to say: does not break a run of same-role messages */
    }
    if (t->role != role) {
        if (turns_finish(t) < 0) {
            json_decref(plain);
            json_decref(blocks);
            return -1;
        }
        t->role = role;
        t->plain = plain;
        t->blocks = blocks ? blocks : json_array();
        return t->blocks ? 0 : -1;
    }
    if (t->plain) { /* a second message: the turn becomes blocks */
        if (json_array_append_new(t->blocks, text_block(t->plain))) {
            json_decref(plain);
            json_decref(blocks);
            return -1;
        }
        json_decref(t->plain);
        t->plain = NULL;
    }
    if (plain) {
        rc = json_array_append_new(t->blocks, text_block(plain));
        json_decref(plain);
    } else {
        rc = json_array_extend(t->blocks, blocks);
        json_decref(blocks);
    }
    return rc ? -1 : 0;
}

static void turns_free(struct turns *t)
{
    json_decref(t->plain);
    json_decref(t->blocks);
    t->plain = t->blocks = NULL;
}

static const char *openai_part_drop_name(const json_t *type)
{
    if (str_eq(type, "input_audio"))
        return "messages.content.input_audio";
    if (str_eq(type, "file"))
        return "messages.content.file";
    if (str_eq(type, "image_url"))
        return "messages.content.image_url";
    return "messages.content.other";
}

/* A data: URL "data:<media_type>;base64,<data>" -> a base64 source; other URLs -> a url
 * source. NULL with *bad set when the data: URL is not base64 (no counterpart). */
static json_t *image_source(const json_t *url, bool *bad)
{
    const char *s = json_string_value(url);
    size_t n = json_string_length(url);
    const char *comma, *semi;

    *bad = false;
    if (n < 5 || strncmp(s, "data:", 5) != 0)
        return json_pack("{s:s,s:o}", "type", "url", "url", str_copy(url));
    comma = memchr(s, ',', n);
    if (!comma) {
        *bad = true;
        return NULL;
    }
    semi = memchr(s + 5, ';', (size_t)(comma - (s + 5)));
    if (!semi || semi == s + 5 || (size_t)(comma - semi) != 7 || memcmp(semi, ";base64", 7)) {
        *bad = true;
        return NULL;
    }
    return json_pack("{s:s,s:s%,s:s%}", "type", "base64", "media_type", s + 5,
                     (size_t)(semi - (s + 5)), "data", comma + 1,
                     (size_t)(n - (size_t)(comma + 1 - s)));
}

/* One OpenAI content part of a user/assistant message -> appended to blocks (or dropped). */
static int o2a_part(struct ctx *c, size_t i, size_t j, const json_t *part, json_t *blocks)
{
    const json_t *type = json_object_get(part, "type");

    if (!json_is_object(part) || !json_is_string(type))
        return fail(c, "messages[%zu].content[%zu] is not a content part", i, j);
    if (str_eq(type, "text") || str_eq(type, "refusal")) {
        const json_t *text = json_object_get(part, str_eq(type, "text") ? "text" : "refusal");

        if (!json_is_string(text))
            return fail(c, "messages[%zu].content[%zu] has no string \"%s\"", i, j,
                        json_string_value(type));
        return json_array_append_new(blocks, text_block(text)) ? oom(c) : 0;
    }
    if (str_eq(type, "image_url")) {
        const json_t *iu = json_object_get(part, "image_url");
        const json_t *url = json_is_object(iu) ? json_object_get(iu, "url") : iu;
        const json_t *detail = json_object_get(iu, "detail");
        json_t *src;
        bool bad;

        if (!json_is_string(url))
            return fail(c, "messages[%zu].content[%zu].image_url has no string \"url\"", i, j);
        src = image_source(url, &bad);
        if (bad) {
            dropped(c, "messages.content.image_url");
            return 0;
        }
        if (json_is_string(detail) && !str_eq(detail, "auto"))
            dropped(c, "image_url.detail");
        return json_array_append_new(blocks, json_pack("{s:s,s:o}", "type", "image", "source", src))
                   ? oom(c)
                   : 0;
    }
    dropped(c, openai_part_drop_name(type));
    return 0;
}

/* Text of a system/developer/tool message (string or text parts) appended to b. */
static int o2a_text_content(struct ctx *c, size_t i, const json_t *content, struct lr_buf *b,
                            const char *sep)
{
    size_t j;
    const json_t *part;

    if (!content)
        return 0;
    if (json_is_string(content))
        return join(b, sep, content) < 0 ? oom(c) : 0;
    if (!json_is_array(content))
        return fail(c, "messages[%zu].content must be a string or an array", i);
    json_array_foreach(content, j, part)
    {
        const json_t *type = json_object_get(part, "type");
        const json_t *text = json_object_get(part, "text");

        if (!json_is_object(part) || !json_is_string(type))
            return fail(c, "messages[%zu].content[%zu] is not a content part", i, j);
        if (!str_eq(type, "text")) {
            dropped(c, openai_part_drop_name(type));
            continue;
        }
        if (!json_is_string(text))
            return fail(c, "messages[%zu].content[%zu] has no string \"text\"", i, j);
        if (join(b, sep, text) < 0)
            return oom(c);
    }
    return 0;
}

static void o2a_message_extras(struct ctx *c, const json_t *m)
{
    const char *key;
    const json_t *v;

    json_object_foreach((json_t *)m, key, v)
    {
        if (json_is_null(v) || !strcmp(key, "role") || !strcmp(key, "content") ||
            !strcmp(key, "tool_calls") || !strcmp(key, "tool_call_id") || !strcmp(key, "refusal"))
            continue;
        if (!strcmp(key, "name"))
            dropped(c, "messages.name");
        else if (!strcmp(key, "audio"))
            dropped(c, "messages.audio");
        else if (!strcmp(key, "function_call"))
            dropped(c, "messages.function_call");
        else
            dropped(c, "messages.other");
    }
}

static int o2a_tool_calls(struct ctx *c, size_t i, const json_t *calls, json_t *blocks)
{
    size_t j;
    const json_t *tc;

    if (!calls)
        return 0;
    if (!json_is_array(calls))
        return fail(c, "messages[%zu].tool_calls must be an array", i);
    json_array_foreach(calls, j, tc)
    {
        const json_t *id = json_object_get(tc, "id");
        const json_t *fn = json_object_get(tc, "function");
        const json_t *name = json_object_get(fn, "name");
        json_t *input;

        if (!json_is_object(tc) || !json_is_string(id) || !json_is_string(name))
            return fail(c,
                        "messages[%zu].tool_calls[%zu] needs an \"id\" and a function "
                        "\"name\"",
                        i, j);
        input = parse_arguments(c, json_object_get(fn, "arguments"));
        if (json_array_append_new(blocks,
                                  json_pack("{s:s,s:o,s:o,s:o}", "type", "tool_use", "id",
                                            str_copy(id), "name", str_copy(name), "input", input)))
            return oom(c);
    }
    return 0;
}

/* The content of a user or assistant message: *plain (a string kept as is) or *blocks.
 * An assistant's tool calls become tool_use blocks after its text. */
static int o2a_chat_content(struct ctx *c, size_t i, const json_t *m, bool is_user, json_t **plain,
                            json_t **blocks)
{
    const json_t *content = get(m, "content");
    const json_t *calls = is_user ? NULL : get(m, "tool_calls");
    size_t j;
    const json_t *part;

    /* what the model said instead of an answer is its text */
    if (!is_user && !content && json_is_string(get(m, "refusal")))
        content = get(m, "refusal");
    if (content && !json_is_string(content) && !json_is_array(content))
        return fail(c, "messages[%zu].content must be a string or an array", i);
    if (json_is_string(content) && !calls)
        return (*plain = str_copy(content)) ? 0 : oom(c);
    if (!(*blocks = json_array()))
        return oom(c);
    if (json_is_string(content) && json_string_length(content) &&
        json_array_append_new(*blocks, text_block(content)))
        return oom(c);
    json_array_foreach(content, j, part) if (o2a_part(c, i, j, part, *blocks) < 0) return -1;
    return o2a_tool_calls(c, i, calls, *blocks);
}

/* A role "tool" message -> *blocks = [tool_result]. */
static int o2a_tool_message(struct ctx *c, size_t i, const json_t *m, json_t **blocks)
{
    const json_t *id = json_object_get(m, "tool_call_id");
    struct lr_buf b = {0};
    json_t *result;

    if (!json_is_string(id))
        return fail(c, "messages[%zu] (tool) has no string \"tool_call_id\"", i);
    if (o2a_text_content(c, i, get(m, "content"), &b, "\n\n") < 0) {
        lr_buf_free(&b);
        return -1;
    }
    result = json_pack("{s:s,s:o,s:o}", "type", "tool_result", "tool_use_id", str_copy(id),
                       "content", buf_string(&b));
    lr_buf_free(&b);
    if (!result || !(*blocks = json_array())) {
        json_decref(result);
        return oom(c);
    }
    return json_array_append_new(*blocks, result) ? oom(c) : 0;
}

static int o2a_messages(struct ctx *c, const json_t *msgs, json_t *out, struct lr_buf *system)
{
    static const char user[] = "user", assistant[] = "assistant";
    struct turns t = {.out = json_array()};
    json_t *blocks = NULL, *plain = NULL; /* the current message's content */
    size_t i;
    const json_t *m;

    if (!t.out)
        return oom(c);
    json_array_foreach(msgs, i, m)
    {
        const json_t *role = json_object_get(m, "role");
        const char *turn_role;
        int rc;

        if (!json_is_object(m)) {
            fail(c, "messages[%zu] is not an object", i);
            goto bad;
        }
        if (!json_is_string(role)) {
            fail(c, "messages[%zu] has no string \"role\"", i);
            goto bad;
        }
        o2a_message_extras(c, m);
        if (str_eq(role, "system") || str_eq(role, "developer")) {
            /* Anthropic has one top-level system prompt, wherever these messages were */
            if (o2a_text_content(c, i, get(m, "content"), system, "\n\n") < 0)
                goto bad;
            continue;
        }
        if (str_eq(role, "function")) { /* the deprecated form of "tool" */
            dropped(c, "messages.function");
            continue;
        }
        if (str_eq(role, "tool")) {
            turn_role = user;
            rc = o2a_tool_message(c, i, m, &blocks);
        } else if (str_eq(role, "user") || str_eq(role, "assistant")) {
            turn_role = str_eq(role, "user") ? user : assistant;
            rc = o2a_chat_content(c, i, m, turn_role == user, &plain, &blocks);
        } else {
            fail(c, "messages[%zu] has an unknown role", i);
            goto bad;
        }
        if (rc < 0)
            goto bad;
        rc = turns_add(&t, turn_role, plain, blocks);
        plain = blocks = NULL;
        if (rc < 0) {
            oom(c);
            goto bad;
        }
    }
    if (turns_finish(&t) < 0) {
        oom(c);
        goto bad;
    }
    if (json_array_size(t.out) == 0) {
        fail(c, "messages: at least one user or assistant message is required");
        goto bad;
    }
    return json_object_set_new(out, "messages", t.out) ? oom(c) : 0;
bad:
    json_decref(plain);
    json_decref(blocks);
    turns_free(&t);
    json_decref(t.out);
    return -1;
}

/* tools [{type:function,function:{name,description,parameters}}] -> [{name,description,
 * input_schema}] */
static int o2a_tools(struct ctx *c, const json_t *tools, json_t *out)
{
    json_t *res;
    size_t i;
    const json_t *tool;

    if (!json_is_array(tools))
        return fail(c, "tools must be an array");
    if (!(res = json_array()))
        return oom(c);
    json_array_foreach(tools, i, tool)
    {
        const json_t *fn = json_object_get(tool, "function");
        const json_t *name = json_object_get(fn, "name");
        const json_t *desc = get(fn, "description");
        const json_t *params = get(fn, "parameters");
        json_t *t;

        if (!json_is_object(tool)) {
            json_decref(res);
            return fail(c, "tools[%zu] is not an object", i);
        }
        if (!str_eq(json_object_get(tool, "type"), "function")) {
            dropped(c, "tools.type");
            continue;
        }
        if (!json_is_string(name)) {
            json_decref(res);
            return fail(c, "tools[%zu].function has no string \"name\"", i);
        }
        if (params && !json_is_object(params)) {
            json_decref(res);
            return fail(c, "tools[%zu].function.parameters must be an object", i);
        }
        if (get(fn, "strict"))
            dropped(c, "tools.function.strict");
        t = json_pack("{s:o,s:o}", "name", str_copy(name), "input_schema",
                      params ? json_deep_copy(params)
                             : json_pack("{s:s,s:{}}", "type", "object", "properties"));
        if (t && json_is_string(desc) && json_object_set_new(t, "description", str_copy(desc))) {
            json_decref(t);
            t = NULL;
        }
        if (!t || json_array_append_new(res, t)) {
            json_decref(res);
            return oom(c);
        }
    }
    if (json_array_size(res) == 0) {
        json_decref(res);
        return 0;
    }
    return json_object_set_new(out, "tools", res) ? oom(c) : 0;
}

static int o2a_tool_choice(struct ctx *c, const json_t *tc, const json_t *parallel, json_t *out)
{
    json_t *choice = NULL;

    if (!json_object_get(out, "tools"))
        return 0; /* Anthropic refuses tool_choice without tools; it has no effect anyway */
    if (parallel && !json_is_boolean(parallel))
        return fail(c, "parallel_tool_calls must be a boolean");
    if (json_is_object(tc) && !str_eq(json_object_get(tc, "type"), "function")) {
        dropped(c, "tool_choice"); /* allowed_tools, custom, ...: Anthropic has no such form */
        tc = NULL;
    }
    if (!tc) {
        if (!json_is_false(parallel))
            return 0;
        choice = json_pack("{s:s}", "type", "auto");
    } else if (str_eq(tc, "auto")) {
        choice = json_pack("{s:s}", "type", "auto");
    } else if (str_eq(tc, "none")) {
        choice = json_pack("{s:s}", "type", "none");
    } else if (str_eq(tc, "required")) {
        choice = json_pack("{s:s}", "type", "any");
    } else if (json_is_object(tc) && str_eq(json_object_get(tc, "type"), "function") &&
               json_is_string(json_object_get(json_object_get(tc, "function"), "name"))) {
        choice = json_pack("{s:s,s:o}", "type", "tool", "name",
                           str_copy(json_object_get(json_object_get(tc, "function"), "name")));
    } else {
        return fail(c, "tool_choice must be \"auto\", \"none\", \"required\" or "
                       "{\"type\":\"function\",\"function\":{\"name\":...}}");
    }
    if (!choice)
        return oom(c);
    /* "none" takes no disable_parallel_tool_use: no call at all is made */
    if (json_is_false(parallel) && !str_eq(json_object_get(choice, "type"), "none") &&
        json_object_set_new(choice, "disable_parallel_tool_use", json_true())) {
        json_decref(choice);
        return oom(c);
    }
    return json_object_set_new(out, "tool_choice", choice) ? oom(c) : 0;
}

/* OpenAI keys that have no Anthropic counterpart, reported by name. */
static const char *const o2a_no_counterpart[] = {
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "seed",
    "response_format",
    "service_tier",
    "store",
    "modalities",
    "audio",
    "prediction",
    "reasoning_effort",
    "web_search_options",
    "functions",
    "function_call",
    "metadata",
    "n",
};

static bool is_int_ge(const json_t *v, json_int_t min)
{
    return json_is_integer(v) && json_integer_value(v) >= min;
}

static json_t *o2a_request(struct ctx *c, const json_t *req, const struct tr_opts *opts)
{
    json_t *out = json_object();
    struct lr_buf system = {0};
    const json_t *v, *msgs = json_object_get(req, "messages");
    const char *key;
    unsigned def =
        opts && opts->default_max_tokens ? opts->default_max_tokens : TR_DEFAULT_MAX_TOKENS;

    if (!out) {
        oom(c);
        return NULL;
    }
    if (!json_is_array(msgs)) {
        fail(c, "\"messages\" must be an array");
        goto bad;
    }
    if (o2a_messages(c, msgs, out, &system) < 0)
        goto bad;
    if (system.len && json_object_set_new(out, "system", buf_string(&system)))
        goto oom;
    lr_buf_free(&system);

    json_object_foreach((json_t *)req, key, v)
    {
        bool known = false;

        if (json_is_null(v))
            continue;
        if (!strcmp(key, "messages") || !strcmp(key, "max_tokens") ||
            !strcmp(key, "max_completion_tokens") || !strcmp(key, "stream_options") ||
            !strcmp(key, "tools") || !strcmp(key, "tool_choice") ||
            !strcmp(key, "parallel_tool_calls"))
            continue; /* handled below */
        if (!strcmp(key, "model") || !strcmp(key, "top_p") || !strcmp(key, "stream")) {
            if (json_object_set_new(out, key, json_deep_copy(v)))
                goto oom;
            continue;
        }
        if (!strcmp(key, "temperature")) {
            double t;

            if (!json_is_number(v)) {
                fail(c, "temperature must be a number");
                goto bad;
            }
            t = json_number_value(v);
            if (t > 1.0 || t < 0.0) { /* documented clamp, not a drop */
                if (json_object_set_new(out, key, json_real(t > 1.0 ? 1.0 : 0.0)))
                    goto oom;
            } else if (json_object_set_new(out, key, json_deep_copy(v))) {
                goto oom;
            }
            continue;
        }
        if (!strcmp(key, "stop")) {
            json_t *seqs;
            size_t i;
            const json_t *s;

            if (json_is_string(v)) {
                seqs = json_pack("[o]", str_copy(v));
            } else if (json_is_array(v)) {
                json_array_foreach(v, i, s) if (!json_is_string(s))
                {
                    fail(c, "stop must be a string or an array of strings");
                    goto bad;
                }
                if (json_array_size(v) == 0)
                    continue;
                seqs = json_deep_copy(v);
            } else {
                fail(c, "stop must be a string or an array of strings");
                goto bad;
            }
            if (json_object_set_new(out, "stop_sequences", seqs))
                goto oom;
            continue;
        }
        if (!strcmp(key, "user")) {
            if (!json_is_string(v)) {
                fail(c, "user must be a string");
                goto bad;
            }
            if (json_object_set_new(out, "metadata", json_pack("{s:o}", "user_id", str_copy(v))))
                goto oom;
            continue;
        }
        if (!strcmp(key, "n")) {
            if (!is_int_ge(v, 1)) {
                fail(c, "n must be a positive integer");
                goto bad;
            }
            if (json_integer_value(v) > 1)
                dropped(c, "n"); /* one choice comes back */
            continue;
        }
        for (size_t i = 0; i < sizeof(o2a_no_counterpart) / sizeof(o2a_no_counterpart[0]); i++)
            if (!strcmp(key, o2a_no_counterpart[i])) {
                dropped(c, o2a_no_counterpart[i]);
                known = true;
                break;
            }
        if (!known)
            dropped(c, "other");
    }

    v = get(req, "max_completion_tokens");
    if (!v)
        v = get(req, "max_tokens");
    if (v && !is_int_ge(v, 1)) {
        fail(c, "max_tokens must be a positive integer");
        goto bad;
    }
    if (json_object_set_new(out, "max_tokens",
                            v ? json_deep_copy(v) : json_integer((json_int_t)def)))
        goto oom;
    if ((v = get(req, "tools")) && o2a_tools(c, v, out) < 0)
        goto bad;
    if (o2a_tool_choice(c, get(req, "tool_choice"), get(req, "parallel_tool_calls"), out) < 0)
        goto bad;
    return out;
oom:
    oom(c);
bad:
    lr_buf_free(&system);
    json_decref(out);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Requests, Anthropic -> OpenAI                                                              */

static const char *anthropic_block_drop_name(const json_t *type)
{
    if (str_eq(type, "thinking"))
        return "messages.content.thinking";
    if (str_eq(type, "redacted_thinking"))
        return "messages.content.redacted_thinking";
    if (str_eq(type, "document"))
        return "messages.content.document";
    if (str_eq(type, "image"))
        return "messages.content.image";
    if (str_eq(type, "tool_use"))
        return "messages.content.tool_use";
    if (str_eq(type, "tool_result"))
        return "messages.content.tool_result";
    return "messages.content.other"; /* server tool blocks, search results, ... */
}

/* An image block -> an image_url part; NULL with nothing reported on OOM, NULL with *bad
 * set when the source has no URL form (file ids, ...). */
static json_t *a2o_image(const json_t *block, bool *bad)
{
    const json_t *src = json_object_get(block, "source");
    const json_t *mt = json_object_get(src, "media_type");
    const json_t *data = json_object_get(src, "data");
    const json_t *url = json_object_get(src, "url");
    json_t *u;

    *bad = false;
    if (str_eq(json_object_get(src, "type"), "base64") && json_is_string(mt) &&
        json_is_string(data)) {
        struct lr_buf b = {0};

        if (lr_buf_puts(&b, "data:") < 0 ||
            lr_buf_append(&b, json_string_value(mt), json_string_length(mt)) < 0 ||
            lr_buf_puts(&b, ";base64,") < 0 ||
            lr_buf_append(&b, json_string_value(data), json_string_length(data)) < 0) {
            lr_buf_free(&b);
            return NULL;
        }
        u = buf_string(&b);
        lr_buf_free(&b);
    } else if (str_eq(json_object_get(src, "type"), "url") && json_is_string(url)) {
        u = str_copy(url);
    } else {
        *bad = true;
        return NULL;
    }
    return json_pack("{s:s,s:{s:o}}", "type", "image_url", "image_url", "url", u);
}

/* A tool_result block -> {"role":"tool","tool_call_id","content"} */
static json_t *a2o_tool_result(struct ctx *c, size_t i, const json_t *block)
{
    const json_t *id = json_object_get(block, "tool_use_id");
    const json_t *content = get(block, "content");
    struct lr_buf b = {0};
    json_t *text;

    if (!json_is_string(id)) {
        fail(c, "messages[%zu]: tool_result has no string \"tool_use_id\"", i);
        return NULL;
    }
    if (json_is_true(json_object_get(block, "is_error")))
        dropped(c, "tool_result.is_error");
    if (json_is_string(content)) {
        if (join(&b, "", content) < 0)
            goto oom;
    } else if (json_is_array(content)) {
        size_t j;
        const json_t *part;

        json_array_foreach(content, j, part)
        {
            const json_t *type = json_object_get(part, "type");

            drop_cache_control(c, part);
            if (str_eq(type, "text") && json_is_string(json_object_get(part, "text"))) {
                if (join(&b, "\n\n", json_object_get(part, "text")) < 0)
                    goto oom;
            } else if (str_eq(type, "image")) {
                dropped(c, "tool_result.content.image");
            } else {
                dropped(c, "tool_result.content.other");
            }
        }
    } else if (content) {
        lr_buf_free(&b);
        fail(c, "messages[%zu]: tool_result content must be a string or an array", i);
        return NULL;
    }
    text = buf_string(&b);
    lr_buf_free(&b);
    text =
        json_pack("{s:s,s:o,s:o}", "role", "tool", "tool_call_id", str_copy(id), "content", text);
    if (!text)
        oom(c);
    return text;
oom:
    lr_buf_free(&b);
    oom(c);
    return NULL;
}

static int a2o_user(struct ctx *c, size_t i, const json_t *content, json_t *out)
{
    json_t *parts;
    size_t j;
    const json_t *block;

    if (json_is_string(content))
        return json_array_append_new(
                   out, json_pack("{s:s,s:o}", "role", "user", "content", str_copy(content)))
                   ? oom(c)
                   : 0;
    if (!(parts = json_array()))
        return oom(c);
    json_array_foreach(content, j, block)
    {
        const json_t *type = json_object_get(block, "type");

        if (!json_is_object(block) || !json_is_string(type)) {
            json_decref(parts);
            return fail(c, "messages[%zu].content[%zu] is not a content block", i, j);
        }
        drop_cache_control(c, block);
        if (str_eq(type, "tool_result")) {
            json_t *tm = a2o_tool_result(c, i, block);

            /* tool messages answer the previous assistant turn: they come first */
            if (!tm || json_array_append_new(out, tm)) {
                json_decref(parts);
                return tm ? oom(c) : -1;
            }
        } else if (str_eq(type, "text")) {
            const json_t *text = json_object_get(block, "text");

            if (!json_is_string(text)) {
                json_decref(parts);
                return fail(c, "messages[%zu].content[%zu] has no string \"text\"", i, j);
            }
            if (json_array_append_new(
                    parts, json_pack("{s:s,s:o}", "type", "text", "text", str_copy(text)))) {
                json_decref(parts);
                return oom(c);
            }
        } else if (str_eq(type, "image")) {
            bool bad;
            json_t *p = a2o_image(block, &bad);

            if (bad) {
                dropped(c, "messages.content.image");
            } else if (!p || json_array_append_new(parts, p)) {
                json_decref(parts);
                return oom(c);
            }
        } else {
            dropped(c, anthropic_block_drop_name(type));
        }
    }
    if (json_array_size(parts) == 0) {
        json_decref(parts);
        return 0;
    }
    return json_array_append_new(out, json_pack("{s:s,s:o}", "role", "user", "content", parts))
               ? oom(c)
               : 0;
}

/* json_dumps ignores a failure to write an object key (jansson 2.14 dump.c), which would
 * give broken JSON under memory pressure: the text is gathered here and any failed write
 * fails the whole dump. */
struct dump_sink {
    struct lr_buf b;
    bool failed;
};

static int dump_cb(const char *buf, size_t size, void *data)
{
    struct dump_sink *d = data;

    if (d->failed || lr_buf_append(&d->b, buf, size) < 0) {
        d->failed = true;
        return -1;
    }
    return 0;
}

/* Compact JSON text of v as a new string; NULL when out of memory. */
static json_t *compact_json(const json_t *v)
{
    struct dump_sink d = {{0}, false};
    json_t *s = NULL;

    if (json_dump_callback(v, dump_cb, &d, JSON_COMPACT | JSON_ENCODE_ANY) == 0 && !d.failed)
        s = buf_string(&d.b);
    lr_buf_free(&d.b);
    return s;
}

static json_t *a2o_tool_call(const json_t *block)
{
    const json_t *id = json_object_get(block, "id");
    const json_t *name = json_object_get(block, "name");
    const json_t *input = json_object_get(block, "input");

    return json_pack("{s:o,s:s,s:{s:o,s:o}}", "id", str_copy(id), "type", "function", "function",
                     "name", str_copy(name), "arguments",
                     input ? compact_json(input) : json_string("{}"));
}

static int a2o_assistant(struct ctx *c, size_t i, const json_t *content, json_t *out)
{
    struct lr_buf text = {0};
    json_t *calls, *msg;
    size_t j;
    const json_t *block;
    bool any_text = false;

    if (json_is_string(content))
        return json_array_append_new(
                   out, json_pack("{s:s,s:o}", "role", "assistant", "content", str_copy(content)))
                   ? oom(c)
                   : 0;
    if (!(calls = json_array()))
        return oom(c);
    json_array_foreach(content, j, block)
    {
        const json_t *type = json_object_get(block, "type");

        if (!json_is_object(block) || !json_is_string(type)) {
            fail(c, "messages[%zu].content[%zu] is not a content block", i, j);
            goto bad;
        }
        drop_cache_control(c, block);
        if (str_eq(type, "text")) {
            const json_t *t = json_object_get(block, "text");

            if (!json_is_string(t)) {
                fail(c, "messages[%zu].content[%zu] has no string \"text\"", i, j);
                goto bad;
            }
            any_text = true;
            if (join(&text, "", t) < 0)
                goto oom;
        } else if (str_eq(type, "tool_use")) {
            json_t *tc;

            if (!json_is_string(json_object_get(block, "id")) ||
                !json_is_string(json_object_get(block, "name"))) {
                fail(c, "messages[%zu].content[%zu]: tool_use needs an \"id\" and a \"name\"", i,
                     j);
                goto bad;
            }
            tc = a2o_tool_call(block);
            if (!tc || json_array_append_new(calls, tc))
                goto oom;
        } else {
            dropped(c, anthropic_block_drop_name(type));
        }
    }
    if (!any_text && json_array_size(calls) == 0) {
        json_decref(calls);
        return 0;
    }
    msg = json_pack("{s:s,s:o}", "role", "assistant", "content",
                    any_text ? buf_string(&text) : json_null());
    lr_buf_free(&text);
    if (msg && json_array_size(calls) && json_object_set(msg, "tool_calls", calls)) {
        json_decref(msg);
        msg = NULL;
    }
    if (!msg || json_array_append_new(out, msg)) {
        json_decref(calls);
        return oom(c);
    }
    json_decref(calls);
    return 0;
oom:
    oom(c);
bad:
    lr_buf_free(&text);
    json_decref(calls);
    return -1;
}

static int a2o_system(struct ctx *c, const json_t *sys, json_t *out)
{
    struct lr_buf b = {0};
    size_t j;
    const json_t *block;
    json_t *msg;

    if (json_is_string(sys)) {
        if (join(&b, "", sys) < 0)
            goto oom;
    } else if (json_is_array(sys)) {
        json_array_foreach(sys, j, block)
        {
            const json_t *text = json_object_get(block, "text");

            drop_cache_control(c, block);
            if (str_eq(json_object_get(block, "type"), "text") && json_is_string(text)) {
                if (join(&b, "\n\n", text) < 0)
                    goto oom;
            } else {
                dropped(c, "system.content");
            }
        }
        if (!b.len) { /* no text at all: no system message */
            lr_buf_free(&b);
            return 0;
        }
    } else {
        return fail(c, "system must be a string or an array of text blocks");
    }
    msg = json_pack("{s:s,s:o}", "role", "system", "content", buf_string(&b));
    lr_buf_free(&b);
    return !msg || json_array_append_new(out, msg) ? oom(c) : 0;
oom:
    lr_buf_free(&b);
    return oom(c);
}

static int a2o_tools(struct ctx *c, const json_t *tools, json_t *out)
{
    json_t *res;
    size_t i;
    const json_t *tool;

    if (!json_is_array(tools))
        return fail(c, "tools must be an array");
    if (!(res = json_array()))
        return oom(c);
    json_array_foreach(tools, i, tool)
    {
        const json_t *type = get(tool, "type");
        const json_t *name = json_object_get(tool, "name");
        const json_t *desc = get(tool, "description");
        const json_t *schema = get(tool, "input_schema");
        json_t *fn, *t;

        if (!json_is_object(tool)) {
            json_decref(res);
            return fail(c, "tools[%zu] is not an object", i);
        }
        drop_cache_control(c, tool);
        if (type && !str_eq(type, "custom")) {
            dropped(c, "tools.type"); /* a server tool (web search, code execution, ...) */
            continue;
        }
        if (!json_is_string(name) || (schema && !json_is_object(schema))) {
            json_decref(res);
            return fail(c, "tools[%zu] needs a string \"name\" and an object \"input_schema\"", i);
        }
        fn = json_pack("{s:o,s:o}", "name", str_copy(name), "parameters",
                       schema ? json_deep_copy(schema)
                              : json_pack("{s:s,s:{}}", "type", "object", "properties"));
        if (fn && json_is_string(desc) && json_object_set_new(fn, "description", str_copy(desc))) {
            json_decref(fn);
            fn = NULL;
        }
        t = fn ? json_pack("{s:s,s:o}", "type", "function", "function", fn) : NULL;
        if (!t || json_array_append_new(res, t)) {
            json_decref(res);
            return oom(c);
        }
    }
    if (json_array_size(res) == 0) {
        json_decref(res);
        return 0;
    }
    return json_object_set_new(out, "tools", res) ? oom(c) : 0;
}

static int a2o_tool_choice(struct ctx *c, const json_t *tc, json_t *out)
{
    const json_t *type = json_object_get(tc, "type");
    json_t *choice;

    if (!tc || !json_object_get(out, "tools"))
        return 0; /* OpenAI refuses tool_choice / parallel_tool_calls without tools */
    if (str_eq(type, "auto"))
        choice = json_string("auto");
    else if (str_eq(type, "any"))
        choice = json_string("required");
    else if (str_eq(type, "none"))
        choice = json_string("none");
    else if (str_eq(type, "tool") && json_is_string(json_object_get(tc, "name")))
        choice = json_pack("{s:s,s:{s:o}}", "type", "function", "function", "name",
                           str_copy(json_object_get(tc, "name")));
    else
        return fail(c, "tool_choice must be {\"type\": \"auto\"|\"any\"|\"none\"} or "
                       "{\"type\":\"tool\",\"name\":...}");
    if (json_object_set_new(out, "tool_choice", choice))
        return oom(c);
    if (json_is_true(json_object_get(tc, "disable_parallel_tool_use")) &&
        json_object_set_new(out, "parallel_tool_calls", json_false()))
        return oom(c);
    return 0;
}

/* Anthropic keys that have no OpenAI counterpart, reported by name. */
static const char *const a2o_no_counterpart[] = {
    "top_k", "thinking", "service_tier", "container", "mcp_servers", "cache_control",
};

static json_t *a2o_request(struct ctx *c, const json_t *req)
{
    json_t *out = json_object(), *msgs = json_array();
    const json_t *v, *m, *in = json_object_get(req, "messages");
    const char *key;
    size_t i;

    if (!out || !msgs)
        goto oom;
    if (!json_is_array(in) || json_array_size(in) == 0) {
        fail(c, "\"messages\" must be a non-empty array");
        goto bad;
    }
    if ((v = get(req, "system")) && a2o_system(c, v, msgs) < 0)
        goto bad;
    json_array_foreach(in, i, m)
    {
        const json_t *role = json_object_get(m, "role");
        const json_t *content = json_object_get(m, "content");

        if (!json_is_object(m)) {
            fail(c, "messages[%zu] is not an object", i);
            goto bad;
        }
        if (!json_is_string(content) && !json_is_array(content)) {
            fail(c, "messages[%zu].content must be a string or an array", i);
            goto bad;
        }
        if (str_eq(role, "user")) {
            if (a2o_user(c, i, content, msgs) < 0)
                goto bad;
        } else if (str_eq(role, "assistant")) {
            if (a2o_assistant(c, i, content, msgs) < 0)
                goto bad;
        } else {
            fail(c, "messages[%zu] must have role \"user\" or \"assistant\"", i);
            goto bad;
        }
    }
    if (json_object_set_new(out, "messages", msgs)) {
        msgs = NULL;
        goto oom;
    }
    msgs = NULL;

    json_object_foreach((json_t *)req, key, v)
    {
        bool known = false;

        if (json_is_null(v))
            continue;
        if (!strcmp(key, "messages") || !strcmp(key, "system") || !strcmp(key, "tools") ||
            !strcmp(key, "tool_choice"))
            continue;
        if (!strcmp(key, "cache_control")) {
            drop_cache_control(c, req);
            continue;
        }
        if (!strcmp(key, "model") || !strcmp(key, "max_tokens") || !strcmp(key, "temperature") ||
            !strcmp(key, "top_p")) {
            if (json_object_set_new(out, key, json_deep_copy(v)))
                goto oom;
            continue;
        }
        if (!strcmp(key, "stop_sequences")) {
            if (!json_is_array(v)) {
                fail(c, "stop_sequences must be an array of strings");
                goto bad;
            }
            if (json_array_size(v) && json_object_set_new(out, "stop", json_deep_copy(v)))
                goto oom;
            continue;
        }
        if (!strcmp(key, "stream")) {
            if (json_object_set_new(out, key, json_deep_copy(v)))
                goto oom;
            /* usage is only in an OpenAI stream when asked for; Anthropic always sends it */
            if (json_is_true(v) &&
                json_object_set_new(out, "stream_options", json_pack("{s:b}", "include_usage", 1)))
                goto oom;
            continue;
        }
        if (!strcmp(key, "metadata")) {
            const char *mk;
            const json_t *mv;

            json_object_foreach((json_t *)v, mk, mv)
            {
                if (json_is_null(mv))
                    continue;
                if (!strcmp(mk, "user_id") && json_is_string(mv)) {
                    if (json_object_set_new(out, "user", str_copy(mv)))
                        goto oom;
                } else {
                    dropped(c, "metadata");
                }
            }
            continue;
        }
        for (size_t k = 0; k < sizeof(a2o_no_counterpart) / sizeof(a2o_no_counterpart[0]); k++)
            if (!strcmp(key, a2o_no_counterpart[k])) {
                dropped(c, a2o_no_counterpart[k]);
                known = true;
                break;
            }
        if (!known)
            dropped(c, "other");
    }
    if ((v = get(req, "tools")) && a2o_tools(c, v, out) < 0)
        goto bad;
    if (a2o_tool_choice(c, get(req, "tool_choice"), out) < 0)
        goto bad;
    return out;
oom:
    oom(c);
bad:
    json_decref(msgs);
    json_decref(out);
    return NULL;
}

/* Reports the held drops when out is a result; NULL when out of memory. Frees the list. */
static json_t *finish(struct ctx *c, json_t *out)
{
    if (out && c->pending_failed) {
        json_decref(out);
        out = NULL;
        fail(c, "out of memory");
    }
    for (size_t i = 0; out && i < c->pending.len / sizeof(const char *); i++) {
        const char *field;

        memcpy(&field, c->pending.data + i * sizeof(field), sizeof(field));
        c->drop(c->ud, field);
    }
    lr_buf_free(&c->pending);
    return out;
}

json_t *tr_request(enum tr_dialect from, enum tr_dialect to, const json_t *req,
                   const struct tr_opts *opts, tr_drop_fn drop, void *ud, char *err, size_t errlen)
{
    struct ctx c = {.drop = drop, .ud = ud, .err = err, .errlen = errlen};

    if (err && errlen)
        err[0] = 0;
    if (!json_is_object(req)) {
        fail(&c, "the request body must be a JSON object");
        return NULL;
    }
    if (from == to && (from == TR_OPENAI || from == TR_ANTHROPIC)) {
        json_t *copy = json_deep_copy(req);
        if (!copy)
            oom(&c);
        return copy;
    }
    if (from == TR_OPENAI && to == TR_ANTHROPIC)
        return finish(&c, o2a_request(&c, req, opts));
    if (from == TR_ANTHROPIC && to == TR_OPENAI)
        return finish(&c, a2o_request(&c, req));
    fail(&c, "unknown dialect");
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Responses                                                                                  */

static json_int_t int_or_zero(const json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : 0;
}

/* a + b for counts >= 0, saturating instead of overflowing on absurd upstream numbers */
static json_int_t count_add(json_int_t a, json_int_t b)
{
    return a > TR_INT_MAX - b ? TR_INT_MAX : a + b;
}

static const char *finish_reason_from_stop(const json_t *stop)
{
    if (str_eq(stop, "max_tokens") || str_eq(stop, "model_context_window_exceeded"))
        return "length";
    if (str_eq(stop, "tool_use"))
        return "tool_calls";
    if (str_eq(stop, "refusal"))
        return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn and anything newer */
}

static const char *stop_from_finish_reason(const json_t *fr)
{
    if (str_eq(fr, "length"))
        return "max_tokens";
    if (str_eq(fr, "tool_calls") || str_eq(fr, "function_call"))
        return "tool_use";
    if (str_eq(fr, "content_filter"))
        return "refusal";
    return "end_turn";
}

static json_t *a2o_response(struct ctx *c, const json_t *r, int64_t created)
{
    const json_t *content = json_object_get(r, "content");
    const json_t *type = get(r, "type"), *usage = get(r, "usage"), *stop = get(r, "stop_reason");
    const json_t *block, *v;
    struct lr_buf text = {0};
    json_t *calls = NULL, *msg = NULL, *out = NULL;
    json_int_t prompt, completion;
    const char *key;
    bool any_text = false;
    size_t i;

    if (!json_is_array(content) || (type && !str_eq(type, "message")))
        return NULL;
    if (!(calls = json_array()))
        return NULL;
    json_array_foreach(content, i, block)
    {
        const json_t *btype = json_object_get(block, "type");

        if (str_eq(btype, "text") && json_is_string(json_object_get(block, "text"))) {
            any_text = true;
            if (join(&text, "", json_object_get(block, "text")) < 0)
                goto bad;
        } else if (str_eq(btype, "tool_use")) {
            json_t *tc;

            if (!json_is_string(json_object_get(block, "id")) ||
                !json_is_string(json_object_get(block, "name")))
                goto bad; /* not a response we can relay */
            tc = a2o_tool_call(block);
            if (!tc || json_array_append_new(calls, tc))
                goto bad;
        } else if (str_eq(btype, "thinking")) {
            dropped(c, "content.thinking");
        } else if (str_eq(btype, "redacted_thinking")) {
            dropped(c, "content.redacted_thinking");
        } else {
            dropped(c, "content.other"); /* server tool use / results, ... */
        }
    }
    /* content is null when the message only calls tools, "" when it says nothing at all */
    msg = json_pack("{s:s,s:o}", "role", "assistant", "content",
                    any_text                 ? buf_string(&text)
                    : json_array_size(calls) ? json_null()
                                             : json_string(""));
    if (!msg || (json_array_size(calls) && json_object_set(msg, "tool_calls", calls)))
        goto bad;
    prompt = count_add(count_add(int_or_zero(get(usage, "input_tokens")),
                                 int_or_zero(get(usage, "cache_creation_input_tokens"))),
                       int_or_zero(get(usage, "cache_read_input_tokens")));
    completion = int_or_zero(get(usage, "output_tokens"));
    out =
        json_pack("{s:s,s:I,s:[{s:i,s:O,s:o,s:n}],s:{s:I,s:I,s:I}}", "object", "chat.completion",
                  "created", (json_int_t)created, "choices", "index", 0, "message", msg,
                  "finish_reason", stop ? json_string(finish_reason_from_stop(stop)) : json_null(),
                  "logprobs", "usage", "prompt_tokens", prompt, "completion_tokens", completion,
                  "total_tokens", count_add(prompt, completion));
    if (!out)
        goto bad;
    if (json_is_integer(get(usage, "cache_read_input_tokens")) &&
        json_object_set_new(json_object_get(out, "usage"), "prompt_tokens_details",
                            json_pack("{s:I}", "cached_tokens",
                                      int_or_zero(get(usage, "cache_read_input_tokens")))))
        goto bad;
    json_object_foreach((json_t *)r, key, v)
    {
        if (json_is_null(v) || !strcmp(key, "type") || !strcmp(key, "role") ||
            !strcmp(key, "content") || !strcmp(key, "stop_reason") || !strcmp(key, "usage"))
            continue;
        if (!strcmp(key, "id") || !strcmp(key, "model")) {
            if (json_object_set_new(out, key, json_deep_copy(v)))
                goto bad;
        } else if (!strcmp(key, "stop_sequence")) {
            dropped(c, "stop_sequence");
        } else {
            dropped(c, "other");
        }
    }
    json_decref(msg);
    json_decref(calls);
    lr_buf_free(&text);
    return out;
bad:
    json_decref(out);
    json_decref(msg);
    json_decref(calls);
    lr_buf_free(&text);
    return NULL;
}

/* OpenAI message content -> text blocks appended to blocks. -1 on OOM or bad shape. */
static int o2a_response_content(struct ctx *c, const json_t *msg, json_t *blocks)
{
    const json_t *content = get(msg, "content"), *refusal = get(msg, "refusal");
    const json_t *part;
    size_t i;

    if (json_is_string(content)) {
        if (json_string_length(content) && json_array_append_new(blocks, text_block(content)))
            return -1;
    } else if (json_is_array(content)) {
        json_array_foreach(content, i, part)
        {
            const json_t *type = json_object_get(part, "type");
            const json_t *t = json_object_get(part, str_eq(type, "refusal") ? "refusal" : "text");

            if ((str_eq(type, "text") || str_eq(type, "refusal")) && json_is_string(t)) {
                if (json_array_append_new(blocks, text_block(t)))
                    return -1;
            } else {
                dropped(c, "message.content.other");
            }
        }
    } else if (content) {
        return -1;
    }
    /* a refusal is what the model said instead of an answer: it is the text */
    if (json_is_string(refusal) && json_string_length(refusal) &&
        json_array_append_new(blocks, text_block(refusal)))
        return -1;
    return 0;
}

static json_t *o2a_response(struct ctx *c, const json_t *r)
{
    const json_t *choices = json_object_get(r, "choices");
    const json_t *ch = json_array_get(choices, 0);
    const json_t *msg = json_object_get(ch, "message");
    const json_t *usage = get(r, "usage"), *calls, *tc, *v;
    json_int_t prompt, cached;
    json_t *blocks = NULL, *out = NULL;
    const char *key;
    size_t i;

    if (!json_is_object(ch) || !json_is_object(msg))
        return NULL;
    if (!(blocks = json_array()) || o2a_response_content(c, msg, blocks) < 0)
        goto bad;
    calls = get(msg, "tool_calls");
    if (calls && !json_is_array(calls))
        goto bad;
    json_array_foreach(calls, i, tc)
    {
        const json_t *fn = json_object_get(tc, "function");
        const json_t *id = json_object_get(tc, "id"), *name = json_object_get(fn, "name");

        if (!json_is_string(id) || !json_is_string(name))
            goto bad;
        if (json_array_append_new(blocks, json_pack("{s:s,s:o,s:o,s:o}", "type", "tool_use", "id",
                                                    str_copy(id), "name", str_copy(name), "input",
                                                    parse_arguments(c, get(fn, "arguments")))))
            goto bad;
    }
    json_object_foreach((json_t *)msg, key, v)
    {
        if (json_is_null(v) || !strcmp(key, "role") || !strcmp(key, "content") ||
            !strcmp(key, "refusal") || !strcmp(key, "tool_calls") ||
            (json_is_array(v) && json_array_size(v) == 0))
            continue;
        if (!strcmp(key, "annotations"))
            dropped(c, "message.annotations");
        else if (!strcmp(key, "audio"))
            dropped(c, "message.audio");
        else if (!strcmp(key, "function_call"))
            dropped(c, "message.function_call");
        else
            dropped(c, "message.other");
    }
    if (get(ch, "logprobs"))
        dropped(c, "logprobs");
    if (json_array_size(choices) > 1)
        dropped(c, "choices"); /* the client asked one question and gets one answer */

    prompt = int_or_zero(get(usage, "prompt_tokens"));
    cached = int_or_zero(get(get(usage, "prompt_tokens_details"), "cached_tokens"));
    if (cached > prompt)
        cached = 0;
    out = json_pack("{s:s,s:s,s:o,s:s,s:n,s:{s:I,s:I}}", "type", "message", "role", "assistant",
                    "content", blocks, "stop_reason",
                    stop_from_finish_reason(get(ch, "finish_reason")), "stop_sequence", "usage",
                    "input_tokens", prompt - cached, "output_tokens",
                    int_or_zero(get(usage, "completion_tokens")));
    blocks = NULL;
    if (!out)
        goto bad;
    /* prompt_tokens counts cached tokens; Anthropic's input_tokens does not */
    if (cached && json_object_set_new(json_object_get(out, "usage"), "cache_read_input_tokens",
                                      json_integer(cached)))
        goto bad;
    json_object_foreach((json_t *)r, key, v)
    {
        if (json_is_null(v) || !strcmp(key, "object") || !strcmp(key, "created") ||
            !strcmp(key, "choices") || !strcmp(key, "usage"))
            continue;
        if (!strcmp(key, "id") || !strcmp(key, "model")) {
            if (json_object_set_new(out, key, json_deep_copy(v)))
                goto bad;
        } else if (!strcmp(key, "system_fingerprint")) {
            dropped(c, "system_fingerprint");
        } else if (!strcmp(key, "service_tier")) {
            dropped(c, "service_tier");
        } else {
            dropped(c, "other");
        }
    }
    return out;
bad:
    json_decref(blocks);
    json_decref(out);
    return NULL;
}

json_t *tr_response(enum tr_dialect from, enum tr_dialect to, const json_t *resp, int64_t created,
                    tr_drop_fn drop, void *ud)
{
    struct ctx c = {.drop = drop, .ud = ud};

    if (!json_is_object(resp))
        return NULL;
    if (from == to && (from == TR_OPENAI || from == TR_ANTHROPIC))
        return json_deep_copy(resp);
    if (from == TR_ANTHROPIC && to == TR_OPENAI)
        return finish(&c, a2o_response(&c, resp, created));
    if (from == TR_OPENAI && to == TR_ANTHROPIC)
        return finish(&c, o2a_response(&c, resp));
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */

/* The type is chosen by status, so both directions agree and a client's retry logic sees
 * what it expects. 429 is "rate_limit_error" with code "rate_limit_exceeded": OpenAI itself
 * uses types such as "requests" or "tokens" there, which no client keys on; the code is the
 * field OpenAI SDKs and users look at. 5xx is OpenAI's "server_error". */
static const char *openai_error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 400 && status < 500 ? "invalid_request_error" : "server_error";
    }
}

static const char *anthropic_error_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
    case 529:
        return "overloaded_error";
    case 504:
        return "timeout_error";
    default:
        return status >= 400 && status < 500 ? "invalid_request_error" : "api_error";
    }
}

/* The upstream's message in either dialect's shape ({"error":{"message"}}, which both use),
 * or the looser {"error":"..."} and {"message":"..."} some servers send. */
static const json_t *error_message(const json_t *body)
{
    const json_t *e = json_object_get(body, "error");

    if (json_is_object(e) && json_is_string(json_object_get(e, "message")))
        return json_object_get(e, "message");
    if (json_is_string(e))
        return e;
    if (json_is_string(json_object_get(body, "message")))
        return json_object_get(body, "message");
    return NULL;
}

/* The message, at most TR_MAX_ERROR_MESSAGE bytes cut at a UTF-8 character boundary. */
static json_t *capped_message(const json_t *m, int status)
{
    const char *s = json_string_value(m);
    size_t n = json_string_length(m);
    char def[64];

    if (!s || n == 0) {
        snprintf(def, sizeof(def), "upstream returned HTTP %d", status);
        return json_string(def);
    }
    if (n > TR_MAX_ERROR_MESSAGE) {
        n = TR_MAX_ERROR_MESSAGE;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    return json_stringn(s, n);
}

json_t *tr_error(enum tr_dialect from, enum tr_dialect to, int status, const json_t *body,
                 int *status_out)
{
    json_t *msg = capped_message(error_message(body), status);
    int st = status;

    if (from == TR_ANTHROPIC && to == TR_OPENAI && status == 529)
        st = 503; /* 529 is Anthropic's own; OpenAI clients know 503 */
    if (status_out)
        *status_out = st;
    if (!msg)
        return NULL;
    if (to == TR_ANTHROPIC)
        return json_pack("{s:s,s:{s:s,s:o}}", "type", "error", "error", "type",
                         anthropic_error_type(st), "message", msg);
    return json_pack("{s:{s:o,s:s,s:n,s:o}}", "error", "message", msg, "type",
                     openai_error_type(st), "param", "code",
                     st == 429 ? json_string("rate_limit_exceeded") : json_null());
}
