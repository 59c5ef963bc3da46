/* Prometheus registry for the routing engine. Every label value that can come from a client
 * or an upstream is interned into a bounded table, so memory stays bounded whatever is sent:
 * models (METRICS_MAX_MODELS, then "other"), providers (METRICS_MAX_PROVIDER_LABELS, then
 * "other"), fallback reasons, and the requests_total series themselves
 * (METRICS_MAX_REQUEST_SERIES, then one overflow series). A value that is not valid UTF-8 or
 * is longer than METRICS_MAX_LABEL_BYTES is also "other": the exposition must stay parseable.
 *
 * Choices:
 *  - per-provider families (histograms, chunks, retries, in-flight) have a series for every
 *    provider seen so far, zeros included; providers the router knows are seen at render;
 *  - lunaroute_circuit_transitions_total renders all 6 from/to pairs of each provider, zeros
 *    included, so the series exist before the first transition;
 *  - lunaroute_classifications_total renders the nonzero (route, provider) pairs; the engine
 *    route's provider ("" in stats.c) is labelled provider="none";
 *  - lunaroute_spop_errors_total renders every status but NONE (which is not an error).
 *
 * Router calls are made without the registry lock held, so the router may call metrics_*
 * under its own lock without a lock-order problem. */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "circuit.h"
#include "router.h"
#include "settings.h"
#include "spop.h"
#include "stats.h"

#define METRICS_MAX_PROVIDER_LABELS 64    /* "other" included */
#define METRICS_MAX_REASONS         16    /* "other" included */
#define METRICS_MAX_DROP_FIELDS     64    /* "other" included */
#define METRICS_MAX_REQUEST_SERIES  16384 /* then {provider,model,status}="other" */
#define METRICS_MAX_LABEL_BYTES     200
#define OTHER                       "other"

/* Status stored for the overflow series; rendered as status="other". */
#define STATUS_OTHER 1000

#define N_BUCKETS 16 /* 15 bounds + +Inf */
static const double bucket_le[N_BUCKETS - 1] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                2.5,   5,    10,    30,   60,  120,  300};
static const char *const bucket_le_str[N_BUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5",   "5",    "10",    "30",   "60",  "120",  "300", "+Inf"};

struct histogram {
    uint64_t counts[N_BUCKETS]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
};

enum hist_kind { HIST_REQUEST = 0, HIST_UPSTREAM, HIST_TTFT, HIST_COUNT };

static const char *const hist_names[HIST_COUNT] = {
    "lunaroute_request_duration_seconds",
    "lunaroute_upstream_duration_seconds",
    "lunaroute_time_to_first_token_seconds",
};
static const char *const hist_help[HIST_COUNT] = {
    "Time from request received to response finished, as the client saw it.",
    "Duration of each upstream attempt.",
    "Time from request received to the first streamed event relayed.",
};

struct provider_metrics {
    struct histogram h[HIST_COUNT];
    uint64_t stream_chunks;
    uint64_t retries;
    int64_t upstream_active;
};

/* requests_total: open addressing on a packed (provider, model, status) key; count == 0
 * marks an empty slot (an entry is created with its first increment). */
struct req_entry {
    uint64_t key;
    uint64_t count;
};

struct label_table {
    const char *names[METRICS_MAX_MODELS + 1]; /* big enough for every table */
    size_t n, cap, n_static;                   /* names[0, n_static) are literals */
};

#define N_KNOWN_REASONS 5 /* the METRICS_FALLBACK_* values: always rendered */

static struct {
    pthread_mutex_t lock;
    struct label_table providers, models, reasons;
    struct provider_metrics prov[METRICS_MAX_PROVIDER_LABELS];
    uint64_t fallbacks[METRICS_MAX_REASONS];
    struct label_table drop_fields;
    uint64_t translations[2];                     /* by direction */
    uint64_t dropped[2][METRICS_MAX_DROP_FIELDS]; /* by direction, field */
    struct req_entry *req;
    size_t req_cap, req_n;
} reg = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .providers = {.cap = METRICS_MAX_PROVIDER_LABELS},
    .drop_fields = {.cap = METRICS_MAX_DROP_FIELDS},
    .models = {.cap = METRICS_MAX_MODELS + 1},
    .reasons = {.names = {METRICS_FALLBACK_5XX, METRICS_FALLBACK_CONNECT, METRICS_FALLBACK_TIMEOUT,
                          METRICS_FALLBACK_RATE_LIMITED, METRICS_FALLBACK_CIRCUIT_OPEN},
                .n = N_KNOWN_REASONS,
                .cap = METRICS_MAX_REASONS,
                .n_static = N_KNOWN_REASONS},
};

/* The bypass provider in force (guarded by reg.lock); "" = unknown, not rendered. */
static char bypass_provider[64];

/* ---- labels ---- */

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp, min;

        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

static bool label_ok(const char *s)
{
    size_t n = strnlen(s, METRICS_MAX_LABEL_BYTES + 1);
    return n <= METRICS_MAX_LABEL_BYTES && utf8_valid((const unsigned char *)s, n);
}

/* Index of name in t, adding it while there is room; "other" once the table is full (one
 * slot is kept for it). -1 only when out of memory. */
static int intern(struct label_table *t, const char *name)
{
    char *dup;

    if (!name)
        name = "";
    if (!label_ok(name))
        name = OTHER;
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->names[i], name) == 0)
            return (int)i;
    if (t->n >= t->cap - 1 && strcmp(name, OTHER) != 0)
        return intern(t, OTHER);
    dup = strdup(name);
    if (!dup)
        return -1;
    t->names[t->n] = dup;
    return (int)t->n++;
}

static void table_clear(struct label_table *t)
{
    for (size_t i = t->n_static; i < t->n; i++)
        free((char *)t->names[i]);
    t->n = t->n_static;
}

/* ---- observations ---- */

static void hist_observe(struct histogram *h, double v)
{
    size_t b = 0;

    if (!isfinite(v)) /* a clock gone wrong; would also render as "inf"/"nan" */
        return;
    if (v < 0)
        v = 0;
    while (b < N_BUCKETS - 1 && v > bucket_le[b])
        b++;
    h->counts[b]++;
    h->count++;
    h->sum += v;
}

static uint64_t req_key(unsigned prov, unsigned model, unsigned status)
{
    return (uint64_t)prov << 32 | (uint64_t)model << 16 | status;
}

static size_t req_slot(const struct req_entry *t, size_t cap, uint64_t key)
{
    size_t i = (size_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);

    while (t[i].count && t[i].key != key)
        i = (i + 1) & (cap - 1);
    return i;
}

static int req_grow(void)
{
    size_t cap = reg.req_cap ? reg.req_cap * 2 : 64;
    struct req_entry *t = calloc(cap, sizeof(*t));

    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < reg.req_cap; i++)
        if (reg.req[i].count)
            t[req_slot(t, cap, reg.req[i].key)] = reg.req[i];
    free(reg.req);
    reg.req = t;
    reg.req_cap = cap;
    return 0;
}

/* Counts one request in series `key`. False when a new series would take the last slot,
 * which is kept for the overflow series (overflow = true). */
static bool req_inc(uint64_t key, bool overflow)
{
    size_t i;

    if (reg.req_cap && reg.req[i = req_slot(reg.req, reg.req_cap, key)].count) {
        reg.req[i].count++;
        return true;
    }
    if (reg.req_n >= METRICS_MAX_REQUEST_SERIES - (overflow ? 0 : 1))
        return false;
    if ((reg.req_n + 1) * 2 > reg.req_cap && req_grow() < 0)
        return true; /* out of memory: the observation is lost, nothing else */
    i = req_slot(reg.req, reg.req_cap, key);
    reg.req[i] = (struct req_entry){key, 1};
    reg.req_n++;
    return true;
}

static struct provider_metrics *provider_locked(const char *name)
{
    int i = intern(&reg.providers, name);
    return i < 0 ? NULL : &reg.prov[i];
}

void metrics_request(const char *provider, const char *model, int status, double duration_secs)
{
    int pi, mi;
    unsigned st = status >= 0 && status <= 999 ? (unsigned)status : 0;

    pthread_mutex_lock(&reg.lock);
    pi = intern(&reg.providers, provider);
    mi = intern(&reg.models, model);
    if (pi >= 0 && mi >= 0) {
        if (!req_inc(req_key((unsigned)pi, (unsigned)mi, st), false)) {
            int po = intern(&reg.providers, OTHER), mo = intern(&reg.models, OTHER);

            if (po >= 0 && mo >= 0)
                (void)req_inc(req_key((unsigned)po, (unsigned)mo, STATUS_OTHER), true);
        }
        hist_observe(&reg.prov[pi].h[HIST_REQUEST], duration_secs);
    }
    pthread_mutex_unlock(&reg.lock);
}

static void observe(const char *provider, enum hist_kind k, double secs)
{
    struct provider_metrics *pm;

    pthread_mutex_lock(&reg.lock);
    if ((pm = provider_locked(provider)))
        hist_observe(&pm->h[k], secs);
    pthread_mutex_unlock(&reg.lock);
}

void metrics_upstream(const char *provider, double secs)
{
    observe(provider, HIST_UPSTREAM, secs);
}

void metrics_ttft(const char *provider, double secs)
{
    observe(provider, HIST_TTFT, secs);
}

void metrics_stream_chunks(const char *provider, uint64_t n)
{
    struct provider_metrics *pm;

    pthread_mutex_lock(&reg.lock);
    if ((pm = provider_locked(provider)))
        pm->stream_chunks += n;
    pthread_mutex_unlock(&reg.lock);
}

void metrics_fallback(const char *reason)
{
    int i;

    pthread_mutex_lock(&reg.lock);
    if ((i = intern(&reg.reasons, reason)) >= 0)
        reg.fallbacks[i]++;
    pthread_mutex_unlock(&reg.lock);
}

static const char *const directions[2] = {"openai_to_anthropic", "anthropic_to_openai"};

void metrics_translation(int to_anthropic)
{
    pthread_mutex_lock(&reg.lock);
    reg.translations[to_anthropic ? 0 : 1]++;
    pthread_mutex_unlock(&reg.lock);
}

void metrics_translation_dropped(int to_anthropic, const char *field)
{
    int i;

    pthread_mutex_lock(&reg.lock);
    if ((i = intern(&reg.drop_fields, field)) >= 0)
        reg.dropped[to_anthropic ? 0 : 1][i]++;
    pthread_mutex_unlock(&reg.lock);
}

void metrics_retry(const char *provider)
{
    struct provider_metrics *pm;

    pthread_mutex_lock(&reg.lock);
    if ((pm = provider_locked(provider)))
        pm->retries++;
    pthread_mutex_unlock(&reg.lock);
}

void metrics_upstream_active(const char *provider, int delta)
{
    struct provider_metrics *pm;

    pthread_mutex_lock(&reg.lock);
    if ((pm = provider_locked(provider)))
        pm->upstream_active += delta;
    pthread_mutex_unlock(&reg.lock);
}

/* ---- rendering ---- */

/* Appends with a sticky error, so the render code reads as a list of lines. */
struct writer {
    struct lr_buf *out;
    int err;
};

static void w_put(struct writer *w, const char *s, size_t n)
{
    if (!w->err && lr_buf_append(w->out, s, n) < 0)
        w->err = -ENOMEM;
}

static void w_puts(struct writer *w, const char *s)
{
    w_put(w, s, strlen(s));
}

static void w_printf(struct writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void w_printf(struct writer *w, const char *fmt, ...)
{
    va_list ap;

    if (w->err)
        return;
    va_start(ap, fmt);
    if (lr_buf_vprintf(w->out, fmt, ap) < 0)
        w->err = -ENOMEM;
    va_end(ap);
}

static void w_family(struct writer *w, const char *name, const char *type, const char *help)
{
    w_printf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Appends `key="value"` with the exposition format's escapes, preceded by `{` when first
 * and `,` otherwise. */
static void w_label(struct writer *w, bool first, const char *key, const char *value)
{
    const char *s = value, *run = value;

    w_puts(w, first ? "{" : ",");
    w_puts(w, key);
    w_puts(w, "=\"");
    for (; *s; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;

        if (!esc)
            continue;
        w_put(w, run, (size_t)(s - run));
        w_puts(w, esc);
        run = s + 1;
    }
    w_put(w, run, (size_t)(s - run));
    w_puts(w, "\"");
}

static void w_u64(struct writer *w, uint64_t v)
{
    w_printf(w, " %" PRIu64 "\n", v);
}

/* Shortest of %.15g / %.17g that reads back as v: "0.3", not "0.29999999999999999". */
static void w_double(struct writer *w, double v)
{
    char s[32];

    snprintf(s, sizeof s, "%.15g", v);
    if (strtod(s, NULL) != v)
        snprintf(s, sizeof s, "%.17g", v);
    w_printf(w, " %s\n", s);
}

static int cmp_req(const void *a, const void *b)
{
    uint64_t x = ((const struct req_entry *)a)->key, y = ((const struct req_entry *)b)->key;
    return x < y ? -1 : x > y;
}

static void render_requests(struct writer *w)
{
    struct req_entry *sorted;
    size_t n = 0;

    w_family(w, "lunaroute_requests_total", "counter",
             "Requests answered by the routing engine, by provider, model and status.");
    if (!reg.req_n)
        return;
    sorted = malloc(reg.req_n * sizeof(*sorted));
    if (!sorted) {
        w->err = -ENOMEM;
        return;
    }
    for (size_t i = 0; i < reg.req_cap; i++)
        if (reg.req[i].count)
            sorted[n++] = reg.req[i];
    qsort(sorted, n, sizeof(*sorted), cmp_req);
    for (size_t i = 0; i < n; i++) {
        uint64_t k = sorted[i].key;
        unsigned st = (unsigned)(k & 0xffff);
        char status[8];

        if (st == STATUS_OTHER)
            memcpy(status, OTHER, sizeof(OTHER));
        else
            snprintf(status, sizeof(status), "%u", st);
        w_puts(w, "lunaroute_requests_total");
        w_label(w, true, "provider", reg.providers.names[k >> 32]);
        w_label(w, false, "model", reg.models.names[(k >> 16) & 0xffff]);
        w_label(w, false, "status", status);
        w_puts(w, "}");
        w_u64(w, sorted[i].count);
    }
    free(sorted);
}

static void render_histograms(struct writer *w)
{
    for (unsigned k = 0; k < HIST_COUNT; k++) {
        const char *name = hist_names[k];

        w_family(w, name, "histogram", hist_help[k]);
        for (size_t p = 0; p < reg.providers.n; p++) {
            const struct histogram *h = &reg.prov[p].h[k];
            const char *prov = reg.providers.names[p];
            uint64_t cum = 0;

            for (size_t b = 0; b < N_BUCKETS; b++) {
                cum += h->counts[b];
                w_printf(w, "%s_bucket", name);
                w_label(w, true, "provider", prov);
                w_label(w, false, "le", bucket_le_str[b]);
                w_puts(w, "}");
                w_u64(w, cum);
            }
            w_printf(w, "%s_sum", name);
            w_label(w, true, "provider", prov);
            w_puts(w, "}");
            w_double(w, h->sum);
            w_printf(w, "%s_count", name);
            w_label(w, true, "provider", prov);
            w_puts(w, "}");
            w_u64(w, h->count);
        }
    }
}

/* One series per provider seen, from the field at `offset` in provider_metrics. */
static void render_per_provider(struct writer *w, const char *name, const char *type,
                                const char *help, size_t offset, bool is_signed)
{
    w_family(w, name, type, help);
    for (size_t p = 0; p < reg.providers.n; p++) {
        const char *field = (const char *)&reg.prov[p] + offset;

        w_puts(w, name);
        w_label(w, true, "provider", reg.providers.names[p]);
        if (is_signed) {
            int64_t v;
            memcpy(&v, field, sizeof(v));
            w_printf(w, "} %" PRId64 "\n", v);
        } else {
            uint64_t v;
            memcpy(&v, field, sizeof(v));
            w_puts(w, "}");
            w_u64(w, v);
        }
    }
}

static void render_registry(struct writer *w)
{
    render_requests(w);
    render_histograms(w);
    render_per_provider(w, "lunaroute_stream_chunks_total", "counter",
                        "SSE events relayed to clients.",
                        offsetof(struct provider_metrics, stream_chunks), false);
    w_family(w, "lunaroute_fallbacks_total", "counter",
             "Requests moved on to the next provider, by reason.");
    for (size_t i = 0; i < reg.reasons.n; i++) {
        w_puts(w, "lunaroute_fallbacks_total");
        w_label(w, true, "reason", reg.reasons.names[i]);
        w_puts(w, "}");
        w_u64(w, reg.fallbacks[i]);
    }
    w_family(w, "lunaroute_translations_total", "counter",
             "Requests translated between the OpenAI and Anthropic dialects, by direction.");
    for (size_t d = 0; d < 2; d++) {
        w_puts(w, "lunaroute_translations_total");
        w_label(w, true, "direction", directions[d]);
        w_puts(w, "}");
        w_u64(w, reg.translations[d]);
    }
    w_family(w, "lunaroute_translation_dropped_fields_total", "counter",
             "Fields with no counterpart in the target dialect, dropped in translation.");
    for (size_t d = 0; d < 2; d++) {
        for (size_t i = 0; i < reg.drop_fields.n; i++) {
            if (!reg.dropped[d][i])
                continue;
            w_puts(w, "lunaroute_translation_dropped_fields_total");
            w_label(w, true, "direction", directions[d]);
            w_label(w, false, "field", reg.drop_fields.names[i]);
            w_puts(w, "}");
            w_u64(w, reg.dropped[d][i]);
        }
    }
    render_per_provider(w, "lunaroute_retries_total", "counter",
                        "Attempts retried on the same provider.",
                        offsetof(struct provider_metrics, retries), false);
    render_per_provider(w, "lunaroute_upstream_active", "gauge", "Upstream attempts in flight.",
                        offsetof(struct provider_metrics, upstream_active), true);
}

static void render_circuits(struct writer *w, struct router *r)
{
    size_t n = router_provider_count(r);

    w_family(w, "lunaroute_circuit_state", "gauge",
             "Circuit breaker state per provider: 0 closed, 1 open, 2 half_open.");
    for (size_t i = 0; i < n; i++) {
        const struct agent_provider *p = router_provider(r, i);
        struct circuit c;

        router_circuit_snapshot(r, i, &c);
        w_puts(w, "lunaroute_circuit_state");
        w_label(w, true, "provider", p && p->name ? p->name : "");
        w_printf(w, "} %u\n", (unsigned)c.state);
    }
    w_family(w, "lunaroute_circuit_transitions_total", "counter",
             "Circuit breaker state changes per provider.");
    for (size_t i = 0; i < n; i++) {
        const struct agent_provider *p = router_provider(r, i);
        struct circuit c;

        router_circuit_snapshot(r, i, &c);
        for (unsigned from = 0; from < CIRCUIT_STATE_COUNT; from++) {
            for (unsigned to = 0; to < CIRCUIT_STATE_COUNT; to++) {
                if (from == to)
                    continue;
                w_puts(w, "lunaroute_circuit_transitions_total");
                w_label(w, true, "provider", p && p->name ? p->name : "");
                w_label(w, false, "from", circuit_state_to_str(from));
                w_label(w, false, "to", circuit_state_to_str(to));
                w_puts(w, "}");
                w_u64(w, c.transitions[from][to]);
            }
        }
    }
}

static void render_counter(struct writer *w, const char *name, const char *help, int64_t v)
{
    w_family(w, name, "counter", help);
    w_printf(w, "%s %" PRId64 "\n", name, v);
}

static void render_stats(struct writer *w)
{
    struct stats_snapshot *s = malloc(sizeof(*s)); /* a few KiB: keep it off the stack */

    if (!s) {
        w->err = -ENOMEM;
        return;
    }
    stats_snapshot(s);
    w_family(w, "lunaroute_classifications_total", "counter",
             "SPOA classifications by route and provider (provider=\"none\": engine route).");
    for (unsigned r = 0; r < CLASSIFY_ROUTE_COUNT; r++) {
        for (unsigned p = 0; p < s->n_providers && p < STATS_MAX_PROVIDERS; p++) {
            const char *name = stats_provider_name(p);

            if (!s->classified[r][p] || !name)
                continue;
            w_puts(w, "lunaroute_classifications_total");
            w_label(w, true, "route", classify_route_to_str(r));
            w_label(w, false, "provider", *name ? name : "none");
            w_puts(w, "}");
            w_u64(w, s->classified[r][p]);
        }
    }
    w_family(w, "lunaroute_spop_errors_total", "counter",
             "SPOP connections closed with an error status (ours or HAProxy's).");
    for (unsigned i = 0; i < STATS_SPOP_STATUS_COUNT; i++) {
        unsigned st = stats_spop_status_of_index(i);

        if (st == SPOP_ST_NONE)
            continue;
        w_puts(w, "lunaroute_spop_errors_total");
        w_label(w, true, "status", spop_status_to_str(st));
        w_puts(w, "}");
        w_u64(w, s->spop_errors[i]);
    }
    render_counter(w, "lunaroute_spop_frames_total", "SPOP frames received.",
                   s->counters[STATS_SPOP_FRAMES_IN]);
    render_counter(w, "lunaroute_spop_notify_total", "SPOP NOTIFY frames received.",
                   s->counters[STATS_SPOP_NOTIFY_IN]);
    render_counter(w, "lunaroute_spop_ack_total", "SPOP ACK frames sent.",
                   s->counters[STATS_SPOP_ACK_OUT]);
    w_family(w, "lunaroute_active_connections", "gauge", "Open client connections by listener.");
    w_printf(w, "lunaroute_active_connections{listener=\"spop\"} %" PRId64 "\n",
             s->counters[STATS_SPOP_CONN_OPEN]);
    w_printf(w, "lunaroute_active_connections{listener=\"engine\"} %" PRId64 "\n",
             s->counters[STATS_ENGINE_CONN_OPEN]);
    render_counter(w, "lunaroute_engine_requests_total", "HTTP requests received by the engine.",
                   s->counters[STATS_ENGINE_REQUESTS]);
    free(s);
}

int metrics_render(struct lr_buf *out, struct router *r)
{
    struct writer w = {out, 0};
    size_t start = out->len;
    size_t n = router_provider_count(r);

    /* Configured providers get their (zero) series before their first request. The router
     * is asked outside the registry lock. */
    for (size_t i = 0; i < n; i++) {
        const struct agent_provider *p = router_provider(r, i);

        if (!p || !p->name)
            continue;
        pthread_mutex_lock(&reg.lock);
        (void)intern(&reg.providers, p->name);
        pthread_mutex_unlock(&reg.lock);
    }

    pthread_mutex_lock(&reg.lock);
    render_registry(&w);
    if (bypass_provider[0]) {
        w_family(&w, "lunaroute_bypass_provider_info", "gauge",
                 "The bypass provider in force (\"auto\" or a provider name).");
        w_puts(&w, "lunaroute_bypass_provider_info");
        w_label(&w, true, "provider", bypass_provider);
        w_puts(&w, "} 1\n");
    }
    pthread_mutex_unlock(&reg.lock);
    render_circuits(&w, r);
    render_stats(&w);

    if (w.err) {
        out->len = start;
        if (out->data)
            out->data[start] = 0;
        return -ENOMEM;
    }
    return 0;
}

void metrics_set_bypass_provider(const char *name)
{
    pthread_mutex_lock(&reg.lock);
    snprintf(bypass_provider, sizeof(bypass_provider), "%s", name ? name : "");
    pthread_mutex_unlock(&reg.lock);
}

void metrics_free_all(void)
{
    pthread_mutex_lock(&reg.lock);
    table_clear(&reg.providers);
    table_clear(&reg.models);
    table_clear(&reg.reasons);
    memset(reg.prov, 0, sizeof(reg.prov));
    memset(reg.fallbacks, 0, sizeof(reg.fallbacks));
    table_clear(&reg.drop_fields);
    memset(reg.translations, 0, sizeof(reg.translations));
    memset(reg.dropped, 0, sizeof(reg.dropped));
    free(reg.req);
    reg.req = NULL;
    reg.req_cap = reg.req_n = 0;
    pthread_mutex_unlock(&reg.lock);
}

void metrics_reset(void)
{
    metrics_free_all();
}
