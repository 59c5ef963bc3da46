/* libFuzzer: agent.json parsing and validation on arbitrary bytes; when a document is
 * accepted, classify a few requests against it and check the result's invariants. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "classify.h"
#include "settings.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const paths[] = {
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/v1/responses",
    "/",
    "",
    "/v1/models/gpt-4",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct agent_settings *s = agent_settings_parse((const char *)data, size, err, sizeof err);
    if (!s) {
        if (memchr(err, '\0', sizeof err) == NULL)
            abort(); /* the error must always be a terminated string */
        return 0;
    }
    struct agent_settings *ref = agent_settings_ref(s);
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        for (unsigned h = 0; h < 4; h++) {
            struct classify_input in = {
                .path = paths[i],
                .path_len = strlen(paths[i]),
                .anthropic_version_count = h & 1,
                .x_api_key_count = (h >> 1) & 1,
            };
            struct classify_result out;
            classify(s, &in, &out);
            if (out.route >= CLASSIFY_ROUTE_COUNT || !out.backend || !out.provider || !*out.backend)
                abort();
            if (out.route == CLASSIFY_BYPASS) {
                const struct agent_provider *p = agent_settings_provider(s, out.provider);
                if (!p || !p->enabled || strcmp(p->backend, out.backend) != 0)
                    abort();
            } else if (*out.provider) {
                abort();
            }
        }
    }
    agent_settings_unref(ref);
    agent_settings_unref(s);
    return 0;
}
