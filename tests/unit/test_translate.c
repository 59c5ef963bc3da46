/* Dialect translation (requests, responses, errors): every case directory under
 * tests/data/translate (except stream-*, which test_translate_stream runs) is translated
 * and compared with its expected.json, its reported drops with case.json's "dropped"
 * (as a multiset), and its input with a deep copy taken before the call. Then the error
 * paths the corpus cannot express: NULL inputs, bad dialects, the message cap. */
#include <dirent.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "translate.h"

/* The corpus must not silently shrink (a bad glob, a moved directory). */
#define MIN_CASES 90
#define MAX_DROPS 64

struct drops {
    const char *name[MAX_DROPS];
    size_t n;
    bool overflow;
};

static void on_drop(void *ud, const char *field)
{
    struct drops *d = ud;

    if (!field || d->n == MAX_DROPS) {
        d->overflow = true;
        return;
    }
    d->name[d->n++] = field;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *dump(const json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    return s ? s : strdup("(null)");
}

/* dir/name/file into path (of size PATH_MAX); a path that does not fit fails the test. */
static void case_path(char *path, const char *root, const char *name, const char *file)
{
    int n = snprintf(path, PATH_MAX, "%s/%s/%s", root, name, file);

    assert_true(n > 0 && n < PATH_MAX);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static enum tr_dialect dialect(const char *dir, const json_t *v)
{
    const char *s = json_string_value(v);

    if (s && !strcmp(s, "openai"))
        return TR_OPENAI;
    if (s && !strcmp(s, "anthropic"))
        return TR_ANTHROPIC;
    fail_msg("%s: case.json needs \"from\"/\"to\": \"openai\" or \"anthropic\"", dir);
    return TR_OPENAI;
}

/* Compares the reported drops with the expected multiset; prints both on mismatch. */
static int check_drops(const char *name, struct drops *got, const json_t *want)
{
    const char *w[MAX_DROPS];
    size_t nw = json_array_size(want), i;
    int bad = 0;

    if (want && !json_is_array(want))
        fail_msg("%s: \"dropped\" must be an array", name);
    assert_true(nw <= MAX_DROPS);
    for (i = 0; i < nw; i++) {
        w[i] = json_string_value(json_array_get(want, i));
        assert_non_null(w[i]);
    }
    qsort(got->name, got->n, sizeof(got->name[0]), cmp_str);
    qsort(w, nw, sizeof(w[0]), cmp_str);
    if (got->overflow || got->n != nw)
        bad = 1;
    for (i = 0; !bad && i < nw; i++)
        if (strcmp(got->name[i], w[i]))
            bad = 1;
    if (bad) {
        print_error("%s: dropped fields differ\n  want:", name);
        for (i = 0; i < nw; i++)
            print_error(" %s", w[i]);
        print_error("\n  got: ");
        for (i = 0; i < got->n; i++)
            print_error(" %s", got->name[i]);
        print_error("%s\n", got->overflow ? " (overflow)" : "");
    }
    return bad;
}

static json_t *translate(const char *name, const json_t *cs, const json_t *in, struct drops *drops,
                         bool with_drop, char *err, size_t errlen, int *status_out)
{
    const char *kind = json_string_value(json_object_get(cs, "kind"));
    enum tr_dialect from = dialect(name, json_object_get(cs, "from"));
    enum tr_dialect to = dialect(name, json_object_get(cs, "to"));
    tr_drop_fn fn = with_drop ? on_drop : NULL;

    assert_non_null(kind);
    if (!strcmp(kind, "request")) {
        struct tr_opts opts = {.default_max_tokens = (unsigned)json_integer_value(
                                   json_object_get(cs, "default_max_tokens"))};
        return tr_request(from, to, in, &opts, fn, drops, err, errlen);
    }
    if (!strcmp(kind, "response"))
        return tr_response(from, to, in, json_integer_value(json_object_get(cs, "created")), fn,
                           drops);
    if (!strcmp(kind, "error")) {
        json_t *st = json_object_get(cs, "status");

        if (!json_is_integer(st))
            fail_msg("%s: an error case needs \"status\"", name);
        return tr_error(from, to, (int)json_integer_value(st), in, status_out);
    }
    fail_msg("%s: unknown kind \"%s\"", name, kind);
    return NULL;
}

/* Allocation failure injection: jansson's allocations fail at number fail_at (1-based). */
static size_t alloc_count, fail_at, failures_injected;
static bool alloc_failed;

static void *failing_malloc(size_t n)
{
    if (fail_at && ++alloc_count == fail_at) {
        alloc_failed = true;
        return NULL;
    }
    return malloc(n);
}

/* Every allocation of a case fails in turn: the call must then return NULL (or, for
 * tr_error, NULL or the right body) without leaking, or the exact expected output. */
static int run_oom(const char *name, const json_t *cs, const json_t *in, const json_t *want)
{
    const char *kind = json_string_value(json_object_get(cs, "kind"));
    int bad = 0;

    for (size_t n = 1; n < 100000; n++) {
        struct drops drops = {0};
        char err[256] = "";
        int st;
        json_t *out;

        alloc_count = 0;
        alloc_failed = false;
        fail_at = n;
        json_set_alloc_funcs(failing_malloc, free);
        out = translate(name, cs, in, &drops, true, err, sizeof(err), &st);
        json_set_alloc_funcs(malloc, free);
        fail_at = 0;
        if (out && want && !json_equal(out, want)) {
            char *g = dump(out);
            print_error("%s: allocation %zu failed and the output is wrong: %s\n", name, n, g);
            free(g);
            bad = 1;
        } else if (!out && !strcmp(kind, "request") && !err[0]) {
            print_error("%s: allocation %zu failed without a message\n", name, n);
            bad = 1;
        } else if (out && !want) {
            print_error("%s: allocation %zu failed and the call succeeded\n", name, n);
            bad = 1;
        }
        json_decref(out);
        if (!alloc_failed || bad)
            break;
        failures_injected++;
    }
    return bad;
}

static int run_case(const char *root, const char *name)
{
    char path[PATH_MAX], err[256] = "";
    json_t *cs, *in = NULL, *copy, *out, *out2, *want = NULL;
    const json_t *want_err;
    struct drops drops = {0}, none = {0};
    int status_out = -1, bad = 0;
    json_error_t je;

    case_path(path, root, name, "case.json");
    cs = json_load_file(path, 0, &je);
    if (!cs)
        fail_msg("%s: %s line %d", path, je.text, je.line);
    case_path(path, root, name, "input.json");
    if (file_exists(path)) {
        in = json_load_file(path, JSON_DECODE_ANY, &je);
        if (!in)
            fail_msg("%s: %s line %d", path, je.text, je.line);
    } else {
        /* input.txt: a body that is not JSON, which the caller passes as NULL */
        case_path(path, root, name, "input.txt");
        if (!file_exists(path))
            fail_msg("%s: no input.json nor input.txt", name);
    }
    copy = in ? json_deep_copy(in) : NULL;

    out = translate(name, cs, in, &drops, true, err, sizeof(err), &status_out);
    if (in && !json_equal(in, copy)) {
        print_error("%s: the input was modified\n", name);
        bad = 1;
    }
    want_err = json_object_get(cs, "error");
    if (want_err || json_is_true(json_object_get(cs, "expect_null"))) {
        if (out) {
            char *g = dump(out);
            print_error("%s: expected a failure, got %s\n", name, g);
            free(g);
            bad = 1;
        } else if (want_err && !strstr(err, json_string_value(want_err))) {
            print_error("%s: error \"%s\" does not contain \"%s\"\n", name, err,
                        json_string_value(want_err));
            bad = 1;
        }
    } else {
        case_path(path, root, name, "expected.json");
        want = json_load_file(path, JSON_DECODE_ANY, &je);
        if (!want)
            fail_msg("%s: %s line %d", path, je.text, je.line);
        if (!out || !json_equal(out, want)) {
            char *w = dump(want), *g = dump(out);
            print_error("%s: output differs (err \"%s\")\n  want: %s\n  got:  %s\n", name, err, w,
                        g);
            free(w);
            free(g);
            bad = 1;
        }
        /* without a drop callback the result is the same */
        out2 = translate(name, cs, in, &none, false, err, sizeof(err), &status_out);
        if (!json_equal(out, out2)) {
            print_error("%s: the result depends on the drop callback\n", name);
            bad = 1;
        }
        json_decref(out2);
        if (!bad)
            bad = run_oom(name, cs, in, want);
    }
    bad |= check_drops(name, &drops, json_object_get(cs, "dropped"));
    if (json_object_get(cs, "expect_status") &&
        status_out != json_integer_value(json_object_get(cs, "expect_status"))) {
        print_error("%s: status %d, want %d\n", name, status_out,
                    (int)json_integer_value(json_object_get(cs, "expect_status")));
        bad = 1;
    }
    json_decref(out);
    json_decref(want);
    json_decref(copy);
    json_decref(in);
    json_decref(cs);
    return bad;
}

static void test_corpus(void **state)
{
    char root[PATH_MAX];
    char *names[256] = {0};
    size_t n = 0;
    struct dirent *de;
    DIR *d;
    int bad = 0;

    (void)state;
    snprintf(root, sizeof(root), "%s/translate", LR_TEST_DATA_DIR);
    d = opendir(root);
    assert_non_null(d);
    while ((de = readdir(d))) {
        char p[PATH_MAX + 300];
        struct stat st;

        if (de->d_name[0] == '.' || !strncmp(de->d_name, "stream-", 7))
            continue;
        snprintf(p, sizeof(p), "%s/%s", root, de->d_name);
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        assert_true(n < 256);
        names[n] = strdup(de->d_name);
        assert_non_null(names[n]);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str);
    for (size_t i = 0; i < n; i++) {
        int r = run_case(root, names[i]);

        print_message("%-40s %s\n", names[i], r ? "FAILED" : "ok");
        bad += r;
        free(names[i]);
    }
    print_message("%zu cases, %d failed, %zu allocation failures injected\n", n, bad,
                  failures_injected);
    if (n < MIN_CASES)
        fail_msg("only %zu cases in %s (at least %d expected)", n, root, MIN_CASES);
    if (bad)
        fail_msg("%d translation case(s) failed", bad);
}

/* ---- error paths ---- */

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);

    if (!v)
        fail_msg("bad test JSON: %s: %s", je.text, text);
    return v;
}

/* Expects tr_request to fail with a message containing want, without touching the input. */
static void expect_request_error(enum tr_dialect from, const char *body, const char *want)
{
    json_t *in = parse(body), *copy = json_deep_copy(in), *out;
    enum tr_dialect to = from == TR_OPENAI ? TR_ANTHROPIC : TR_OPENAI;
    char err[200];

    memset(err, 'x', sizeof(err));
    out = tr_request(from, to, in, NULL, NULL, NULL, err, sizeof(err));
    if (out) {
        char *g = dump(out);
        fail_msg("%s: expected an error, got %s", body, g);
    }
    assert_non_null(memchr(err, 0, sizeof(err)));
    if (!strstr(err, want))
        fail_msg("%s: error \"%s\" does not contain \"%s\"", body, err, want);
    assert_true(json_equal(in, copy));
    json_decref(copy);
    json_decref(in);
}

static void test_request_null_and_shapes(void **state)
{
    char err[128] = "";
    char tiny[4];

    (void)state;
    assert_null(tr_request(TR_OPENAI, TR_ANTHROPIC, NULL, NULL, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "JSON object"));
    /* no error buffer, or a zero-length one, is fine; a short one is truncated */
    assert_null(tr_request(TR_ANTHROPIC, TR_OPENAI, NULL, NULL, NULL, NULL, NULL, 0));
    assert_null(tr_request(TR_ANTHROPIC, TR_OPENAI, NULL, NULL, NULL, NULL, tiny, 0));
    assert_null(tr_request(TR_ANTHROPIC, TR_OPENAI, NULL, NULL, NULL, NULL, tiny, sizeof(tiny)));
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);

    for (int from = TR_OPENAI; from <= TR_ANTHROPIC; from++) {
        expect_request_error(from, "[]", "JSON object");
        expect_request_error(from, "\"text\"", "JSON object");
        expect_request_error(from, "{}", "messages");
        expect_request_error(from, "{\"messages\":{}}", "messages");
        expect_request_error(from, "{\"messages\":\"hi\"}", "messages");
        expect_request_error(from, "{\"messages\":[1]}", "messages[0] is not an object");
        expect_request_error(from, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},null]}",
                             "messages[1] is not an object");
        expect_request_error(from, "{\"messages\":[{\"role\":\"user\",\"content\":7}]}",
                             "messages[0].content");
        expect_request_error(from, "{\"messages\":[{\"role\":\"robot\",\"content\":\"a\"}]}",
                             "messages[0]");
        expect_request_error(from, "{\"messages\":[{\"role\":\"user\",\"content\":[7]}]}",
                             "messages[0].content[0]");
        expect_request_error(
            from, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"tools\":7}", "tools");
    }
    expect_request_error(TR_OPENAI, "{\"messages\":[{\"content\":\"a\"}]}", "role");
    expect_request_error(TR_OPENAI, "{\"messages\":[]}", "at least one");
    expect_request_error(TR_OPENAI, "{\"messages\":[{\"role\":\"tool\",\"content\":\"a\"}]}",
                         "tool_call_id");
    expect_request_error(TR_OPENAI,
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_tokens\":0}",
                         "max_tokens");
    expect_request_error(TR_OPENAI,
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],"
                         "\"temperature\":\"hot\"}",
                         "temperature");
    expect_request_error(
        TR_OPENAI, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"stop\":[1]}", "stop");
    expect_request_error(TR_OPENAI,
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"tools\":[{"
                         "\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
                         "\"tool_choice\":\"sometimes\"}",
                         "tool_choice");
    expect_request_error(
        TR_OPENAI, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"x\"}]}]}",
        "tool_calls[0]");
    expect_request_error(TR_ANTHROPIC, "{\"messages\":[]}", "non-empty");
    expect_request_error(TR_ANTHROPIC,
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"system\":7}",
                         "system");
    expect_request_error(TR_ANTHROPIC,
                         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
                         "\"tool_result\"}]}]}",
                         "tool_use_id");
    expect_request_error(TR_ANTHROPIC,
                         "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":"
                         "\"tool_use\",\"id\":\"t\"}]}]}",
                         "tool_use needs");
}

/* A request that fails reports nothing, even the drops found before the failure. */
static void test_no_drops_on_failure(void **state)
{
    json_t *req = parse("{\"seed\":1,\"messages\":[{\"role\":\"user\",\"name\":\"x\","
                        "\"content\":\"a\"}],\"logit_bias\":{},\"max_tokens\":0}");
    json_t *resp = parse("{\"system_fingerprint\":\"f\",\"choices\":[{\"message\":{"
                         "\"tool_calls\":[{\"function\":{\"arguments\":\"x\"}}]}}]}");
    struct drops d = {0};
    char err[64];

    (void)state;
    assert_null(tr_request(TR_OPENAI, TR_ANTHROPIC, req, NULL, on_drop, &d, err, sizeof(err)));
    assert_non_null(strstr(err, "max_tokens"));
    assert_int_equal(d.n, 0);
    assert_null(tr_response(TR_OPENAI, TR_ANTHROPIC, resp, 0, on_drop, &d));
    assert_int_equal(d.n, 0);
    /* the same request, valid: now they are reported */
    assert_int_equal(json_object_set_new(req, "max_tokens", json_integer(5)), 0);
    json_decref(resp);
    resp = tr_request(TR_OPENAI, TR_ANTHROPIC, req, NULL, on_drop, &d, err, sizeof(err));
    assert_non_null(resp);
    assert_int_equal(d.n, 3);
    json_decref(resp);
    json_decref(req);
}

static void test_unknown_dialect(void **state)
{
    json_t *req = parse("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}");
    char err[64];
    int st = 0;
    json_t *e;

    (void)state;
    assert_null(tr_request((enum tr_dialect)7, TR_OPENAI, req, NULL, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "dialect"));
    assert_null(tr_response((enum tr_dialect)7, TR_OPENAI, req, 0, NULL, NULL));
    /* the same dialect both ways is a copy, not an error */
    e = tr_request(TR_OPENAI, TR_OPENAI, req, NULL, NULL, NULL, err, sizeof(err));
    assert_true(json_equal(e, req));
    assert_ptr_not_equal(e, req);
    json_decref(e);
    e = tr_error(TR_OPENAI, TR_ANTHROPIC, 502, NULL, &st);
    assert_int_equal(st, 502);
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "error"), "message")),
                        "upstream returned HTTP 502");
    json_decref(e);
    json_decref(req);
}

static void test_response_not_a_response(void **state)
{
    static const char *const bad_anthropic[] = {
        "{}",
        "[]",
        "3",
        "{\"content\":{}}",
        "{\"type\":\"error\",\"content\":[]}",
        "{\"content\":[{\"type\":\"tool_use\",\"name\":\"f\"}]}",
    };
    static const char *const bad_openai[] = {
        "{}",
        "{\"choices\":[]}",
        "{\"choices\":[1]}",
        "{\"choices\":[{}]}",
        "{\"choices\":[{\"message\":{\"content\":5}}]}",
        "{\"choices\":[{\"message\":{\"tool_calls\":[{\"id\":\"x\"}]}}]}",
        "{\"choices\":[{\"message\":{\"tool_calls\":{}}}]}",
    };

    (void)state;
    assert_null(tr_response(TR_ANTHROPIC, TR_OPENAI, NULL, 1, NULL, NULL));
    assert_null(tr_response(TR_OPENAI, TR_ANTHROPIC, NULL, 1, NULL, NULL));
    for (size_t i = 0; i < sizeof(bad_anthropic) / sizeof(bad_anthropic[0]); i++) {
        json_t *in = parse(bad_anthropic[i]);
        json_t *out = tr_response(TR_ANTHROPIC, TR_OPENAI, in, 1, NULL, NULL);
        if (out)
            fail_msg("accepted as an Anthropic response: %s", bad_anthropic[i]);
        json_decref(in);
    }
    for (size_t i = 0; i < sizeof(bad_openai) / sizeof(bad_openai[0]); i++) {
        json_t *in = parse(bad_openai[i]);
        json_t *out = tr_response(TR_OPENAI, TR_ANTHROPIC, in, 1, NULL, NULL);
        if (out)
            fail_msg("accepted as an OpenAI response: %s", bad_openai[i]);
        json_decref(in);
    }
}

/* Upstream messages are capped at 4 KiB, cut on a character boundary. */
static void test_error_message_cap(void **state)
{
    char msg[10001];
    json_t *body, *e;
    const char *m;
    int st;

    (void)state;
    /* 4095 ASCII bytes then 2-byte characters: the cut at 4096 would split one */
    memset(msg, 'a', 4095);
    for (size_t i = 4095; i + 1 < 10000; i += 2) {
        msg[i] = (char)0xC3;
        msg[i + 1] = (char)0xA9;
    }
    msg[9999] = 'z';
    msg[10000] = 0;
    body = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", "api_error", "message",
                     msg);
    assert_non_null(body);
    e = tr_error(TR_ANTHROPIC, TR_OPENAI, 500, body, &st);
    assert_non_null(e);
    assert_int_equal(st, 500);
    m = json_string_value(json_object_get(json_object_get(e, "error"), "message"));
    assert_non_null(m);
    assert_int_equal(strlen(m), 4095);
    assert_memory_equal(m, msg, 4095);
    json_decref(e);
    e = tr_error(TR_OPENAI, TR_ANTHROPIC, 500, body, NULL);
    m = json_string_value(json_object_get(json_object_get(e, "error"), "message"));
    assert_int_equal(strlen(m), 4095);
    json_decref(e);
    json_decref(body);

    /* exactly 4096 bytes: kept whole */
    memset(msg, 'b', 4096);
    msg[4096] = 0;
    body = json_pack("{s:{s:s}}", "error", "message", msg);
    e = tr_error(TR_OPENAI, TR_ANTHROPIC, 400, body, &st);
    assert_int_equal(
        strlen(json_string_value(json_object_get(json_object_get(e, "error"), "message"))), 4096);
    json_decref(e);
    json_decref(body);
}

/* Strings with an embedded NUL are copied whole, not cut at the NUL. */
static void test_embedded_nul(void **state)
{
    json_t *req =
        json_pack("{s:[{s:s,s:s#}]}", "messages", "role", "user", "content", "a\0b", (size_t)3);
    json_t *out;
    const json_t *c;

    (void)state;
    assert_non_null(req);
    out = tr_request(TR_OPENAI, TR_ANTHROPIC, req, NULL, NULL, NULL, NULL, 0);
    assert_non_null(out);
    c = json_object_get(json_array_get(json_object_get(out, "messages"), 0), "content");
    assert_int_equal(json_string_length(c), 3);
    assert_memory_equal(json_string_value(c), "a\0b", 3);
    json_decref(out);
    json_decref(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_request_null_and_shapes),
        cmocka_unit_test(test_no_drops_on_failure),
        cmocka_unit_test(test_unknown_dialect),
        cmocka_unit_test(test_response_not_a_response),
        cmocka_unit_test(test_error_message_cap),
        cmocka_unit_test(test_embedded_nul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
