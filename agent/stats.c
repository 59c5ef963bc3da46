#include "stats.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

struct stats_slot {
    _Atomic int64_t counters[STATS_COUNTER_COUNT];
    _Atomic uint64_t spop_errors[STATS_SPOP_STATUS_COUNT];
    _Atomic uint64_t classified[CLASSIFY_ROUTE_COUNT][STATS_MAX_PROVIDERS];
} __attribute__((aligned(64)));

/* Slot STATS_MAX_THREADS is the shared one for unbound threads. */
static struct stats_slot slots[STATS_MAX_THREADS + 1];
static _Thread_local struct stats_slot *my_slot;

static pthread_mutex_t prov_lock = PTHREAD_MUTEX_INITIALIZER;
static char prov_names[STATS_MAX_PROVIDERS][64];
static _Atomic unsigned prov_count;

static const char *const counter_names[STATS_COUNTER_COUNT] = {
    [STATS_SPOP_CONN_OPEN] = "spop_connections_open",
    [STATS_SPOP_CONN_TOTAL] = "spop_connections_total",
    [STATS_SPOP_FRAMES_IN] = "spop_frames_total",
    [STATS_SPOP_NOTIFY_IN] = "spop_notify_total",
    [STATS_SPOP_ACK_OUT] = "spop_ack_total",
    [STATS_SPOP_READ_ERRORS] = "spop_socket_errors_total",
    [STATS_ENGINE_CONN_OPEN] = "engine_connections_open",
    [STATS_ENGINE_CONN_TOTAL] = "engine_connections_total",
    [STATS_ENGINE_REQUESTS] = "engine_requests_total",
    [STATS_ENGINE_ERRORS_4XX] = "engine_responses_4xx_total",
    [STATS_ENGINE_ERRORS_5XX] = "engine_responses_5xx_total",
};

const char *stats_counter_to_str(unsigned c)
{
    return c < STATS_COUNTER_COUNT ? counter_names[c] : "?";
}

void stats_thread_bind(unsigned idx)
{
    my_slot = idx < STATS_MAX_THREADS ? &slots[idx] : NULL;
}

/* Single writer per bound slot: a plain relaxed load/store pair is enough and compiles to
 * ordinary moves; the shared slot needs a real atomic add. */
#define SLOT_ADD(field, delta)                                                                     \
    do {                                                                                           \
        struct stats_slot *s_ = my_slot;                                                           \
        if (s_)                                                                                    \
            atomic_store_explicit(                                                                 \
                &s_->field, atomic_load_explicit(&s_->field, memory_order_relaxed) + (delta),      \
                memory_order_relaxed);                                                             \
        else                                                                                       \
            atomic_fetch_add_explicit(&slots[STATS_MAX_THREADS].field, (delta),                    \
                                      memory_order_relaxed);                                       \
    } while (0)

void stats_add(enum stats_counter c, int64_t delta)
{
    if ((unsigned)c >= STATS_COUNTER_COUNT)
        return;
    SLOT_ADD(counters[c], delta);
}

static unsigned status_index(unsigned status)
{
    if (status <= 13)
        return status;
    return STATS_SPOP_STATUS_COUNT - 1;
}

unsigned stats_spop_status_of_index(unsigned i)
{
    return i < STATS_SPOP_STATUS_COUNT - 1 ? i : 99;
}

void stats_spop_error(unsigned status)
{
    SLOT_ADD(spop_errors[status_index(status)], 1);
}

unsigned stats_provider_index(const char *name)
{
    if (!name)
        name = "";
    unsigned n = atomic_load_explicit(&prov_count, memory_order_acquire);
    for (unsigned i = 0; i < n; i++)
        if (strcmp(prov_names[i], name) == 0)
            return i;
    pthread_mutex_lock(&prov_lock);
    n = atomic_load_explicit(&prov_count, memory_order_relaxed);
    unsigned idx = STATS_MAX_PROVIDERS - 1;
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(prov_names[i], name) == 0) {
            idx = i;
            goto out;
        }
    }
    if (n < STATS_MAX_PROVIDERS - 1) {
        snprintf(prov_names[n], sizeof(prov_names[n]), "%s", name);
        idx = n;
        atomic_store_explicit(&prov_count, n + 1, memory_order_release);
    } else if (n == STATS_MAX_PROVIDERS - 1) {
        snprintf(prov_names[n], sizeof(prov_names[n]), "other");
        atomic_store_explicit(&prov_count, n + 1, memory_order_release);
    }
out:
    pthread_mutex_unlock(&prov_lock);
    return idx;
}

const char *stats_provider_name(unsigned idx)
{
    if (idx >= atomic_load_explicit(&prov_count, memory_order_acquire))
        return NULL;
    return prov_names[idx];
}

void stats_classification(enum classify_route route, unsigned provider_idx)
{
    if ((unsigned)route >= CLASSIFY_ROUTE_COUNT || provider_idx >= STATS_MAX_PROVIDERS)
        return;
    SLOT_ADD(classified[route][provider_idx], 1);
}

void stats_snapshot(struct stats_snapshot *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t s = 0; s <= STATS_MAX_THREADS; s++) {
        for (unsigned c = 0; c < STATS_COUNTER_COUNT; c++)
            out->counters[c] += atomic_load_explicit(&slots[s].counters[c], memory_order_relaxed);
        for (unsigned i = 0; i < STATS_SPOP_STATUS_COUNT; i++)
            out->spop_errors[i] +=
                atomic_load_explicit(&slots[s].spop_errors[i], memory_order_relaxed);
        for (unsigned r = 0; r < CLASSIFY_ROUTE_COUNT; r++)
            for (unsigned p = 0; p < STATS_MAX_PROVIDERS; p++)
                out->classified[r][p] +=
                    atomic_load_explicit(&slots[s].classified[r][p], memory_order_relaxed);
    }
    out->n_providers = atomic_load_explicit(&prov_count, memory_order_acquire);
}

void stats_reset(void)
{
    memset(slots, 0, sizeof(slots));
}
