/* libFuzzer target: arbitrary bytes as a lunaroute.yaml. The loader must never crash,
 * leak or hang, whatever the YAML (aliases, deep nesting, odd scalars). The environment is
 * an empty fake so runs are reproducible. */
#include <stddef.h>
#include <stdint.h>

#include "config.h"

static const char *no_env(const char *name, void *ud)
{
    (void)name;
    (void)ud;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lr_config *c = NULL;
    struct cfg_errors errs = {0};
    if (config_load_string((const char *)data, size, "fuzz.yaml", no_env, NULL, &c, &errs) == 0) {
        /* exercise the accessors on whatever loaded */
        for (size_t i = 0; i < config_secret_count(c); i++) {
            const char *n, *v;
            config_secret_get(c, i, &n, &v);
        }
        (void)config_provider(c, "openai");
    }
    char buf[256];
    for (size_t i = 0; i < errs.n; i++)
        cfg_error_format(&errs.v[i], buf, sizeof(buf));
    cfg_errors_free(&errs);
    config_free(c);
    return 0;
}
