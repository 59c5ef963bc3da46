/* Server-Sent Events splitter (text/event-stream). Incremental: bytes arrive in arbitrary
 * chunks; each complete event (terminated by a blank line: \n\n, \r\n\r\n or \r\r) is
 * reported once. The relay forwards bytes as they arrive; this parser tells it where event
 * boundaries are (to inject an error event cleanly), counts events, and recognises stream
 * ends ("data: [DONE]", "event: message_stop") and error events. Pure; bounded memory. */
#ifndef LR_SSE_H
#define LR_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SSE_MAX_EVENT_BYTES (1u << 20) /* a longer event is an error (SSE_ERR_TOO_BIG) */

enum sse_kind {
    SSE_EVENT_DATA = 0,     /* an ordinary event */
    SSE_EVENT_DONE,         /* OpenAI "data: [DONE]" */
    SSE_EVENT_MESSAGE_STOP, /* Anthropic "event: message_stop" */
    SSE_EVENT_ERROR,        /* "event: error" (Anthropic) or data with a top-level "error" */
    SSE_EVENT_COMMENT,      /* only comment lines (": keep-alive") */
    SSE_KIND_COUNT
};
const char *sse_kind_to_str(unsigned k);

struct sse_event {
    enum sse_kind kind;
    const char *event; /* "event:" field value, or NULL; not NUL-terminated */
    size_t event_len;
    const char *data; /* the data: lines joined with \n (the first line's value for now is
                         fine when only one), or NULL */
    size_t data_len;
    const char *raw; /* the event's bytes including its terminator */
    size_t raw_len;
};

struct sse_parser {
    struct lr_buf pending; /* bytes of the event in progress */
    struct lr_buf data;    /* scratch for joined data lines */
    uint64_t events;
    bool at_boundary; /* true when every byte fed so far belongs to complete events */
    bool seen_end;    /* a DONE or MESSAGE_STOP event was seen */
    bool seen_error;
    bool failed;
    /* Private to sse.c. Offsets are relative to the event's first byte (pending.data once
     * the event spans chunks). */
    size_t line_start;           /* offset in pending of the line being read */
    size_t event_off, event_len; /* the last "event:" value */
    int err;                     /* returned again by every feed once failed */
    bool has_line;               /* the event has a non-blank line (field or comment) */
    bool has_field;              /* ... that is not a comment */
    bool has_event, has_data;
    bool cr_pending; /* the last byte fed was a \r ending a line: a \n next completes it */
    bool held;       /* that \r ended the event's blank line: it is reported with the next
                        byte, so its raw bytes do not depend on how the input was split */
};

void sse_parser_init(struct sse_parser *p);
void sse_parser_free(struct sse_parser *p); /* NULL-safe */
/* Returns 0 on success (callback called for each completed event; a nonzero return from the
 * callback stops parsing and is returned), SSE_ERR_TOO_BIG, or -ENOMEM. */
#define SSE_ERR_TOO_BIG (-1000)
typedef int (*sse_event_fn)(void *ud, const struct sse_event *ev);
int sse_feed(struct sse_parser *p, const char *buf, size_t len, sse_event_fn fn, void *ud);
/* At end of stream: reports an event whose blank line ended with a lone \r as the last byte
 * fed (held back in case a \n followed). An incomplete event is not reported (the SSE spec
 * discards it) and at_boundary stays false. Same returns as sse_feed. */
int sse_finish(struct sse_parser *p, sse_event_fn fn, void *ud);

#endif
