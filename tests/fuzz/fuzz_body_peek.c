/* libFuzzer: the engine's fast read of "model"/"stream" (body_peek, yajl) cross-checked
 * against jansson's full parse (body_peek_tree) on arbitrary bytes: unless the fast path
 * says it is unsure, both must give the same verdict and, for an object, the same model
 * (bytes, length, truncation) and stream flag. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body_peek.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void cross_check(const char *buf, size_t size, size_t model_size)
{
    char m1[256], m2[256];
    struct body_peek p1, p2;
    enum body_peek_result r1 = body_peek(buf, size, m1, model_size, &p1);
    enum body_peek_result r2 = body_peek_tree(buf, size, m2, model_size, &p2, NULL);
    if (r2 == BODY_PEEK_UNSURE)
        abort(); /* the reference always decides */
    if (r1 == BODY_PEEK_UNSURE)
        return;
    if (r1 != r2) {
        fprintf(stderr, "body_peek %s, jansson %s\n", body_peek_result_to_str(r1),
                body_peek_result_to_str(r2));
        abort();
    }
    if (r1 != BODY_PEEK_OK)
        return;
    if (p1.has_model != p2.has_model || p1.model_len != p2.model_len || p1.stream != p2.stream ||
        strcmp(m1, m2) != 0) {
        fprintf(stderr, "fields differ: model %d/%zu '%s' vs %d/%zu '%s', stream %d vs %d\n",
                p1.has_model, p1.model_len, m1, p2.has_model, p2.model_len, m2, p1.stream,
                p2.stream);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy, so reading past `size` is caught by ASan */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);
    cross_check(buf, size, 201); /* the engine's model label size */
    cross_check(buf, size, 4);   /* truncation */
    free(buf);
    return 0;
}
