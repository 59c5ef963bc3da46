/* The path classifier (DESIGN §5): decides, for one request, engine or bypass and which
 * HAProxy backend. Pure: no I/O, no allocation; the result points into the settings. */
#ifndef LR_CLASSIFY_H
#define LR_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>

struct agent_settings;

enum classify_route { CLASSIFY_ENGINE = 0, CLASSIFY_BYPASS, CLASSIFY_ROUTE_COUNT };
const char *classify_route_to_str(unsigned r); /* "engine" | "bypass" */

/* What HAProxy told us about the request (the lunaroute-classify NOTIFY arguments). */
struct classify_input {
    const char *method; /* may be NULL */
    size_t method_len;
    const char *path; /* without query string; NULL/empty counts as "/" */
    size_t path_len;
    unsigned anthropic_version_count; /* anthropic-version headers */
    unsigned x_api_key_count;         /* x-api-key headers */
    const char *auth_scheme;          /* authorization scheme ("bearer"), never a credential */
    size_t auth_scheme_len;
};

struct classify_result {
    enum classify_route route;
    const char *backend;  /* HAProxy backend: LR_ENGINE_BACKEND or lr_provider_<name> */
    const char *provider; /* provider name for bypass; "" for engine */
};

/* Rules, in order:
 * 1. path is one of the intercepted paths (defaults + extra, exact match) -> engine;
 * 2. bypass disabled -> engine;
 * 3. bypass provider NAME (not "auto"): NAME, except that a path in the Anthropic namespace
 *    (/v1/messages/...) goes to an enabled Anthropic-type provider when NAME is not one;
 * 4. auto: Anthropic namespace path, or an anthropic-version or x-api-key header ->
 *    Anthropic-type provider; otherwise OpenAI-type provider. Among providers of a type, the
 *    one named like the type ("openai"/"anthropic") wins, else the first in config order.
 *    Only enabled providers are candidates; if none of the wanted type is enabled, the
 *    first enabled provider; if none at all -> engine (which answers with a JSON error). */
void classify(const struct agent_settings *s, const struct classify_input *in,
              struct classify_result *out);

#endif
