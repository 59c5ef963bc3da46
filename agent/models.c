#include "models.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "log.h"
#include "proxy.h"
#include "settings.h"
#include "upstream.h"

#define MODELS_MAX_PROVIDERS 32

struct models_cache_entry {
    struct engine_gen *gen; /* reference: the entry is only valid for this generation */
    double at;
    char *body;
    size_t len;
};

struct models_cache {
    struct models_cache_entry e[2]; /* [0] OpenAI shape, [1] Anthropic shape */
};

struct models_req;

struct models_sub {
    struct models_req *m;
    const struct agent_provider *prov;
    struct upstream_xfer *xfer;
    struct lr_buf body;
    int status;
    bool ok;
};

struct models_req {
    struct proxy_ctx *px;
    struct engine_conn *conn;
    struct engine_gen *gen;
    int anthropic;
    bool cacheable;
    size_t n, pending;
    struct models_sub sub[MODELS_MAX_PROVIDERS];
};

struct models_cache *models_cache_new(void)
{
    return calloc(1, sizeof(struct models_cache));
}

static void entry_clear(struct models_cache_entry *e)
{
    engine_gen_unref(e->gen);
    free(e->body);
    memset(e, 0, sizeof(*e));
}

void models_cache_free(struct models_cache *m)
{
    if (!m)
        return;
    entry_clear(&m->e[0]);
    entry_clear(&m->e[1]);
    free(m);
}

/* ---- pure merge ---- */

static json_int_t parse_rfc3339(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                     &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    return t < 0 ? 0 : (json_int_t)t;
}

static json_t *format_rfc3339(json_int_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char buf[32];
    if (!gmtime_r(&tt, &tm) || !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm))
        return json_string("1970-01-01T00:00:00Z");
    return json_string(buf);
}

int models_merge(json_t *data, json_t *seen, const char *body, size_t len, int anthropic,
                 const char *provider)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *arr = json_is_object(root) ? json_object_get(root, "data") : NULL;
    if (!json_is_array(arr)) {
        json_decref(root);
        return -1;
    }
    int added = 0;
    size_t i;
    json_t *it;
    json_array_foreach(arr, i, it)
    {
        const char *id = json_string_value(json_object_get(it, "id"));
        if (!id || !*id || json_object_get(seen, id))
            continue;
        json_t *created = json_object_get(it, "created");
        const char *created_at = json_string_value(json_object_get(it, "created_at"));
        json_int_t ts =
            json_is_integer(created) ? json_integer_value(created) : parse_rfc3339(created_at);
        json_t *o;
        if (anthropic) {
            const char *dn = json_string_value(json_object_get(it, "display_name"));
            o = json_pack("{s:s,s:s,s:s,s:o}", "type", "model", "id", id, "display_name",
                          dn ? dn : id, "created_at",
                          created_at ? json_string(created_at) : format_rfc3339(ts));
        } else {
            const char *ob = json_string_value(json_object_get(it, "owned_by"));
            o = json_pack("{s:s,s:s,s:I,s:s}", "id", id, "object", "model", "created", ts,
                          "owned_by", ob ? ob : provider);
        }
        if (!o || json_array_append_new(data, o) < 0 ||
            json_object_set_new(seen, id, json_true()) < 0)
            continue;
        added++;
    }
    json_decref(root);
    return added;
}

json_t *models_document(json_t *data, int anthropic)
{
    if (!anthropic)
        return json_pack("{s:s,s:O}", "object", "list", "data", data);
    size_t n = json_array_size(data);
    json_t *first = n ? json_object_get(json_array_get(data, 0), "id") : NULL;
    json_t *last = n ? json_object_get(json_array_get(data, n - 1), "id") : NULL;
    return json_pack("{s:O,s:b,s:O,s:O}", "data", data, "has_more", 0, "first_id",
                     first ? first : json_null(), "last_id", last ? last : json_null());
}

/* ---- the request ---- */

static void models_free(struct models_req *m)
{
    for (size_t i = 0; i < m->n; i++) {
        upstream_cancel(m->sub[i].xfer);
        lr_buf_free(&m->sub[i].body);
    }
    engine_gen_unref(m->gen);
    free(m);
}

static void models_gone(void *ud)
{
    struct models_req *m = ud;
    m->conn = NULL;
    models_free(m);
}

static void models_drain(void *ud)
{
    (void)ud;
}

static const struct engine_owner_ops models_owner_ops = {models_gone, models_drain};

static void models_finish(struct models_req *m)
{
    json_t *data = json_array(), *seen = json_object();
    size_t ok = 0;
    for (size_t i = 0; i < m->n && data && seen; i++) {
        struct models_sub *s = &m->sub[i];
        if (!s->ok)
            continue;
        if (models_merge(data, seen, s->body.data ? (const char *)s->body.data : "", s->body.len,
                         m->anthropic, s->prov->name) < 0) {
            lr_info("models: %s answered something that is not a model list", s->prov->name);
            continue;
        }
        ok++;
    }
    json_t *doc = ok ? models_document(data, m->anthropic) : NULL;
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    json_decref(data);
    json_decref(seen);
    if (!body) {
        engine_conn_respond_error(m->conn, 502, "No provider returned a model list");
        models_free(m);
        return;
    }
    size_t len = strlen(body);
    engine_conn_respond(m->conn, 200, "application/json", body, len);
    if (m->cacheable && ok == m->n) {
        struct models_cache_entry *e = &m->px->models->e[m->anthropic ? 1 : 0];
        entry_clear(e);
        e->gen = engine_gen_ref(m->gen);
        e->at = proxy_now();
        e->body = body;
        e->len = len;
        body = NULL;
    }
    free(body);
    models_free(m);
}

static int models_on_headers(void *ud, int status, const struct upstream_header *h, size_t n)
{
    (void)h;
    (void)n;
    struct models_sub *s = ud;
    s->status = status;
    return 0;
}

static int models_on_data(void *ud, const char *p, size_t len)
{
    struct models_sub *s = ud;
    if (s->body.len + len > MODELS_MAX_BODY || lr_buf_append(&s->body, p, len) < 0)
        return UPSTREAM_DATA_ABORT;
    return UPSTREAM_DATA_OK;
}

static void models_on_done(void *ud, CURLcode code, const char *error)
{
    struct models_sub *s = ud;
    struct models_req *m = s->m;
    s->xfer = NULL;
    s->ok = code == CURLE_OK && s->status >= 200 && s->status < 300;
    if (!s->ok)
        lr_info("models: %s failed: %s (status %d)", s->prov->name,
                code != CURLE_OK ? (error && *error ? error : curl_easy_strerror(code)) : "http",
                s->status);
    if (--m->pending == 0)
        models_finish(m);
}

static const struct upstream_callbacks models_callbacks = {models_on_headers, models_on_data,
                                                           models_on_done};

void models_handle(struct proxy_ctx *px, struct engine_conn *c,
                   const struct engine_http_request *req)
{
    struct engine_gen *g = px->gen ? *px->gen : NULL;
    if (!g) {
        engine_conn_respond_error(c, 503, "Settings are not loaded");
        return;
    }
    int anthropic = engine_http_find_header(req, "anthropic-version") != NULL;
    struct models_cache_entry *e = &px->models->e[anthropic ? 1 : 0];
    double now = proxy_now();
    if (e->body && e->gen == g && now - e->at < MODELS_CACHE_SECS) {
        engine_conn_respond(c, 200, "application/json", e->body, e->len);
        return;
    }
    struct models_req *m = calloc(1, sizeof(*m));
    if (!m) {
        engine_conn_respond_error(c, 503, "Out of memory");
        return;
    }
    m->px = px;
    m->conn = c;
    m->gen = engine_gen_ref(g);
    m->anthropic = anthropic;
    m->cacheable = true;
    const struct agent_settings *s = g->settings;
    for (size_t i = 0; i < s->n_providers && m->n < MODELS_MAX_PROVIDERS; i++) {
        const struct agent_provider *p = &s->providers[i];
        if (!p->enabled || (p->type == AGENT_PROVIDER_OPENAI && !g->serve_openai) ||
            (p->type == AGENT_PROVIDER_ANTHROPIC && !g->serve_anthropic))
            continue;
        if (!engine_gen_key(g, p))
            m->cacheable = false; /* fetched with the client's credentials */
        struct models_sub *sub = &m->sub[m->n++];
        sub->m = m;
        sub->prov = p;
    }
    if (m->n == 0) {
        static const char empty_oa[] = "{\"object\":\"list\",\"data\":[]}";
        static const char empty_an[] =
            "{\"data\":[],\"has_more\":false,\"first_id\":null,\"last_id\":null}";
        engine_conn_respond(c, 200, "application/json", anthropic ? empty_an : empty_oa,
                            anthropic ? sizeof(empty_an) - 1 : sizeof(empty_oa) - 1);
        models_free(m);
        return;
    }
    engine_conn_own(c, &models_owner_ops, m);
    struct lr_buf url = {0};
    for (size_t i = 0; i < m->n; i++) {
        struct models_sub *sub = &m->sub[i];
        bool ok = true;
        char err[256] = "no upstream";
        lr_buf_reset(&url);
        struct curl_slist *h = proxy_upstream_headers(
            g, sub->prov, req,
            sub->prov->type == AGENT_PROVIDER_ANTHROPIC ? ROUTER_ANTHROPIC : ROUTER_OPENAI, &ok);
        if (lr_buf_printf(&url, "%s/v1/models", sub->prov->base_url) < 0)
            ok = false;
        if (ok && px->up) {
            struct upstream_request ur = {
                .method = "GET",
                .url = (const char *)url.data,
                .headers = h,
                .timeout_secs = (long)(sub->prov->timeout_secs < 30 ? sub->prov->timeout_secs : 30),
                .connect_timeout_secs = (long)sub->prov->connect_timeout_secs,
            };
            h = NULL;
            sub->xfer = upstream_start(px->up, &ur, &models_callbacks, sub, err, sizeof(err));
        }
        curl_slist_free_all(h);
        if (sub->xfer)
            m->pending++;
        else
            lr_info("models: cannot ask %s: %s", sub->prov->name, ok ? err : "out of memory");
    }
    lr_buf_free(&url);
    if (m->pending == 0)
        models_finish(m);
}
