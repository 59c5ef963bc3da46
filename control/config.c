/* The configuration model of lunaroute-control (DESIGN §6).
 *
 * Layers, applied in this order: built-in defaults, the YAML file (libyaml document API,
 * ${VAR} expanded per scalar), the environment (LUNAROUTE_* overrides and the two
 * well-known API-key variables), then cross-field validation. Every error is collected
 * with its position so `validate` can show all of them at once.
 *
 * LunaRoute compatibility (github.com/erans/lunaroute):
 *  - crates/lunaroute-server/src/config.rs (ServerConfig, ProviderSettings,
 *    HttpClientSettings, HttpServerSettings, BypassConfig, LoggingConfig, RoutingConfig)
 *  - crates/lunaroute-routing/src/strategy.rs (RoutingStrategy: `type` round-robin |
 *    weighted-round-robin | limits-alternative, `providers`, `primary_providers`,
 *    `alternative_providers`, `exponential_backoff_base_secs`, WeightedProvider {id, weight})
 *  - crates/lunaroute-routing/README.md and examples/configs (YAML) (provider `type`,
 *    provider-level `timeout_secs`/`max_retries`, `$VAR` api keys, rule `matcher:
 *    {model_pattern | always}`, circuit_breaker `timeout_secs`)
 * Keys LunaRoute has but we do not use are accepted and ignored; they are listed
 * explicitly in the key tables below, so a typo is still an error. */
#include "config.h"

#include "log.h"
#include "lr_defaults.h"
#include "lr_regex.h"

#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define CFG_MAX_ERRORS      64
#define CFG_MAX_PROVIDERS   64
#define CFG_MAX_RULES       256
#define CFG_MAX_LIST        64
#define CFG_MAX_EXTRA_PATHS 256
#define CFG_MAX_BOLTIN_LIST 64
#define CFG_MAX_FILE_BYTES  (4u << 20)
#define CFG_SHOW_MAX        64 /* longest user text echoed in a message */

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------------------------------
 * Enum names */

static const char *const dialect_names[CFG_DIALECT_COUNT] = {"openai", "anthropic", "both"};
static const char *const ptype_names[CFG_PROVIDER_TYPE_COUNT] = {"openai", "anthropic"};
static const char *const fmode_names[CFG_FAILURE_MODE_COUNT] = {"static", "reject"};
static const char *const strategy_names[CFG_STRATEGY_COUNT] = {
    "", "round-robin", "weighted-round-robin", "limits-alternative"};

const char *cfg_dialect_to_str(unsigned d)
{
    return d < CFG_DIALECT_COUNT ? dialect_names[d] : "?";
}

const char *cfg_provider_type_to_str(unsigned t)
{
    return t < CFG_PROVIDER_TYPE_COUNT ? ptype_names[t] : "?";
}

const char *cfg_failure_mode_to_str(unsigned m)
{
    return m < CFG_FAILURE_MODE_COUNT ? fmode_names[m] : "?";
}

const char *cfg_strategy_to_str(unsigned s)
{
    return s < CFG_STRATEGY_COUNT ? strategy_names[s] : "?";
}

static int enum_from_str(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (names[i][0] && strcasecmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

const char *cfg_getenv_process(const char *name, void *ud)
{
    (void)ud;
    return getenv(name);
}

/* ---------------------------------------------------------------------------------------
 * Loader context and error collection */

/* Where a value that is checked against others came from: the file, an env var, or the
 * built-in defaults (all zero). */
struct src {
    int line, col;
    const char *env;
};

enum { BIND_HAPROXY = 0, BIND_STATS, BIND_SPOA, BIND_ENGINE, BIND_COUNT };
static const char *const bind_keys[BIND_COUNT] = {"haproxy.bind", "haproxy.stats_bind",
                                                  "agent.spoa_bind", "agent.engine_bind"};

struct ctx {
    const char *file; /* name used in file positions */
    yaml_document_t *doc;
    cfg_getenv_fn env;
    void *env_ud;
    struct cfg_errors *errs;
    struct lr_config *c;
    bool oom;
    bool too_many;
    char **secrets; /* values that must never appear in an error message */
    size_t n_secrets;
    struct src bypass_provider_src;
    struct src bind_src[BIND_COUNT];
    bool bind_ok[BIND_COUNT];
    struct cfg_pos *primary_pos; /* parallel to c->rules */
};

static void *xcalloc(struct ctx *x, size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p)
        x->oom = true;
    return p;
}

static char *xstrdup(struct ctx *x, const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        x->oom = true;
    return p;
}

static char *xstrndup(struct ctx *x, const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (!p)
        x->oom = true;
    return p;
}

static void set_str(struct ctx *x, char **dst, const char *s)
{
    free(*dst);
    *dst = s ? xstrdup(x, s) : NULL;
}

__attribute__((format(printf, 5, 0))) static void
add_errv(struct ctx *x, const char *file, int line, int col, const char *fmt, va_list ap)
{
    if (x->too_many)
        return;
    struct cfg_errors *e = x->errs;
    if (e->n >= CFG_MAX_ERRORS) {
        x->too_many = true;
        fmt = "too many errors; stopping here";
        file = NULL;
        line = col = 0;
    }
    struct cfg_error *v = realloc(e->v, (e->n + 1) * sizeof(*v));
    if (!v) {
        x->oom = true;
        return;
    }
    e->v = v;
    char buf[512];
    if (x->too_many)
        snprintf(buf, sizeof(buf), "%s", fmt);
    else
        vsnprintf(buf, sizeof(buf), fmt, ap);
    struct cfg_error *err = &e->v[e->n];
    err->file = file ? strdup(file) : NULL;
    err->line = file ? line : 0;
    err->col = file ? col : 0;
    err->msg = strdup(buf);
    if (!err->msg || (file && !err->file)) {
        free(err->file);
        free(err->msg);
        x->oom = true;
        return;
    }
    e->n++;
}

__attribute__((format(printf, 3, 4))) static void err_node(struct ctx *x, const yaml_node_t *n,
                                                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (n)
        add_errv(x, x->file, (int)n->start_mark.line + 1, (int)n->start_mark.column + 1, fmt, ap);
    else
        add_errv(x, NULL, 0, 0, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 2, 3))) static void err_plain(struct ctx *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_errv(x, NULL, 0, 0, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 4, 5))) static void err_at(struct ctx *x, int line, int col,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_errv(x, x->file, line, col, fmt, ap);
    va_end(ap);
}

/* An error about a value whose origin is `s`: "VAR: message" for the environment. */
__attribute__((format(printf, 3, 4))) static void err_src(struct ctx *x, const struct src *s,
                                                          const char *fmt, ...)
{
    char buf[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (s->env)
        err_plain(x, "%s: %s", s->env, buf);
    else if (s->line > 0)
        err_at(x, s->line, s->col, "%s", buf);
    else
        err_plain(x, "%s", buf);
}

static void add_secret(struct ctx *x, const char *s)
{
    if (!s || strlen(s) < 3) /* shorter "secrets" would redact ordinary words */
        return;
    char **v = realloc(x->secrets, (x->n_secrets + 1) * sizeof(*v));
    if (!v) {
        x->oom = true;
        return;
    }
    x->secrets = v;
    if ((v[x->n_secrets] = xstrdup(x, s)))
        x->n_secrets++;
}

/* Belt and braces: no message should echo a secret, but if one ever does, cut it out. */
static void scrub_errors(struct ctx *x)
{
    for (size_t i = 0; i < x->errs->n; i++) {
        char *m = x->errs->v[i].msg;
        for (size_t k = 0; k < x->n_secrets; k++) {
            char *hit;
            size_t sl = strlen(x->secrets[k]);
            while ((hit = strstr(m, x->secrets[k]))) {
                memset(hit, '*', sl);
                static const char red[] = "[redacted]";
                if (sl >= sizeof(red) - 1) {
                    memcpy(hit, red, sizeof(red) - 1);
                    memmove(hit + sizeof(red) - 1, hit + sl, strlen(hit + sl) + 1);
                }
            }
        }
    }
}

void cfg_errors_free(struct cfg_errors *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].file);
        free(e->v[i].msg);
    }
    free(e->v);
    e->v = NULL;
    e->n = 0;
}

int cfg_error_format(const struct cfg_error *e, char *buf, size_t len)
{
    if (e->file && e->line > 0)
        return snprintf(buf, len, "%s:%d:%d: %s", e->file, e->line, e->col, e->msg);
    if (e->file)
        return snprintf(buf, len, "%s: %s", e->file, e->msg);
    return snprintf(buf, len, "%s", e->msg);
}

/* ---------------------------------------------------------------------------------------
 * Small parsers shared by the file and the environment */

/* Text shown in a message: at most CFG_SHOW_MAX bytes, printable ASCII only. */
static const char *show(const char *s, char *buf, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; s[i] && j + 4 < len; i++) {
        if (i >= CFG_SHOW_MAX) {
            buf[j++] = '.';
            buf[j++] = '.';
            buf[j++] = '.';
            break;
        }
        unsigned char ch = (unsigned char)s[i];
        buf[j++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    buf[j] = 0;
    return buf;
}
#define SHOW(s) show((s), (char[CFG_SHOW_MAX + 8]){0}, CFG_SHOW_MAX + 8)

static int parse_bool_word(const char *s, bool *out)
{
    static const char *const t[] = {"true", "1", "yes", "on"};
    static const char *const f[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        if (strcasecmp(s, t[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, f[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Decimal integer, optional leading '-' when allow_neg. -1 when not an integer,
 * -2 when out of [min, max]. */
static int parse_int_range(const char *s, long long min, long long max, long long *out)
{
    const char *p = s;
    bool neg = false;
    if (*p == '+')
        p++;
    else if (*p == '-') {
        neg = true;
        p++;
    }
    if (!*p)
        return -1;
    unsigned long long v = 0;
    bool big = false;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        if (v > (ULLONG_MAX - 9) / 10)
            big = true;
        else
            v = v * 10 + (unsigned)(*p - '0');
    }
    if (big || v > (unsigned long long)LLONG_MAX)
        return -2;
    long long r = neg ? -(long long)v : (long long)v;
    if (r < min || r > max)
        return -2;
    *out = r;
    return 0;
}

static bool is_var_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static bool is_var_char(char c)
{
    return is_var_start(c) || (c >= '0' && c <= '9');
}

static bool valid_provider_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 48)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool valid_host_chars(const char *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return false;
    }
    return true;
}

static bool valid_ipv6_chars(const char *h, size_t n)
{
    if (n < 2)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9') ||
              c == ':' || c == '.'))
            return false;
    }
    return strchr(h, ':') && memchr(h, ':', n);
}

static int parse_port(const char *s, size_t n, unsigned *out)
{
    if (n == 0 || n > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *out = v;
    return 0;
}

struct url_parts {
    bool tls;
    char *host;
    unsigned port;
    char *path;
    char *normalized;
};

static void url_parts_free(struct url_parts *u)
{
    free(u->host);
    free(u->path);
    free(u->normalized);
    memset(u, 0, sizeof(*u));
}

/* base_url: http(s)://host[:port][/prefix], no credentials, query or fragment. The
 * normalized form drops trailing '/' and one trailing "/v1" (LunaRoute writes
 * "https://api.openai.com/v1"; our engine appends "/v1/..." itself). Returns NULL on
 * success or a static reason. */
static const char *parse_base_url(const char *in, struct url_parts *u)
{
    memset(u, 0, sizeof(*u));
    const char *p;
    if (strncasecmp(in, "https://", 8) == 0) {
        u->tls = true;
        p = in + 8;
    } else if (strncasecmp(in, "http://", 7) == 0) {
        p = in + 7;
    } else
        return "must start with http:// or https://";
    if (strpbrk(in, "?#"))
        return "must not contain a query string or fragment";
    for (const char *q = in; *q; q++)
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
            return "must not contain spaces or control characters";
    size_t alen = strcspn(p, "/");
    const char *path = p + alen;
    if (memchr(p, '@', alen))
        return "must not contain credentials (user:password@)";
    if (alen == 0)
        return "has no host";
    const char *host;
    size_t hlen;
    const char *port = NULL;
    size_t plen = 0;
    if (p[0] == '[') {
        const char *rb = memchr(p, ']', alen);
        if (!rb)
            return "has an unterminated IPv6 address '['";
        host = p + 1;
        hlen = (size_t)(rb - host);
        if (!valid_ipv6_chars(host, hlen))
            return "has an invalid IPv6 address";
        const char *after = rb + 1;
        if (after < p + alen) {
            if (*after != ':')
                return "has an invalid host";
            port = after + 1;
            plen = (size_t)(p + alen - port);
        }
    } else {
        const char *colon = memchr(p, ':', alen);
        if (colon) {
            port = colon + 1;
            plen = (size_t)(p + alen - port);
            if (memchr(port, ':', plen))
                return "has an IPv6 address that is not in brackets";
            hlen = (size_t)(colon - p);
        } else
            hlen = alen;
        host = p;
        if (hlen == 0)
            return "has no host";
        if (!valid_host_chars(host, hlen))
            return "has an invalid host";
    }
    unsigned pnum = u->tls ? 443 : 80;
    if (port && parse_port(port, plen, &pnum) != 0)
        return "has an invalid port (1-65535)";
    size_t pathlen = strlen(path);
    while (pathlen > 0 && path[pathlen - 1] == '/')
        pathlen--;
    if (pathlen >= 3 && memcmp(path + pathlen - 3, "/v1", 3) == 0)
        pathlen -= 3;
    while (pathlen > 0 && path[pathlen - 1] == '/')
        pathlen--;
    u->port = pnum;
    u->host = strndup(host, hlen);
    u->path = strndup(path, pathlen);
    if (!u->host || !u->path) {
        url_parts_free(u);
        return "out of memory";
    }
    for (char *h = u->host; *h; h++)
        if (*h >= 'A' && *h <= 'Z')
            *h = (char)(*h - 'A' + 'a');
    size_t need = 8 + hlen + 2 + 6 + pathlen + 1;
    u->normalized = malloc(need);
    if (!u->normalized) {
        url_parts_free(u);
        return "out of memory";
    }
    bool v6 = strchr(u->host, ':') != NULL;
    char portbuf[8] = "";
    if (port)
        snprintf(portbuf, sizeof(portbuf), ":%u", pnum);
    snprintf(u->normalized, need, "%s://%s%s%s%s%s", u->tls ? "https" : "http", v6 ? "[" : "",
             u->host, v6 ? "]" : "", portbuf, u->path);
    return NULL;
}

/* host:port for a listener. host may be empty or "*" (all addresses), a name, an IPv4
 * address, or an IPv6 address in brackets. */
static const char *parse_bind(const char *s, char **host_out, unsigned *port_out)
{
    const char *colon;
    const char *host = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb)
            return "has an unterminated IPv6 address '['";
        host = s + 1;
        hlen = (size_t)(rb - host);
        if (!valid_ipv6_chars(host, hlen))
            return "has an invalid IPv6 address";
        if (rb[1] != ':')
            return "must be host:port";
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return "must be host:port";
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen))
            return "has an IPv6 address that is not in brackets";
        if (!(hlen == 1 && s[0] == '*') && !valid_host_chars(s, hlen))
            return "has an invalid host";
    }
    unsigned port;
    if (parse_port(colon + 1, strlen(colon + 1), &port) != 0)
        return "has an invalid port (1-65535)";
    if (host_out) {
        *host_out = strndup(host, hlen);
        if (!*host_out)
            return "out of memory";
    }
    if (port_out)
        *port_out = port;
    return NULL;
}

static bool wildcard_host(const char *h)
{
    return !*h || strcmp(h, "*") == 0 || strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* ---------------------------------------------------------------------------------------
 * Built-in defaults */

static int provider_set_url(struct cfg_provider *p, const char *url, const char **why)
{
    struct url_parts u;
    const char *e = parse_base_url(url, &u);
    if (e) {
        *why = e;
        return -1;
    }
    free(p->base_url);
    free(p->host);
    free(p->path_prefix);
    p->base_url = u.normalized;
    p->host = u.host;
    p->path_prefix = u.path;
    p->tls = u.tls;
    p->port = u.port;
    return 0;
}

static const char *default_url(enum cfg_provider_type t)
{
    return t == CFG_PROVIDER_ANTHROPIC ? "https://api.anthropic.com" : "https://api.openai.com";
}

static struct cfg_provider *provider_add(struct ctx *x, const char *name, enum cfg_provider_type t)
{
    struct lr_config *c = x->c;
    struct cfg_provider *v = realloc(c->providers, (c->n_providers + 1) * sizeof(*v));
    if (!v) {
        x->oom = true;
        return NULL;
    }
    c->providers = v;
    struct cfg_provider *p = &v[c->n_providers];
    memset(p, 0, sizeof(*p));
    p->name = xstrdup(x, name);
    if (!p->name)
        return NULL;
    c->n_providers++;
    p->type = t;
    p->enabled = true;
    p->timeout_secs = 600;
    p->connect_timeout_secs = 10;
    p->max_retries = 3;
    const char *why;
    if (provider_set_url(p, default_url(t), &why) != 0)
        x->oom = true;
    return p;
}

static void provider_free(struct cfg_provider *p)
{
    free(p->name);
    free(p->base_url);
    free(p->host);
    free(p->path_prefix);
    free(p->api_key);
    free(p->api_key_env);
}

static void set_defaults(struct ctx *x)
{
    struct lr_config *c = x->c;
    c->dialect = CFG_DIALECT_BOTH;
    provider_add(x, "openai", CFG_PROVIDER_OPENAI);
    provider_add(x, "anthropic", CFG_PROVIDER_ANTHROPIC);
    c->bypass_enabled = true;
    c->bypass_provider = xstrdup(x, "auto");
    c->circuit_breaker.failure_threshold = 5;
    c->circuit_breaker.success_threshold = 2;
    c->circuit_breaker.open_secs = 60;
    c->provider_switch_notification.enabled = false;
    c->provider_switch_notification.default_message =
        xstrdup(x, "Note: this request was handled by an alternative AI provider because the "
                   "usual one failed. Continue normally.");
    c->http_server.max_request_body_bytes = 104857600;
    c->http_server.sse_keepalive_interval_secs = 15;
    c->translation.default_max_tokens = 4096;
    c->haproxy.bind = xstrdup(x, "127.0.0.1:8080");
    c->haproxy.stats_bind = xstrdup(x, "127.0.0.1:8404");
    c->haproxy.maxconn = 4000;
    c->haproxy.failure_mode = CFG_FAILURE_STATIC;
    c->agent.spoa_bind = xstrdup(x, "127.0.0.1:12345");
    c->agent.engine_bind = xstrdup(x, "127.0.0.1:8081");
    c->agent.admin_socket = NULL;
    c->agent.threads = 1;
    c->boltin.path_prefixes = xcalloc(x, 1, sizeof(char *));
    if (c->boltin.path_prefixes && (c->boltin.path_prefixes[0] = xstrdup(x, "/v1/")))
        c->boltin.n_path_prefixes = 1;
    c->run_dir = xstrdup(x, "./run");
    c->log_level = xstrdup(x, "info");
    for (int i = 0; i < BIND_COUNT; i++)
        x->bind_ok[i] = true;
}

/* ---------------------------------------------------------------------------------------
 * YAML value access */

static yaml_node_t *node(struct ctx *x, int id)
{
    return yaml_document_get_node(x->doc, id);
}

static bool is_null(const yaml_node_t *n)
{
    if (!n)
        return true;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = (const char *)n->data.scalar.value;
    return n->data.scalar.length == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* The raw text of a scalar, or NULL with an error when n is not a scalar or holds a NUL. */
static const char *raw_scalar(struct ctx *x, yaml_node_t *n, const char *path, const char *what)
{
    if (n->type != YAML_SCALAR_NODE) {
        err_node(x, n, "%s: expected %s", path, what);
        return NULL;
    }
    const char *s = (const char *)n->data.scalar.value;
    if (strlen(s) != n->data.scalar.length) {
        err_node(x, n, "%s: contains a NUL character", path);
        return NULL;
    }
    return s;
}

/* "${NAME}", "${NAME:-default}" or (api keys only, LunaRoute's form) "$NAME": the name
 * of the variable when the whole scalar is one reference. */
static char *whole_var_ref(struct ctx *x, const char *s, bool allow_bare)
{
    size_t n = strlen(s);
    if (s[0] != '$')
        return NULL;
    if (s[1] == '{' && n > 3 && s[n - 1] == '}' && is_var_start(s[2])) {
        size_t i = 2;
        while (is_var_char(s[i]))
            i++;
        if (s[i] == '}' && i == n - 1)
            return xstrndup(x, s + 2, i - 2);
        if (s[i] == ':' && s[i + 1] == '-' && !memchr(s + i, '}', n - 1 - i))
            return xstrndup(x, s + 2, i - 2);
        return NULL;
    }
    if (allow_bare && is_var_start(s[1])) {
        for (size_t i = 1; i < n; i++)
            if (!is_var_char(s[i]))
                return NULL;
        return xstrdup(x, s + 1);
    }
    return NULL;
}

/* Expands ${VAR} and ${VAR:-default} in a scalar. An unset variable without a default is
 * an error, except for secrets (api_key), where it just expands to "". Returns a malloc'd
 * string or NULL (error reported). */
static char *expand(struct ctx *x, yaml_node_t *n, const char *s, const char *path, bool secret)
{
    size_t cap = strlen(s) + 1, len = 0;
    char *out = malloc(cap);
    if (!out) {
        x->oom = true;
        return NULL;
    }
    bool bad = false;
    for (size_t i = 0; s[i];) {
        if (!(s[i] == '$' && s[i + 1] == '{')) {
            out[len++] = s[i++];
            continue;
        }
        const char *close = strchr(s + i + 2, '}');
        if (!close) {
            err_node(x, n, "%s: unterminated '${' (missing '}')", path);
            bad = true;
            break;
        }
        const char *name = s + i + 2;
        size_t nl = 0;
        while (name + nl < close && is_var_char(name[nl]))
            nl++;
        const char *def = NULL;
        size_t dl = 0;
        if (name + nl < close && name[nl] == ':' && name[nl + 1] == '-') {
            def = name + nl + 2;
            dl = (size_t)(close - def);
        } else if (name + nl != close)
            nl = 0; /* stray characters: invalid */
        if (nl == 0 || !is_var_start(name[0])) {
            /* never echo the text: it may be a key pasted between braces */
            err_node(x, n, "%s: invalid variable reference in '${...}'", path);
            bad = true;
            break;
        }
        char vname[128];
        if (nl >= sizeof(vname)) {
            err_node(x, n, "%s: variable name too long", path);
            bad = true;
            break;
        }
        memcpy(vname, name, nl);
        vname[nl] = 0;
        const char *val = x->env(vname, x->env_ud);
        size_t vl;
        if (val && (*val || !def)) {
            vl = strlen(val);
        } else if (def) {
            val = def;
            vl = dl;
        } else if (secret) {
            val = "";
            vl = 0;
        } else {
            err_node(x, n, "environment variable %s is not set", vname);
            bad = true;
            break;
        }
        size_t rest = strlen(close + 1);
        if (len + vl + rest + 1 > cap) {
            cap = len + vl + rest + 1;
            char *o = realloc(out, cap);
            if (!o) {
                x->oom = true;
                bad = true;
                break;
            }
            out = o;
        }
        memcpy(out + len, val, vl);
        len += vl;
        i = (size_t)(close + 1 - s);
    }
    if (bad) {
        free(out);
        return NULL;
    }
    out[len] = 0;
    return out;
}

/* A string value after expansion; NULL on error (reported). */
static char *get_string(struct ctx *x, yaml_node_t *n, const char *path)
{
    const char *s = raw_scalar(x, n, path, "a string");
    return s ? expand(x, n, s, path, false) : NULL;
}

/* For a message about a value that came out of ${VAR} expansion: " (from ${NAME})", so
 * a bad environment value is traced to its variable; "" otherwise. */
static const char *var_note(struct ctx *x, const yaml_node_t *n, char *buf, size_t len)
{
    buf[0] = 0;
    if (n->type != YAML_SCALAR_NODE)
        return buf;
    const char *raw = (const char *)n->data.scalar.value;
    if (!strstr(raw, "${"))
        return buf;
    char *name = whole_var_ref(x, raw, false);
    if (name)
        snprintf(buf, len, " (from ${%s})", name);
    else
        snprintf(buf, len, " (after ${...} expansion)");
    free(name);
    return buf;
}
#define VAR_NOTE(n) var_note(x, (n), (char[160]){0}, 160)

static int get_bool(struct ctx *x, yaml_node_t *n, const char *path, bool *out)
{
    char *s = get_string(x, n, path);
    if (!s)
        return -1;
    int r = parse_bool_word(s, out);
    if (r != 0)
        err_node(x, n, "%s: expected a boolean (true or false)%s", path, VAR_NOTE(n));
    free(s);
    return r;
}

static int get_int(struct ctx *x, yaml_node_t *n, const char *path, long long min, long long max,
                   long long *out)
{
    if (n->type != YAML_SCALAR_NODE) {
        err_node(x, n, "%s: expected an integer", path);
        return -1;
    }
    char *s = get_string(x, n, path);
    if (!s)
        return -1;
    int r = parse_int_range(s, min, max, out);
    free(s);
    if (r == -1)
        err_node(x, n, "%s: expected an integer%s", path, VAR_NOTE(n));
    else if (r == -2)
        err_node(x, n, "%s: must be between %lld and %lld%s", path, min, max, VAR_NOTE(n));
    return r == 0 ? 0 : -1;
}

static void get_uint_into(struct ctx *x, yaml_node_t *n, const char *path, long long min,
                          long long max, unsigned *out)
{
    long long v;
    if (!is_null(n) && get_int(x, n, path, min, max, &v) == 0)
        *out = (unsigned)v;
}

static int get_enum(struct ctx *x, yaml_node_t *n, const char *path, const char *const *names,
                    size_t count, const char *list)
{
    char *s = get_string(x, n, path);
    if (!s)
        return -1;
    int r = enum_from_str(names, count, s);
    if (r < 0)
        err_node(x, n, "%s: must be one of %s (got '%s')%s", path, list, SHOW(s), VAR_NOTE(n));
    free(s);
    return r;
}

static bool expect_type(struct ctx *x, yaml_node_t *n, yaml_node_type_t t, const char *path)
{
    if (n->type == t)
        return true;
    err_node(x, n, "%s: expected %s", path, t == YAML_MAPPING_NODE ? "a mapping" : "a list");
    return false;
}

/* Key tables: keys we handle, then LunaRoute keys we accept and ignore. */
struct keyset {
    const char *const *keys;
    size_t n;
    const char *const *ignored;
    size_t n_ignored;
};
#define KEYSET(k, ig)                                                                              \
    {                                                                                              \
        (k), ARRAY_LEN(k), (ig), ARRAY_LEN(ig)                                                     \
    }
#define KEYSET_NOIG(k)                                                                             \
    {                                                                                              \
        (k), ARRAY_LEN(k), NULL, 0                                                                 \
    }

/* Checks one mapping key: returns the key when it is one we handle, NULL when it is
 * ignored or an error (reported: not a string, unknown, duplicate). */
static const char *map_key(struct ctx *x, yaml_node_t *k, const struct keyset *ks, uint64_t *seen)
{
    if (k->type != YAML_SCALAR_NODE) {
        err_node(x, k, "mapping keys must be strings");
        return NULL;
    }
    const char *s = (const char *)k->data.scalar.value;
    size_t total = ks->n + ks->n_ignored;
    for (size_t i = 0; i < total; i++) {
        bool ign = i >= ks->n;
        const char *name = ign ? ks->ignored[i - ks->n] : ks->keys[i];
        if (strcmp(s, name) != 0)
            continue;
        if (*seen & (1ull << i)) {
            err_node(x, k, "duplicate key '%s'", name);
            return NULL;
        }
        *seen |= 1ull << i;
        return ign ? NULL : name;
    }
    const char *best = NULL;
    size_t bestd = SIZE_MAX;
    for (size_t i = 0; i < total; i++) {
        const char *name = i >= ks->n ? ks->ignored[i - ks->n] : ks->keys[i];
        size_t d = edit_distance(s, name);
        if (d < bestd) {
            bestd = d;
            best = name;
        }
    }
    size_t sl = strlen(s);
    if (best && bestd <= (sl > 8 ? 3u : 2u) && bestd < sl)
        err_node(x, k, "unknown key '%s' (did you mean '%s'?)", SHOW(s), best);
    else
        err_node(x, k, "unknown key '%s'", SHOW(s));
    return NULL;
}

#define FOR_PAIRS(x, n, kvar, vvar)                                                                \
    for (yaml_node_pair_t *pair_##kvar = (n)->data.mapping.pairs.start;                            \
         pair_##kvar < (n)->data.mapping.pairs.top &&                                              \
         ((kvar) = node((x), pair_##kvar->key), (vvar) = node((x), pair_##kvar->value), 1);        \
         pair_##kvar++)

/* ---------------------------------------------------------------------------------------
 * Sections */

static const char *const http_client_keys[] = {"timeout_secs", "connect_timeout_secs",
                                               "max_retries"};
static const char *const http_client_ignored[] = {"pool_max_idle_per_host",
                                                  "pool_idle_timeout_secs", "tcp_keepalive_secs",
                                                  "enable_pool_metrics"};

static void parse_timeouts(struct ctx *x, const char *key, yaml_node_t *v, const char *base,
                           struct cfg_provider *p)
{
    char path[160];
    snprintf(path, sizeof(path), "%s.%s", base, key);
    if (strcmp(key, "timeout_secs") == 0)
        get_uint_into(x, v, path, 1, 86400, &p->timeout_secs);
    else if (strcmp(key, "connect_timeout_secs") == 0)
        get_uint_into(x, v, path, 1, 86400, &p->connect_timeout_secs);
    else if (strcmp(key, "max_retries") == 0)
        get_uint_into(x, v, path, 0, 10, &p->max_retries);
}

static void parse_api_key(struct ctx *x, yaml_node_t *v, const char *path, struct cfg_provider *p)
{
    if (is_null(v))
        return;
    const char *raw = raw_scalar(x, v, path, "a string");
    if (!raw)
        return;
    char *var = whole_var_ref(x, raw, true);
    char *val;
    if (var && raw[1] != '{') { /* LunaRoute's bare "$NAME" */
        const char *e = x->env(var, x->env_ud);
        val = xstrdup(x, e ? e : "");
    } else
        val = expand(x, v, raw, path, true);
    if (!var)
        add_secret(x, raw); /* a literal key */
    if (!val) {
        free(var);
        return;
    }
    add_secret(x, val);
    free(p->api_key);
    free(p->api_key_env);
    p->api_key = NULL;
    p->api_key_env = NULL;
    if (!*val) { /* unset or empty: client credentials pass through */
        free(val);
        free(var);
        return;
    }
    p->api_key = val;
    if (var) {
        p->api_key_env = var;
        return;
    }
    size_t nl = strlen(p->name);
    p->api_key_env = xcalloc(x, nl + 32, 1);
    if (!p->api_key_env)
        return;
    char *o = p->api_key_env;
    o += sprintf(o, "LUNAROUTE_");
    for (size_t i = 0; i < nl; i++) {
        char ch = p->name[i];
        if (ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        else if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')))
            ch = '_';
        *o++ = ch;
    }
    strcpy(o, "_API_KEY");
}

static void parse_provider(struct ctx *x, yaml_node_t *kn, yaml_node_t *vn)
{
    static const char *const keys[] = {
        "enabled",      "provider_type",        "type",       "base_url", "api_key", "http_client",
        "timeout_secs", "connect_timeout_secs", "max_retries"};
    static const char *const ignored[] = {"request_headers",
                                          "request_body",
                                          "response_body",
                                          "codex_auth",
                                          "headers",
                                          "api_version",
                                          "switch_notification_message"};
    static const struct keyset ks = KEYSET(keys, ignored);
    static const struct keyset hks = KEYSET(http_client_keys, http_client_ignored);

    const char *name = (const char *)kn->data.scalar.value;
    if (!valid_provider_name(name)) {
        err_node(x, kn, "provider name '%s' must be 1-48 characters of [a-z0-9_-]", SHOW(name));
        return;
    }
    char path[128];
    snprintf(path, sizeof(path), "providers.%s", name);
    bool named_openai = strcmp(name, "openai") == 0;
    bool named_anthropic = strcmp(name, "anthropic") == 0;
    enum cfg_provider_type t = named_anthropic ? CFG_PROVIDER_ANTHROPIC : CFG_PROVIDER_OPENAI;
    struct cfg_provider *p = provider_add(x, name, t);
    if (!p)
        return;
    size_t idx = (size_t)(p - x->c->providers);
    p->pos.line = (int)kn->start_mark.line + 1;
    p->pos.col = (int)kn->start_mark.column + 1;
    if (is_null(vn)) {
        if (!named_openai && !named_anthropic)
            err_node(x, kn, "%s: provider_type (openai or anthropic) is required", path);
        return;
    }
    if (!expect_type(x, vn, YAML_MAPPING_NODE, path))
        return;
    yaml_node_t *type_node = NULL, *url_node = NULL, *key_node = NULL;
    int type_val = -1;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, vn, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key)
            continue;
        p = &x->c->providers[idx];
        char sub[160];
        snprintf(sub, sizeof(sub), "%s.%s", path, key);
        if (strcmp(key, "enabled") == 0) {
            if (!is_null(v))
                get_bool(x, v, sub, &p->enabled);
        } else if (strcmp(key, "provider_type") == 0 || strcmp(key, "type") == 0) {
            if (is_null(v))
                continue;
            type_node = v;
            type_val =
                get_enum(x, v, sub, ptype_names, CFG_PROVIDER_TYPE_COUNT, "openai, anthropic");
            if (type_val < 0)
                type_node = NULL;
        } else if (strcmp(key, "base_url") == 0) {
            if (!is_null(v))
                url_node = v;
        } else if (strcmp(key, "api_key") == 0) {
            key_node = v;
        } else if (strcmp(key, "http_client") == 0) {
            if (is_null(v) || !expect_type(x, v, YAML_MAPPING_NODE, sub))
                continue;
            uint64_t hseen = 0;
            yaml_node_t *hk, *hv;
            FOR_PAIRS(x, v, hk, hv)
            {
                const char *hkey = map_key(x, hk, &hks, &hseen);
                if (hkey)
                    parse_timeouts(x, hkey, hv, sub, p);
            }
        } else {
            parse_timeouts(x, key, v, path, p);
        }
    }
    p = &x->c->providers[idx];
    if (type_node) {
        if ((named_openai && type_val != CFG_PROVIDER_OPENAI) ||
            (named_anthropic && type_val != CFG_PROVIDER_ANTHROPIC))
            err_node(x, type_node, "%s: the provider named '%s' must have type %s", path, name,
                     name);
        p->type = (enum cfg_provider_type)type_val;
    } else if (!named_openai && !named_anthropic && type_val < 0) {
        err_node(x, kn, "%s: provider_type (openai or anthropic) is required", path);
    }
    const char *why = NULL;
    if (url_node) {
        char *url = get_string(x, url_node, path);
        if (url && provider_set_url(p, url, &why) != 0)
            err_node(x, url_node, "%s.base_url: %s", path, why);
        free(url);
    } else if (provider_set_url(p, default_url(p->type), &why) != 0)
        x->oom = true;
    if (key_node) {
        char sub[160];
        snprintf(sub, sizeof(sub), "%s.api_key", path);
        parse_api_key(x, key_node, sub, p);
    }
}

static void parse_providers(struct ctx *x, yaml_node_t *n)
{
    if (is_null(n))
        return; /* keep the built-in providers */
    if (!expect_type(x, n, YAML_MAPPING_NODE, "providers"))
        return;
    /* A providers: map replaces the built-in list: only the providers it names exist
     * (LunaRoute: ProvidersConfig's fields are Option and default to None when the map is
     * given). */
    struct lr_config *c = x->c;
    for (size_t i = 0; i < c->n_providers; i++)
        provider_free(&c->providers[i]);
    c->n_providers = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        if (k->type != YAML_SCALAR_NODE) {
            err_node(x, k, "mapping keys must be strings");
            continue;
        }
        const char *name = (const char *)k->data.scalar.value;
        bool dup = false;
        for (size_t i = 0; i < c->n_providers && !dup; i++)
            dup = strcmp(c->providers[i].name, name) == 0;
        if (dup) {
            err_node(x, k, "duplicate key '%s'", SHOW(name));
            continue;
        }
        if (c->n_providers >= CFG_MAX_PROVIDERS) {
            err_node(x, k, "too many providers (at most %d)", CFG_MAX_PROVIDERS);
            break;
        }
        parse_provider(x, k, v);
    }
}

static void parse_bypass(struct ctx *x, yaml_node_t *n)
{
    static const char *const keys[] = {"enabled", "provider"};
    static const struct keyset ks = KEYSET_NOIG(keys);
    if (is_null(n) || !expect_type(x, n, YAML_MAPPING_NODE, "bypass"))
        return;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key || is_null(v))
            continue; /* provider: null is LunaRoute's "first available": our auto */
        if (strcmp(key, "enabled") == 0) {
            get_bool(x, v, "bypass.enabled", &x->c->bypass_enabled);
        } else {
            char *s = get_string(x, v, "bypass.provider");
            if (s) {
                free(x->c->bypass_provider);
                x->c->bypass_provider = s;
                x->bypass_provider_src =
                    (struct src){(int)v->start_mark.line + 1, (int)v->start_mark.column + 1, NULL};
            }
        }
    }
}

static bool valid_extra_path(const char *s)
{
    if (s[0] != '/')
        return false;
    for (const char *p = s; *p; p++)
        if (strchr("?#\"'\\", *p) || (unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
            return false; /* quotes and backslashes would be parsed by HAProxy */
    return true;
}

static void parse_intercept(struct ctx *x, yaml_node_t *n)
{
    static const char *const keys[] = {"extra_paths"};
    static const struct keyset ks = KEYSET_NOIG(keys);
    if (is_null(n) || !expect_type(x, n, YAML_MAPPING_NODE, "intercept"))
        return;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        if (!map_key(x, k, &ks, &seen) || is_null(v))
            continue;
        if (!expect_type(x, v, YAML_SEQUENCE_NODE, "intercept.extra_paths"))
            continue;
        struct lr_config *c = x->c;
        size_t i = 0;
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++, i++) {
            yaml_node_t *e = node(x, *it);
            char path[64];
            snprintf(path, sizeof(path), "intercept.extra_paths[%zu]", i);
            if (c->n_extra_paths >= CFG_MAX_EXTRA_PATHS) {
                err_node(x, e, "intercept.extra_paths: too many paths (at most %d)",
                         CFG_MAX_EXTRA_PATHS);
                break;
            }
            char *s = get_string(x, e, path);
            if (!s)
                continue;
            if (!valid_extra_path(s)) {
                err_node(x, e, "%s: must start with '/' and contain no '?', '#', quotes or spaces",
                         path);
                free(s);
                continue;
            }
            char **pv = realloc(c->extra_paths, (c->n_extra_paths + 1) * sizeof(*pv));
            if (!pv) {
                free(s);
                x->oom = true;
                return;
            }
            c->extra_paths = pv;
            pv[c->n_extra_paths++] = s;
        }
    }
}

/* A provider list: plain names, or {id|provider: name, weight: n} (LunaRoute's
 * WeightedProvider). */
static void parse_targets(struct ctx *x, yaml_node_t *n, const char *path, struct cfg_target **out,
                          size_t *count)
{
    static const char *const keys[] = {"id", "provider", "weight"};
    static const struct keyset ks = KEYSET_NOIG(keys);
    if (!expect_type(x, n, YAML_SEQUENCE_NODE, path))
        return;
    size_t total = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (total > CFG_MAX_LIST) {
        err_node(x, n, "%s: too many providers (at most %d)", path, CFG_MAX_LIST);
        return;
    }
    for (size_t i = 0; i < *count; i++)
        free((*out)[i].provider);
    free(*out);
    *count = 0;
    *out = xcalloc(x, total, sizeof(**out));
    if (!*out)
        return;
    for (size_t i = 0; i < total; i++) {
        yaml_node_t *e = node(x, n->data.sequence.items.start[i]);
        char ep[160];
        snprintf(ep, sizeof(ep), "%s[%zu]", path, i);
        struct cfg_target t = {.weight = 1,
                               .pos = {(int)e->start_mark.line + 1, (int)e->start_mark.column + 1}};
        if (e->type == YAML_MAPPING_NODE) {
            uint64_t seen = 0;
            yaml_node_t *k, *v;
            FOR_PAIRS(x, e, k, v)
            {
                const char *key = map_key(x, k, &ks, &seen);
                if (!key || is_null(v))
                    continue;
                char sub[200];
                snprintf(sub, sizeof(sub), "%s.%s", ep, key);
                if (strcmp(key, "weight") == 0) {
                    long long w;
                    if (get_int(x, v, sub, 0, 1000000, &w) == 0)
                        t.weight = (unsigned)w;
                } else {
                    char *s = get_string(x, v, sub);
                    if (s) {
                        free(t.provider);
                        t.provider = s;
                        t.pos = (struct cfg_pos){(int)v->start_mark.line + 1,
                                                 (int)v->start_mark.column + 1};
                    }
                }
            }
            if (!t.provider && !(seen & 3u)) {
                err_node(x, e, "%s: needs 'id' (the provider name)", ep);
            }
        } else {
            t.provider = get_string(x, e, ep);
        }
        if (!t.provider)
            continue;
        (*out)[(*count)++] = t;
    }
}

static void target_list_free(struct cfg_target *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(t[i].provider);
    free(t);
}

static void rule_free(struct cfg_rule *r)
{
    free(r->name);
    free(r->model_pattern);
    free(r->primary);
    target_list_free(r->fallbacks, r->n_fallbacks);
    target_list_free(r->targets, r->n_targets);
    target_list_free(r->alternatives, r->n_alternatives);
}

struct rule_nodes {
    yaml_node_t *pattern, *strategy, *weights, *primary;
    yaml_node_t *targets, *alternatives;
    int strategy_val;
};

static void set_pattern(struct ctx *x, struct cfg_rule *r, struct rule_nodes *rn, yaml_node_t *v,
                        const char *path)
{
    char *s = get_string(x, v, path);
    if (!s)
        return;
    free(r->model_pattern);
    r->model_pattern = s;
    rn->pattern = v;
    regex_t re;
    char msg[128];
    if (lr_regex_compile(&re, s, REG_EXTENDED | REG_NOSUB, msg, sizeof(msg)) < 0) {
        err_node(x, v, "%s: invalid regular expression: %s", path, msg);
    } else
        regfree(&re);
}

/* LunaRoute's `strategy: {type: ..., providers: [...], primary_providers: [...],
 * alternative_providers: [...], exponential_backoff_base_secs: n}`. */
static void parse_strategy_map(struct ctx *x, struct cfg_rule *r, struct rule_nodes *rn,
                               yaml_node_t *n, const char *path)
{
    static const char *const keys[] = {"type", "providers", "primary_providers",
                                       "alternative_providers", "exponential_backoff_base_secs"};
    static const struct keyset ks = KEYSET_NOIG(keys);
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key || is_null(v))
            continue;
        char sub[200];
        snprintf(sub, sizeof(sub), "%s.%s", path, key);
        if (strcmp(key, "type") == 0) {
            rn->strategy_val = get_enum(x, v, sub, strategy_names, CFG_STRATEGY_COUNT,
                                        "round-robin, weighted-round-robin, limits-alternative");
        } else if (strcmp(key, "providers") == 0 || strcmp(key, "primary_providers") == 0) {
            rn->targets = v;
            parse_targets(x, v, sub, &r->targets, &r->n_targets);
        } else if (strcmp(key, "alternative_providers") == 0) {
            rn->alternatives = v;
            parse_targets(x, v, sub, &r->alternatives, &r->n_alternatives);
        } else {
            long long b;
            get_int(x, v, sub, 1, 86400, &b); /* validated; the engine uses its default */
        }
    }
    if (!(seen & 1u))
        err_node(x, n, "%s: needs 'type'", path);
}

static void parse_rule(struct ctx *x, yaml_node_t *n, size_t idx)
{
    static const char *const keys[] = {"name",
                                       "model_pattern",
                                       "matcher",
                                       "primary",
                                       "fallbacks",
                                       "priority",
                                       "strategy",
                                       "providers",
                                       "targets",
                                       "weights",
                                       "alternatives",
                                       "primary_providers",
                                       "alternative_providers"};
    static const char *const matcher_keys[] = {"model_pattern", "always"};
    static const struct keyset ks = KEYSET_NOIG(keys);
    static const struct keyset mks = KEYSET_NOIG(matcher_keys);
    char path[64];
    snprintf(path, sizeof(path), "routing.rules[%zu]", idx);
    if (!expect_type(x, n, YAML_MAPPING_NODE, path))
        return;
    struct lr_config *c = x->c;
    struct cfg_rule *rv = realloc(c->rules, (c->n_rules + 1) * sizeof(*rv));
    struct cfg_pos *pp = realloc(x->primary_pos, (c->n_rules + 1) * sizeof(*pp));
    if (rv)
        c->rules = rv;
    if (pp)
        x->primary_pos = pp;
    if (!rv || !pp) {
        x->oom = true;
        return;
    }
    struct cfg_rule *r = &c->rules[c->n_rules];
    memset(r, 0, sizeof(*r));
    memset(&x->primary_pos[c->n_rules], 0, sizeof(*pp));
    c->n_rules++;
    r->pos = (struct cfg_pos){(int)n->start_mark.line + 1, (int)n->start_mark.column + 1};
    r->priority = 10; /* LunaRoute's default_priority() */
    struct rule_nodes rn = {.strategy_val = -1};
    struct cfg_target *weights = NULL;
    size_t n_weights = 0;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key || is_null(v))
            continue;
        char sub[160];
        snprintf(sub, sizeof(sub), "%s.%s", path, key);
        if (strcmp(key, "name") == 0) {
            char *s = get_string(x, v, sub);
            if (s) {
                free(r->name);
                r->name = s;
            }
        } else if (strcmp(key, "model_pattern") == 0) {
            set_pattern(x, r, &rn, v, sub);
        } else if (strcmp(key, "matcher") == 0) {
            if (!expect_type(x, v, YAML_MAPPING_NODE, sub))
                continue;
            uint64_t mseen = 0;
            yaml_node_t *mk, *mv;
            FOR_PAIRS(x, v, mk, mv)
            {
                const char *mkey = map_key(x, mk, &mks, &mseen);
                if (!mkey || is_null(mv))
                    continue;
                char msub[200];
                snprintf(msub, sizeof(msub), "%s.%s", sub, mkey);
                if (strcmp(mkey, "model_pattern") == 0) {
                    set_pattern(x, r, &rn, mv, msub);
                } else {
                    bool always = false;
                    if (get_bool(x, mv, msub, &always) == 0 && always) {
                        free(r->model_pattern);
                        r->model_pattern = xstrdup(x, ".*");
                        rn.pattern = mv;
                    }
                }
            }
        } else if (strcmp(key, "primary") == 0) {
            char *s = get_string(x, v, sub);
            if (s) {
                free(r->primary);
                r->primary = s;
                rn.primary = v;
                x->primary_pos[idx] =
                    (struct cfg_pos){(int)v->start_mark.line + 1, (int)v->start_mark.column + 1};
            }
        } else if (strcmp(key, "fallbacks") == 0) {
            parse_targets(x, v, sub, &r->fallbacks, &r->n_fallbacks);
        } else if (strcmp(key, "priority") == 0) {
            long long pr;
            if (get_int(x, v, sub, INT_MIN, INT_MAX, &pr) == 0)
                r->priority = (int)pr;
        } else if (strcmp(key, "strategy") == 0) {
            rn.strategy = v;
            if (v->type == YAML_MAPPING_NODE)
                parse_strategy_map(x, r, &rn, v, sub);
            else
                rn.strategy_val = get_enum(x, v, sub, strategy_names, CFG_STRATEGY_COUNT,
                                           "round-robin, weighted-round-robin, limits-alternative");
        } else if (strcmp(key, "providers") == 0 || strcmp(key, "targets") == 0 ||
                   strcmp(key, "primary_providers") == 0) {
            rn.targets = v;
            parse_targets(x, v, sub, &r->targets, &r->n_targets);
        } else if (strcmp(key, "alternatives") == 0 || strcmp(key, "alternative_providers") == 0) {
            rn.alternatives = v;
            parse_targets(x, v, sub, &r->alternatives, &r->n_alternatives);
        } else if (strcmp(key, "weights") == 0) {
            if (!expect_type(x, v, YAML_SEQUENCE_NODE, sub))
                continue;
            rn.weights = v;
            size_t total = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
            if (total > CFG_MAX_LIST) {
                err_node(x, v, "%s: too many weights (at most %d)", sub, CFG_MAX_LIST);
                continue;
            }
            free(weights);
            weights = xcalloc(x, total, sizeof(*weights));
            n_weights = 0;
            for (size_t i = 0; weights && i < total; i++) {
                char wp[200];
                snprintf(wp, sizeof(wp), "%s[%zu]", sub, i);
                long long w = 1;
                get_int(x, node(x, v->data.sequence.items.start[i]), wp, 0, 1000000, &w);
                weights[n_weights++].weight = (unsigned)w;
            }
        }
    }
    r = &c->rules[idx];
    if (!r->name) {
        char nm[32];
        snprintf(nm, sizeof(nm), "rule-%zu", idx + 1);
        r->name = xstrdup(x, nm);
    }
    if (!r->model_pattern && !rn.pattern)
        err_node(x, n, "%s: needs 'model_pattern' (or matcher.model_pattern)", path);
    if (rn.strategy_val > 0)
        r->strategy = (enum cfg_strategy)rn.strategy_val;
    bool strategy_ok = !rn.strategy || rn.strategy_val > 0;
    if (rn.weights) {
        if (r->strategy != CFG_STRATEGY_WEIGHTED_ROUND_ROBIN && strategy_ok)
            err_node(x, rn.weights, "%s.weights: only used with strategy weighted-round-robin",
                     path);
        else if (n_weights != r->n_targets && strategy_ok)
            err_node(x, rn.weights, "%s.weights: has %zu entries for %zu providers", path,
                     n_weights, r->n_targets);
        else
            for (size_t i = 0; i < n_weights && i < r->n_targets; i++)
                r->targets[i].weight = weights[i].weight;
    }
    free(weights);
    if (!strategy_ok)
        return;
    if (r->strategy == CFG_STRATEGY_NONE) {
        if (rn.targets || rn.alternatives)
            err_node(x, rn.targets ? rn.targets : rn.alternatives,
                     "%s: a provider list needs a 'strategy'", path);
        else if (!r->primary)
            err_node(x, n, "%s: needs 'primary' or a 'strategy'", path);
        return;
    }
    if (r->primary)
        err_node(x, rn.primary, "%s: 'primary' cannot be combined with a strategy", path);
    if (r->n_targets == 0)
        err_node(x, rn.targets ? rn.targets : rn.strategy, "%s: strategy %s needs providers", path,
                 strategy_names[r->strategy]);
    if (r->strategy != CFG_STRATEGY_LIMITS_ALTERNATIVE && rn.alternatives)
        err_node(x, rn.alternatives, "%s: alternatives are only used with limits-alternative",
                 path);
    if (r->strategy == CFG_STRATEGY_WEIGHTED_ROUND_ROBIN && r->n_targets > 0) {
        unsigned long long sum = 0;
        for (size_t i = 0; i < r->n_targets; i++)
            sum += r->targets[i].weight;
        if (sum == 0)
            err_node(x, rn.targets ? rn.targets : rn.strategy, "%s: weights must not all be 0",
                     path);
    }
}

static void parse_routing(struct ctx *x, yaml_node_t *n)
{
    static const char *const keys[] = {"rules", "circuit_breaker", "provider_switch_notification"};
    static const char *const ignored[] = {"health_monitor"};
    static const struct keyset ks = KEYSET(keys, ignored);
    static const char *const cb_keys[] = {"failure_threshold", "success_threshold", "open_secs",
                                          "timeout_secs"};
    static const struct keyset cbks = KEYSET_NOIG(cb_keys);
    static const char *const psn_keys[] = {"enabled", "default_message"};
    static const struct keyset psnks = KEYSET_NOIG(psn_keys);
    if (is_null(n) || !expect_type(x, n, YAML_MAPPING_NODE, "routing"))
        return;
    struct lr_config *c = x->c;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key || is_null(v))
            continue;
        if (strcmp(key, "rules") == 0) {
            if (!expect_type(x, v, YAML_SEQUENCE_NODE, "routing.rules"))
                continue;
            size_t i = 0;
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++, i++) {
                if (c->n_rules >= CFG_MAX_RULES) {
                    err_node(x, v, "routing.rules: too many rules (at most %d)", CFG_MAX_RULES);
                    break;
                }
                parse_rule(x, node(x, *it), c->n_rules);
            }
        } else if (strcmp(key, "circuit_breaker") == 0) {
            if (!expect_type(x, v, YAML_MAPPING_NODE, "routing.circuit_breaker"))
                continue;
            uint64_t cseen = 0;
            yaml_node_t *ck, *cv;
            FOR_PAIRS(x, v, ck, cv)
            {
                const char *ckey = map_key(x, ck, &cbks, &cseen);
                if (!ckey)
                    continue;
                char sub[96];
                snprintf(sub, sizeof(sub), "routing.circuit_breaker.%s", ckey);
                if (strcmp(ckey, "failure_threshold") == 0)
                    get_uint_into(x, cv, sub, 1, 1000000, &c->circuit_breaker.failure_threshold);
                else if (strcmp(ckey, "success_threshold") == 0)
                    get_uint_into(x, cv, sub, 1, 1000000, &c->circuit_breaker.success_threshold);
                else /* open_secs, or LunaRoute's timeout_secs */
                    get_uint_into(x, cv, sub, 1, 86400, &c->circuit_breaker.open_secs);
            }
        } else {
            if (!expect_type(x, v, YAML_MAPPING_NODE, "routing.provider_switch_notification"))
                continue;
            uint64_t pseen = 0;
            yaml_node_t *pk, *pv;
            FOR_PAIRS(x, v, pk, pv)
            {
                const char *pkey = map_key(x, pk, &psnks, &pseen);
                if (!pkey || is_null(pv))
                    continue;
                if (strcmp(pkey, "enabled") == 0) {
                    get_bool(x, pv, "routing.provider_switch_notification.enabled",
                             &c->provider_switch_notification.enabled);
                } else {
                    char *s =
                        get_string(x, pv, "routing.provider_switch_notification.default_message");
                    if (s) {
                        free(c->provider_switch_notification.default_message);
                        c->provider_switch_notification.default_message = s;
                    }
                }
            }
        }
    }
}

static void parse_http_server(struct ctx *x, yaml_node_t *n)
{
    static const char *const keys[] = {"max_request_body_bytes", "sse_keepalive_interval_secs"};
    static const char *const ignored[] = {"tcp_nodelay", "tcp_keepalive_secs",
                                          "sse_keepalive_enabled", "send_buffer_size",
                                          "recv_buffer_size"};
    static const struct keyset ks = KEYSET(keys, ignored);
    if (is_null(n) || !expect_type(x, n, YAML_MAPPING_NODE, "http_server"))
        return;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key || is_null(v))
            continue;
        long long val;
        if (strcmp(key, "max_request_body_bytes") == 0) {
            if (get_int(x, v, "http_server.max_request_body_bytes", 1, 1ll << 34, &val) == 0)
                x->c->http_server.max_request_body_bytes = (uint64_t)val;
        } else {
            get_uint_into(x, v, "http_server.sse_keepalive_interval_secs", 1, 3600,
                          &x->c->http_server.sse_keepalive_interval_secs);
        }
    }
}

static void parse_translation(struct ctx *x, yaml_node_t *n)
{
    static const char *const keys[] = {"default_max_tokens"};
    static const struct keyset ks = KEYSET_NOIG(keys);
    if (is_null(n) || !expect_type(x, n, YAML_MAPPING_NODE, "translation"))
        return;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key || is_null(v))
            continue;
        get_uint_into(x, v, "translation.default_max_tokens", 1, 1000000,
                      &x->c->translation.default_max_tokens);
    }
}

static void set_bind(struct ctx *x, int which, yaml_node_t *v, char **dst)
{
    char *s = get_string(x, v, bind_keys[which]);
    if (!s)
        return;
    const char *why = parse_bind(s, NULL, NULL);
    free(*dst);
    *dst = s;
    x->bind_src[which] =
        (struct src){(int)v->start_mark.line + 1, (int)v->start_mark.column + 1, NULL};
    x->bind_ok[which] = why == NULL;
    if (why)
        err_node(x, v, "%s: %s", bind_keys[which], why);
}

static void parse_haproxy(struct ctx *x, yaml_node_t *n)
{
    static const char *const keys[] = {"bind", "stats_bind", "maxconn", "failure_mode"};
    static const struct keyset ks = KEYSET_NOIG(keys);
    if (is_null(n) || !expect_type(x, n, YAML_MAPPING_NODE, "haproxy"))
        return;
    struct lr_config *c = x->c;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key || is_null(v))
            continue;
        if (strcmp(key, "bind") == 0)
            set_bind(x, BIND_HAPROXY, v, &c->haproxy.bind);
        else if (strcmp(key, "stats_bind") == 0)
            set_bind(x, BIND_STATS, v, &c->haproxy.stats_bind);
        else if (strcmp(key, "maxconn") == 0)
            get_uint_into(x, v, "haproxy.maxconn", 1, 1000000, &c->haproxy.maxconn);
        else {
            int m = get_enum(x, v, "haproxy.failure_mode", fmode_names, CFG_FAILURE_MODE_COUNT,
                             "static, reject");
            if (m >= 0)
                c->haproxy.failure_mode = (enum cfg_failure_mode)m;
        }
    }
}

static void parse_agent(struct ctx *x, yaml_node_t *n)
{
    static const char *const keys[] = {"spoa_bind", "engine_bind", "admin_socket", "threads",
                                       "local_sockets"};
    static const struct keyset ks = KEYSET_NOIG(keys);
    if (is_null(n) || !expect_type(x, n, YAML_MAPPING_NODE, "agent"))
        return;
    struct lr_config *c = x->c;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key || is_null(v))
            continue;
        if (strcmp(key, "spoa_bind") == 0)
            set_bind(x, BIND_SPOA, v, &c->agent.spoa_bind);
        else if (strcmp(key, "engine_bind") == 0)
            set_bind(x, BIND_ENGINE, v, &c->agent.engine_bind);
        else if (strcmp(key, "threads") == 0)
            get_uint_into(x, v, "agent.threads", 1, 64, &c->agent.threads);
        else if (strcmp(key, "local_sockets") == 0)
            c->agent.local_sockets_set =
                get_bool(x, v, "agent.local_sockets", &c->agent.local_sockets) == 0;
        else {
            char *s = get_string(x, v, "agent.admin_socket");
            if (!s)
                continue;
            if (!*s || strlen(s) > LR_UNIX_PATH_MAX)
                err_node(x, v, "agent.admin_socket: must be a path of 1 to %d bytes",
                         LR_UNIX_PATH_MAX);
            free(c->agent.admin_socket);
            c->agent.admin_socket = s;
        }
    }
}

static void str_list_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* A host name for boltin.hosts: letters, digits, '.', '-', '_', at most 253 bytes, no port. */
static bool valid_boltin_host(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 253 && valid_host_chars(s, n) && s[0] != '.' && s[0] != '-';
}

/* One list of boltin strings; `check` says whether an entry is acceptable and `what`
 * describes acceptable entries in the message. Replaces the previous (default) list, so
 * `path_prefixes: []` means "any path". */
static void parse_str_list(struct ctx *x, yaml_node_t *v, const char *path,
                           bool (*check)(const char *), const char *what, bool lower, char ***out,
                           size_t *count)
{
    if (!expect_type(x, v, YAML_SEQUENCE_NODE, path))
        return;
    size_t total = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (total > CFG_MAX_BOLTIN_LIST) {
        err_node(x, v, "%s: too many entries (at most %d)", path, CFG_MAX_BOLTIN_LIST);
        return;
    }
    str_list_free(*out, *count);
    *count = 0;
    *out = xcalloc(x, total, sizeof(**out));
    if (!*out)
        return;
    for (size_t i = 0; i < total; i++) {
        yaml_node_t *e = node(x, v->data.sequence.items.start[i]);
        char ep[96];
        snprintf(ep, sizeof(ep), "%s[%zu]", path, i);
        char *s = get_string(x, e, ep);
        if (!s)
            continue;
        if (!check(s)) {
            err_node(x, e, "%s: %s (got '%s')", ep, what, SHOW(s));
            free(s);
            continue;
        }
        for (char *p = s; lower && *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
        bool dup = false;
        for (size_t k = 0; k < *count && !dup; k++)
            dup = strcmp((*out)[k], s) == 0;
        if (dup) {
            err_node(x, e, "%s: '%s' is listed twice", ep, SHOW(s));
            free(s);
            continue;
        }
        (*out)[(*count)++] = s;
    }
}

static void parse_boltin(struct ctx *x, yaml_node_t *n)
{
    static const char *const keys[] = {"hosts", "path_prefixes"};
    static const struct keyset ks = KEYSET_NOIG(keys);
    if (is_null(n) || !expect_type(x, n, YAML_MAPPING_NODE, "boltin"))
        return;
    struct lr_config *c = x->c;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key || is_null(v))
            continue;
        if (strcmp(key, "hosts") == 0)
            parse_str_list(x, v, "boltin.hosts", valid_boltin_host,
                           "must be a host name (letters, digits, '.', '-', '_'; no port)", true,
                           &c->boltin.hosts, &c->boltin.n_hosts);
        else
            parse_str_list(x, v, "boltin.path_prefixes", valid_extra_path,
                           "must start with '/' and contain no '?', '#', quotes or spaces", false,
                           &c->boltin.path_prefixes, &c->boltin.n_path_prefixes);
    }
}

static void parse_logging(struct ctx *x, yaml_node_t *n)
{
    static const char *const keys[] = {"level"};
    static const char *const ignored[] = {"log_requests", "log_sql_queries", "log_responses"};
    static const struct keyset ks = KEYSET(keys, ignored);
    if (is_null(n) || !expect_type(x, n, YAML_MAPPING_NODE, "logging"))
        return;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, n, k, v)
    {
        if (!map_key(x, k, &ks, &seen) || is_null(v))
            continue;
        char *s = get_string(x, v, "logging.level");
        if (!s)
            continue;
        enum lr_log_level l;
        if (lr_log_level_from_str(s, &l) != 0)
            err_node(x, v, "logging.level: must be one of error, warn, info, debug (got '%s')",
                     SHOW(s));
        else
            set_str(x, &x->c->log_level, lr_log_level_to_str(l));
        free(s);
    }
}

static void parse_root(struct ctx *x, yaml_node_t *root)
{
    static const char *const keys[] = {"api_dialect", "providers",   "bypass",  "intercept",
                                       "routing",     "http_server", "haproxy", "agent",
                                       "run_dir",     "logging",     "boltin",  "translation"};
    /* LunaRoute's top-level keys we accept and ignore: ServerConfig's host, port,
     * session_recording, session_stats_max_sessions, ui; and server, observability,
     * listeners from its shipped example configs. host/port are not mapped onto
     * haproxy.bind on purpose: LunaRoute's examples use port 8081, our engine's port. */
    static const char *const ignored[] = {
        "host", "port",   "session_recording", "session_stats_max_sessions",
        "ui",   "server", "observability",     "listeners"};
    static const struct keyset ks = KEYSET(keys, ignored);
    struct lr_config *c = x->c;
    uint64_t seen = 0;
    yaml_node_t *k, *v;
    FOR_PAIRS(x, root, k, v)
    {
        const char *key = map_key(x, k, &ks, &seen);
        if (!key)
            continue;
        if (strcmp(key, "api_dialect") == 0) {
            if (is_null(v))
                continue;
            int d = get_enum(x, v, "api_dialect", dialect_names, CFG_DIALECT_COUNT,
                             "openai, anthropic, both");
            if (d >= 0)
                c->dialect = (enum cfg_dialect)d;
        } else if (strcmp(key, "providers") == 0)
            parse_providers(x, v);
        else if (strcmp(key, "bypass") == 0)
            parse_bypass(x, v);
        else if (strcmp(key, "intercept") == 0)
            parse_intercept(x, v);
        else if (strcmp(key, "routing") == 0)
            parse_routing(x, v);
        else if (strcmp(key, "http_server") == 0)
            parse_http_server(x, v);
        else if (strcmp(key, "haproxy") == 0)
            parse_haproxy(x, v);
        else if (strcmp(key, "agent") == 0)
            parse_agent(x, v);
        else if (strcmp(key, "logging") == 0)
            parse_logging(x, v);
        else if (strcmp(key, "boltin") == 0)
            parse_boltin(x, v);
        else if (strcmp(key, "translation") == 0)
            parse_translation(x, v);
        else if (strcmp(key, "run_dir") == 0) {
            if (is_null(v))
                continue;
            char *s = get_string(x, v, "run_dir");
            if (s && !*s)
                err_node(x, v, "run_dir: must not be empty");
            if (s) {
                free(c->run_dir);
                c->run_dir = s;
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * YAML loading */

static void yaml_error(struct ctx *x, yaml_parser_t *p, const char *text, size_t len)
{
    if (p->error == YAML_MEMORY_ERROR) {
        x->oom = true;
        return;
    }
    size_t line = p->problem_mark.line, col = p->problem_mark.column;
    if (p->error == YAML_READER_ERROR) {
        /* reader errors carry a byte offset, not a mark */
        line = col = 0;
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (text[i] == '\n') {
                line++;
                col = 0;
            } else
                col++;
        }
    }
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->context)
        err_at(x, (int)line + 1, (int)col + 1, "%s (%s)", problem, p->context);
    else
        err_at(x, (int)line + 1, (int)col + 1, "%s", problem);
}

static void parse_yaml(struct ctx *x, const char *text, size_t len)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        x->oom = true;
        return;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_error(x, &parser, text, len);
        yaml_parser_delete(&parser);
        return;
    }
    x->doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && !is_null(root)) {
        if (root->type != YAML_MAPPING_NODE)
            err_node(x, root, "the top level must be a mapping (key: value)");
        else
            parse_root(x, root);
    }
    x->doc = NULL;
    yaml_document_delete(&doc);
    /* A second document is almost certainly a mistake: say so instead of ignoring it. */
    if (root && !yaml_parser_load(&parser, &doc)) {
        yaml_error(x, &parser, text, len);
    } else if (root) {
        yaml_node_t *r2 = yaml_document_get_root_node(&doc);
        if (r2)
            err_node(x, r2, "only one YAML document is allowed");
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
}

/* ---------------------------------------------------------------------------------------
 * Environment overrides */

static const char *env_get(struct ctx *x, const char *name)
{
    const char *v = x->env(name, x->env_ud);
    return v && *v ? v : NULL; /* an empty variable counts as unset */
}

static void env_uint(struct ctx *x, const char *name, long long min, long long max, unsigned *out)
{
    const char *v = env_get(x, name);
    if (!v)
        return;
    long long r;
    if (parse_int_range(v, min, max, &r) != 0)
        err_plain(x, "%s: must be an integer between %lld and %lld", name, min, max);
    else
        *out = (unsigned)r;
}

static void env_bind_part(struct ctx *x)
{
    const char *h = env_get(x, "LUNAROUTE_HOST");
    const char *pv = env_get(x, "LUNAROUTE_PORT");
    if (!h && !pv)
        return;
    struct lr_config *c = x->c;
    char *host = NULL;
    unsigned port = 0;
    if (!x->bind_ok[BIND_HAPROXY] || parse_bind(c->haproxy.bind, &host, &port) != NULL) {
        free(host);
        return; /* already reported */
    }
    bool ok = true;
    if (h) {
        const char *bare = h;
        size_t hl = strlen(h);
        if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
            bare = h + 1;
            hl -= 2;
        }
        bool v6 = memchr(bare, ':', hl) != NULL;
        if ((v6 && !valid_ipv6_chars(bare, hl)) ||
            (!v6 && !valid_host_chars(bare, hl) && !(hl == 1 && bare[0] == '*'))) {
            err_plain(x, "LUNAROUTE_HOST: must be a host name or IP address");
            ok = false;
        } else {
            free(host);
            host = xstrndup(x, bare, hl);
        }
    }
    if (pv) {
        unsigned p;
        if (parse_port(pv, strlen(pv), &p) != 0) {
            err_plain(x, "LUNAROUTE_PORT: must be a port number between 1 and 65535");
            ok = false;
        } else
            port = p;
    }
    if (ok && host) {
        size_t need = strlen(host) + 16;
        char *b = xcalloc(x, need, 1);
        if (b) {
            bool v6 = strchr(host, ':') != NULL;
            snprintf(b, need, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", port);
            free(c->haproxy.bind);
            c->haproxy.bind = b;
            x->bind_src[BIND_HAPROXY] =
                (struct src){0, 0, pv ? "LUNAROUTE_PORT" : "LUNAROUTE_HOST"};
        }
    }
    free(host);
}

static void env_provider(struct ctx *x, const char *pname, const char *up, const char *keyvar)
{
    struct cfg_provider *p = NULL;
    for (size_t i = 0; i < x->c->n_providers; i++)
        if (strcmp(x->c->providers[i].name, pname) == 0)
            p = &x->c->providers[i];
    /* Overrides apply to the provider of that name only; they do not bring back a
     * provider the file's providers: map left out. */
    const char *key = env_get(x, keyvar);
    if (key)
        add_secret(x, key);
    if (!p)
        return;
    if (key) {
        set_str(x, &p->api_key, key);
        set_str(x, &p->api_key_env, keyvar);
    }
    char name[64];
    snprintf(name, sizeof(name), "LUNAROUTE_%s_BASE_URL", up);
    const char *url = env_get(x, name);
    const char *why;
    if (url && provider_set_url(p, url, &why) != 0)
        err_plain(x, "%s: %s", name, why);
    snprintf(name, sizeof(name), "LUNAROUTE_%s_TIMEOUT_SECS", up);
    env_uint(x, name, 1, 86400, &p->timeout_secs);
    snprintf(name, sizeof(name), "LUNAROUTE_%s_CONNECT_TIMEOUT_SECS", up);
    env_uint(x, name, 1, 86400, &p->connect_timeout_secs);
    snprintf(name, sizeof(name), "LUNAROUTE_%s_MAX_RETRIES", up);
    env_uint(x, name, 0, 10, &p->max_retries);
}

static void apply_env(struct ctx *x)
{
    struct lr_config *c = x->c;
    const char *v;
    if ((v = env_get(x, "LUNAROUTE_DIALECT"))) {
        int d = enum_from_str(dialect_names, CFG_DIALECT_COUNT, v);
        if (d < 0)
            err_plain(x, "LUNAROUTE_DIALECT: must be one of openai, anthropic, both (got '%s')",
                      SHOW(v));
        else
            c->dialect = (enum cfg_dialect)d;
    }
    env_bind_part(x);
    if ((v = env_get(x, "LUNAROUTE_BYPASS_ENABLED"))) {
        bool b;
        if (parse_bool_word(v, &b) != 0)
            err_plain(x,
                      "LUNAROUTE_BYPASS_ENABLED: expected true/1/yes/on or false/0/no/off "
                      "(got '%s')",
                      SHOW(v));
        else
            c->bypass_enabled = b;
    }
    if ((v = env_get(x, "LUNAROUTE_BYPASS_PROVIDER"))) {
        set_str(x, &c->bypass_provider, v);
        x->bypass_provider_src = (struct src){0, 0, "LUNAROUTE_BYPASS_PROVIDER"};
    }
    env_provider(x, "openai", "OPENAI", "OPENAI_API_KEY");
    env_provider(x, "anthropic", "ANTHROPIC", "ANTHROPIC_API_KEY");
    if ((v = env_get(x, "LUNAROUTE_LOG_LEVEL"))) {
        enum lr_log_level l;
        if (lr_log_level_from_str(v, &l) != 0)
            err_plain(x, "LUNAROUTE_LOG_LEVEL: must be one of error, warn, info, debug (got '%s')",
                      SHOW(v));
        else
            set_str(x, &c->log_level, lr_log_level_to_str(l));
    }
    if ((v = env_get(x, "LUNAROUTE_RUN_DIR")))
        set_str(x, &c->run_dir, v);
}

/* ---------------------------------------------------------------------------------------
 * Cross-field validation */

const struct cfg_provider *config_provider(const struct lr_config *c, const char *name)
{
    for (size_t i = 0; c && name && i < c->n_providers; i++)
        if (strcmp(c->providers[i].name, name) == 0)
            return &c->providers[i];
    return NULL;
}

static void check_refs(struct ctx *x, const struct cfg_rule *r, const struct cfg_target *t,
                       size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!config_provider(x->c, t[i].provider)) {
            struct src s = {t[i].pos.line, t[i].pos.col, NULL};
            err_src(x, &s, "rule '%s': unknown provider '%s'", SHOW(r->name), SHOW(t[i].provider));
        }
}

static void validate(struct ctx *x)
{
    struct lr_config *c = x->c;
    size_t enabled = 0;
    for (size_t i = 0; i < c->n_providers; i++)
        enabled += c->providers[i].enabled;
    if (enabled == 0)
        err_plain(x, "no enabled provider: configure and enable at least one provider");

    if (strcmp(c->bypass_provider, "auto") != 0) {
        const struct cfg_provider *p = config_provider(c, c->bypass_provider);
        if (!p || !p->enabled)
            err_src(x, &x->bypass_provider_src,
                    "bypass.provider '%s' is not an enabled provider (use auto or one of the "
                    "enabled providers)",
                    SHOW(c->bypass_provider));
    }

    for (size_t i = 0; i < c->n_rules; i++) {
        const struct cfg_rule *r = &c->rules[i];
        if (r->primary && !config_provider(c, r->primary)) {
            struct src s = {x->primary_pos[i].line, x->primary_pos[i].col, NULL};
            err_src(x, &s, "rule '%s': unknown provider '%s'", SHOW(r->name), SHOW(r->primary));
        }
        check_refs(x, r, r->fallbacks, r->n_fallbacks);
        check_refs(x, r, r->targets, r->n_targets);
        check_refs(x, r, r->alternatives, r->n_alternatives);
    }

    const char *binds[BIND_COUNT] = {c->haproxy.bind, c->haproxy.stats_bind, c->agent.spoa_bind,
                                     c->agent.engine_bind};
    char *hosts[BIND_COUNT] = {0};
    unsigned ports[BIND_COUNT] = {0};
    for (int i = 0; i < BIND_COUNT; i++)
        if (!x->bind_ok[i] || parse_bind(binds[i], &hosts[i], &ports[i]) != NULL)
            hosts[i] = NULL;
    for (int j = 1; j < BIND_COUNT; j++) {
        for (int i = 0; i < j; i++) {
            if (!hosts[i] || !hosts[j] || ports[i] != ports[j])
                continue;
            if (strcasecmp(hosts[i], hosts[j]) == 0 || wildcard_host(hosts[i]) ||
                wildcard_host(hosts[j])) {
                /* blame the value the user set, when one of them is a default */
                const struct src *s = &x->bind_src[j];
                if (!s->env && s->line == 0)
                    s = &x->bind_src[i];
                err_src(x, s, "%s %s clashes with %s %s", bind_keys[j], SHOW(binds[j]),
                        bind_keys[i], SHOW(binds[i]));
                break;
            }
        }
    }
    for (int i = 0; i < BIND_COUNT; i++)
        free(hosts[i]);
}

/* Errors in file order (line, then column), then those not tied to a position (environment
 * variables, "too many errors") in the order they were found. Stable insertion sort. */
static bool err_before(const struct cfg_error *a, const struct cfg_error *b)
{
    bool pa = a->file && a->line > 0, pb = b->file && b->line > 0;
    if (pa != pb)
        return pa;
    if (!pa)
        return false;
    return a->line < b->line || (a->line == b->line && a->col < b->col);
}

static void sort_errors(struct cfg_errors *e)
{
    for (size_t i = 1; i < e->n; i++) {
        struct cfg_error v = e->v[i];
        size_t j = i;
        while (j > 0 && err_before(&v, &e->v[j - 1])) {
            e->v[j] = e->v[j - 1];
            j--;
        }
        e->v[j] = v;
    }
}

/* Highest priority first; equal priorities keep file order (stable insertion sort). */
static void sort_rules(struct lr_config *c)
{
    for (size_t i = 1; i < c->n_rules; i++) {
        struct cfg_rule r = c->rules[i];
        size_t j = i;
        while (j > 0 && c->rules[j - 1].priority < r.priority) {
            c->rules[j] = c->rules[j - 1];
            j--;
        }
        c->rules[j] = r;
    }
}

/* ---------------------------------------------------------------------------------------
 * Entry points */

void config_free(struct lr_config *c)
{
    if (!c)
        return;
    free(c->source_file);
    for (size_t i = 0; i < c->n_providers; i++)
        provider_free(&c->providers[i]);
    free(c->providers);
    free(c->bypass_provider);
    for (size_t i = 0; i < c->n_extra_paths; i++)
        free(c->extra_paths[i]);
    free(c->extra_paths);
    for (size_t i = 0; i < c->n_rules; i++)
        rule_free(&c->rules[i]);
    free(c->rules);
    free(c->provider_switch_notification.default_message);
    free(c->haproxy.bind);
    free(c->haproxy.stats_bind);
    free(c->agent.spoa_bind);
    free(c->agent.engine_bind);
    free(c->agent.admin_socket);
    str_list_free(c->boltin.hosts, c->boltin.n_hosts);
    str_list_free(c->boltin.path_prefixes, c->boltin.n_path_prefixes);
    free(c->run_dir);
    free(c->log_level);
    free(c);
}

static int load(const char *yaml, size_t len, const char *name, cfg_getenv_fn env, void *env_ud,
                struct lr_config **out, struct cfg_errors *errs)
{
    struct ctx x;
    memset(&x, 0, sizeof(x));
    x.file = name ? name : "<config>";
    x.env = env ? env : cfg_getenv_process;
    x.env_ud = env_ud;
    x.errs = errs;
    x.c = xcalloc(&x, 1, sizeof(*x.c));
    if (x.c) {
        set_defaults(&x);
        if (yaml && name)
            x.c->source_file = xstrdup(&x, name);
        if (yaml)
            parse_yaml(&x, yaml, len);
        if (!x.oom)
            apply_env(&x);
        if (!x.oom)
            validate(&x);
    }
    if (x.oom) {
        x.too_many = false;
        err_plain(&x, "out of memory while loading the configuration");
    }
    sort_errors(errs);
    scrub_errors(&x);
    for (size_t i = 0; i < x.n_secrets; i++)
        free(x.secrets[i]);
    free(x.secrets);
    free(x.primary_pos);
    if (errs->n > 0 || x.oom || !x.c) {
        config_free(x.c);
        return -1;
    }
    sort_rules(x.c);
    *out = x.c;
    return 0;
}

int config_load_string(const char *yaml, size_t len, const char *name, cfg_getenv_fn env,
                       void *env_ud, struct lr_config **out, struct cfg_errors *errs)
{
    *out = NULL;
    errs->v = NULL;
    errs->n = 0;
    return load(yaml, len, name, env, env_ud, out, errs);
}

static int file_error(struct cfg_errors *errs, const char *path, int errnum)
{
    struct cfg_error *v = calloc(1, sizeof(*v));
    char msg[256];
    snprintf(msg, sizeof(msg), "cannot read the configuration file: %s", strerror(errnum));
    if (v) {
        v->file = strdup(path);
        v->msg = strdup(msg);
        errs->v = v;
        errs->n = 1;
    }
    return -1;
}

int config_load(const char *path, cfg_getenv_fn env, void *env_ud, struct lr_config **out,
                struct cfg_errors *errs)
{
    *out = NULL;
    errs->v = NULL;
    errs->n = 0;
    if (!path)
        return load(NULL, 0, NULL, env, env_ud, out, errs);
    FILE *f = fopen(path, "rb");
    if (!f)
        return file_error(errs, path, errno);
    char *buf = malloc(CFG_MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        return file_error(errs, path, ENOMEM);
    }
    size_t n = fread(buf, 1, CFG_MAX_FILE_BYTES + 1, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr || n > CFG_MAX_FILE_BYTES) {
        free(buf);
        return file_error(errs, path, rerr ? EIO : EFBIG);
    }
    int r = load(buf, n, path, env, env_ud, out, errs);
    free(buf);
    return r;
}

/* ---------------------------------------------------------------------------------------
 * Secrets for the children's environment */

size_t config_secret_count(const struct lr_config *c)
{
    size_t n = 0;
    for (size_t i = 0; c && i < c->n_providers; i++) {
        const struct cfg_provider *p = &c->providers[i];
        n += p->enabled && p->api_key && *p->api_key && p->api_key_env;
    }
    return n;
}

void config_secret_get(const struct lr_config *c, size_t i, const char **name, const char **value)
{
    *name = NULL;
    *value = NULL;
    for (size_t k = 0; c && k < c->n_providers; k++) {
        const struct cfg_provider *p = &c->providers[k];
        if (!(p->enabled && p->api_key && *p->api_key && p->api_key_env))
            continue;
        if (i-- == 0) {
            *name = p->api_key_env;
            *value = p->api_key;
            return;
        }
    }
}
