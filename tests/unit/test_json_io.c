/* json_io (yajl-driven reader, direct writer) against jansson, the reference: every case
 * must give what json_loadb gives (the same tree, or the same error text and position),
 * take the fast path or fall back to jansson as the case says, and write back byte for
 * byte what json_dumps(JSON_COMPACT) writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "buf.h"
#include "json_io.h"

enum path { FAST, FALLBACK };

struct io_case {
    const char *name;
    const char *text;
    size_t len; /* 0: strlen(text) */
    enum path path;
};

static const struct io_case cases[] = {
    {"object", "{\"model\":\"gpt-4o\",\"stream\":true,\"n\":1}", 0, FAST},
    {"array top", "[1,2,[3,{}],[]]", 0, FAST},
    {"whitespace around", " \t\r\n{\"a\" : [ 1 , 2 ] }\n ", 0, FAST},
    {"duplicate keys: last wins, first position", "{\"a\":1,\"b\":2,\"a\":3}", 0, FAST},
    {"escapes", "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u00e9\\u4e2d\"}", 0, FAST},
    {"raw UTF-8", "{\"s\":\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\",\"\xc3\xa9\":1}", 0, FAST},
    {"numbers",
     "[0,-0,-0.0,1.5,1e5,1E-5,2.5e+300,1e-400,9223372036854775807,"
     "-9223372036854775808,0.1,123456789012345678]",
     0, FAST},
    {"literals", "[true,false,null]", 0, FAST},
    {"empty containers", "{\"a\":{},\"b\":[]}", 0, FAST},
    {"deep", "[[[[[[[[[[[[[[[[[[[[{\"a\":[[[[1]]]]}]]]]]]]]]]]]]]]]]]]]", 0, FAST},
    /* everything below is jansson's to decide: its result and error text stand */
    {"integer overflow", "[9223372036854775808]", 0, FALLBACK},
    {"negative overflow", "[-9223372036854775809]", 0, FALLBACK},
    {"real overflow", "[1e400]", 0, FALLBACK},
    {"surrogate pair", "{\"s\":\"\\ud83d\\ude00\"}", 0, FALLBACK},
    {"lone surrogate", "{\"s\":\"\\ud83d\"}", 0, FALLBACK},
    {"NUL escape", "{\"s\":\"a\\u0000b\"}", 0, FALLBACK},
    {"NUL escape in key", "{\"a\\u0000\":1}", 0, FALLBACK},
    {"raw NUL after value", "{}\0", 3, FALLBACK},
    {"raw control byte in string", "{\"s\":\"a\x01\"}", 0, FALLBACK},
    {"vertical tab as whitespace", "{\"a\":1\v}", 0, FALLBACK},
    {"form feed as whitespace", "{\f}", 0, FALLBACK},
    {"bad UTF-8", "{\"s\":\"\xff\"}", 0, FALLBACK},
    {"overlong UTF-8", "{\"s\":\"\xc0\xaf\"}", 0, FALLBACK},
    {"UTF-16 surrogate as UTF-8", "{\"s\":\"\xed\xa0\x80\"}", 0, FALLBACK},
    {"bad UTF-8 in key", "{\"\xfe\":1}", 0, FALLBACK},
    {"scalar top", "\"just a string\"", 0, FALLBACK},
    {"number top", "42", 0, FALLBACK},
    {"empty", "", 0, FALLBACK},
    {"only spaces", "   ", 0, FALLBACK},
    {"trailing garbage", "{} x", 0, FALLBACK},
    {"trailing unfinished string", "{}\"x", 0, FALLBACK},
    {"two values", "{}{}", 0, FALLBACK},
    {"trailing comma", "[1,]", 0, FALLBACK},
    {"comment", "{/* c */}", 0, FALLBACK},
    {"leading zero", "[01]", 0, FALLBACK},
    {"bare minus", "[-]", 0, FALLBACK},
    {"unterminated", "{\"a\":[1,2", 0, FALLBACK},
    {"bad escape", "{\"s\":\"\\x\"}", 0, FALLBACK},
    {"single quotes", "{'a':1}", 0, FALLBACK},
    {"BOM", "\xef\xbb\xbf{}", 0, FALLBACK},
    {"NaN", "[NaN]", 0, FALLBACK},
};

static void check_case(const struct io_case *c)
{
    size_t len = c->len ? c->len : strlen(c->text);
    json_error_t e1, e2;
    memset(&e1, 0, sizeof(e1));
    memset(&e2, 0, sizeof(e2));
    json_t *ref = json_loadb(c->text, len, 0, &e1);
    unsigned long before = json_io_fallbacks();
    json_t *got = json_io_loadb(c->text, len, &e2);
    enum path path = json_io_fallbacks() == before ? FAST : FALLBACK;
    if (path != c->path)
        fail_msg("%s: took the %s path", c->name, path == FAST ? "fast" : "fallback");
    if (!ref != !got)
        fail_msg("%s: jansson %s, json_io %s", c->name, ref ? "ok" : e1.text, got ? "ok" : e2.text);
    if (ref && !json_equal(ref, got))
        fail_msg("%s: trees differ", c->name);
    if (!ref && (strcmp(e1.text, e2.text) != 0 || e1.position != e2.position))
        fail_msg("%s: error '%s' at %d, want '%s' at %d", c->name, e2.text, e2.position, e1.text,
                 e1.position);
    if (ref) {
        char *want = json_dumps(ref, JSON_COMPACT);
        size_t n = 0;
        char *text = json_io_dumps(ref, &n);
        assert_non_null(want);
        assert_non_null(text);
        if (strcmp(want, text) != 0)
            fail_msg("%s: wrote\n%s\nwant\n%s", c->name, text, want);
        assert_int_equal(n, strlen(want));
        free(want);
        free(text);
    }
    json_decref(ref);
    json_decref(got);
}

static void test_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_case(&cases[i]);
}

/* Duplicate keys keep the first position and the last value, as in jansson. */
static void test_duplicate_order(void **state)
{
    (void)state;
    json_t *v = json_io_loadb("{\"a\":1,\"b\":2,\"a\":3}", 19, NULL);
    assert_non_null(v);
    char *s = json_io_dumps(v, NULL);
    assert_string_equal(s, "{\"a\":3,\"b\":2}");
    free(s);
    json_decref(v);
}

/* Numbers are written as jansson writes them: 17 significant digits, ".0" on integral
 * reals, no '+' or leading zeros in exponents. */
static void test_number_forms(void **state)
{
    (void)state;
    json_t *v = json_pack("[f,f,f,f,f,f,I,I,I]", 0.5, 1.0, -0.0, 1e20, 1.5e-7, 0.1, (json_int_t)0,
                          (json_int_t)-42, (json_int_t)INT64_MIN);
    assert_non_null(v);
    char *want = json_dumps(v, JSON_COMPACT), *got = json_io_dumps(v, NULL);
    assert_string_equal(got, want);
    assert_non_null(strstr(got, "1e20"));
    free(want);
    free(got);
    json_decref(v);
}

/* Nesting past the fast path's limit is left to jansson, which refuses past 2048. */
static void test_depth(void **state)
{
    (void)state;
    for (size_t depth = 999; depth <= 2100; depth += 1101 - 999) {
        size_t len = 2 * depth;
        char *t = malloc(len);
        assert_non_null(t);
        memset(t, '[', depth);
        memset(t + depth, ']', depth);
        json_error_t e;
        unsigned long before = json_io_fallbacks();
        json_t *v = json_io_loadb(t, len, &e);
        json_t *ref = json_loadb(t, len, 0, &e);
        assert_int_equal(!v, !ref);
        assert_int_equal(json_io_fallbacks() - before, depth < 1000 ? 0 : 1);
        if (v) {
            char *a = json_dumps(v, JSON_COMPACT), *b = json_io_dumps(v, NULL);
            assert_string_equal(a, b);
            free(a);
            free(b);
        }
        json_decref(v);
        json_decref(ref);
        free(t);
    }
}

/* A large conversation takes the fast path and reads back equal. */
static void test_large(void **state)
{
    (void)state;
    struct lr_buf b = {0};
    assert_int_equal(lr_buf_puts(&b, "{\"model\":\"m\",\"messages\":["), 0);
    for (int i = 0; i < 2000; i++)
        assert_int_equal(lr_buf_printf(&b, "%s{\"role\":\"user\",\"content\":\"t\xc3\xa9xt %d\"}",
                                       i ? "," : "", i),
                         0);
    assert_int_equal(lr_buf_puts(&b, "]}"), 0);
    unsigned long before = json_io_fallbacks();
    json_t *v = json_io_loadb((const char *)b.data, b.len, NULL);
    assert_int_equal(json_io_fallbacks(), before);
    json_t *ref = json_loadb((const char *)b.data, b.len, 0, NULL);
    assert_true(json_equal(v, ref));
    char *a = json_dumps(ref, JSON_COMPACT), *t = json_io_dumps(v, NULL);
    assert_string_equal(a, t);
    free(a);
    free(t);
    json_decref(v);
    json_decref(ref);
    lr_buf_free(&b);
}

/* json_io_append takes any value (JSON_ENCODE_ANY) and appends; json_io_dumps only takes
 * a container, as json_dumps does. */
static void test_append_any(void **state)
{
    (void)state;
    struct lr_buf b = {0};
    assert_int_equal(lr_buf_puts(&b, "x="), 0);
    json_t *s = json_string("a\"b");
    assert_int_equal(json_io_append(&b, s), 0);
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.data, "x=\"a\\\"b\"", 8);
    assert_null(json_io_dumps(s, NULL));
    json_decref(s);
    lr_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),        cmocka_unit_test(test_duplicate_order),
        cmocka_unit_test(test_number_forms), cmocka_unit_test(test_depth),
        cmocka_unit_test(test_large),        cmocka_unit_test(test_append_any),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
