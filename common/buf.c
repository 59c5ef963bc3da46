#include "buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lr_buf__grow(struct lr_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return -ENOMEM;
    size_t need = b->len + extra + 1; /* +1 keeps room for a trailing NUL */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int lr_buf_puts(struct lr_buf *b, const char *s)
{
    return lr_buf_append(b, s, strlen(s));
}

int lr_buf_append_u64(struct lr_buf *b, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return lr_buf_append(b, tmp + sizeof(tmp) - n, n);
}

int lr_buf_vprintf(struct lr_buf *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0 || lr_buf_reserve(b, (size_t)n) < 0)
        return -ENOMEM;
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int lr_buf_printf(struct lr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = lr_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void lr_buf_consume(struct lr_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void lr_buf_reset(struct lr_buf *b)
{
    b->len = 0;
}

void lr_buf_free(struct lr_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *lr_buf_steal_str(struct lr_buf *b)
{
    if (lr_buf_reserve(b, 0) < 0)
        return NULL;
    b->data[b->len] = 0;
    char *s = (char *)b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}
