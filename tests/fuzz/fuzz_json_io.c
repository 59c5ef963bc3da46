/* libFuzzer: the fast JSON reader and writer of the translation path (json_io, yajl +
 * jansson values) cross-checked against jansson's own on arbitrary bytes. json_io_loadb
 * must accept exactly what json_loadb accepts and give an equal tree (it falls back to
 * json_loadb itself where it cannot decide, so the two always agree); json_io_dumps must
 * write byte for byte what json_dumps(JSON_COMPACT) writes, and its text must read back as
 * the same tree. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy, so reading past `size` is caught by ASan */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);
    json_error_t e1, e2;
    json_t *ref = json_loadb(buf, size, 0, &e1);
    json_t *got = json_io_loadb(buf, size, &e2);
    if (!ref != !got) {
        fprintf(stderr, "json_loadb %s, json_io_loadb %s\n", ref ? "ok" : e1.text,
                got ? "ok" : e2.text);
        abort();
    }
    if (ref && !json_equal(ref, got)) {
        fprintf(stderr, "trees differ\n");
        abort();
    }
    if (!ref && (strcmp(e1.text, e2.text) != 0 || e1.position != e2.position)) {
        fprintf(stderr, "errors differ: '%s' at %d vs '%s' at %d\n", e1.text, e1.position, e2.text,
                e2.position);
        abort();
    }
    if (ref) {
        char *a = json_dumps(ref, JSON_COMPACT);
        size_t n = 0;
        char *b = json_io_dumps(ref, &n);
        if (!a || !b || strcmp(a, b) != 0 || n != strlen(b)) {
            fprintf(stderr, "dumps differ:\n%s\n%s\n", a ? a : "(null)", b ? b : "(null)");
            abort();
        }
        json_t *back = json_io_loadb(b, n, NULL);
        if (!json_equal(back, ref)) {
            fprintf(stderr, "the written text does not read back\n");
            abort();
        }
        json_decref(back);
        free(a);
        free(b);
    }
    json_decref(ref);
    json_decref(got);
    free(buf);
    return 0;
}
