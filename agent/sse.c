/* SSE splitter. One pass over the input: an event that lies wholly inside one fed chunk is
 * parsed in place (raw points into the caller's bytes); only an event that spans chunks is
 * copied into `pending`, each byte once. A partial line is never rescanned: only the new
 * bytes are searched for its end. */
#include "sse.h"

#include <errno.h>
#include <string.h>

static const char *const kind_names[SSE_KIND_COUNT] = {
    [SSE_EVENT_DATA] = "data",
    [SSE_EVENT_DONE] = "done",
    [SSE_EVENT_MESSAGE_STOP] = "message_stop",
    [SSE_EVENT_ERROR] = "error",
    [SSE_EVENT_COMMENT] = "comment",
};

const char *sse_kind_to_str(unsigned k)
{
    return k < SSE_KIND_COUNT ? kind_names[k] : "unknown";
}

void sse_parser_init(struct sse_parser *p)
{
    memset(p, 0, sizeof(*p));
    p->at_boundary = true;
}

void sse_parser_free(struct sse_parser *p)
{
    if (!p)
        return;
    lr_buf_free(&p->pending);
    lr_buf_free(&p->data);
}

static bool equals(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && memcmp(s, lit, l) == 0;
}

static bool is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A JSON object whose first key is "error" (OpenAI's in-stream error). A prefix test, not
 * a parse: the relay only needs to recognise the shape. */
static bool data_is_error(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n && is_json_space(s[i]))
        i++;
    if (i == n || s[i++] != '{')
        return false;
    while (i < n && is_json_space(s[i]))
        i++;
    return n - i >= 7 && memcmp(s + i, "\"error\"", 7) == 0;
}

static void event_reset(struct sse_parser *p)
{
    lr_buf_reset(&p->pending);
    lr_buf_reset(&p->data);
    p->line_start = 0;
    p->event_off = p->event_len = 0;
    p->has_line = p->has_field = p->has_event = p->has_data = false;
}

static int fail(struct sse_parser *p, int err)
{
    p->failed = true;
    p->err = err;
    p->at_boundary = false;
    p->held = p->cr_pending = false;
    event_reset(p);
    return err;
}

/* Appends bytes of the current event to pending, within the event size bound. */
static int pending_add(struct sse_parser *p, const char *s, size_t n)
{
    if (n > SSE_MAX_EVENT_BYTES - p->pending.len)
        return fail(p, SSE_ERR_TOO_BIG);
    if (lr_buf_append(&p->pending, s, n) < 0)
        return fail(p, -ENOMEM);
    return 0;
}

/* One non-blank line at base[off, off + n) (base: the event's first byte). */
static int process_line(struct sse_parser *p, const char *base, size_t off, size_t n)
{
    const char *line = base + off;
    const char *colon = memchr(line, ':', n);
    size_t name_len = colon ? (size_t)(colon - line) : n;
    size_t voff = colon ? name_len + 1 : n;

    p->has_line = true;
    if (name_len == 0)
        return 0; /* ":" starts a comment */
    p->has_field = true;
    if (voff < n && line[voff] == ' ')
        voff++;
    if (equals(line, name_len, "event")) {
        p->has_event = true;
        p->event_off = off + voff;
        p->event_len = n - voff;
    } else if (equals(line, name_len, "data")) {
        if ((p->has_data && lr_buf_append(&p->data, "\n", 1) < 0) ||
            lr_buf_append(&p->data, line + voff, n - voff) < 0)
            return fail(p, -ENOMEM);
        p->has_data = true;
    }
    /* "id", "retry" and unknown fields are ignored */
    return 0;
}

static enum sse_kind event_kind(const struct sse_parser *p, const struct sse_event *ev)
{
    if (ev->event && equals(ev->event, ev->event_len, "error"))
        return SSE_EVENT_ERROR;
    if (ev->data && equals(ev->data, ev->data_len, "[DONE]"))
        return SSE_EVENT_DONE;
    if (ev->event && equals(ev->event, ev->event_len, "message_stop"))
        return SSE_EVENT_MESSAGE_STOP;
    if (ev->data && data_is_error(ev->data, ev->data_len))
        return SSE_EVENT_ERROR;
    if (!p->has_field)
        return SSE_EVENT_COMMENT;
    return SSE_EVENT_DATA;
}

/* The event whose bytes (terminator included) are raw[0, raw_len) is complete. */
static int dispatch(struct sse_parser *p, const char *raw, size_t raw_len, sse_event_fn fn,
                    void *ud)
{
    struct sse_event ev = {
        .event = p->has_event ? raw + p->event_off : NULL,
        .event_len = p->has_event ? p->event_len : 0,
        .data = p->has_data ? (const char *)p->data.data : NULL,
        .data_len = p->has_data ? p->data.len : 0,
        .raw = raw,
        .raw_len = raw_len,
    };
    int rc;

    ev.kind = event_kind(p, &ev);
    p->events++;
    if (ev.kind == SSE_EVENT_DONE || ev.kind == SSE_EVENT_MESSAGE_STOP)
        p->seen_end = true;
    else if (ev.kind == SSE_EVENT_ERROR)
        p->seen_error = true;
    rc = fn ? fn(ud, &ev) : 0;
    event_reset(p);
    return rc;
}

int sse_finish(struct sse_parser *p, sse_event_fn fn, void *ud)
{
    if (p->failed)
        return p->err;
    if (!p->held)
        return 0;
    p->held = p->cr_pending = false;
    p->at_boundary = true;
    return dispatch(p, (const char *)p->pending.data, p->pending.len, fn, ud);
}

/* Invariants between lines: the current event's bytes are pending followed by
 * buf[ev_start, i); when pending is not empty, ev_start == i (each completed line is moved
 * into pending at once, so lines are contiguous with the event's start). */
int sse_feed(struct sse_parser *p, const char *buf, size_t len, sse_event_fn fn, void *ud)
{
    size_t i = 0, ev_start = 0;
    int rc;

    if (p->failed)
        return p->err;
    if (len == 0)
        return 0;
    if (p->cr_pending) {
        /* The previous chunk ended with a \r ending a line; a \n here is part of it. */
        bool lf = buf[0] == '\n';

        p->cr_pending = false;
        if (lf && p->pending.len && (rc = pending_add(p, buf, 1)) < 0)
            return rc;
        i = ev_start = lf ? 1 : 0;
        if (p->held) {
            p->held = false;
            rc = dispatch(p, (const char *)p->pending.data, p->pending.len, fn, ud);
            if (rc) {
                p->at_boundary = true;
                return rc;
            }
        }
        p->line_start = p->pending.len;
    }

    while (i < len) {
        size_t j = i, eol_len = 1, next, off, n;
        bool cr_unknown = false;
        const char *base;

        while (j < len && buf[j] != '\n' && buf[j] != '\r')
            j++;
        if (j == len)
            break; /* partial line */
        if (buf[j] == '\r') {
            if (j + 1 == len)
                cr_unknown = true; /* a \n may come in the next chunk */
            else if (buf[j + 1] == '\n')
                eol_len = 2;
        }
        next = j + eol_len;

        if (p->pending.len) {
            if ((rc = pending_add(p, buf + ev_start, next - ev_start)) < 0)
                return rc;
            base = (const char *)p->pending.data;
            off = p->line_start;
            n = p->pending.len - eol_len - off;
            ev_start = next;
            p->line_start = p->pending.len;
        } else {
            if (next - ev_start > SSE_MAX_EVENT_BYTES)
                return fail(p, SSE_ERR_TOO_BIG);
            base = buf + ev_start;
            off = i - ev_start;
            n = j - i;
        }
        i = next;
        p->cr_pending = cr_unknown;

        if (n) {
            if ((rc = process_line(p, base, off, n)) < 0)
                return rc;
            continue;
        }
        if (!p->has_line) { /* a blank line outside any event: belongs to none */
            lr_buf_reset(&p->pending);
            p->line_start = 0;
            ev_start = i;
            continue;
        }
        if (cr_unknown) {
            /* Complete, but its raw bytes may still gain a \n: report it with the next byte
             * (or at sse_finish) so the split of the input does not change them. */
            p->held = true;
            break;
        }
        rc = dispatch(p, p->pending.len ? (const char *)p->pending.data : base,
                      p->pending.len ? p->pending.len : i - ev_start, fn, ud);
        ev_start = i;
        if (rc) {
            /* Parsing stops here: the rest of this chunk is not examined. */
            p->cr_pending = false;
            p->at_boundary = true;
            return rc;
        }
    }

    if (ev_start < len) {
        /* With pending in use, line_start already marks the partial line. */
        if (p->pending.len == 0)
            p->line_start = i - ev_start;
        if ((rc = pending_add(p, buf + ev_start, len - ev_start)) < 0)
            return rc;
    }
    p->at_boundary = p->pending.len == 0;
    return 0;
}
