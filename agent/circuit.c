/* Circuit breaker state machine (circuit.h). */
#include "circuit.h"

#include <string.h>

static const char *const circuit_state_names[CIRCUIT_STATE_COUNT] = {"closed", "open", "half_open"};

const char *circuit_state_to_str(unsigned s)
{
    return s < CIRCUIT_STATE_COUNT ? circuit_state_names[s] : "?";
}

/* Every state change goes through here so the transition counters stay exact. */
static void circuit_set_state(struct circuit *c, enum circuit_state to, double now)
{
    c->transitions[c->state][to]++;
    c->state = to;
    c->failures = 0;
    c->successes = 0;
    c->probe_in_flight = false;
    if (to == CIRCUIT_OPEN)
        c->opened_at = now;
}

void circuit_init(struct circuit *c, unsigned failure_threshold, unsigned success_threshold,
                  double open_secs)
{
    memset(c, 0, sizeof(*c));
    c->state = CIRCUIT_CLOSED;
    c->failure_threshold = failure_threshold ? failure_threshold : 1;
    c->success_threshold = success_threshold ? success_threshold : 1;
    c->open_secs = open_secs > 0 ? open_secs : 0;
}

static bool circuit_open_expired(const struct circuit *c, double now)
{
    return now - c->opened_at >= c->open_secs;
}

bool circuit_allow(struct circuit *c, double now)
{
    switch (c->state) {
    case CIRCUIT_CLOSED:
        return true;
    case CIRCUIT_OPEN:
        if (!circuit_open_expired(c, now))
            return false;
        circuit_set_state(c, CIRCUIT_HALF_OPEN, now);
        c->probe_in_flight = true;
        return true;
    case CIRCUIT_HALF_OPEN:
        if (c->probe_in_flight)
            return false;
        c->probe_in_flight = true;
        return true;
    default:
        return false;
    }
}

bool circuit_available(const struct circuit *c, double now)
{
    switch (c->state) {
    case CIRCUIT_CLOSED:
        return true;
    case CIRCUIT_OPEN:
        return circuit_open_expired(c, now);
    case CIRCUIT_HALF_OPEN:
        return !c->probe_in_flight;
    default:
        return false;
    }
}

void circuit_on_success(struct circuit *c, double now)
{
    switch (c->state) {
    case CIRCUIT_CLOSED:
        c->failures = 0;
        break;
    case CIRCUIT_HALF_OPEN:
        c->probe_in_flight = false;
        if (++c->successes >= c->success_threshold)
            circuit_set_state(c, CIRCUIT_CLOSED, now);
        break;
    default:
        /* OPEN: a late answer to a request admitted before the circuit opened; the open
         * period runs its course regardless. */
        break;
    }
}

void circuit_on_failure(struct circuit *c, double now)
{
    switch (c->state) {
    case CIRCUIT_CLOSED:
        if (++c->failures >= c->failure_threshold)
            circuit_set_state(c, CIRCUIT_OPEN, now);
        break;
    case CIRCUIT_HALF_OPEN:
        circuit_set_state(c, CIRCUIT_OPEN, now);
        break;
    default:
        /* OPEN: a late failure does not extend the open period. */
        break;
    }
}

void circuit_on_abandon(struct circuit *c)
{
    if (c->state == CIRCUIT_HALF_OPEN)
        c->probe_in_flight = false;
}
