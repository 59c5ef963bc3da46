/* lr_regex: the cost estimate of glibc's regcomp expansion, and the guard built on it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lr_regex.h"

static void test_cost(void **state)
{
    (void)state;
    assert_int_equal(lr_regex_cost(""), 0);
    assert_int_equal(lr_regex_cost("^gpt-4.*"), 7);
    assert_int_equal(lr_regex_cost("a+"), 2);
    assert_int_equal(lr_regex_cost("a++"), 4);
    assert_int_equal(lr_regex_cost("(ab)+"), 4);
    assert_int_equal(lr_regex_cost("a{3}"), 3);
    assert_int_equal(lr_regex_cost("a{2,5}"), 5);
    assert_int_equal(lr_regex_cost("a{4,}"), 5);
    assert_int_equal(lr_regex_cost("(a{3}){3}"), 9);
    assert_int_equal(lr_regex_cost("[+*{]+"), 2); /* a bracket is one atom */
    assert_int_equal(lr_regex_cost("[]+]"), 1);   /* leading ] is literal */
    assert_int_equal(lr_regex_cost("[[:alpha:]]"), 1);
    assert_int_equal(lr_regex_cost("\\++"), 2); /* escaped + is an atom */
    assert_int_equal(lr_regex_cost("a{x}"), 4); /* not a bound: literal chars */
    assert_true(lr_regex_cost("a++++++++++++++++++++++++++++++") > LR_REGEX_MAX_COST);
    assert_true(lr_regex_cost("((((((((((((a+)+)+)+)+)+)+)+)+)+)+)+)+") > LR_REGEX_MAX_COST);
    assert_true(lr_regex_cost("((a{99}){99}){99}") > LR_REGEX_MAX_COST);
    assert_true(lr_regex_cost("a{99999999999999999999}") > LR_REGEX_MAX_COST);
    assert_int_equal(lr_regex_cost("(((("), 0); /* unbalanced: left to regcomp */
}

static void test_compile(void **state)
{
    (void)state;
    regex_t re;
    char err[160];
    assert_int_equal(
        lr_regex_compile(&re, "^claude-(3|4)\\..*", REG_EXTENDED | REG_NOSUB, err, sizeof(err)), 0);
    assert_int_equal(regexec(&re, "claude-3.5", 0, NULL, 0), 0);
    regfree(&re);
    assert_int_equal(lr_regex_compile(&re, "(x", REG_EXTENDED, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "Unmatched"));
    assert_int_equal(lr_regex_compile(&re, "^cla++++++++++++++++++++++++++++++++++++ude-",
                                      REG_EXTENDED, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "too complex"));
    char big[LR_REGEX_MAX_LEN + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    assert_int_equal(lr_regex_compile(&re, big, REG_EXTENDED, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "longer than"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cost),
        cmocka_unit_test(test_compile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
