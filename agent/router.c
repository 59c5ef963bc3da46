/* Routing decision and shared per-provider health (router.h, DESIGN §8). */
#include "router.h"

#include "lr_regex.h"
#include "retry_after.h"
#include "settings.h"

#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTER_MAX_LIST       64  /* providers per rule list (control's CFG_MAX_LIST) */
#define ROUTER_MAX_RAW        130 /* primary + fallbacks, or targets + alternatives */
#define ROUTER_MAX_MODEL      256 /* longer model names match no rule */
#define ROUTER_RL_BACKOFF_MAX 60.0

#define ROUTER_DEFAULT_SWITCH_MESSAGE                                                              \
    "Note: this request was handled by an alternative AI provider because the usual one "          \
    "failed. Continue normally."

enum router_strategy {
    ROUTER_STRATEGY_NONE = 0, /* primary + fallbacks */
    ROUTER_STRATEGY_ROUND_ROBIN,
    ROUTER_STRATEGY_WEIGHTED,
    ROUTER_STRATEGY_LIMITS_ALTERNATIVE,
    ROUTER_STRATEGY_COUNT
};

static const char *const router_strategy_names[ROUTER_STRATEGY_COUNT] = {
    "", "round-robin", "weighted-round-robin", "limits-alternative"};

struct router_target {
    size_t idx; /* into settings->providers */
    unsigned weight;
    long long current; /* smooth WRR state, under the mutex */
};

struct router_rule {
    char *name;
    int priority;
    size_t order; /* position in the file, for the stable sort */
    regex_t re;
    bool re_ok;
    enum router_strategy strategy;
    /* NONE: primary then fallbacks; others: the strategy's providers */
    struct router_target *targets;
    size_t n_targets;
    struct router_target *alts; /* limits-alternative */
    size_t n_alts;
    unsigned long long rr_next; /* round-robin, under the mutex */
    unsigned long long weight_total;
};

struct router_pstate {
    struct circuit circuit;
    double rate_limited_until;
    unsigned consecutive_429;
};

struct router {
    struct agent_settings *s; /* a reference: provider pointers point into it */
    struct router_rule *rules;
    size_t n_rules;
    pthread_mutex_t mu;       /* guards ps[], rules[].rr_next and rules[].targets[].current */
    struct router_pstate *ps; /* parallel to s->providers */
    size_t n_prov;
    bool switch_enabled;
    char *switch_message;
};

static const char *const router_outcome_names[ROUTER_OUTCOME_COUNT] = {"ok", "failed",
                                                                       "rate_limited", "abandoned"};

const char *router_outcome_to_str(unsigned o)
{
    return o < ROUTER_OUTCOME_COUNT ? router_outcome_names[o] : "?";
}

__attribute__((format(printf, 3, 4))) static void router_err(char *err, size_t errlen,
                                                             const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------------------------------
 * Construction */

static void router_rule_free(struct router_rule *r)
{
    free(r->name);
    if (r->re_ok)
        regfree(&r->re);
    free(r->targets);
    free(r->alts);
}

void router_free(struct router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_rules; i++)
        router_rule_free(&r->rules[i]);
    free(r->rules);
    free(r->ps);
    free(r->switch_message);
    pthread_mutex_destroy(&r->mu);
    agent_settings_unref(r->s);
    free(r);
}

/* Enabled provider index by name, or (size_t)-1: unknown and disabled providers are
 * skipped, control has already validated the names. */
static size_t router_find(const struct agent_settings *s, const char *name)
{
    for (size_t i = 0; name && i < s->n_providers; i++)
        if (s->providers[i].enabled && strcmp(s->providers[i].name, name) == 0)
            return i;
    return (size_t)-1;
}

static bool json_uint(const json_t *v, unsigned long long max, unsigned long long *out)
{
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < 0 || (unsigned long long)n > max)
            return false;
        *out = (unsigned long long)n;
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d >= 0 && d <= (double)max))
            return false;
        *out = (unsigned long long)d;
        return true;
    }
    return false;
}

/* Appends the providers of `arr` (names, or {provider|id, weight}) to t[]. */
static int router_add_targets(const struct agent_settings *s, const char *rule, const char *key,
                              const json_t *arr, struct router_target **t, size_t *n, char *err,
                              size_t errlen)
{
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr)) {
        router_err(err, errlen, "rule '%s': %s: expected an array", rule, key);
        return -1;
    }
    size_t count = json_array_size(arr);
    if (count > ROUTER_MAX_LIST) {
        router_err(err, errlen, "rule '%s': %s: too many providers (at most %d)", rule, key,
                   ROUTER_MAX_LIST);
        return -1;
    }
    struct router_target *nt = realloc(*t, (*n + count + 1) * sizeof(*nt));
    if (!nt) {
        router_err(err, errlen, "out of memory");
        return -1;
    }
    *t = nt;
    for (size_t i = 0; i < count; i++) {
        const json_t *e = json_array_get(arr, i);
        const char *name = NULL;
        unsigned long long w = 1;
        if (json_is_string(e)) {
            name = json_string_value(e);
        } else if (json_is_object(e)) {
            const json_t *pv = json_object_get(e, "provider");
            if (!pv)
                pv = json_object_get(e, "id");
            name = json_string_value(pv);
            const json_t *wv = json_object_get(e, "weight");
            if (wv && !json_is_null(wv) && !json_uint(wv, 1000000, &w)) {
                router_err(err, errlen, "rule '%s': %s[%zu].weight: expected 0..1000000", rule, key,
                           i);
                return -1;
            }
        }
        if (!name) {
            router_err(err, errlen, "rule '%s': %s[%zu]: expected a provider name", rule, key, i);
            return -1;
        }
        size_t idx = router_find(s, name);
        if (idx == (size_t)-1)
            continue;
        nt[(*n)++] = (struct router_target){.idx = idx, .weight = (unsigned)w};
    }
    return 0;
}

static int router_parse_rule(const struct agent_settings *s, const json_t *o, size_t order,
                             struct router_rule *r, char *err, size_t errlen)
{
    char defname[32];
    snprintf(defname, sizeof(defname), "rule-%zu", order + 1);
    if (!json_is_object(o)) {
        router_err(err, errlen, "routing.rules[%zu]: expected an object", order);
        return -1;
    }
    const char *name = json_string_value(json_object_get(o, "name"));
    if (!name || !*name)
        name = defname;
    r->name = strdup(name);
    if (!r->name) {
        router_err(err, errlen, "out of memory");
        return -1;
    }
    r->order = order;
    const json_t *pv = json_object_get(o, "priority");
    if (json_is_integer(pv)) {
        json_int_t p = json_integer_value(pv);
        r->priority = p > 2147483647 ? 2147483647 : (p < -2147483647 ? -2147483647 : (int)p);
    } else {
        r->priority = 10; /* LunaRoute's default_priority() */
    }
    const char *pattern = json_string_value(json_object_get(o, "model_pattern"));
    if (!pattern) {
        router_err(err, errlen, "rule '%s': model_pattern: expected a string", r->name);
        return -1;
    }
    char msg[128];
    if (lr_regex_compile(&r->re, pattern, REG_EXTENDED | REG_NOSUB, msg, sizeof(msg)) < 0) {
        router_err(err, errlen, "rule '%s': bad model_pattern '%.64s': %s", r->name, pattern, msg);
        return -1;
    }
    r->re_ok = true;

    const json_t *sv = json_object_get(o, "strategy");
    const char *strategy = json_is_null(sv) || !sv ? "" : json_string_value(sv);
    int st = -1;
    for (int i = 0; strategy && i < ROUTER_STRATEGY_COUNT; i++)
        if (strcmp(strategy, router_strategy_names[i]) == 0)
            st = i;
    if (st < 0) {
        router_err(err, errlen, "rule '%s': unknown strategy", r->name);
        return -1;
    }
    r->strategy = (enum router_strategy)st;
    if (r->strategy == ROUTER_STRATEGY_NONE) {
        const json_t *prim = json_object_get(o, "primary");
        if (json_is_string(prim)) {
            json_t *one = json_pack("[O]", prim);
            int ok = one ? router_add_targets(s, r->name, "primary", one, &r->targets,
                                              &r->n_targets, err, errlen)
                         : (router_err(err, errlen, "out of memory"), -1);
            json_decref(one);
            if (ok != 0)
                return -1;
        }
        if (router_add_targets(s, r->name, "fallbacks", json_object_get(o, "fallbacks"),
                               &r->targets, &r->n_targets, err, errlen) != 0)
            return -1;
    } else {
        if (router_add_targets(s, r->name, "targets", json_object_get(o, "targets"), &r->targets,
                               &r->n_targets, err, errlen) != 0)
            return -1;
        if (r->strategy == ROUTER_STRATEGY_LIMITS_ALTERNATIVE &&
            router_add_targets(s, r->name, "alternatives", json_object_get(o, "alternatives"),
                               &r->alts, &r->n_alts, err, errlen) != 0)
            return -1;
    }
    for (size_t i = 0; i < r->n_targets; i++)
        r->weight_total += r->targets[i].weight;
    return 0;
}

/* Highest priority first; equal priorities keep file order (stable insertion sort). */
static void router_sort_rules(struct router_rule *rules, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct router_rule tmp = rules[i];
        size_t j = i;
        while (j > 0 &&
               (rules[j - 1].priority < tmp.priority ||
                (rules[j - 1].priority == tmp.priority && rules[j - 1].order > tmp.order))) {
            rules[j] = rules[j - 1];
            j--;
        }
        rules[j] = tmp;
    }
}

static unsigned long long router_cb_param(const json_t *cb, const char *key, unsigned long long def,
                                          unsigned long long max)
{
    unsigned long long v;
    const json_t *j = json_object_get(cb, key);
    if (j && json_uint(j, max, &v) && v > 0)
        return v;
    return def;
}

struct router *router_new(const struct agent_settings *s, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!s) {
        router_err(err, errlen, "no settings");
        return NULL;
    }
    struct router *r = calloc(1, sizeof(*r));
    if (!r) {
        router_err(err, errlen, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        router_err(err, errlen, "mutex init failed");
        return NULL;
    }
    /* The settings are immutable; only their atomic reference count changes. */
    r->s = agent_settings_ref((struct agent_settings *)s);
    r->n_prov = s->n_providers;
    r->ps = calloc(r->n_prov ? r->n_prov : 1, sizeof(*r->ps));
    if (!r->ps) {
        router_err(err, errlen, "out of memory");
        goto fail;
    }

    const json_t *routing = json_is_object(s->routing) ? s->routing : NULL;
    const json_t *cb = routing ? json_object_get(routing, "circuit_breaker") : NULL;
    unsigned ft = (unsigned)router_cb_param(cb, "failure_threshold", 5, 1000000);
    unsigned st = (unsigned)router_cb_param(cb, "success_threshold", 2, 1000000);
    double os = (double)router_cb_param(cb, "open_secs", 60, 86400);
    for (size_t i = 0; i < r->n_prov; i++)
        circuit_init(&r->ps[i].circuit, ft, st, os);

    const json_t *psn = routing ? json_object_get(routing, "provider_switch_notification") : NULL;
    r->switch_enabled = json_is_true(json_object_get(psn, "enabled"));
    const char *msg = json_string_value(json_object_get(psn, "default_message"));
    r->switch_message = strdup(msg ? msg : ROUTER_DEFAULT_SWITCH_MESSAGE);
    if (!r->switch_message) {
        router_err(err, errlen, "out of memory");
        goto fail;
    }

    const json_t *rules = routing ? json_object_get(routing, "rules") : NULL;
    if (rules && !json_is_null(rules)) {
        if (!json_is_array(rules)) {
            router_err(err, errlen, "routing.rules: expected an array");
            goto fail;
        }
        size_t n = json_array_size(rules);
        r->rules = calloc(n ? n : 1, sizeof(*r->rules));
        if (!r->rules) {
            router_err(err, errlen, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < n; i++) {
            r->n_rules++; /* so router_free releases a partly parsed rule */
            if (router_parse_rule(s, json_array_get(rules, i), i, &r->rules[i], err, errlen) != 0)
                goto fail;
        }
        router_sort_rules(r->rules, r->n_rules);
    }
    return r;
fail:
    router_free(r);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
 * Planning */

static enum agent_provider_type router_ptype(enum router_dialect d)
{
    return d == ROUTER_ANTHROPIC ? AGENT_PROVIDER_ANTHROPIC : AGENT_PROVIDER_OPENAI;
}

static const char *router_dialect_name(enum router_dialect d)
{
    return d == ROUTER_ANTHROPIC ? "anthropic" : "openai";
}

static const struct router_rule *router_match(const struct router *r, const char *model, size_t len)
{
    if (!model || len == 0 || len > ROUTER_MAX_MODEL || memchr(model, '\0', len))
        return NULL;
    char buf[ROUTER_MAX_MODEL + 1];
    memcpy(buf, model, len);
    buf[len] = '\0';
    for (size_t i = 0; i < r->n_rules; i++)
        if (regexec(&r->rules[i].re, buf, 0, NULL, 0) == 0)
            return &r->rules[i];
    return NULL;
}

/* Smooth weighted round-robin (nginx): every positive-weight target gains its weight, the
 * largest is chosen and pays the total back. Writes the chosen one first, then the others
 * by descending current weight, zero weights last. Caller holds the mutex. */
static size_t router_wrr(struct router_rule *rule, size_t *raw)
{
    size_t n = rule->n_targets, best = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        struct router_target *t = &rule->targets[i];
        if (t->weight == 0)
            continue;
        t->current += t->weight;
        if (best == (size_t)-1 || t->current > rule->targets[best].current)
            best = i;
    }
    size_t k = 0;
    if (best != (size_t)-1) {
        rule->targets[best].current -= (long long)rule->weight_total;
        raw[k++] = best;
    }
    size_t first_rest = k;
    for (size_t i = 0; i < n; i++) {
        if (i == best)
            continue;
        /* insertion by (weight > 0, current) descending, ties in config order */
        size_t j = k++;
        while (j > first_rest) {
            const struct router_target *a = &rule->targets[raw[j - 1]], *b = &rule->targets[i];
            bool b_first = (b->weight > 0 && a->weight == 0) ||
                           ((b->weight > 0) == (a->weight > 0) && b->current > a->current);
            if (!b_first)
                break;
            raw[j] = raw[j - 1];
            j--;
        }
        raw[j] = i;
    }
    for (size_t i = 0; i < k; i++)
        raw[i] = rule->targets[raw[i]].idx;
    return k;
}

/* The rule's providers in attempt order, before filtering. Caller holds the mutex. */
static size_t router_raw(struct router *r, struct router_rule *rule, enum router_dialect d,
                         size_t *raw)
{
    size_t k = 0;
    if (!rule) {
        /* no rule: the enabled providers of the request's dialect, the one named like the
         * dialect first */
        enum agent_provider_type t = router_ptype(d);
        size_t own = router_find(r->s, router_dialect_name(d));
        if (own != (size_t)-1 && r->s->providers[own].type == t)
            raw[k++] = own;
        for (size_t i = 0; i < r->n_prov && k < ROUTER_MAX_RAW; i++)
            if (i != own && r->s->providers[i].enabled && r->s->providers[i].type == t)
                raw[k++] = i;
        return k;
    }
    switch (rule->strategy) {
    case ROUTER_STRATEGY_ROUND_ROBIN: {
        size_t n = rule->n_targets;
        if (n == 0)
            return 0;
        size_t start = (size_t)(rule->rr_next++ % n);
        for (size_t i = 0; i < n; i++)
            raw[k++] = rule->targets[(start + i) % n].idx;
        return k;
    }
    case ROUTER_STRATEGY_WEIGHTED:
        return router_wrr(rule, raw);
    case ROUTER_STRATEGY_LIMITS_ALTERNATIVE:
        /* rate-limited primaries move behind the alternatives in router_plan's partition */
        for (size_t i = 0; i < rule->n_targets; i++)
            raw[k++] = rule->targets[i].idx;
        for (size_t i = 0; i < rule->n_alts; i++)
            raw[k++] = rule->alts[i].idx;
        return k;
    default:
        for (size_t i = 0; i < rule->n_targets; i++)
            raw[k++] = rule->targets[i].idx;
        return k;
    }
}

static bool router_ps_available(const struct router_pstate *ps, double now)
{
    return circuit_available(&ps->circuit, now) && !(now < ps->rate_limited_until);
}

size_t router_plan(struct router *r, enum router_dialect dialect, const char *model,
                   size_t model_len, double now, struct router_plan *out)
{
    memset(out, 0, sizeof(*out));
    if (!r)
        return 0;
    /* regexec on a shared compiled pattern is thread-safe: match outside the mutex */
    const struct router_rule *crule = router_match(r, model, model_len);
    struct router_rule *rule = crule ? &r->rules[crule - r->rules] : NULL;
    out->rule = rule ? rule->name : NULL;

    size_t raw[ROUTER_MAX_RAW];
    size_t unavail[ROUTER_MAX_CANDIDATES];
    size_t n_unavail = 0;
    pthread_mutex_lock(&r->mu);
    size_t n_raw = router_raw(r, rule, dialect, raw);
    for (size_t i = 0; i < n_raw; i++) {
        size_t idx = raw[i];
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = raw[j] == idx;
        if (dup)
            continue;
        if (router_ps_available(&r->ps[idx], now)) {
            if (out->n < ROUTER_MAX_CANDIDATES)
                out->p[out->n++] = &r->s->providers[idx];
        } else if (n_unavail < ROUTER_MAX_CANDIDATES) {
            unavail[n_unavail++] = idx;
        }
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < n_unavail && out->n < ROUTER_MAX_CANDIDATES; i++) {
        out->unavailable[out->n] = true;
        out->p[out->n++] = &r->s->providers[unavail[i]];
    }
    return out->n;
}

/* ---------------------------------------------------------------------------------------
 * Feedback */

static bool router_index(const struct router *r, const struct agent_provider *p, size_t *idx)
{
    if (!r || !p || r->n_prov == 0)
        return false;
    const struct agent_provider *base = r->s->providers;
    /* compare as addresses so a pointer from another settings generation is just "not ours" */
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
    if (a < b || a >= b + r->n_prov * sizeof(*base) || (a - b) % sizeof(*base) != 0)
        return false;
    *idx = (a - b) / sizeof(*base);
    return true;
}

bool router_admit(struct router *r, const struct agent_provider *p, double now)
{
    size_t i;
    if (!router_index(r, p, &i))
        return true; /* not ours: no state to refuse with */
    pthread_mutex_lock(&r->mu);
    bool ok = circuit_allow(&r->ps[i].circuit, now);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

void router_report(struct router *r, const struct agent_provider *p, enum router_outcome o,
                   double retry_after_secs, double now)
{
    size_t i;
    if (!router_index(r, p, &i))
        return;
    pthread_mutex_lock(&r->mu);
    struct router_pstate *ps = &r->ps[i];
    switch (o) {
    case ROUTER_OK:
        circuit_on_success(&ps->circuit, now);
        ps->consecutive_429 = 0;
        break;
    case ROUTER_FAILED:
        circuit_on_failure(&ps->circuit, now);
        break;
    case ROUTER_RATE_LIMITED: {
        /* The provider answered: not a circuit failure, but a half-open probe is over. */
        circuit_on_abandon(&ps->circuit);
        if (ps->consecutive_429 < 64)
            ps->consecutive_429++;
        double w;
        if (retry_after_secs >= 0) /* false for NaN too */
            w = retry_after_secs > RETRY_AFTER_MAX_SECS ? RETRY_AFTER_MAX_SECS : retry_after_secs;
        else
            w = ps->consecutive_429 > 6
                    ? ROUTER_RL_BACKOFF_MAX
                    : fmin(ROUTER_RL_BACKOFF_MAX, (double)(1u << (ps->consecutive_429 - 1)));
        ps->rate_limited_until = now + w;
        break;
    }
    case ROUTER_ABANDONED:
        circuit_on_abandon(&ps->circuit);
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&r->mu);
}

bool router_any_available(struct router *r, double now)
{
    if (!r)
        return false;
    bool any = false;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_prov && !any; i++)
        any = r->s->providers[i].enabled && circuit_available(&r->ps[i].circuit, now);
    pthread_mutex_unlock(&r->mu);
    return any;
}

size_t router_provider_count(const struct router *r)
{
    return r ? r->n_prov : 0;
}

const struct agent_provider *router_provider(const struct router *r, size_t i)
{
    return r && i < r->n_prov ? &r->s->providers[i] : NULL;
}

void router_circuit_snapshot(struct router *r, size_t i, struct circuit *out)
{
    if (!r || i >= r->n_prov) {
        circuit_init(out, 1, 1, 0);
        return;
    }
    pthread_mutex_lock(&r->mu);
    *out = r->ps[i].circuit;
    pthread_mutex_unlock(&r->mu);
}

const char *router_switch_message(const struct router *r)
{
    return r && r->switch_enabled ? r->switch_message : NULL;
}

double router_backoff(unsigned attempt, double rand01)
{
    if (attempt == 0)
        attempt = 1;
    double base = attempt > 5 ? 2.0 : fmin(2.0, 0.1 * (double)(1u << (attempt - 1)));
    if (!(rand01 >= 0.0)) /* NaN or negative */
        rand01 = 0.0;
    if (rand01 >= 1.0)
        rand01 = 1.0;
    return base * (0.8 + 0.4 * rand01);
}

/* ---------------------------------------------------------------------------------------
 * provider_switch_notification */

static const char *const router_switch_reason_names[ROUTER_SWITCH_REASON_COUNT] = {
    "rate_limit", "service_issue", "circuit_breaker"};
/* LunaRoute's SwitchReason::to_generic_message, the ${reason} text */
static const char *const router_switch_reason_text[ROUTER_SWITCH_REASON_COUNT] = {
    "high demand", "a temporary service issue", "service maintenance"};

const char *router_switch_reason_to_str(unsigned r)
{
    return r < ROUTER_SWITCH_REASON_COUNT ? router_switch_reason_names[r] : "?";
}

char *router_switch_format(const char *tmpl, const char *original_provider,
                           const char *new_provider, enum router_switch_reason reason,
                           const char *model)
{
    static const char *const vars[4] = {"${original_provider}", "${new_provider}", "${reason}",
                                        "${model}"};
    const char *vals[4] = {
        original_provider ? original_provider : "", new_provider ? new_provider : "",
        (unsigned)reason < ROUTER_SWITCH_REASON_COUNT ? router_switch_reason_text[reason] : "",
        model ? model : ""};
    if (!tmpl)
        tmpl = "";
    /* two passes: measure, then write */
    char *out = NULL;
    size_t len = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t k = 0;
        for (const char *p = tmpl; *p;) {
            int v = -1;
            for (int i = 0; i < 4 && v < 0; i++)
                if (strncmp(p, vars[i], strlen(vars[i])) == 0)
                    v = i;
            if (v >= 0) {
                size_t n = strlen(vals[v]);
                if (out)
                    memcpy(out + k, vals[v], n);
                k += n;
                p += strlen(vars[v]);
            } else {
                if (out)
                    out[k] = *p;
                k++;
                p++;
            }
        }
        if (pass == 0) {
            len = k;
            out = malloc(len + 1);
            if (!out)
                return NULL;
        }
    }
    out[len] = '\0';
    return out;
}

static bool router_is_notification(const json_t *m, const char *message)
{
    if (!json_is_object(m))
        return false;
    const char *content = json_string_value(json_object_get(m, "content"));
    if (!content)
        return false;
    return strncmp(content, "IMPORTANT:", 10) == 0 || strcmp(content, message) == 0;
}

int router_switch_inject(json_t *body, enum router_dialect d, const char *message)
{
    json_t *msgs = json_is_object(body) ? json_object_get(body, "messages") : NULL;
    if (!json_is_array(msgs) || !message)
        return -1;
    size_t at = 0;
    if (d == ROUTER_OPENAI) {
        for (; at < json_array_size(msgs); at++) {
            const char *role = json_string_value(json_object_get(json_array_get(msgs, at), "role"));
            if (!role || (strcmp(role, "system") != 0 && strcmp(role, "developer") != 0))
                break;
        }
    }
    if (router_is_notification(json_array_get(msgs, at), message))
        return 0;
    json_t *m = json_pack("{s:s, s:s}", "role", "user", "content", message);
    if (!m)
        return -1;
    if (json_array_insert_new(msgs, at, m) != 0)
        return -1;
    return 1;
}
