/* Growable byte buffer: one per direction per connection, bounded by the caller. */
#ifndef LR_BUF_H
#define LR_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct lr_buf {
    uint8_t *data;
    size_t len; /* bytes in use, starting at data[0] */
    size_t cap; /* bytes allocated */
};

/* The slow path of lr_buf_reserve: reallocates. 0 or -ENOMEM. */
int lr_buf__grow(struct lr_buf *b, size_t extra);

/* Makes room for at least `extra` more bytes. 0 or -ENOMEM. Inline, with lr_buf_append: they
 * run for every piece of every message, and the room is almost always there already. */
static inline int lr_buf_reserve(struct lr_buf *b, size_t extra)
{
    if (b->cap > b->len && extra < b->cap - b->len) /* +1 keeps room for a trailing NUL */
        return 0;
    return lr_buf__grow(b, extra);
}

/* Appends n bytes. 0 or -ENOMEM. */
static inline int lr_buf_append(struct lr_buf *b, const void *p, size_t n)
{
    int rc = lr_buf_reserve(b, n);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

/* Appends a NUL-terminated string (without the NUL). 0 or -ENOMEM. */
int lr_buf_puts(struct lr_buf *b, const char *s);
/* Appends v in decimal (no printf on hot paths). 0 or -ENOMEM. */
int lr_buf_append_u64(struct lr_buf *b, uint64_t v);
/* Appends formatted text (data stays NUL-terminated past len). 0 or -ENOMEM. */
int lr_buf_printf(struct lr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int lr_buf_vprintf(struct lr_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Drops the first n bytes (n <= len). */
void lr_buf_consume(struct lr_buf *b, size_t n);
/* Empties the buffer, keeping its memory. */
void lr_buf_reset(struct lr_buf *b);
/* Releases the memory; NULL-safe; leaves an empty buffer. */
void lr_buf_free(struct lr_buf *b);
/* Hands the NUL-terminated contents to the caller (free() it) and empties the buffer.
 * Returns NULL on allocation failure. */
char *lr_buf_steal_str(struct lr_buf *b);

#endif
