/* Circuit breaker per provider (routing.circuit_breaker). Pure: time is passed in (monotonic
 * seconds), no locks (the router serialises access).
 *
 * CLOSED --failure_threshold consecutive failures--> OPEN --open_secs elapsed--> HALF_OPEN
 * HALF_OPEN: one probe request at a time; success_threshold consecutive successes -> CLOSED,
 * any failure -> OPEN again (open_secs restarts). */
#ifndef LR_CIRCUIT_H
#define LR_CIRCUIT_H

#include <stdbool.h>
#include <stdint.h>

enum circuit_state { CIRCUIT_CLOSED = 0, CIRCUIT_OPEN, CIRCUIT_HALF_OPEN, CIRCUIT_STATE_COUNT };
const char *circuit_state_to_str(unsigned s); /* "closed" | "open" | "half_open" */

struct circuit {
    enum circuit_state state;
    unsigned failure_threshold, success_threshold;
    double open_secs;
    unsigned failures;  /* consecutive, while CLOSED */
    unsigned successes; /* consecutive, while HALF_OPEN */
    double opened_at;
    bool probe_in_flight;
    /* transitions[from][to], for metrics */
    uint64_t transitions[CIRCUIT_STATE_COUNT][CIRCUIT_STATE_COUNT];
};

void circuit_init(struct circuit *c, unsigned failure_threshold, unsigned success_threshold,
                  double open_secs);
/* May a request be sent now? OPEN turns HALF_OPEN once open_secs have passed; HALF_OPEN
 * allows one probe at a time (sets probe_in_flight). */
bool circuit_allow(struct circuit *c, double now);
/* Would circuit_allow() say yes, without taking the probe slot? (readiness, planning) */
bool circuit_available(const struct circuit *c, double now);
void circuit_on_success(struct circuit *c, double now);
void circuit_on_failure(struct circuit *c, double now);
/* A request admitted by circuit_allow ended with no verdict (client went away): frees the
 * half-open probe slot without counting. */
void circuit_on_abandon(struct circuit *c);

#endif
