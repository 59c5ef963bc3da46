/* Circuit breaker: every transition, the half-open probe slot, and the counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "circuit.h"

#define T(c, from, to) ((c)->transitions[CIRCUIT_##from][CIRCUIT_##to])

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(circuit_state_to_str(CIRCUIT_CLOSED), "closed");
    assert_string_equal(circuit_state_to_str(CIRCUIT_OPEN), "open");
    assert_string_equal(circuit_state_to_str(CIRCUIT_HALF_OPEN), "half_open");
    assert_string_equal(circuit_state_to_str(CIRCUIT_STATE_COUNT), "?");
}

static void test_init(void **state)
{
    (void)state;
    struct circuit c;
    circuit_init(&c, 3, 2, 30);
    assert_int_equal(c.state, CIRCUIT_CLOSED);
    assert_int_equal(c.failure_threshold, 3);
    assert_int_equal(c.success_threshold, 2);
    assert_true(c.open_secs == 30);
    assert_int_equal(c.failures, 0);
    assert_false(c.probe_in_flight);
    for (int i = 0; i < CIRCUIT_STATE_COUNT; i++)
        for (int j = 0; j < CIRCUIT_STATE_COUNT; j++)
            assert_int_equal(c.transitions[i][j], 0);
    /* zero thresholds are treated as 1 */
    circuit_init(&c, 0, 0, 5);
    assert_int_equal(c.failure_threshold, 1);
    assert_int_equal(c.success_threshold, 1);
}

static void test_closed_to_open(void **state)
{
    (void)state;
    struct circuit c;
    circuit_init(&c, 3, 2, 30);
    assert_true(circuit_allow(&c, 0));
    circuit_on_failure(&c, 1);
    circuit_on_failure(&c, 2);
    assert_int_equal(c.state, CIRCUIT_CLOSED);
    assert_int_equal(c.failures, 2);
    /* a success resets the consecutive count */
    circuit_on_success(&c, 3);
    assert_int_equal(c.failures, 0);
    circuit_on_failure(&c, 4);
    circuit_on_failure(&c, 5);
    assert_int_equal(c.state, CIRCUIT_CLOSED);
    circuit_on_failure(&c, 6);
    assert_int_equal(c.state, CIRCUIT_OPEN);
    assert_true(c.opened_at == 6);
    assert_int_equal(T(&c, CLOSED, OPEN), 1);
    assert_false(circuit_allow(&c, 6));
    assert_false(circuit_available(&c, 35.9));
    assert_false(circuit_allow(&c, 35.9));
    assert_int_equal(c.state, CIRCUIT_OPEN);
    /* late answers while open change nothing */
    circuit_on_failure(&c, 20);
    assert_true(c.opened_at == 6);
    circuit_on_success(&c, 21);
    assert_int_equal(c.state, CIRCUIT_OPEN);
}

static void test_half_open_single_probe(void **state)
{
    (void)state;
    struct circuit c;
    circuit_init(&c, 1, 2, 10);
    circuit_on_failure(&c, 100);
    assert_int_equal(c.state, CIRCUIT_OPEN);
    /* available does not take the slot or change state */
    assert_true(circuit_available(&c, 110));
    assert_int_equal(c.state, CIRCUIT_OPEN);
    assert_true(circuit_allow(&c, 110));
    assert_int_equal(c.state, CIRCUIT_HALF_OPEN);
    assert_int_equal(T(&c, OPEN, HALF_OPEN), 1);
    assert_true(c.probe_in_flight);
    /* one probe at a time */
    assert_false(circuit_available(&c, 110));
    assert_false(circuit_allow(&c, 110));
    assert_false(circuit_allow(&c, 111));
    /* success_threshold 2: the first success frees the slot, stays half-open */
    circuit_on_success(&c, 112);
    assert_int_equal(c.state, CIRCUIT_HALF_OPEN);
    assert_int_equal(c.successes, 1);
    assert_false(c.probe_in_flight);
    assert_true(circuit_available(&c, 112));
    assert_true(circuit_allow(&c, 112));
    assert_false(circuit_allow(&c, 112));
    circuit_on_success(&c, 113);
    assert_int_equal(c.state, CIRCUIT_CLOSED);
    assert_int_equal(T(&c, HALF_OPEN, CLOSED), 1);
    assert_int_equal(c.successes, 0);
    assert_int_equal(c.failures, 0);
    assert_true(circuit_allow(&c, 113));
    assert_true(circuit_allow(&c, 113));
}

static void test_half_open_failure_reopens(void **state)
{
    (void)state;
    struct circuit c;
    circuit_init(&c, 2, 3, 10);
    circuit_on_failure(&c, 0);
    circuit_on_failure(&c, 1);
    assert_int_equal(c.state, CIRCUIT_OPEN);
    assert_true(circuit_allow(&c, 11));
    circuit_on_success(&c, 11.5); /* 1 of 3 */
    assert_true(circuit_allow(&c, 12));
    circuit_on_failure(&c, 12.5);
    assert_int_equal(c.state, CIRCUIT_OPEN);
    assert_int_equal(T(&c, HALF_OPEN, OPEN), 1);
    assert_int_equal(c.successes, 0);
    assert_false(c.probe_in_flight);
    /* open_secs restarts from the reopening */
    assert_true(c.opened_at == 12.5);
    assert_false(circuit_available(&c, 22.4));
    assert_false(circuit_allow(&c, 22.4));
    assert_true(circuit_allow(&c, 22.5));
    assert_int_equal(c.state, CIRCUIT_HALF_OPEN);
    assert_int_equal(T(&c, OPEN, HALF_OPEN), 2);
    /* the success count starts over */
    circuit_on_success(&c, 23);
    assert_true(circuit_allow(&c, 23));
    circuit_on_success(&c, 24);
    assert_int_equal(c.state, CIRCUIT_HALF_OPEN);
    assert_true(circuit_allow(&c, 24));
    circuit_on_success(&c, 25);
    assert_int_equal(c.state, CIRCUIT_CLOSED);
    assert_int_equal(T(&c, CLOSED, OPEN), 1);
    assert_int_equal(T(&c, HALF_OPEN, CLOSED), 1);
    assert_int_equal(T(&c, CLOSED, CLOSED), 0);
}

static void test_abandon(void **state)
{
    (void)state;
    struct circuit c;
    circuit_init(&c, 1, 1, 5);
    circuit_on_abandon(&c); /* closed: no effect */
    assert_int_equal(c.state, CIRCUIT_CLOSED);
    circuit_on_failure(&c, 0);
    circuit_on_abandon(&c); /* open: no effect */
    assert_int_equal(c.state, CIRCUIT_OPEN);
    assert_true(circuit_allow(&c, 5));
    assert_false(circuit_allow(&c, 5));
    circuit_on_abandon(&c);
    assert_int_equal(c.state, CIRCUIT_HALF_OPEN);
    assert_int_equal(c.successes, 0);
    assert_false(c.probe_in_flight);
    assert_true(circuit_allow(&c, 6));
    circuit_on_success(&c, 6);
    assert_int_equal(c.state, CIRCUIT_CLOSED);
}

static void test_zero_open_secs(void **state)
{
    (void)state;
    struct circuit c;
    circuit_init(&c, 1, 1, 0);
    circuit_on_failure(&c, 7);
    assert_int_equal(c.state, CIRCUIT_OPEN);
    assert_true(circuit_allow(&c, 7));
    assert_int_equal(c.state, CIRCUIT_HALF_OPEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_closed_to_open),
        cmocka_unit_test(test_half_open_single_probe),
        cmocka_unit_test(test_half_open_failure_reopens),
        cmocka_unit_test(test_abandon),
        cmocka_unit_test(test_zero_open_secs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
