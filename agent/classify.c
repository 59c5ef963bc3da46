/* The path classifier (DESIGN §5). Runs for every request HAProxy sees, so it only compares a
 * few lengths and bytes and follows pointers settings.c precomputed at load time.
 *
 * The authorization scheme is informational only: a Bearer token says nothing about which
 * provider it is for (Anthropic also accepts OAuth bearer tokens), so it never changes the
 * decision. anthropic-version and x-api-key are the only header signals. */
#include "classify.h"

#include <string.h>

#include "lr_defaults.h"
#include "settings.h"

const char *classify_route_to_str(unsigned r)
{
    static const char *const names[] = {"engine", "bypass"};
    _Static_assert(sizeof(names) / sizeof(names[0]) == CLASSIFY_ROUTE_COUNT, "route names");
    return r < CLASSIFY_ROUTE_COUNT ? names[r] : "unknown";
}

/* /v1/messages/... (count_tokens, batches, ...). "/v1/messages" itself is intercepted. */
static bool in_anthropic_namespace(const char *path, size_t len)
{
    static const char ns[] = "/v1/messages/";
    return len >= sizeof(ns) - 1 && memcmp(path, ns, sizeof(ns) - 1) == 0;
}

static void to_engine(const struct agent_settings *s, struct classify_result *out)
{
    out->route = CLASSIFY_ENGINE;
    out->backend = (s && s->engine_backend) ? s->engine_backend : LR_ENGINE_BACKEND;
    out->provider = "";
}

void classify(const struct agent_settings *s, const struct classify_input *in,
              struct classify_result *out)
{
    const char *path = in ? in->path : NULL;
    size_t len = path ? in->path_len : 0;
    const struct agent_provider *p;

    if (len == 0) {
        path = "/";
        len = 1;
    }
    if (!s || agent_settings_is_intercepted(s, path, len) || !s->bypass_enabled) {
        to_engine(s, out);
        return;
    }
    bool ns = in_anthropic_namespace(path, len);
    if (s->bypass_auto)
        p = (ns || (in && (in->anthropic_version_count > 0 || in->x_api_key_count > 0)))
                ? s->cls_auto_anthropic
                : s->cls_auto_openai;
    else
        p = ns ? s->cls_named_ns : s->cls_named;
    if (!p) {
        to_engine(s, out);
        return;
    }
    out->route = CLASSIFY_BYPASS;
    out->backend = p->backend;
    out->provider = p->name;
}
