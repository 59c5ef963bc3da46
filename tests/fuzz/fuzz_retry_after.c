/* libFuzzer: Retry-After values on arbitrary bytes, at a few wall-clock times; the result is
 * either -1 or a delay in [0, RETRY_AFTER_MAX_SECS]. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "retry_after.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const time_t nows[] = {0, 784111777, 1750000000, 4102444800};
    /* a private copy, so reading past `size` is caught by ASan */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);
    for (size_t i = 0; i < sizeof(nows) / sizeof(nows[0]); i++) {
        double secs = -7;
        int rc = retry_after_parse(buf, size, nows[i], &secs);
        if (rc == 0) {
            if (!(secs >= 0 && secs <= RETRY_AFTER_MAX_SECS) || isnan(secs))
                abort();
        } else if (rc != -1) {
            abort();
        }
    }
    free(buf);
    return 0;
}
