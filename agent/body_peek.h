/* The top-level "model" and "stream" of a request body, without building a JSON tree.
 *
 * Passthrough forwards the client's bytes unchanged and needs only these two members, so
 * the body is run through yajl's SAX parser (syntax checked, nothing allocated per value)
 * instead of jansson's json_loadb. The answer must be the one jansson gives (what the
 * engine did before, and what body_peek_tree still does): when yajl alone cannot be sure
 * of that, the result is BODY_PEEK_UNSURE and the caller runs body_peek_tree. */
#ifndef LR_BODY_PEEK_H
#define LR_BODY_PEEK_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

enum body_peek_result {
    BODY_PEEK_OK = 0,     /* a JSON object: the fields of struct body_peek are set */
    BODY_PEEK_INVALID,    /* not JSON that jansson accepts (json_loadb with flags 0) */
    BODY_PEEK_NOT_OBJECT, /* valid JSON, but the top level is an array */
    BODY_PEEK_UNSURE,     /* yajl cannot tell alone: use body_peek_tree */
    BODY_PEEK_RESULT_COUNT
};

/* What the engine reads from a body. Duplicate top-level keys: the last one wins, as in
 * jansson's json_object_set. Members of nested objects are never looked at. */
struct body_peek {
    bool has_model;   /* the (last) top-level "model" is a string */
    size_t model_len; /* its full length in bytes (may exceed the buffer) */
    bool stream;      /* the (last) top-level "stream" is the literal true */
};

const char *body_peek_result_to_str(enum body_peek_result r);

/* The fast path. model/model_size: a buffer for the model string, truncated to
 * model_size - 1 bytes and NUL-terminated (model_size >= 1). */
enum body_peek_result body_peek(const char *body, size_t len, char *model, size_t model_size,
                                struct body_peek *out);

/* The reference: json_loadb (flags 0) and json_object_get. Never returns UNSURE. keep: when
 * not NULL and the result is OK, receives the parsed root (the caller's reference). */
enum body_peek_result body_peek_tree(const char *body, size_t len, char *model, size_t model_size,
                                     struct body_peek *out, json_t **keep);

#endif
