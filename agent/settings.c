/* agent.json: parse, validate, precompute what the classifier needs, refcount.
 * Never logs: every problem goes into the caller's err buffer, naming the key. */
#include "settings.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "lr_defaults.h"
#include "sha256.h"

#define SETTINGS_MAX_FILE_BYTES   (16u * 1024 * 1024)
#define SETTINGS_MAX_NAME_LEN     48
#define SETTINGS_MAX_BACKEND_LEN  127
#define SETTINGS_MAX_PATH_LEN     1024
#define SETTINGS_MAX_EXTRA_PATHS  256
#define SETTINGS_MAX_ENV_NAME_LEN 128
#define SETTINGS_MAX_SOCKET_PATH  LR_UNIX_PATH_MAX

#define DEFAULT_SPOA_BIND            "127.0.0.1:12345"
#define DEFAULT_ENGINE_BIND          "127.0.0.1:8081"
#define DEFAULT_MAX_BODY             104857600ull
#define DEFAULT_SSE_KEEPALIVE        15u
#define DEFAULT_MAX_TOKENS           4096u
#define DEFAULT_TIMEOUT_SECS         600u
#define DEFAULT_CONNECT_TIMEOUT_SECS 10u
#define DEFAULT_MAX_RETRIES          3u

static const char *const default_intercept[] = {LR_DEFAULT_INTERCEPT_PATHS};
_Static_assert(sizeof(default_intercept) / sizeof(default_intercept[0]) ==
                   LR_DEFAULT_INTERCEPT_COUNT,
               "LR_DEFAULT_INTERCEPT_COUNT disagrees with LR_DEFAULT_INTERCEPT_PATHS");

const char *agent_provider_type_to_str(unsigned t)
{
    static const char *const names[] = {"openai", "anthropic"};
    _Static_assert(sizeof(names) / sizeof(names[0]) == AGENT_PROVIDER_TYPE_COUNT,
                   "agent_provider_type names");
    return t < AGENT_PROVIDER_TYPE_COUNT ? names[t] : "unknown";
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int oom(char *err, size_t errlen)
{
    return fail(err, errlen, "out of memory");
}

/* "ctx.key", or "key" when ctx is empty. */
static const char *keyname(char *buf, size_t n, const char *ctx, const char *key)
{
    snprintf(buf, n, "%s%s%s", ctx, *ctx ? "." : "", key);
    return buf;
}

/* ---- typed getters: absent key -> default; present with the wrong type -> error ---- */

static int get_str(const json_t *obj, const char *ctx, const char *key, const char *def, char **out,
                   char *err, size_t errlen)
{
    char kb[96];
    const json_t *v = json_object_get(obj, key);
    const char *s = def;

    if (v) {
        if (!json_is_string(v))
            return fail(err, errlen, "%s: expected a string", keyname(kb, sizeof kb, ctx, key));
        s = json_string_value(v); /* no NUL inside: we do not pass JSON_ALLOW_NUL */
    }
    *out = NULL;
    if (!s)
        return 0;
    *out = strdup(s);
    return *out ? 0 : oom(err, errlen);
}

static int get_uint(const json_t *obj, const char *ctx, const char *key, uint64_t def, uint64_t min,
                    uint64_t max, uint64_t *out, char *err, size_t errlen)
{
    char kb[96];
    const json_t *v = json_object_get(obj, key);

    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return fail(err, errlen, "%s: expected an integer", keyname(kb, sizeof kb, ctx, key));
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i < min || (uint64_t)i > max)
        return fail(err, errlen, "%s: must be between %llu and %llu",
                    keyname(kb, sizeof kb, ctx, key), (unsigned long long)min,
                    (unsigned long long)max);
    *out = (uint64_t)i;
    return 0;
}

static int get_unsigned(const json_t *obj, const char *ctx, const char *key, unsigned def,
                        unsigned min, unsigned max, unsigned *out, char *err, size_t errlen)
{
    uint64_t v;
    if (get_uint(obj, ctx, key, def, min, max, &v, err, errlen) < 0)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int get_bool(const json_t *obj, const char *ctx, const char *key, bool def, bool *out,
                    char *err, size_t errlen)
{
    char kb[96];
    const json_t *v = json_object_get(obj, key);

    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return fail(err, errlen, "%s: expected true or false", keyname(kb, sizeof kb, ctx, key));
    *out = json_is_true(v);
    return 0;
}

/* Absent -> NULL (caller uses defaults); present but not an object -> error. */
static int get_object(const json_t *obj, const char *key, const json_t **out, char *err,
                      size_t errlen)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v)
        return 0;
    if (!json_is_object(v))
        return fail(err, errlen, "%s: expected an object", key);
    *out = v;
    return 0;
}

/* ---- value syntax ---- */

static bool valid_provider_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return n >= 1 && n <= SETTINGS_MAX_NAME_LEN;
}

/* HAProxy backend names: letters, digits, '-', '_', '.', ':'. */
static bool valid_backend_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!(isalnum(c) || c == '_' || c == '-' || c == '.' || c == ':'))
            return false;
    }
    return n >= 1 && n <= SETTINGS_MAX_BACKEND_LEN;
}

static bool valid_env_name(const char *s)
{
    size_t n = 0;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!(isalnum(c) || c == '_'))
            return false;
    }
    return n <= SETTINGS_MAX_ENV_NAME_LEN;
}

/* host:port, host being a name or IPv4 address, or [IPv6]:port. Port 0..65535. */
static bool valid_hostport(const char *s)
{
    const char *p, *colon;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close == s + 1 || close[1] != ':')
            return false;
        for (p = s + 1; p < close; p++)
            if (!(isxdigit((unsigned char)*p) || *p == ':' || *p == '.'))
                return false;
        colon = close + 1;
    } else {
        colon = strchr(s, ':');
        if (!colon || colon == s)
            return false;
        for (p = s; p < colon; p++)
            if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_'))
                return false;
    }
    p = colon + 1;
    if (!*p || strlen(p) > 5)
        return false;
    unsigned long port = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return false;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    return port <= 65535;
}

/* Exact request paths: '/' first, no query/fragment, no spaces or control characters. */
static const char *path_problem(const char *s)
{
    size_t n = strlen(s);
    if (s[0] != '/')
        return "must start with '/'";
    if (n > SETTINGS_MAX_PATH_LEN)
        return "too long";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || c == '?' || c == '#')
            return "must not contain '?', '#', spaces or control characters";
    }
    return NULL;
}

/* Drops trailing '/' and one trailing "/v1": the renderers and the engine append paths. */
static void normalize_base_url(char *u)
{
    size_t n = strlen(u);
    while (n > 0 && u[n - 1] == '/')
        u[--n] = '\0';
    if (n >= 3 && memcmp(u + n - 3, "/v1", 3) == 0) {
        n -= 3;
        u[n] = '\0';
    }
    while (n > 0 && u[n - 1] == '/')
        u[--n] = '\0';
}

static bool valid_base_url(const char *u)
{
    const char *host;
    if (strncmp(u, "https://", 8) == 0)
        host = u + 8;
    else if (strncmp(u, "http://", 7) == 0)
        host = u + 7;
    else
        return false;
    if (!*host || *host == '/')
        return false;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* ---- freeing ---- */

static void provider_clear(struct agent_provider *p)
{
    free(p->name);
    free(p->base_url);
    free(p->backend);
    free(p->api_key_env);
}

static void settings_free(struct agent_settings *s)
{
    if (!s)
        return;
    free(s->path);
    free(s->spoa_bind);
    free(s->engine_bind);
    free(s->admin_socket);
    free(s->spoa_socket);
    free(s->engine_socket);
    free(s->log_level);
    free(s->api_dialect);
    free(s->engine_backend);
    free(s->bypass_provider);
    for (size_t i = 0; i < s->n_intercept_paths; i++)
        free(s->intercept_paths[i]);
    free(s->intercept_paths);
    free(s->intercept_path_lens);
    for (size_t i = 0; i < s->n_providers; i++)
        provider_clear(&s->providers[i]);
    free(s->providers);
    json_decref(s->routing);
    json_decref(s->root);
    free(s);
}

/* ---- sections ---- */

static int parse_provider(struct agent_settings *s, size_t idx, const json_t *v, char *err,
                          size_t errlen)
{
    struct agent_provider *p = &s->providers[idx];
    char ctx[32], kb[96];
    uint64_t u;

    snprintf(ctx, sizeof ctx, "providers[%zu]", idx);
    if (!json_is_object(v))
        return fail(err, errlen, "%s: expected an object", ctx);

    const json_t *name = json_object_get(v, "name");
    if (!name)
        return fail(err, errlen, "%s.name: required", ctx);
    if (!json_is_string(name))
        return fail(err, errlen, "%s.name: expected a string", ctx);
    if (!valid_provider_name(json_string_value(name)))
        return fail(err, errlen, "%s.name: expected 1 to %d characters of [a-z0-9_-]", ctx,
                    SETTINGS_MAX_NAME_LEN);
    for (size_t i = 0; i < idx; i++)
        if (strcmp(s->providers[i].name, json_string_value(name)) == 0)
            return fail(err, errlen, "%s.name: duplicate provider \"%s\"", ctx,
                        json_string_value(name));
    if (!(p->name = strdup(json_string_value(name))))
        return oom(err, errlen);
    bool is_openai = strcmp(p->name, "openai") == 0;
    bool is_anthropic = strcmp(p->name, "anthropic") == 0;

    const json_t *type = json_object_get(v, "type");
    if (!type) {
        if (is_openai)
            p->type = AGENT_PROVIDER_OPENAI;
        else if (is_anthropic)
            p->type = AGENT_PROVIDER_ANTHROPIC;
        else
            return fail(err, errlen, "%s.type: required for provider \"%s\"", ctx, p->name);
    } else {
        const char *t = json_is_string(type) ? json_string_value(type) : "";
        if (strcmp(t, "openai") == 0)
            p->type = AGENT_PROVIDER_OPENAI;
        else if (strcmp(t, "anthropic") == 0)
            p->type = AGENT_PROVIDER_ANTHROPIC;
        else
            return fail(err, errlen, "%s.type: expected \"openai\" or \"anthropic\"", ctx);
    }

    if (get_bool(v, ctx, "enabled", true, &p->enabled, err, errlen) < 0)
        return -1;

    const char *def_url = is_openai      ? "https://api.openai.com"
                          : is_anthropic ? "https://api.anthropic.com"
                                         : NULL;
    if (get_str(v, ctx, "base_url", def_url, &p->base_url, err, errlen) < 0)
        return -1;
    if (!p->base_url)
        return fail(err, errlen, "%s.base_url: required for provider \"%s\"", ctx, p->name);
    normalize_base_url(p->base_url);
    if (!valid_base_url(p->base_url))
        return fail(err, errlen, "%s.base_url: expected an http:// or https:// URL with a host",
                    ctx);

    if (get_str(v, ctx, "backend", NULL, &p->backend, err, errlen) < 0)
        return -1;
    if (!p->backend) {
        size_t n = strlen(LR_PROVIDER_BACKEND_PREFIX) + strlen(p->name) + 1;
        if (!(p->backend = malloc(n)))
            return oom(err, errlen);
        snprintf(p->backend, n, "%s%s", LR_PROVIDER_BACKEND_PREFIX, p->name);
    } else if (!valid_backend_name(p->backend)) {
        return fail(err, errlen, "%s.backend: expected 1 to %d characters of [A-Za-z0-9_.:-]", ctx,
                    SETTINGS_MAX_BACKEND_LEN);
    }

    const json_t *env = json_object_get(v, "api_key_env");
    if (env && !json_is_null(env)) {
        if (!json_is_string(env))
            return fail(err, errlen, "%s: expected a string or null",
                        keyname(kb, sizeof kb, ctx, "api_key_env"));
        if (!valid_env_name(json_string_value(env)))
            return fail(err, errlen, "%s: expected an environment variable name",
                        keyname(kb, sizeof kb, ctx, "api_key_env"));
        if (!(p->api_key_env = strdup(json_string_value(env))))
            return oom(err, errlen);
    }

    if (get_unsigned(v, ctx, "timeout_secs", DEFAULT_TIMEOUT_SECS, 1, 86400, &p->timeout_secs, err,
                     errlen) < 0 ||
        get_unsigned(v, ctx, "connect_timeout_secs", DEFAULT_CONNECT_TIMEOUT_SECS, 1, 3600,
                     &p->connect_timeout_secs, err, errlen) < 0 ||
        get_uint(v, ctx, "max_retries", DEFAULT_MAX_RETRIES, 0, 100, &u, err, errlen) < 0)
        return -1;
    p->max_retries = (unsigned)u;
    return 0;
}

static int parse_providers(struct agent_settings *s, const json_t *root, char *err, size_t errlen)
{
    const json_t *arr = json_object_get(root, "providers");
    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return fail(err, errlen, "providers: expected an array");
    size_t n = json_array_size(arr);
    if (n == 0)
        return 0;
    if (!(s->providers = calloc(n, sizeof(*s->providers))))
        return oom(err, errlen);
    for (size_t i = 0; i < n; i++) {
        s->n_providers = i + 1; /* so settings_free() releases a partly parsed entry */
        if (parse_provider(s, i, json_array_get(arr, i), err, errlen) < 0)
            return -1;
    }
    return 0;
}

static int add_intercept_path(struct agent_settings *s, const char *path, char *err, size_t errlen)
{
    char *dup = strdup(path);
    if (!dup)
        return oom(err, errlen);
    s->intercept_paths[s->n_intercept_paths] = dup;
    s->intercept_path_lens[s->n_intercept_paths] = strlen(dup);
    s->n_intercept_paths++;
    return 0;
}

static int parse_intercept(struct agent_settings *s, const json_t *root, char *err, size_t errlen)
{
    const json_t *ic, *extra = NULL;
    size_t n_extra = 0;

    if (get_object(root, "intercept", &ic, err, errlen) < 0)
        return -1;
    if (ic && (extra = json_object_get(ic, "extra_paths"))) {
        if (!json_is_array(extra))
            return fail(err, errlen, "intercept.extra_paths: expected an array");
        n_extra = json_array_size(extra);
        if (n_extra > SETTINGS_MAX_EXTRA_PATHS)
            return fail(err, errlen, "intercept.extra_paths: at most %d paths",
                        SETTINGS_MAX_EXTRA_PATHS);
    }
    size_t total = LR_DEFAULT_INTERCEPT_COUNT + n_extra;
    if (!(s->intercept_paths = calloc(total, sizeof(*s->intercept_paths))) ||
        !(s->intercept_path_lens = calloc(total, sizeof(*s->intercept_path_lens))))
        return oom(err, errlen);
    for (size_t i = 0; i < LR_DEFAULT_INTERCEPT_COUNT; i++)
        if (add_intercept_path(s, default_intercept[i], err, errlen) < 0)
            return -1;
    for (size_t i = 0; i < n_extra; i++) {
        const json_t *v = json_array_get(extra, i);
        if (!json_is_string(v))
            return fail(err, errlen, "intercept.extra_paths[%zu]: expected a string", i);
        const char *why = path_problem(json_string_value(v));
        if (why)
            return fail(err, errlen, "intercept.extra_paths[%zu]: %s", i, why);
        if (add_intercept_path(s, json_string_value(v), err, errlen) < 0)
            return -1;
    }
    return 0;
}

static int parse_bypass(struct agent_settings *s, const json_t *root, char *err, size_t errlen)
{
    const json_t *b;

    if (get_object(root, "bypass", &b, err, errlen) < 0)
        return -1;
    s->bypass_enabled = true;
    if (b && get_bool(b, "bypass", "enabled", true, &s->bypass_enabled, err, errlen) < 0)
        return -1;
    if (b) {
        if (get_str(b, "bypass", "provider", "auto", &s->bypass_provider, err, errlen) < 0)
            return -1;
    } else if (!(s->bypass_provider = strdup("auto"))) {
        return oom(err, errlen);
    }
    s->bypass_auto = strcmp(s->bypass_provider, "auto") == 0;
    if (s->bypass_auto)
        return 0;
    const struct agent_provider *p = agent_settings_provider(s, s->bypass_provider);
    if (!p)
        return fail(err, errlen,
                    "bypass.provider: unknown provider \"%.64s\" (expected \"auto\" or the name "
                    "of an enabled provider)",
                    s->bypass_provider);
    if (!p->enabled)
        return fail(err, errlen, "bypass.provider: provider \"%s\" is not enabled", p->name);
    return 0;
}

static int parse_http_server(struct agent_settings *s, const json_t *root, char *err, size_t errlen)
{
    const json_t *h;

    if (get_object(root, "http_server", &h, err, errlen) < 0)
        return -1;
    s->max_request_body_bytes = DEFAULT_MAX_BODY;
    s->sse_keepalive_interval_secs = DEFAULT_SSE_KEEPALIVE;
    if (!h)
        return 0;
    if (get_uint(h, "http_server", "max_request_body_bytes", DEFAULT_MAX_BODY, 1, (uint64_t)1 << 40,
                 &s->max_request_body_bytes, err, errlen) < 0 ||
        get_unsigned(h, "http_server", "sse_keepalive_interval_secs", DEFAULT_SSE_KEEPALIVE, 1,
                     3600, &s->sse_keepalive_interval_secs, err, errlen) < 0)
        return -1;
    return 0;
}

static int parse_translation(struct agent_settings *s, const json_t *root, char *err, size_t errlen)
{
    const json_t *t;

    if (get_object(root, "translation", &t, err, errlen) < 0)
        return -1;
    s->default_max_tokens = DEFAULT_MAX_TOKENS;
    if (!t)
        return 0;
    return get_unsigned(t, "translation", "default_max_tokens", DEFAULT_MAX_TOKENS, 1, 1000000,
                        &s->default_max_tokens, err, errlen);
}

/* Picks, among enabled providers of `type`, the one named like the type, else the first. */
static const struct agent_provider *pick_type(const struct agent_settings *s,
                                              enum agent_provider_type type)
{
    const struct agent_provider *first = NULL;
    const char *tname = agent_provider_type_to_str(type);
    for (size_t i = 0; i < s->n_providers; i++) {
        const struct agent_provider *p = &s->providers[i];
        if (!p->enabled || p->type != type)
            continue;
        if (strcmp(p->name, tname) == 0)
            return p;
        if (!first)
            first = p;
    }
    return first;
}

static const struct agent_provider *first_enabled(const struct agent_settings *s)
{
    for (size_t i = 0; i < s->n_providers; i++)
        if (s->providers[i].enabled)
            return &s->providers[i];
    return NULL;
}

static void precompute_classify(struct agent_settings *s)
{
    const struct agent_provider *oa = pick_type(s, AGENT_PROVIDER_OPENAI);
    const struct agent_provider *an = pick_type(s, AGENT_PROVIDER_ANTHROPIC);
    const struct agent_provider *any = first_enabled(s);

    s->cls_auto_openai = oa ? oa : any;
    s->cls_auto_anthropic = an ? an : any;
    if (s->bypass_auto) {
        s->cls_named = s->cls_named_ns = NULL;
        return;
    }
    s->cls_named = agent_settings_provider(s, s->bypass_provider); /* validated: enabled */
    s->cls_named_ns =
        (s->cls_named && s->cls_named->type != AGENT_PROVIDER_ANTHROPIC && an) ? an : s->cls_named;
}

static int parse_root(struct agent_settings *s, const json_t *root, char *err, size_t errlen)
{
    const json_t *v;
    uint64_t u;
    enum lr_log_level lvl;

    if (!json_is_object(root))
        return fail(err, errlen, "expected a JSON object at the top level");

    if ((v = json_object_get(root, "version"))) {
        if (!json_is_integer(v))
            return fail(err, errlen, "version: expected an integer");
        if (json_integer_value(v) != 1)
            return fail(err, errlen, "version: unsupported version %lld (expected 1)",
                        (long long)json_integer_value(v));
    }

    if (get_str(root, "", "spoa_bind", DEFAULT_SPOA_BIND, &s->spoa_bind, err, errlen) < 0)
        return -1;
    if (!valid_hostport(s->spoa_bind))
        return fail(err, errlen, "spoa_bind: expected host:port or [ipv6]:port");
    if (get_str(root, "", "engine_bind", DEFAULT_ENGINE_BIND, &s->engine_bind, err, errlen) < 0)
        return -1;
    if (!valid_hostport(s->engine_bind))
        return fail(err, errlen, "engine_bind: expected host:port or [ipv6]:port");

    if (get_str(root, "", "admin_socket", NULL, &s->admin_socket, err, errlen) < 0)
        return -1;
    if (s->admin_socket &&
        (!*s->admin_socket || strlen(s->admin_socket) > SETTINGS_MAX_SOCKET_PATH))
        return fail(err, errlen, "admin_socket: expected a path of 1 to %d bytes",
                    SETTINGS_MAX_SOCKET_PATH);

    static const char *const local_keys[] = {"spoa_socket", "engine_socket"};
    char **local[] = {&s->spoa_socket, &s->engine_socket};
    for (size_t i = 0; i < 2; i++) {
        if (get_str(root, "", local_keys[i], NULL, local[i], err, errlen) < 0)
            return -1;
        const char *p = *local[i];
        if (p && (p[0] != '/' || strlen(p) > SETTINGS_MAX_SOCKET_PATH))
            return fail(err, errlen, "%s: expected an absolute path of at most %d bytes",
                        local_keys[i], SETTINGS_MAX_SOCKET_PATH);
    }
    if (s->spoa_socket && s->engine_socket && strcmp(s->spoa_socket, s->engine_socket) == 0)
        return fail(err, errlen, "spoa_socket and engine_socket: the same path");

    if (get_unsigned(root, "", "threads", 1, 1, 64, &s->threads, err, errlen) < 0)
        return -1;

    if (get_str(root, "", "log_level", "info", &s->log_level, err, errlen) < 0)
        return -1;
    if (lr_log_level_from_str(s->log_level, &lvl) < 0)
        return fail(err, errlen, "log_level: expected error, warn, info, debug or trace");

    if (get_str(root, "", "api_dialect", "both", &s->api_dialect, err, errlen) < 0)
        return -1;
    if (strcmp(s->api_dialect, "openai") != 0 && strcmp(s->api_dialect, "anthropic") != 0 &&
        strcmp(s->api_dialect, "both") != 0)
        return fail(err, errlen, "api_dialect: expected \"openai\", \"anthropic\" or \"both\"");

    if (get_str(root, "", "engine_backend", LR_ENGINE_BACKEND, &s->engine_backend, err, errlen) < 0)
        return -1;
    if (!valid_backend_name(s->engine_backend))
        return fail(err, errlen, "engine_backend: expected 1 to %d characters of [A-Za-z0-9_.:-]",
                    SETTINGS_MAX_BACKEND_LEN);

    if (get_uint(root, "", "max_frame_size", LR_SPOP_MAX_FRAME_SIZE, 256, LR_SPOP_MAX_FRAME_SIZE,
                 &u, err, errlen) < 0)
        return -1;
    s->max_frame_size = (uint32_t)u;

    if (parse_providers(s, root, err, errlen) < 0 || parse_bypass(s, root, err, errlen) < 0 ||
        parse_intercept(s, root, err, errlen) < 0 || parse_http_server(s, root, err, errlen) < 0 ||
        parse_translation(s, root, err, errlen) < 0)
        return -1;

    if ((v = json_object_get(root, "routing")) && !json_is_null(v)) {
        if (!json_is_object(v))
            return fail(err, errlen, "routing: expected an object");
        s->routing = json_incref((json_t *)v);
    }

    precompute_classify(s);
    return 0;
}

/* Parses; *positional tells whether err starts with "line:col: ". */
static struct agent_settings *parse_impl(const char *json, size_t len, bool *positional, char *err,
                                         size_t errlen)
{
    json_error_t jerr;
    struct agent_settings *s;
    json_t *root;

    *positional = false;
    if (!json) {
        fail(err, errlen, "no input");
        return NULL;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (jerr.line > 0) {
            *positional = true;
            fail(err, errlen, "%d:%d: %s", jerr.line, jerr.column, jerr.text);
        } else {
            fail(err, errlen, "%s", jerr.text);
        }
        return NULL;
    }
    if (!(s = calloc(1, sizeof(*s)))) {
        json_decref(root);
        oom(err, errlen);
        return NULL;
    }
    s->root = root;
    atomic_init(&s->refs, 1);
    lr_sha256_hex(json, len, s->digest);
    s->loaded_at = time(NULL);
    if (parse_root(s, root, err, errlen) < 0) {
        settings_free(s);
        return NULL;
    }
    return s;
}

struct agent_settings *agent_settings_parse(const char *json, size_t len, char *err, size_t errlen)
{
    bool positional;
    return parse_impl(json, len, &positional, err, errlen);
}

static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return fail(err, errlen, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return fail(err, errlen, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, errlen, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > SETTINGS_MAX_FILE_BYTES) {
        close(fd);
        return fail(err, errlen, "%s: larger than %u bytes", path, SETTINGS_MAX_FILE_BYTES);
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return oom(err, errlen);
    }
    for (;;) {
        if (len == cap) { /* the file grew under us: stop at the cap */
            free(buf);
            close(fd);
            return fail(err, errlen, "%s: changed while being read", path);
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return fail(err, errlen, "%s: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    *out = buf;
    *outlen = len;
    return 0;
}

struct agent_settings *agent_settings_load(const char *path, char *err, size_t errlen)
{
    char *buf = NULL, msg[512];
    size_t len = 0;
    bool positional;
    struct agent_settings *s;

    if (!path) {
        fail(err, errlen, "no settings path");
        return NULL;
    }
    if (read_file(path, &buf, &len, err, errlen) < 0)
        return NULL;
    s = parse_impl(buf, len, &positional, msg, sizeof msg);
    free(buf);
    if (!s) {
        fail(err, errlen, "%s%s%s", path, positional ? ":" : ": ", msg);
        return NULL;
    }
    if (!(s->path = strdup(path))) {
        settings_free(s);
        oom(err, errlen);
        return NULL;
    }
    return s;
}

struct agent_settings *agent_settings_ref(struct agent_settings *s)
{
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void agent_settings_unref(struct agent_settings *s)
{
    if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        settings_free(s);
}

const struct agent_provider *agent_settings_provider(const struct agent_settings *s,
                                                     const char *name)
{
    if (!s || !name)
        return NULL;
    for (size_t i = 0; i < s->n_providers; i++)
        if (s->providers[i].name && strcmp(s->providers[i].name, name) == 0)
            return &s->providers[i];
    return NULL;
}

/* The list is short (6 defaults + a few extras): compare lengths first, then bytes. */
bool agent_settings_is_intercepted(const struct agent_settings *s, const char *path, size_t len)
{
    if (!s || !path)
        return false;
    for (size_t i = 0; i < s->n_intercept_paths; i++)
        if (s->intercept_path_lens[i] == len && memcmp(s->intercept_paths[i], path, len) == 0)
            return true;
    return false;
}

const char *agent_settings_config_bypass_provider(const struct agent_settings *s)
{
    const json_t *b = s && s->root ? json_object_get(s->root, "bypass") : NULL;
    const json_t *p = json_is_object(b) ? json_object_get(b, "provider") : NULL;
    return json_is_string(p) ? json_string_value(p) : "auto";
}

/* "openai, anthropic" (enabled providers, config order), truncated to fit. */
static void enabled_names(const struct agent_settings *s, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < s->n_providers && off < n; i++) {
        if (!s->providers[i].enabled)
            continue;
        int w = snprintf(buf + off, n - off, "%s%s", off ? ", " : "", s->providers[i].name);
        if (w < 0 || (size_t)w >= n - off)
            break;
        off += (size_t)w;
    }
    if (!buf[0])
        snprintf(buf, n, "none");
}

struct agent_settings *agent_settings_with_bypass_provider(const struct agent_settings *s,
                                                           const char *provider, char *err,
                                                           size_t errlen)
{
    char names[256];
    bool runtime = provider != NULL;

    if (!s || !s->root) {
        fail(err, errlen, "no settings");
        return NULL;
    }
    if (!provider)
        provider = agent_settings_config_bypass_provider(s);
    if (strcmp(provider, "auto") != 0) {
        const struct agent_provider *p;
        enabled_names(s, names, sizeof names);
        if (!valid_provider_name(provider)) {
            fail(err, errlen,
                 "invalid provider name (expected \"auto\" or 1 to %d characters of [a-z0-9_-]; "
                 "enabled providers: %s)",
                 SETTINGS_MAX_NAME_LEN, names);
            return NULL;
        }
        if (!(p = agent_settings_provider(s, provider))) {
            fail(err, errlen, "provider '%s' is not configured (enabled providers: %s, or auto)",
                 provider, names);
            return NULL;
        }
        if (!p->enabled) {
            fail(err, errlen, "provider '%s' is disabled (enabled providers: %s, or auto)",
                 provider, names);
            return NULL;
        }
    }

    /* Re-parse a private copy of the document: every derived field (and pointer into
     * `providers`) is rebuilt exactly as at load time, and no json_t is shared between
     * settings that different threads may release. */
    struct agent_settings *ns = calloc(1, sizeof(*ns));
    if (!ns) {
        oom(err, errlen);
        return NULL;
    }
    atomic_init(&ns->refs, 1);
    if (!(ns->root = json_deep_copy(s->root))) {
        free(ns);
        oom(err, errlen);
        return NULL;
    }
    if (parse_root(ns, ns->root, err, errlen) < 0)
        goto fail;
    char *dup = strdup(provider);
    if (!dup || (s->path && !(ns->path = strdup(s->path)))) {
        free(dup);
        oom(err, errlen);
        goto fail;
    }
    free(ns->bypass_provider);
    ns->bypass_provider = dup;
    ns->bypass_auto = strcmp(dup, "auto") == 0;
    ns->bypass_runtime = runtime;
    precompute_classify(ns);
    memcpy(ns->digest, s->digest, sizeof(ns->digest));
    ns->loaded_at = s->loaded_at;
    return ns;
fail:
    settings_free(ns);
    return NULL;
}
