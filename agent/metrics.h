/* The routing engine's Prometheus metrics (GET /metrics, text format 0.0.4). Process-wide,
 * thread-safe (one mutex; updates happen once per request/attempt, never per byte).
 * Rendering also pulls the SPOA counters from stats.c and circuit states from the router.
 *
 * Series (all really updated):
 *   lunaroute_requests_total{provider,model,status}            counter
 *   lunaroute_request_duration_seconds{provider}               histogram (client view)
 *   lunaroute_upstream_duration_seconds{provider}              histogram (per attempt)
 *   lunaroute_time_to_first_token_seconds{provider}            histogram (streams)
 *   lunaroute_stream_chunks_total{provider}                    counter (SSE events relayed)
 *   lunaroute_fallbacks_total{reason}                          counter
 *   lunaroute_retries_total{provider}                          counter
 *   lunaroute_circuit_state{provider}                          gauge 0 closed,1 open,2 half_open
 *   lunaroute_circuit_transitions_total{provider,from,to}      counter
 *   lunaroute_classifications_total{route,provider}            counter (SPOA)
 *   lunaroute_spop_errors_total{status}                        counter (SPOA)
 *   lunaroute_spop_frames_total, lunaroute_spop_notify_total, lunaroute_spop_ack_total
 *   lunaroute_active_connections{listener="spop"|"engine"}     gauge
 *   lunaroute_upstream_active{provider}                        gauge (in-flight attempts)
 *   lunaroute_translations_total{direction}                    counter (openai_to_anthropic |
 *                                                              anthropic_to_openai)
 *   lunaroute_translation_dropped_fields_total{direction,field} counter (no counterpart)
 *   lunaroute_bypass_provider_info{provider}                   gauge, 1 (bypass provider in
 *                                                              force; set by admin.c)
 * Label values are escaped; distinct model values are capped (METRICS_MAX_MODELS, then
 * model="other") so a client cannot blow up memory. */
#ifndef LR_METRICS_H
#define LR_METRICS_H

#include <stdint.h>

#include "buf.h"

struct router;

#define METRICS_MAX_MODELS 256

/* Fallback reasons (label values). */
#define METRICS_FALLBACK_5XX          "upstream_5xx"
#define METRICS_FALLBACK_CONNECT      "connect_error"
#define METRICS_FALLBACK_TIMEOUT      "timeout"
#define METRICS_FALLBACK_RATE_LIMITED "rate_limited"
#define METRICS_FALLBACK_CIRCUIT_OPEN "circuit_open"

void metrics_request(const char *provider, const char *model, int status, double duration_secs);
void metrics_upstream(const char *provider, double secs);
void metrics_ttft(const char *provider, double secs);
void metrics_stream_chunks(const char *provider, uint64_t n);
void metrics_fallback(const char *reason);
void metrics_retry(const char *provider);
void metrics_upstream_active(const char *provider, int delta);
/* A request translated to the Anthropic dialect (to_anthropic) or to the OpenAI one, and a
 * field dropped in that direction (interned, bounded: METRICS_MAX_DROP_FIELDS). */
void metrics_translation(int to_anthropic);
void metrics_translation_dropped(int to_anthropic, const char *field);
/* The bypass provider in force ("auto" or a name), rendered as
 * lunaroute_bypass_provider_info{provider="..."} 1; NULL: not rendered. */
void metrics_set_bypass_provider(const char *name);

/* Appends the whole exposition to out. r may be NULL (no circuit series). 0 or -ENOMEM. */
int metrics_render(struct lr_buf *out, struct router *r);
void metrics_reset(void);    /* tests */
void metrics_free_all(void); /* at exit, for leak checks */

#endif
