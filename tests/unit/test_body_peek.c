/* body_peek (yajl, no tree) against body_peek_tree (jansson, the reference): every case is
 * checked for its expected answer on the fast path, and, unless the fast path is unsure,
 * for exactly the same answer from jansson. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "body_peek.h"

#define MODEL_BUF 32

struct peek_case {
    const char *name;
    const char *body;
    size_t len; /* 0: strlen(body) */
    enum body_peek_result fast;
    enum body_peek_result tree; /* what jansson says */
    const char *model;          /* NULL: no model string */
    int stream;
};

static void check_case(const struct peek_case *c)
{
    size_t len = c->len ? c->len : strlen(c->body);
    char m1[MODEL_BUF], m2[MODEL_BUF];
    struct body_peek p1, p2;
    enum body_peek_result r1 = body_peek(c->body, len, m1, sizeof(m1), &p1);
    enum body_peek_result r2 = body_peek_tree(c->body, len, m2, sizeof(m2), &p2, NULL);
    if (r1 != c->fast || r2 != c->tree)
        fail_msg("%s: fast %s (want %s), tree %s (want %s)", c->name, body_peek_result_to_str(r1),
                 body_peek_result_to_str(c->fast), body_peek_result_to_str(r2),
                 body_peek_result_to_str(c->tree));
    if (r2 == BODY_PEEK_OK) {
        if (c->model) {
            assert_true(p2.has_model);
            assert_int_equal(p2.model_len, strlen(c->model));
            assert_string_equal(m2, c->model);
        } else {
            assert_false(p2.has_model);
        }
        assert_int_equal(p2.stream, c->stream);
    }
    if (r1 == BODY_PEEK_OK) {
        assert_int_equal(p1.has_model, p2.has_model);
        assert_int_equal(p1.model_len, p2.model_len);
        assert_int_equal(p1.stream, p2.stream);
        assert_string_equal(m1, m2);
    }
}

#define OK     BODY_PEEK_OK
#define INV    BODY_PEEK_INVALID
#define NOBJ   BODY_PEEK_NOT_OBJECT
#define UNSURE BODY_PEEK_UNSURE

static const struct peek_case cases[] = {
    /* where "model" is */
    {"first", "{\"model\":\"gpt-4o\",\"messages\":[]}", 0, OK, OK, "gpt-4o", 0},
    {"last", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"model\":\"gpt-4o\"}", 0, OK,
     OK, "gpt-4o", 0},
    {"middle", "{\"a\":1,\"model\":\"m\",\"b\":[true,null,{\"c\":{}}]}", 0, OK, OK, "m", 0},
    {"whitespace", " \r\n\t{ \"model\" :\n\"m\" , \"stream\" : true } \n", 0, OK, OK, "m", 1},
    {"no model", "{\"messages\":[]}", 0, OK, OK, NULL, 0},
    {"empty object", "{}", 0, OK, OK, NULL, 0},
    {"empty model", "{\"model\":\"\"}", 0, OK, OK, "", 0},
    /* nested "model" / "stream" members are not the request's */
    {"nested model ignored", "{\"messages\":[{\"model\":\"x\",\"stream\":true}],\"model\":\"y\"}",
     0, OK, OK, "y", 0},
    {"nested only", "{\"messages\":[{\"model\":\"x\"}],\"meta\":{\"model\":\"z\",\"stream\":true}}",
     0, OK, OK, NULL, 0},
    {"model as array value", "{\"x\":[\"model\",\"m\"]}", 0, OK, OK, NULL, 0},
    {"model not a string", "{\"model\":42}", 0, OK, OK, NULL, 0},
    {"model an object", "{\"model\":{\"model\":\"m\"}}", 0, OK, OK, NULL, 0},
    {"model null", "{\"model\":null}", 0, OK, OK, NULL, 0},
    /* duplicates: the last one wins, as json_object_set does */
    {"dup model", "{\"model\":\"a\",\"model\":\"b\"}", 0, OK, OK, "b", 0},
    {"dup model then number", "{\"model\":\"a\",\"model\":1}", 0, OK, OK, NULL, 0},
    {"dup number then model", "{\"model\":[1],\"model\":\"c\"}", 0, OK, OK, "c", 0},
    {"dup stream", "{\"model\":\"a\",\"stream\":true,\"stream\":false}", 0, OK, OK, "a", 0},
    {"dup stream true last", "{\"stream\":false,\"model\":\"a\",\"stream\":true}", 0, OK, OK, "a",
     1},
    /* stream is the literal true only */
    {"stream true", "{\"model\":\"a\",\"stream\":true}", 0, OK, OK, "a", 1},
    {"stream string", "{\"model\":\"a\",\"stream\":\"true\"}", 0, OK, OK, "a", 0},
    {"stream one", "{\"model\":\"a\",\"stream\":1}", 0, OK, OK, "a", 0},
    {"stream object", "{\"model\":\"a\",\"stream\":{}}", 0, OK, OK, "a", 0},
    /* escapes */
    {"escaped model", "{\"model\":\"\\u0067pt-4o\"}", 0, OK, OK, "gpt-4o", 0},
    {"escaped key", "{\"\\u006dodel\":\"m\",\"str\\u0065am\":true}", 0, OK, OK, "m", 1},
    {"non-ascii escape", "{\"model\":\"gpt-\\u00e9\\u4e2d\"}", 0, OK, OK,
     "gpt-\xc3\xa9\xe4\xb8\xad", 0},
    {"raw utf-8", "{\"model\":\"caf\xc3\xa9\",\"x\":\"\xf0\x9f\x98\x80\"}", 0, OK, OK,
     "caf\xc3\xa9", 0},
    {"simple escapes", "{\"model\":\"a\\\"b\\\\c\\/d\\n\"}", 0, OK, OK, "a\"b\\c/d\n", 0},
    {"surrogate pair", "{\"model\":\"\\ud83d\\ude00\"}", 0, UNSURE, OK, "\xf0\x9f\x98\x80", 0},
    {"lone high surrogate", "{\"model\":\"a\\ud800\"}", 0, UNSURE, INV, NULL, 0},
    {"lone low surrogate", "{\"model\":\"a\\udc00\"}", 0, UNSURE, INV, NULL, 0},
    {"high then not low", "{\"model\":\"\\ud800\\u0041\"}", 0, UNSURE, INV, NULL, 0},
    {"escaped backslash before u", "{\"model\":\"\\\\ud800\"}", 0, UNSURE, OK, "\\ud800", 0},
    {"nul escape in string", "{\"model\":\"a\\u0000b\"}", 0, INV, INV, NULL, 0},
    {"nul escape in key", "{\"a\\u0000\":1}", 0, INV, INV, NULL, 0},
    {"bad escape", "{\"model\":\"\\x41\"}", 0, INV, INV, NULL, 0},
    {"short unicode escape", "{\"model\":\"\\u12\"}", 0, INV, INV, NULL, 0},
    /* invalid UTF-8 (yajl is lax where jansson is not) */
    {"overlong", "{\"model\":\"\xc0\xaf\"}", 0, INV, INV, NULL, 0},
    {"encoded surrogate", "{\"model\":\"\xed\xa0\x80\"}", 0, INV, INV, NULL, 0},
    {"beyond U+10FFFF", "{\"model\":\"\xf4\x90\x80\x80\"}", 0, INV, INV, NULL, 0},
    {"f5 lead", "{\"model\":\"\xf5\x80\x80\x80\"}", 0, INV, INV, NULL, 0},
    {"stray continuation", "{\"model\":\"\x80\"}", 0, INV, INV, NULL, 0},
    {"truncated sequence", "{\"model\":\"\xe4\xb8\"}", 0, INV, INV, NULL, 0},
    {"high byte outside string", "{\xc3\xa9:1}", 0, INV, INV, NULL, 0},
    /* syntax */
    {"empty", "", 0, INV, INV, NULL, 0},
    {"spaces only", "  \n", 0, INV, INV, NULL, 0},
    {"unterminated", "{\"model\":\"a\"", 0, INV, INV, NULL, 0},
    {"unterminated string", "{\"model\":\"a", 0, INV, INV, NULL, 0},
    {"trailing garbage", "{\"model\":\"a\"}x", 0, INV, INV, NULL, 0},
    {"unfinished string after", "[{\"mel\":\"a\"}]\"m", 0, INV, INV, NULL, 0},
    {"unfinished literal after", "{\"model\":\"a\"} tr", 0, INV, INV, NULL, 0},
    {"unfinished number after", "{\"model\":\"a\"}\n-", 0, INV, INV, NULL, 0},
    {"two values", "{\"model\":\"a\"}{}", 0, INV, INV, NULL, 0},
    {"trailing comma", "{\"model\":\"a\",}", 0, INV, INV, NULL, 0},
    {"trailing comma array", "{\"model\":\"a\",\"m\":[1,]}", 0, INV, INV, NULL, 0},
    {"single quotes", "{\"model\":'a'}", 0, INV, INV, NULL, 0},
    {"bare key", "{model:\"a\"}", 0, INV, INV, NULL, 0},
    {"comment", "/* c */{\"model\":\"a\"}", 0, INV, INV, NULL, 0},
    {"form feed", "{\f\"model\":\"a\"}", 0, INV, INV, NULL, 0},
    {"vertical tab", "{\"model\":\"a\"}\v", 0, INV, INV, NULL, 0},
    {"control char in string", "{\"model\":\"a\x01\"}", 0, INV, INV, NULL, 0},
    {"raw tab in string", "{\"model\":\"a\tb\"}", 0, INV, INV, NULL, 0},
    {"raw nul", "{\"model\":\"a\"}\0", 14, UNSURE, INV, NULL, 0},
    {"nul in string", "{\"model\":\"a\0\"}", 14, UNSURE, INV, NULL, 0},
    /* json_loadb skips a NUL byte right after a number or a literal (its unget) */
    {"nul after number", "{\"model\":\"a\",\"i\":2.3\0}", 22, UNSURE, OK, "a", 0},
    {"nul after literal", "{\"stream\":true\0,\"model\":\"a\"}", 28, UNSURE, OK, "a", 1},
    {"bom", "\xef\xbb\xbf{\"model\":\"a\"}", 0, INV, INV, NULL, 0},
    {"leading zero", "{\"model\":\"a\",\"n\":01}", 0, INV, INV, NULL, 0},
    {"bare minus", "{\"n\":-}", 0, INV, INV, NULL, 0},
    {"dot only", "{\"n\":1.}", 0, INV, INV, NULL, 0},
    {"nan", "{\"n\":NaN}", 0, INV, INV, NULL, 0},
    {"infinity", "{\"n\":Infinity}", 0, INV, INV, NULL, 0},
    {"True", "{\"stream\":True}", 0, INV, INV, NULL, 0},
    /* numbers: jansson converts them and refuses overflow */
    {"max int", "{\"model\":\"a\",\"n\":9223372036854775807}", 0, OK, OK, "a", 0},
    {"min int", "{\"model\":\"a\",\"n\":-9223372036854775808}", 0, OK, OK, "a", 0},
    {"int overflow", "{\"model\":\"a\",\"n\":9223372036854775808}", 0, INV, INV, NULL, 0},
    {"negative overflow", "{\"n\":-9223372036854775809,\"model\":\"a\"}", 0, INV, INV, NULL, 0},
    {"huge int", "{\"n\":[123456789012345678901234567890123456789012345678901234567890123456789]}",
     0, INV, INV, NULL, 0},
    {"real overflow", "{\"model\":\"a\",\"t\":1e400}", 0, INV, INV, NULL, 0},
    {"negative real overflow", "{\"model\":\"a\",\"t\":-1.5E+309}", 0, INV, INV, NULL, 0},
    {"real underflow", "{\"model\":\"a\",\"t\":1e-400}", 0, OK, OK, "a", 0},
    {"reals", "{\"model\":\"a\",\"t\":0.7,\"p\":-0.0,\"q\":1.5e3,\"r\":2E-2}", 0, OK, OK, "a", 0},
    {"long real",
     "{\"model\":\"a\",\"t\":0."
     "1234567890123456789012345678901234567890123456789012345678901234567890}",
     0, UNSURE, OK, "a", 0},
    /* the top level */
    {"array", "[]", 0, NOBJ, NOBJ, NULL, 0},
    {"array of objects", "[{\"model\":\"a\",\"stream\":true}]", 0, NOBJ, NOBJ, NULL, 0},
    {"bad array", "[1,", 0, INV, INV, NULL, 0},
    {"string", "\"model\"", 0, INV, INV, NULL, 0},
    {"number", "1", 0, INV, INV, NULL, 0},
    {"true", "true", 0, INV, INV, NULL, 0},
    {"null", "null", 0, INV, INV, NULL, 0},
    /* the model buffer holds MODEL_BUF - 1 bytes; the length is the full one */
    {"long model", "{\"model\":\"0123456789012345678901234567890123456789\"}", 0, OK, OK,
     NULL /* checked in test_truncated */, 0},
};

static void test_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (strcmp(cases[i].name, "long model") != 0)
            check_case(&cases[i]);
}

static void test_truncated(void **state)
{
    (void)state;
    const char *b = "{\"model\":\"0123456789012345678901234567890123456789\"}";
    char m1[MODEL_BUF], m2[MODEL_BUF];
    struct body_peek p1, p2;
    assert_int_equal(body_peek(b, strlen(b), m1, sizeof(m1), &p1), BODY_PEEK_OK);
    assert_int_equal(body_peek_tree(b, strlen(b), m2, sizeof(m2), &p2, NULL), BODY_PEEK_OK);
    assert_true(p1.has_model);
    assert_int_equal(p1.model_len, 40);
    assert_int_equal(strlen(m1), MODEL_BUF - 1);
    assert_memory_equal(m1, "0123456789012345678901234567890", MODEL_BUF - 1);
    assert_string_equal(m1, m2);
    assert_int_equal(p1.model_len, p2.model_len);
}

/* Nesting beyond the fast path's limit goes to jansson, which has its own (2048). */
static void check_depth(unsigned depth, enum body_peek_result fast, enum body_peek_result tree)
{
    size_t cap = 64 + 2 * (size_t)depth;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t n = (size_t)snprintf(b, cap, "{\"model\":\"a\",\"x\":");
    for (unsigned i = 0; i < depth; i++)
        b[n++] = '[';
    for (unsigned i = 0; i < depth; i++)
        b[n++] = ']';
    b[n++] = '}';
    char m[MODEL_BUF];
    struct body_peek p;
    assert_int_equal(body_peek(b, n, m, sizeof(m), &p), fast);
    assert_int_equal(body_peek_tree(b, n, m, sizeof(m), &p, NULL), tree);
    free(b);
}

static void test_depth(void **state)
{
    (void)state;
    check_depth(900, BODY_PEEK_OK, BODY_PEEK_OK);
    check_depth(1500, BODY_PEEK_UNSURE, BODY_PEEK_OK);
    check_depth(5000, BODY_PEEK_UNSURE, BODY_PEEK_INVALID);
}

/* A large body (the shape of the 256 KiB benchmark), with non-ASCII text across the UTF-8
 * check's piece boundaries, and one bad byte at the very end of a long string. */
static void test_large(void **state)
{
    (void)state;
    size_t reps = 40000, cap = 64 + reps * 8 + 64;
    char *b = malloc(cap);
    assert_non_null(b);
    size_t n = (size_t)snprintf(b, cap, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (size_t i = 0; i < reps; i++) {
        memcpy(b + n, i % 3 ? "abcdefgh" : "\xe4\xb8\xad\xe6\x96\x87xy", 8);
        n += 8;
    }
    size_t tail = n;
    n += (size_t)snprintf(b + n, cap - n, "\"}],\"stream\":true,\"model\":\"big\"}");
    char m[MODEL_BUF];
    struct body_peek p;
    assert_int_equal(body_peek(b, n, m, sizeof(m), &p), BODY_PEEK_OK);
    assert_string_equal(m, "big");
    assert_true(p.stream);
    b[tail - 1] = (char)0xc3; /* a lead byte and then the closing quote */
    assert_int_equal(body_peek(b, n, m, sizeof(m), &p), BODY_PEEK_INVALID);
    assert_int_equal(body_peek_tree(b, n, m, sizeof(m), &p, NULL), BODY_PEEK_INVALID);
    free(b);
}

static void test_keep(void **state)
{
    (void)state;
    const char *b = "{\"model\":\"a\",\"stream\":true}";
    char m[MODEL_BUF];
    struct body_peek p;
    json_t *root = NULL;
    assert_int_equal(body_peek_tree(b, strlen(b), m, sizeof(m), &p, &root), BODY_PEEK_OK);
    assert_true(json_is_object(root));
    json_decref(root);
    root = NULL;
    assert_int_equal(body_peek_tree("[1]", 3, m, sizeof(m), &p, &root), BODY_PEEK_NOT_OBJECT);
    assert_null(root);
    assert_int_equal(body_peek(NULL, 0, m, sizeof(m), &p), BODY_PEEK_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases), cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_depth), cmocka_unit_test(test_large),
        cmocka_unit_test(test_keep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
