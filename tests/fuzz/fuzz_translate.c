/* libFuzzer target for the dialect translator (requests, responses, errors). The first byte
 * chooses the function and direction (and, for errors, the status); the rest is parsed as
 * JSON and translated; the result is serialised and freed. Checks: no crash, no leak, the
 * input is left as it was, a failed request always says why, an error translation never
 * fails and keeps its message within the cap. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "translate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_drop(void *ud, const char *field)
{
    size_t *n = ud;

    if (!field || !*field)
        abort();
    (*n)++;
}

static void consume(json_t *out)
{
    char *s;

    if (!out)
        return;
    s = json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        abort();
    free(s);
    json_decref(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int statuses[] = {400, 401, 403, 404, 413, 429, 500, 502, 503, 529};
    enum tr_dialect from, to;
    json_t *in, *copy, *out;
    size_t drops = 0;
    uint8_t sel;

    if (size < 1)
        return 0;
    sel = data[0];
    from = (sel & 1) ? TR_ANTHROPIC : TR_OPENAI;
    to = from == TR_OPENAI ? TR_ANTHROPIC : TR_OPENAI;
    /* an error body may be anything, even absent */
    in = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
    copy = in ? json_deep_copy(in) : NULL;
    if (in && !copy)
        abort();

    switch ((sel >> 1) % 3) {
    case 0: {
        struct tr_opts opts = {.default_max_tokens = (unsigned)(sel >> 3) * 100};
        char err[128];

        err[0] = 'x';
        out = tr_request(from, to, in, &opts, on_drop, &drops, err, sizeof(err));
        if (!out && (!memchr(err, 0, sizeof(err)) || !err[0]))
            abort();
        consume(out);
        break;
    }
    case 1:
        consume(tr_response(from, to, in, 1700000000, on_drop, &drops));
        break;
    default: {
        int st = -1, status = statuses[(sel >> 3) % (sizeof(statuses) / sizeof(statuses[0]))];
        const json_t *e, *m;

        out = tr_error(from, to, status, in, &st);
        if (!out || st < 400)
            abort();
        e = json_object_get(out, "error");
        m = json_object_get(e, "message");
        if (!json_is_string(m) || json_string_length(m) > 4096)
            abort();
        consume(out);
        break;
    }
    }
    if (in && !json_equal(in, copy))
        abort();
    json_decref(copy);
    json_decref(in);
    return 0;
}
