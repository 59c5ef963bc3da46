/* The routing decision for intercepted LLM requests (DESIGN §8, routing.rules): which
 * providers, in which order, for one request; plus the shared per-provider health state
 * (circuit breaker, rate-limit windows) that outcomes feed back into.
 *
 * Built from agent_settings (routing JSON: rules with name, model_pattern (POSIX ERE),
 * priority, strategy ""|"round-robin"|"weighted-round-robin"|"limits-alternative", primary,
 * fallbacks [names], targets [{provider, weight}], alternatives [{provider, weight}];
 * circuit_breaker; provider_switch_notification). One router per settings generation,
 * shared by all loop threads: its mutable state is behind one mutex (held for
 * microseconds, never across I/O). Time is passed in so the logic is unit-testable. */
#ifndef LR_ROUTER_H
#define LR_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "circuit.h"

struct agent_settings;
struct agent_provider;

enum router_dialect { ROUTER_OPENAI = 0, ROUTER_ANTHROPIC, ROUTER_DIALECT_COUNT };

#define ROUTER_MAX_CANDIDATES 16

struct router_plan {
    const char *rule; /* matched rule name, or NULL (default: own-dialect provider) */
    size_t n;
    /* In order of attempt. A rule may name providers of either dialect (the proxy
     * translates for those of the other one, translate.h); with no rule matching, only the
     * enabled providers of the request's dialect. Providers whose circuit is open or that
     * are rate-limited come after the available ones (so a request still has somewhere to
     * go when all are unhealthy) unless the strategy says otherwise; unavailable[i] marks
     * them. */
    const struct agent_provider *p[ROUTER_MAX_CANDIDATES];
    bool unavailable[ROUTER_MAX_CANDIDATES];
};

enum router_outcome {
    ROUTER_OK = 0,       /* 2xx/4xx other than 429: the provider answered */
    ROUTER_FAILED,       /* connect error, timeout, 5xx: counts toward the circuit */
    ROUTER_RATE_LIMITED, /* 429: avoid until Retry-After (or back-off) */
    ROUTER_ABANDONED,    /* client went away before a verdict */
    ROUTER_OUTCOME_COUNT
};
const char *router_outcome_to_str(unsigned o);

struct router;

/* Compiles rules (regcomp REG_EXTENDED|REG_NOSUB), sorts by priority (higher first, ties in
 * file order). Providers a rule names that are unknown or disabled are skipped (control
 * already validated the names). NULL with a message in err on a bad regex. */
struct router *router_new(const struct agent_settings *s, char *err, size_t errlen);
void router_free(struct router *r); /* NULL-safe */

/* Plans a request of `dialect` for `model` (may be NULL/empty: matches no rule) at monotonic
 * time now. Advances round-robin / weighted state. Smooth weighted round-robin (nginx's
 * algorithm): weights 80/20 give A A A A B interleaved, not 80 A then 20 B.
 * limits-alternative: targets (primaries) in order while not rate-limited, then the
 * alternatives. Returns the number of candidates (0: nothing configured for the dialect). */
size_t router_plan(struct router *r, enum router_dialect dialect, const char *model,
                   size_t model_len, double now, struct router_plan *out);

/* Call before sending to p: false if its circuit refuses (open, or half-open with a probe
 * already out). */
bool router_admit(struct router *r, const struct agent_provider *p, double now);
/* Feeds an attempt's outcome back. retry_after_secs < 0 means the response had none: the
 * rate-limit window then grows exponentially per consecutive 429 (1 s, 2 s, 4 s, … capped at
 * 60 s; reset on success). */
void router_report(struct router *r, const struct agent_provider *p, enum router_outcome o,
                   double retry_after_secs, double now);

/* Readiness: at least one enabled provider whose circuit is not open. */
bool router_any_available(struct router *r, double now);

/* Metrics: the circuit state of provider i (config order) and its transition counts. */
size_t router_provider_count(const struct router *r);
const struct agent_provider *router_provider(const struct router *r, size_t i);
void router_circuit_snapshot(struct router *r, size_t i, struct circuit *out);

/* provider_switch_notification: enabled + message (NULL when disabled). */
const char *router_switch_message(const struct router *r);

/* provider_switch_notification, LunaRoute's behaviour (lunaroute-routing notification.rs,
 * provider_router.rs): when a request moves to another provider than the one first chosen
 * (fallback, or limits-alternative after a 429), a user message carrying the notification
 * text is prepended to the conversation sent to the new provider, unless the conversation
 * already starts with one. Reasons name the switch in ${reason}. */
enum router_switch_reason {
    ROUTER_SWITCH_RATE_LIMIT = 0,  /* "high demand" */
    ROUTER_SWITCH_SERVICE_ISSUE,   /* "a temporary service issue" */
    ROUTER_SWITCH_CIRCUIT_BREAKER, /* "service maintenance" */
    ROUTER_SWITCH_REASON_COUNT
};
const char *router_switch_reason_to_str(unsigned r);
/* Substitutes ${original_provider}, ${new_provider}, ${reason} and ${model} in tmpl
 * (NULL arguments become ""). Returns a malloc'd string, NULL on allocation failure. */
char *router_switch_format(const char *tmpl, const char *original_provider,
                           const char *new_provider, enum router_switch_reason reason,
                           const char *model);
/* Prepends {"role":"user","content":message} to body's "messages" (Anthropic: at index 0;
 * OpenAI: after the leading system/developer messages, so the system prompt stays first).
 * Returns 1 when injected, 0 when the conversation already carries a notification there
 * (string content starting with "IMPORTANT:", LunaRoute's check, or equal to message), -1
 * when body has no "messages" array or on allocation failure. Pure JSON transformation. */
int router_switch_inject(json_t *body, enum router_dialect d, const char *message);

/* Back-off before retry number `attempt` (1-based) on the same provider: 0.1 s * 2^(n-1),
 * capped at 2 s, with +-20% jitter from `rand01` in [0,1). Pure. */
double router_backoff(unsigned attempt, double rand01);

#endif
