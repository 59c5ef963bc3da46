/* Translation cost, in process, side by side with what passthrough does (issue #5).
 *
 *   passthrough : body_peek of the body (how the engine reads "model" and "stream")
 *   translated  : body_peek, then what the engine does to translate: json_io_loadb +
 *                 tr_request + json_io_dumps (request) and json_io_loadb + tr_response +
 *                 json_io_dumps (the provider's answer)
 * for a 1 KiB and a 256 KiB conversation, and the cost of tr_stream_feed per streamed chunk
 * (a text delta) in both directions, and the JSON text layer alone (json_loadb/json_dumps
 * against json_io_loadb/json_io_dumps). Prints medians of --rounds rounds (default 7).
 * The end-to-end added latency through HAProxy is in tests/bench/translate.sh.
 *
 * Usage: bench_translate [--rounds N] [--secs-per-case S] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "body_peek.h"
#include "buf.h"
#include "json_io.h"
#include "sse.h"
#include "translate.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static volatile size_t sink;

/* A conversation of about `bytes`: alternating user/assistant turns with a system prompt and
 * a tool, in the OpenAI dialect. */
static char *conversation(size_t bytes)
{
    json_t *msgs = json_array();
    json_array_append_new(
        msgs, json_pack("{s:s,s:s}", "role", "system", "content", "You are a helpful assistant."));
    char turn[241];
    memset(turn, 'x', sizeof(turn) - 1);
    turn[sizeof(turn) - 1] = 0;
    size_t n = bytes / 280 + 1;
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            msgs, json_pack("{s:s,s:s}", "role", i % 2 ? "assistant" : "user", "content", turn));
    json_t *req = json_pack("{s:s,s:o,s:i,s:f,s:[{s:s,s:{s:s,s:s,s:{s:s,s:{s:{s:s}}}}}]}", "model",
                            "claude-3-5-haiku", "messages", msgs, "max_tokens", 256, "temperature",
                            0.5, "tools", "type", "function", "function", "name", "lookup",
                            "description", "Looks a thing up", "parameters", "type", "object",
                            "properties", "q", "type", "string");
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return s;
}

static const char anthropic_resp[] =
    "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-5-haiku\","
    "\"content\":[{\"type\":\"text\",\"text\":\"Hello! How can I help you today?\"}],"
    "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
    "\"usage\":{\"input_tokens\":25,\"output_tokens\":12}}";

static double passthrough_once(const char *body, size_t len)
{
    double t0 = now();
    char model[256];
    struct body_peek bp;
    sink += (size_t)body_peek(body, len, model, sizeof(model), &bp) + bp.model_len;
    return now() - t0;
}

static double translate_once(const char *body, size_t len)
{
    double t0 = now();
    json_error_t e;
    char err[128];
    char model[256];
    struct body_peek bp;
    sink += (size_t)body_peek(body, len, model, sizeof(model), &bp) + bp.model_len;
    json_t *root = json_io_loadb(body, len, &e);
    struct tr_opts o = {0};
    json_t *out = tr_request(TR_OPENAI, TR_ANTHROPIC, root, &o, NULL, NULL, err, sizeof err);
    size_t n = 0;
    char *s = json_io_dumps(out, &n);
    sink += n;
    free(s);
    json_decref(out);
    json_decref(root);
    json_t *resp = json_io_loadb(anthropic_resp, sizeof(anthropic_resp) - 1, &e);
    json_t *r2 = tr_response(TR_ANTHROPIC, TR_OPENAI, resp, 1700000000, NULL, NULL);
    s = json_io_dumps(r2, &n);
    sink += n;
    free(s);
    json_decref(r2);
    json_decref(resp);
    return now() - t0;
}

/* The JSON text layer alone: jansson's reader and writer against json_io's. */
static double load_jansson(const char *b, size_t len)
{
    double t0 = now();
    json_t *v = json_loadb(b, len, 0, NULL);
    sink += json_object_size(v);
    json_decref(v);
    return now() - t0;
}

static double load_json_io(const char *b, size_t len)
{
    double t0 = now();
    json_t *v = json_io_loadb(b, len, NULL);
    sink += json_object_size(v);
    json_decref(v);
    return now() - t0;
}

static json_t *dump_src; /* what the dump_* functions write */

static double dump_jansson(const char *b, size_t len)
{
    (void)b;
    (void)len;
    double t0 = now();
    char *s = json_dumps(dump_src, JSON_COMPACT);
    sink += s ? 1 : 0;
    free(s);
    return now() - t0;
}

static double dump_json_io(const char *b, size_t len)
{
    (void)b;
    (void)len;
    double t0 = now();
    char *s = json_io_dumps(dump_src, NULL);
    sink += s ? 1 : 0;
    free(s);
    return now() - t0;
}

/* Median seconds per call of fn over `rounds` rounds of `iters` calls. */
static double median_per_call(double (*fn)(const char *, size_t), const char *b, size_t len,
                              int rounds, int iters)
{
    double r[64];
    for (int i = 0; i < rounds; i++) {
        double total = 0;
        for (int k = 0; k < iters; k++)
            total += fn(b, len);
        r[i] = total / iters;
    }
    qsort(r, (size_t)rounds, sizeof(double), cmp_double);
    return r[rounds / 2];
}

/* Seconds per tr_stream_feed of one text delta, median of rounds. */
static double per_chunk(enum tr_dialect from, int rounds, int chunks)
{
    static const char a_delta[] =
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\" the quick brown fox\"}}";
    static const char o_delta[] =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" the quick "
        "brown fox\"},\"logprobs\":null,\"finish_reason\":null}]}";
    static const char a_start[] =
        "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","
        "\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"stop_reason\":null,"
        "\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}";
    static const char a_bstart[] =
        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
        "\"text\":\"\"}}";
    static const char o_first[] =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
        "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}";
    double r[64];
    struct lr_buf out = {0};
    for (int i = 0; i < rounds; i++) {
        struct tr_stream *s = tr_stream_new(from, "m", true, 1700000000);
        if (from == TR_ANTHROPIC) {
            tr_stream_feed(s, "message_start", 13, a_start, sizeof(a_start) - 1, NULL, NULL, &out);
            tr_stream_feed(s, "content_block_start", 19, a_bstart, sizeof(a_bstart) - 1, NULL, NULL,
                           &out);
        } else {
            tr_stream_feed(s, NULL, 0, o_first, sizeof(o_first) - 1, NULL, NULL, &out);
        }
        double t0 = now();
        for (int k = 0; k < chunks; k++) {
            lr_buf_reset(&out);
            if (from == TR_ANTHROPIC)
                tr_stream_feed(s, "content_block_delta", 19, a_delta, sizeof(a_delta) - 1, NULL,
                               NULL, &out);
            else
                tr_stream_feed(s, NULL, 0, o_delta, sizeof(o_delta) - 1, NULL, NULL, &out);
            sink += out.len;
        }
        r[i] = (now() - t0) / chunks;
        tr_stream_free(s);
    }
    lr_buf_free(&out);
    qsort(r, (size_t)rounds, sizeof(double), cmp_double);
    return r[rounds / 2];
}

int main(int argc, char **argv)
{
    int rounds = 7;
    for (int i = 1; i + 1 < argc; i += 2)
        if (strcmp(argv[i], "--rounds") == 0)
            rounds = atoi(argv[i + 1]);
    if (rounds < 1 || rounds > 63) {
        fprintf(stderr, "usage: %s [--rounds 1..63]\n", argv[0]);
        return 2;
    }
    char *small = conversation(1024), *big = conversation(256 * 1024);
    size_t ls = strlen(small), lb = strlen(big);
    printf("translation cost in process (median of %d rounds)\n", rounds);
    printf("%-28s %10s %12s %12s %8s\n", "case", "body", "passthrough", "translated", "extra");
    struct {
        const char *name, *body;
        size_t len;
        int iters;
    } cases[] = {{"request+response, 1 KiB", small, ls, 20000},
                 {"request+response, 256 KiB", big, lb, 60}};
    for (size_t i = 0; i < 2; i++) {
        double p =
            median_per_call(passthrough_once, cases[i].body, cases[i].len, rounds, cases[i].iters);
        double t =
            median_per_call(translate_once, cases[i].body, cases[i].len, rounds, cases[i].iters);
        printf("%-28s %8zu B %9.1f us %9.1f us %5.1f us\n", cases[i].name, cases[i].len, p * 1e6,
               t * 1e6, (t - p) * 1e6);
    }
    printf("%-28s %10s %12s %12s\n", "JSON text layer", "body", "jansson", "json_io");
    for (size_t i = 0; i < 2; i++) {
        double jl =
            median_per_call(load_jansson, cases[i].body, cases[i].len, rounds, cases[i].iters);
        double il =
            median_per_call(load_json_io, cases[i].body, cases[i].len, rounds, cases[i].iters);
        dump_src = json_loadb(cases[i].body, cases[i].len, 0, NULL);
        double jd = median_per_call(dump_jansson, NULL, 0, rounds, cases[i].iters);
        double id = median_per_call(dump_json_io, NULL, 0, rounds, cases[i].iters);
        json_decref(dump_src);
        printf("%-28s %8zu B %9.1f us %9.1f us\n", i ? "read, 256 KiB" : "read, 1 KiB",
               cases[i].len, jl * 1e6, il * 1e6);
        printf("%-28s %8zu B %9.1f us %9.1f us\n", i ? "write, 256 KiB" : "write, 1 KiB",
               cases[i].len, jd * 1e6, id * 1e6);
    }
    double a = per_chunk(TR_ANTHROPIC, rounds, 200000), o = per_chunk(TR_OPENAI, rounds, 200000);
    printf("%-28s %9.2f us (target <= 5 us)\n", "per chunk, anthropic->openai", a * 1e6);
    printf("%-28s %9.2f us (target <= 5 us)\n", "per chunk, openai->anthropic", o * 1e6);
    free(small);
    free(big);
    return (a <= 5e-6 && o <= 5e-6) ? 0 : 1;
}
