/* Egress to providers: libcurl multi driven by the thread's libev loop (curl's evhiperfifo
 * shape: CURLMOPT_SOCKETFUNCTION <-> ev_io, CURLMOPT_TIMERFUNCTION <-> ev_timer, with the
 * timer converted as timeout_ms / 1000.0 and never calling libcurl from inside the timer
 * callback when the timeout is 0 — an ev_idle/0-delay timer is used instead).
 * One struct upstream per loop thread: connections are reused per thread and per provider
 * host. TLS is verified (system CA store), TCP_NODELAY on. No exit() anywhere: errors fail
 * the one transfer. */
#ifndef LR_UPSTREAM_H
#define LR_UPSTREAM_H

#include <stddef.h>

#include <curl/curl.h>
#include <ev.h>

struct upstream;
struct upstream_xfer;

struct upstream_header {
    const char *name; /* NUL-terminated, valid during on_headers only */
    const char *value;
};

struct upstream_request {
    const char *method; /* "POST", "GET" */
    const char *url;    /* absolute */
    /* Request headers, "Name: value" each; the transfer takes ownership (curl_slist_free_all
     * when it ends). Content-Length is set by the transfer from body_len; do not pass it. */
    /* Ownership is taken even when upstream_start fails. "Expect:" (no 100-continue wait)
     * and, for a body without a Content-Type, "Content-Type:" (no invented form type) are
     * appended unless the list already names them. */
    struct curl_slist *headers;
    const char *body; /* borrowed: must stay valid until on_done or upstream_cancel */
    size_t body_len;
    long timeout_secs;         /* whole transfer; 0 = none */
    long connect_timeout_secs; /* 0 = curl's default */
};

#define UPSTREAM_DATA_OK    0
#define UPSTREAM_DATA_PAUSE 1 /* back-pressure: the same bytes come again after resume */
#define UPSTREAM_DATA_ABORT (-1)

struct upstream_callbacks {
    /* Final response's status and headers (1xx skipped). Return 0, or -1 to abort. */
    int (*on_headers)(void *ud, int status, const struct upstream_header *h, size_t n);
    /* Body bytes as they arrive (already de-chunked). UPSTREAM_DATA_*. */
    int (*on_data)(void *ud, const char *p, size_t len);
    /* Exactly once per started transfer unless it was cancelled, from the loop (never from
     * inside another libcurl callback). curl_code CURLE_OK on success; error is a short
     * human message (curl's errbuf) otherwise. The transfer is freed after it returns. */
    void (*on_done)(void *ud, CURLcode curl_code, const char *error);
};

/* Re-entrancy, as implemented:
 *  - on_headers/on_data run inside libcurl callbacks. From there upstream_start, _resume and
 *    _cancel are still allowed: upstream_start returns the transfer but adds it to the multi
 *    from the loop; resume is deferred to the loop; cancel silences the transfer at once (no
 *    more callbacks, not even on_done) and it is freed later from the loop. Returning ABORT
 *    (on_headers: -1) instead of cancelling gets an on_done with CURLE_WRITE_ERROR.
 *  - upstream_resume called from the loop (outside on_headers/on_data) may call on_data
 *    synchronously with the bytes held back by the pause, before it returns; never on_done.
 *  - In on_done, upstream_cancel/_resume of that transfer are no-ops; starting new transfers
 *    (retries) and cancelling others are allowed. `error` is valid during on_done only.
 *  - upstream_free must not be called from any of these callbacks.
 * timeout_secs covers the whole transfer, time spent paused included. */

struct upstream *upstream_new(struct ev_loop *loop);
/* Cancels every transfer (no callbacks) and frees; NULL-safe. */
void upstream_free(struct upstream *u);

/* Starts a transfer. NULL with a message in err on failure (no callbacks then). */
struct upstream_xfer *upstream_start(struct upstream *u, const struct upstream_request *req,
                                     const struct upstream_callbacks *cb, void *ud, char *err,
                                     size_t errlen);
/* Resumes a transfer paused by UPSTREAM_DATA_PAUSE (safe to call from any callback of the
 * loop, not from inside on_data). */
void upstream_resume(struct upstream_xfer *x);
/* Stops the transfer at once (e.g. the client disconnected): no further callbacks, the
 * connection is closed rather than reused if mid-response. NULL-safe. */
void upstream_cancel(struct upstream_xfer *x);
size_t upstream_active(const struct upstream *u);

/* curl_global_init/cleanup: once per process, from main before/after the threads. */
int upstream_global_init(void);
void upstream_global_cleanup(void);

#endif
