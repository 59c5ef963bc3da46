/* Fast JSON text <-> jansson values for the request path (dialect translation).
 *
 * jansson's own reader and writer go a character at a time through several layers and cost
 * about 130 instructions per byte read and 75 per byte written; yajl's tokenizer and
 * generator do the same work several times faster. These functions keep jansson's
 * semantics exactly: json_io_loadb gives the tree json_loadb(buf, len, 0, ...) gives, or
 * falls back to json_loadb itself wherever the two libraries could disagree (errors,
 * control bytes, NUL, \uD800-\uDFFF escapes, numbers that overflow, deep nesting), so
 * every error message is still jansson's. json_io_dumps writes what
 * json_dumps(v, JSON_COMPACT) means (same key order, same number forms). */
#ifndef LR_JSON_IO_H
#define LR_JSON_IO_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

/* As json_loadb(buf, len, 0, err). err may be NULL. */
json_t *json_io_loadb(const char *buf, size_t len, json_error_t *err);
/* How many json_io_loadb calls of this thread were left to json_loadb (for tests). */
unsigned long json_io_fallbacks(void);

/* As json_dumps(v, JSON_COMPACT) for an object or array, but NULL on any allocation
 * failure (json_dumps ignores a failed key write); *len (may be NULL) gets strlen. */
char *json_io_dumps(const json_t *v, size_t *len);

struct lr_buf;
/* Appends v (any value, as with JSON_ENCODE_ANY) to b. 0, or -ENOMEM with b unchanged. */
int json_io_append(struct lr_buf *b, const json_t *v);

/* ---- the checks body_peek.c shares ---- */

enum { JIO_SCAN_HIGH = 1, JIO_SCAN_NUL = 2, JIO_SCAN_BAD_CTL = 4 };
/* One pass, a word at a time: bytes >= 0x80 (HIGH), NUL, and the other control bytes that
 * are not JSON whitespace (BAD_CTL). */
unsigned json_io_scan(const unsigned char *p, size_t len);
/* How jansson reads a number token (JSON grammar already checked): an integer when it has no
 * '.', 'e' or 'E' (strtoll: ERANGE is an error), else a real (strtod: an overflow to
 * infinity is an error, an underflow is not). A real of 64 characters or more is UNSURE (left
 * to jansson). *i or *d is set for INT and REAL. */
enum jio_num { JIO_NUM_INT, JIO_NUM_REAL, JIO_NUM_OVERFLOW, JIO_NUM_UNSURE };
enum jio_num json_io_number(const char *s, size_t len, json_int_t *i, double *d);
/* Only JSON whitespace: what may follow the top-level value. yajl takes an unfinished token
 * after it ("{}\"x") for the start of one more and does not call it garbage. */
bool json_io_only_ws(const char *p, size_t len);
/* A \uD800-\uDFFF escape (or text that looks like one): yajl decodes unpaired surrogates
 * where jansson refuses them. */
bool json_io_maybe_surrogate(const char *p, size_t len);

#endif
