/* Process-wide counters for /metrics. Each loop thread owns one cache-line-aligned slot and
 * is its only writer, so an increment is a relaxed load + store (no locked instruction);
 * readers sum the slots. Threads that never called stats_thread_bind() share one extra slot
 * updated with relaxed fetch-add. */
#ifndef LR_STATS_H
#define LR_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "classify.h"

#define STATS_MAX_THREADS       64
#define STATS_MAX_PROVIDERS     32 /* distinct provider names counted; more go to "other" */
#define STATS_SPOP_STATUS_COUNT 15 /* SPOP statuses 0..13 and 99 (index 14) */

enum stats_counter {
    STATS_SPOP_CONN_OPEN = 0, /* gauge: incremented on accept, decremented on close */
    STATS_SPOP_CONN_TOTAL,
    STATS_SPOP_FRAMES_IN,
    STATS_SPOP_NOTIFY_IN,
    STATS_SPOP_ACK_OUT,
    STATS_SPOP_READ_ERRORS, /* socket read/write errors (not protocol errors) */
    STATS_ENGINE_CONN_OPEN,
    STATS_ENGINE_CONN_TOTAL,
    STATS_ENGINE_REQUESTS,
    STATS_ENGINE_ERRORS_4XX,
    STATS_ENGINE_ERRORS_5XX,
    STATS_COUNTER_COUNT
};
const char *stats_counter_to_str(unsigned c);

/* Binds the calling thread to slot idx (< STATS_MAX_THREADS). */
void stats_thread_bind(unsigned idx);

void stats_add(enum stats_counter c, int64_t delta);
#define stats_inc(c) stats_add((c), 1)
#define stats_dec(c) stats_add((c), -1)

/* Connections closed with a DISCONNECT status other than NONE (ours or HAProxy's). */
void stats_spop_error(unsigned status);
/* Interns a provider name ("" for engine-routed requests); stable index for the process
 * lifetime; STATS_MAX_PROVIDERS - 1 ("other") once the table is full. */
unsigned stats_provider_index(const char *name);
const char *stats_provider_name(unsigned idx); /* NULL when unused */
void stats_classification(enum classify_route route, unsigned provider_idx);

struct stats_snapshot {
    int64_t counters[STATS_COUNTER_COUNT];
    uint64_t spop_errors[STATS_SPOP_STATUS_COUNT];
    uint64_t classified[CLASSIFY_ROUTE_COUNT][STATS_MAX_PROVIDERS];
    unsigned n_providers;
};
void stats_snapshot(struct stats_snapshot *out);
/* SPOP status for index i of spop_errors. */
unsigned stats_spop_status_of_index(unsigned i);
/* Zeroes everything (tests). Not safe while other threads count. */
void stats_reset(void);

#endif
