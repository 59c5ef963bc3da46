/* Renderer tests: configs are built directly in C (no YAML loader involved), rendered, and
 * checked line by line; the files are also fed to a real `haproxy -c` when one is installed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "lr_defaults.h"
#include "render.h"
#include "supervise.h"

#define FAKE_KEY  "sk-FAKE-d3adb33f-never-on-disk-7c1e"
#define FAKE_KEY2 "sk-ant-FAKE-0ddba11-never-on-disk-42"

/* ---- building configs by hand ------------------------------------------------------ */

static char *xstrdup(const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s)
        assert_non_null(d);
    return d;
}

static void set_provider(struct cfg_provider *p, const char *name, enum cfg_provider_type type,
                         const char *scheme, const char *host, unsigned port, const char *prefix)
{
    char url[512];
    bool tls = strcmp(scheme, "https") == 0;
    bool v6 = strchr(host, ':') != NULL;
    bool defport = port == (tls ? 443u : 80u);
    char portbuf[16] = "";
    if (!defport)
        snprintf(portbuf, sizeof(portbuf), ":%u", port);
    snprintf(url, sizeof(url), "%s://%s%s%s%s%s", scheme, v6 ? "[" : "", host, v6 ? "]" : "",
             portbuf, prefix);
    memset(p, 0, sizeof(*p));
    p->name = xstrdup(name);
    p->type = type;
    p->enabled = true;
    p->base_url = xstrdup(url);
    p->tls = tls;
    p->host = xstrdup(host);
    p->port = port;
    p->path_prefix = xstrdup(prefix);
    p->timeout_secs = 600;
    p->connect_timeout_secs = 10;
    p->max_retries = 3;
}

static void set_key(struct cfg_provider *p, const char *env, const char *value)
{
    free(p->api_key);
    free(p->api_key_env);
    p->api_key = xstrdup(value);
    p->api_key_env = xstrdup(env);
}

/* The built-in defaults of DESIGN §6, by hand: openai + anthropic, no keys, bypass auto. */
static struct lr_config *cfg_new(void)
{
    struct lr_config *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->dialect = CFG_DIALECT_BOTH;
    c->providers = calloc(8, sizeof(*c->providers));
    assert_non_null(c->providers);
    set_provider(&c->providers[0], "openai", CFG_PROVIDER_OPENAI, "https", "api.openai.com", 443,
                 "");
    set_provider(&c->providers[1], "anthropic", CFG_PROVIDER_ANTHROPIC, "https",
                 "api.anthropic.com", 443, "");
    c->n_providers = 2;
    c->bypass_enabled = true;
    c->bypass_provider = xstrdup("auto");
    c->circuit_breaker.failure_threshold = 5;
    c->circuit_breaker.success_threshold = 2;
    c->circuit_breaker.open_secs = 60;
    c->provider_switch_notification.default_message = xstrdup("switched provider");
    c->http_server.max_request_body_bytes = 104857600;
    c->http_server.sse_keepalive_interval_secs = 15;
    c->haproxy.bind = xstrdup("127.0.0.1:8080");
    c->haproxy.stats_bind = xstrdup("127.0.0.1:8404");
    c->haproxy.maxconn = 4000;
    c->haproxy.failure_mode = CFG_FAILURE_STATIC;
    c->agent.spoa_bind = xstrdup("127.0.0.1:12345");
    c->agent.engine_bind = xstrdup("127.0.0.1:8081");
    c->agent.threads = 1;
    c->run_dir = xstrdup("./run");
    c->log_level = xstrdup("info");
    return c;
}

static struct cfg_provider *cfg_add_provider(struct lr_config *c)
{
    assert_true(c->n_providers < 8);
    return &c->providers[c->n_providers++];
}

static void cfg_add_extra_path(struct lr_config *c, const char *path)
{
    char **v = realloc(c->extra_paths, (c->n_extra_paths + 1) * sizeof(*v));
    assert_non_null(v);
    c->extra_paths = v;
    v[c->n_extra_paths++] = xstrdup(path);
}

static void free_targets(struct cfg_target *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(t[i].provider);
    free(t);
}

static void cfg_del(struct lr_config *c)
{
    for (size_t i = 0; i < c->n_providers; i++) {
        struct cfg_provider *p = &c->providers[i];
        free(p->name);
        free(p->base_url);
        free(p->host);
        free(p->path_prefix);
        free(p->api_key);
        free(p->api_key_env);
    }
    free(c->providers);
    for (size_t i = 0; i < c->n_extra_paths; i++)
        free(c->extra_paths[i]);
    free(c->extra_paths);
    for (size_t i = 0; i < c->n_rules; i++) {
        struct cfg_rule *r = &c->rules[i];
        free(r->name);
        free(r->model_pattern);
        free(r->primary);
        free_targets(r->fallbacks, r->n_fallbacks);
        free_targets(r->targets, r->n_targets);
        free_targets(r->alternatives, r->n_alternatives);
    }
    free(c->rules);
    free(c->bypass_provider);
    free(c->provider_switch_notification.default_message);
    free(c->haproxy.bind);
    free(c->haproxy.stats_bind);
    free(c->agent.spoa_bind);
    free(c->agent.engine_bind);
    free(c->agent.admin_socket);
    for (size_t i = 0; i < c->boltin.n_hosts; i++)
        free(c->boltin.hosts[i]);
    free(c->boltin.hosts);
    for (size_t i = 0; i < c->boltin.n_path_prefixes; i++)
        free(c->boltin.path_prefixes[i]);
    free(c->boltin.path_prefixes);
    free(c->run_dir);
    free(c->log_level);
    free(c->source_file);
    free(c);
}

static const struct render_paths test_paths = {
    .run_dir = "/srv/lr/run",
    .spoe_conf = "/srv/lr/run/spoe-lunaroute.conf",
    .routes_map = "/srv/lr/run/routes.map",
    .master_sock = "/srv/lr/run/haproxy-master.sock",
    .admin_socket = "/srv/lr/run/agent.sock",
};

static char *hcfg(const struct lr_config *c)
{
    char *s = render_haproxy_cfg(c, &test_paths);
    assert_non_null(s);
    return s;
}

/* Extracts the text of section `name` ("backend lr_provider_openai") up to the next
 * unindented line. */
static char *section(const char *cfg, const char *name)
{
    char hdr[256];
    snprintf(hdr, sizeof(hdr), "\n%s\n", name);
    const char *s = strstr(cfg, hdr);
    if (!s)
        return NULL;
    s++;
    const char *e = s + strlen(name) + 1;
    while (*e && !(e[-1] == '\n' && *e != ' ' && *e != '\n'))
        e++;
    return strndup(s, (size_t)(e - s));
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("expected to find:\n  %s\nin:\n%s", needle, hay);
}

static void assert_not_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle))
        fail_msg("did not expect to find:\n  %s\nin:\n%s", needle, hay);
}

/* The static chain: every line of the frontend that sets a lunaroute variable. */
static char *chain(const char *cfg)
{
    char *out = calloc(1, strlen(cfg) + 1);
    assert_non_null(out);
    const char *line = cfg;
    while (*line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line + 1) : strlen(line);
        if (strncmp(line, "    http-request set-var(txn.lunaroute.", 39) == 0)
            strncat(out, line + 4, len - 4);
        line += len;
    }
    return out;
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_key_configured(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    set_key(&c->providers[0], "OPENAI_API_KEY", FAKE_KEY);
    set_key(&c->providers[1], "ANTHROPIC_API_KEY", FAKE_KEY2);
    char *cfg = hcfg(c);
    char *oa = section(cfg, "backend lr_provider_openai");
    char *an = section(cfg, "backend lr_provider_anthropic");
    assert_non_null(oa);
    assert_non_null(an);
    assert_contains(oa, "    http-request set-header Authorization \"Bearer "
                        "%[env(OPENAI_API_KEY)]\"\n");
    assert_contains(oa, "    http-request del-header x-api-key\n");
    assert_contains(an, "    http-request set-header x-api-key \"%[env(ANTHROPIC_API_KEY)]\"\n");
    assert_contains(an, "    http-request del-header Authorization\n");
    assert_contains(an, "    http-request set-header anthropic-version 2023-06-01 if !{ "
                        "req.hdr(anthropic-version) -m found }\n");

    char *spoe = render_spoe_conf(c, &test_paths, RENDER_STANDALONE);
    char *map = render_routes_map(c);
    char *json = render_agent_json(c, &test_paths);
    assert_non_null(spoe);
    assert_non_null(map);
    assert_non_null(json);
    const char *all[] = {cfg, spoe, map, json};
    for (size_t i = 0; i < 4; i++) {
        assert_not_contains(all[i], FAKE_KEY);
        assert_not_contains(all[i], FAKE_KEY2);
        assert_not_contains(all[i], "d3adb33f");
    }
    assert_contains(json, "\"api_key_env\": \"OPENAI_API_KEY\"");
    free(oa);
    free(an);
    free(cfg);
    free(spoe);
    free(map);
    free(json);
    cfg_del(c);
}

static void test_no_key(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    /* An env name without a value is "no key" too. */
    c->providers[1].api_key_env = xstrdup("ANTHROPIC_API_KEY");
    char *cfg = hcfg(c);
    assert_not_contains(cfg, "set-header Authorization");
    assert_not_contains(cfg, "set-header x-api-key");
    assert_not_contains(cfg, "del-header Authorization");
    assert_not_contains(cfg, "del-header x-api-key");
    assert_not_contains(cfg, "anthropic-version 2023-06-01");
    /* Hop-by-hop headers are stripped and streams are not delayed, key or no key. */
    assert_contains(cfg, "http-request del-header Proxy-Authorization\n");
    assert_contains(cfg, "http-request del-header Connection if !{ req.hdr(upgrade) -m found }\n");
    assert_contains(cfg, "option http-no-delay\n");
    assert_not_contains(cfg, "env(");
    char *json = render_agent_json(c, &test_paths);
    json_error_t e;
    json_t *root = json_loads(json, 0, &e);
    assert_non_null(root);
    json_t *provs = json_object_get(root, "providers");
    for (size_t i = 0; i < json_array_size(provs); i++)
        assert_true(json_is_null(json_object_get(json_array_get(provs, i), "api_key_env")));
    json_decref(root);
    free(json);
    free(cfg);
    cfg_del(c);
}

/* Compose-style agent address: HAProxy must re-resolve it when the agent's container is
 * replaced, so the agent server lines use the resolvers (and the section is rendered even
 * when every provider is an IP literal). */
static void test_agent_host_name(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    for (size_t i = 0; i < c->n_providers; i++)
        c->providers[i].enabled = false;
    set_provider(cfg_add_provider(c), "v4", CFG_PROVIDER_OPENAI, "http", "10.1.2.3", 80, "");
    free(c->agent.spoa_bind);
    c->agent.spoa_bind = xstrdup("agent:12345");
    char *cfg = hcfg(c);
    assert_contains(cfg, "\nresolvers lr_dns\n");
    char *spoa = section(cfg, "backend lr_spoa");
    char *engine = section(cfg, "backend lr_engine");
    assert_contains(
        spoa, "    server agent agent:12345 check inter 2s downinter 250ms rise 1 fall 2 init-addr "
              "last,libc,none resolvers lr_dns\n");
    assert_contains(
        engine, "    server engine 127.0.0.1:8081 check inter 2s downinter 250ms rise 1 fall 3\n");
    free(spoa);
    free(engine);
    free(cfg);
    cfg_del(c);
}

static void test_server_lines(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    set_provider(cfg_add_provider(c), "local", CFG_PROVIDER_OPENAI, "http", "localhost", 8000, "");
    set_provider(cfg_add_provider(c), "groq", CFG_PROVIDER_OPENAI, "https", "api.groq.com", 443,
                 "/openai");
    set_provider(cfg_add_provider(c), "v6", CFG_PROVIDER_OPENAI, "https", "::1", 8443, "");
    set_provider(cfg_add_provider(c), "v4", CFG_PROVIDER_OPENAI, "http", "10.1.2.3", 80, "");
    c->providers[5].connect_timeout_secs = 3;
    c->providers[5].timeout_secs = 120;
    c->providers[5].max_retries = 1;
    char *cfg = hcfg(c);

    char *oa = section(cfg, "backend lr_provider_openai");
    assert_contains(oa, "    server openai api.openai.com:443 ssl verify required ca-file "
                        "@system-ca sni str(api.openai.com) alpn http/1.1 init-addr "
                        "last,libc,none resolvers lr_dns\n");
    assert_contains(oa, "    http-request set-header Host api.openai.com\n");
    assert_contains(oa, "    http-reuse safe\n");
    assert_contains(oa, "    timeout connect 10s\n");
    assert_contains(oa, "    timeout server 600s\n");
    assert_contains(oa, "    retries 3\n");
    assert_not_contains(oa, "set-path");

    char *lo = section(cfg, "backend lr_provider_local");
    /* localhost is /etc/hosts-only: runtime DNS would answer NXDOMAIN and take it down. */
    assert_contains(lo, "    server local localhost:8000\n");
    assert_not_contains(lo, "ssl");
    assert_not_contains(lo, "sni");
    assert_contains(lo, "    http-request set-header Host localhost:8000\n");

    char *gq = section(cfg, "backend lr_provider_groq");
    assert_contains(gq, "    http-request set-path /openai%[path]\n");
    assert_contains(gq, "    http-request set-header Host api.groq.com\n");

    char *v6 = section(cfg, "backend lr_provider_v6");
    assert_contains(v6, "    server v6 [::1]:8443 ssl verify required ca-file @system-ca alpn "
                        "http/1.1\n");
    assert_contains(v6, "    http-request set-header Host [::1]:8443\n");

    char *v4 = section(cfg, "backend lr_provider_v4");
    assert_contains(v4, "    server v4 10.1.2.3:80\n");
    assert_contains(v4, "    http-request set-header Host 10.1.2.3\n");
    assert_contains(v4, "    timeout connect 3s\n");
    assert_contains(v4, "    timeout server 120s\n");
    assert_contains(v4, "    retries 1\n");

    /* resolvers rendered exactly once; no buffering or compression anywhere */
    char *r = strstr(cfg, "\nresolvers lr_dns\n");
    assert_non_null(r);
    assert_null(strstr(r + 1, "\nresolvers lr_dns\n"));
    assert_contains(cfg, "    parse-resolv-conf\n");
    assert_not_contains(cfg, "http-buffer-request");
    assert_not_contains(cfg, "compression");
    assert_not_contains(cfg, "force-set-var");

    free(oa);
    free(lo);
    free(gq);
    free(v6);
    free(v4);
    free(cfg);
    cfg_del(c);
}

static void test_disabled_provider_has_no_backend(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    c->providers[1].enabled = false;
    char *cfg = hcfg(c);
    assert_null(section(cfg, "backend lr_provider_anthropic"));
    char *map = render_routes_map(c);
    assert_string_equal(map, "lr_engine lr_engine\nlr_provider_openai lr_provider_openai\n");
    /* auto with only openai enabled: everything not intercepted goes to openai */
    char *ch = chain(cfg);
    assert_string_equal(
        ch, "http-request set-var(txn.lunaroute.route) str(engine) if !lr_answered lr_intercept\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_engine) if !lr_answered "
            "lr_intercept\n"
            "http-request set-var(txn.lunaroute.route) str(bypass) if !lr_answered\n"
            "http-request set-var(txn.lunaroute.provider) str(openai) if !lr_answered\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_provider_openai) if "
            "!lr_answered\n");
    free(ch);
    free(map);
    free(cfg);
    cfg_del(c);
}

static void test_chain_bypass_disabled(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    c->bypass_enabled = false;
    char *cfg = hcfg(c);
    char *ch = chain(cfg);
    assert_string_equal(
        ch, "http-request set-var(txn.lunaroute.route) str(engine) if !lr_answered lr_intercept\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_engine) if !lr_answered "
            "lr_intercept\n"
            "http-request set-var(txn.lunaroute.route) str(engine) if !lr_answered\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_engine) if !lr_answered\n");
    free(ch);
    free(cfg);
    cfg_del(c);
}

static void test_chain_auto(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    /* Among providers of a type, the one named like the type wins over config order. */
    struct cfg_provider *first = cfg_add_provider(c);
    set_provider(first, "claude2", CFG_PROVIDER_ANTHROPIC, "https", "x.example", 443, "");
    struct cfg_provider tmp = c->providers[1];
    c->providers[1] = c->providers[2];
    c->providers[2] = tmp;
    char *cfg = hcfg(c);
    char *ch = chain(cfg);
    assert_string_equal(
        ch, "http-request set-var(txn.lunaroute.route) str(engine) if !lr_answered lr_intercept\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_engine) if !lr_answered "
            "lr_intercept\n"
            "http-request set-var(txn.lunaroute.route) str(bypass) if !lr_answered "
            "lr_anthropic_ns || !lr_answered lr_anthropic_hdr\n"
            "http-request set-var(txn.lunaroute.provider) str(anthropic) if !lr_answered "
            "lr_anthropic_ns || !lr_answered lr_anthropic_hdr\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_provider_anthropic) if "
            "!lr_answered lr_anthropic_ns || !lr_answered lr_anthropic_hdr\n"
            "http-request set-var(txn.lunaroute.route) str(bypass) if !lr_answered\n"
            "http-request set-var(txn.lunaroute.provider) str(openai) if !lr_answered\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_provider_openai) if "
            "!lr_answered\n");
    assert_contains(cfg, "    acl lr_anthropic_ns path_beg /v1/messages/\n");
    assert_contains(cfg, "    acl lr_anthropic_hdr req.hdr_cnt(anthropic-version) gt 0\n");
    assert_contains(cfg, "    acl lr_anthropic_hdr req.hdr_cnt(x-api-key) gt 0\n");
    assert_contains(cfg, "    acl lr_answered var(txn.lunaroute.backend) -m found\n");
    assert_contains(cfg, "    http-request track-sc2 int(1) table lr_spoe_errors if "
                         "!lr_answered\n    http-request sc-inc-gpc0(2) if !lr_answered\n");
    assert_not_contains(cfg, "return status 503");

    /* With "anthropic" disabled, the first enabled Anthropic-type provider is chosen. */
    free(ch);
    free(cfg);
    c->providers[2].enabled = false;
    cfg = hcfg(c);
    ch = chain(cfg);
    assert_contains(ch, "str(lr_provider_claude2) if !lr_answered lr_anthropic_ns");
    free(ch);
    free(cfg);
    cfg_del(c);
}

static void test_chain_named(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    free(c->bypass_provider);
    c->bypass_provider = xstrdup("openai");
    char *cfg = hcfg(c);
    char *ch = chain(cfg);
    /* Named non-Anthropic provider: the Anthropic namespace still goes to Anthropic,
     * headers do not matter. */
    assert_string_equal(
        ch, "http-request set-var(txn.lunaroute.route) str(engine) if !lr_answered lr_intercept\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_engine) if !lr_answered "
            "lr_intercept\n"
            "http-request set-var(txn.lunaroute.route) str(bypass) if !lr_answered "
            "lr_anthropic_ns\n"
            "http-request set-var(txn.lunaroute.provider) str(anthropic) if !lr_answered "
            "lr_anthropic_ns\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_provider_anthropic) if "
            "!lr_answered lr_anthropic_ns\n"
            "http-request set-var(txn.lunaroute.route) str(bypass) if !lr_answered\n"
            "http-request set-var(txn.lunaroute.provider) str(openai) if !lr_answered\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_provider_openai) if "
            "!lr_answered\n");
    free(ch);
    free(cfg);

    /* Named Anthropic provider: everything not intercepted goes there. */
    free(c->bypass_provider);
    c->bypass_provider = xstrdup("anthropic");
    cfg = hcfg(c);
    ch = chain(cfg);
    assert_string_equal(
        ch, "http-request set-var(txn.lunaroute.route) str(engine) if !lr_answered lr_intercept\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_engine) if !lr_answered "
            "lr_intercept\n"
            "http-request set-var(txn.lunaroute.route) str(bypass) if !lr_answered\n"
            "http-request set-var(txn.lunaroute.provider) str(anthropic) if !lr_answered\n"
            "http-request set-var(txn.lunaroute.backend) str(lr_provider_anthropic) if "
            "!lr_answered\n");
    free(ch);
    free(cfg);
    cfg_del(c);
}

static void test_reject_mode(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    c->haproxy.failure_mode = CFG_FAILURE_REJECT;
    char *cfg = hcfg(c);
    char *ch = chain(cfg);
    assert_string_equal(ch, "");
    const char *counting = "    http-request sc-inc-gpc0(2) if !lr_answered\n";
    const char *ret = "    http-request return status 503 content-type application/json string "
                      "'{\"error\":{\"message\":\"LunaRoute agent unavailable\",\"type\":"
                      "\"service_unavailable\",\"code\":503}}' if !lr_answered\n";
    assert_contains(cfg, ret);
    assert_true(strstr(cfg, counting) < strstr(cfg, ret));
    free(ch);
    free(cfg);
    cfg_del(c);
}

static void test_frontend_common(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    cfg_add_extra_path(c, "/v1/responses");
    cfg_add_extra_path(c, "/v1/foo");
    char *cfg = hcfg(c);
    assert_contains(cfg, "    acl lr_intercept path /v1/chat/completions /v1/messages "
                         "/v1/models /healthz /readyz /metrics /v1/responses /v1/foo\n");
    assert_contains(cfg, "    filter spoe engine lunaroute config "
                         "/srv/lr/run/spoe-lunaroute.conf\n");
    assert_contains(cfg, "    use_backend %[var(txn.lunaroute.backend),map(/srv/lr/run/"
                         "routes.map,lr_engine)]\n");
    assert_contains(cfg, "    default_backend lr_engine\n");
    assert_contains(cfg, "    bind 127.0.0.1:8080\n");
    assert_contains(cfg, "    maxconn 4000\n");
    assert_contains(cfg, "    stats socket /srv/lr/run/haproxy.sock mode 600 level admin\n");
    assert_contains(cfg, "%[var(txn.lunaroute.route)]");
    assert_contains(cfg, "%[var(txn.lunaroute.backend)]");
    assert_contains(cfg, "%[var(txn.lunaroute.provider)]");
    char *st = section(cfg, "frontend lr_stats");
    assert_contains(st, "    bind 127.0.0.1:8404\n");
    assert_contains(st, "    http-request use-service prometheus-exporter if { path /metrics }\n");
    free(st);
    char *sp = section(cfg, "backend lr_spoa");
    assert_contains(sp, "    mode tcp\n");
    assert_contains(sp, "    option spop-check\n");
    assert_contains(
        sp, "    server agent 127.0.0.1:12345 check inter 2s downinter 250ms rise 1 fall 2\n");
    free(sp);
    char *en = section(cfg, "backend lr_engine");
    assert_contains(
        en, "    server engine 127.0.0.1:8081 check inter 2s downinter 250ms rise 1 fall 3\n");
    assert_contains(en, "    option httpchk GET /healthz\n");
    free(en);
    free(cfg);

    /* a wildcard listener is reached through loopback */
    free(c->agent.engine_bind);
    c->agent.engine_bind = xstrdup("0.0.0.0:9001");
    free(c->agent.spoa_bind);
    c->agent.spoa_bind = xstrdup("[::]:9002");
    cfg = hcfg(c);
    assert_contains(cfg, "    server engine 127.0.0.1:9001 check");
    assert_contains(cfg, "    server agent [::1]:9002 check");
    free(cfg);
    cfg_del(c);
}

static void test_spoe_conf(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    char *s = render_spoe_conf(c, &test_paths, RENDER_STANDALONE);
    assert_non_null(s);
    assert_contains(s, "[lunaroute]\nspoe-agent lunaroute-agent\n");
    assert_contains(s, "    messages lunaroute-classify\n");
    assert_contains(s, "    option var-prefix lunaroute\n");
    assert_contains(s, "    option set-on-error error\n");
    assert_contains(s, "    option pipelining\n");
    assert_contains(s, "    use-backend lr_spoa\n");
    assert_contains(s, "spoe-message lunaroute-classify\n    args method=method path=path "
                       "av=req.hdr_cnt(anthropic-version) xk=req.hdr_cnt(x-api-key) "
                       "auth=http_auth_type,lower\n    event "
                       "on-frontend-http-request\n");
    assert_not_contains(s, "async");
    assert_not_contains(s, "force-set-var");
    free(s);
    cfg_del(c);
}

static void test_routes_map(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    set_provider(cfg_add_provider(c), "groq", CFG_PROVIDER_OPENAI, "https", "api.groq.com", 443,
                 "/openai");
    char *m = render_routes_map(c);
    assert_string_equal(m, "lr_engine lr_engine\n"
                           "lr_provider_openai lr_provider_openai\n"
                           "lr_provider_anthropic lr_provider_anthropic\n"
                           "lr_provider_groq lr_provider_groq\n");
    assert_not_contains(m, "lr_spoa");
    free(m);
    cfg_del(c);
}

static struct cfg_target *targets(size_t n, const char *const *names)
{
    struct cfg_target *t = calloc(n, sizeof(*t));
    assert_non_null(t);
    for (size_t i = 0; i < n; i++) {
        t[i].provider = xstrdup(names[i]);
        t[i].weight = (unsigned)i + 1;
    }
    return t;
}

static void test_agent_json(void **state)
{
    (void)state;
    struct lr_config *c = cfg_new();
    set_key(&c->providers[0], "OPENAI_API_KEY", FAKE_KEY);
    cfg_add_extra_path(c, "/v1/responses");
    c->rules = calloc(2, sizeof(*c->rules));
    assert_non_null(c->rules);
    c->n_rules = 2;
    c->rules[0].name = xstrdup("claude");
    c->rules[0].model_pattern = xstrdup("^claude-");
    c->rules[0].priority = 10;
    c->rules[0].primary = xstrdup("anthropic");
    c->rules[0].fallbacks = targets(1, (const char *const[]){"openai"});
    c->rules[0].n_fallbacks = 1;
    c->rules[1].name = xstrdup("gpt");
    c->rules[1].model_pattern = xstrdup("^gpt-");
    c->rules[1].strategy = CFG_STRATEGY_WEIGHTED_ROUND_ROBIN;
    c->rules[1].targets = targets(2, (const char *const[]){"openai", "anthropic"});
    c->rules[1].n_targets = 2;

    char *s = render_agent_json(c, &test_paths);
    assert_non_null(s);
    assert_not_contains(s, FAKE_KEY);
    json_error_t e;
    json_t *root = json_loads(s, 0, &e);
    if (!root)
        fail_msg("agent.json does not parse: %d:%d: %s", e.line, e.column, e.text);
    assert_int_equal(json_integer_value(json_object_get(root, "version")), 1);
    assert_string_equal(json_string_value(json_object_get(root, "spoa_bind")), "127.0.0.1:12345");
    assert_string_equal(json_string_value(json_object_get(root, "engine_bind")), "127.0.0.1:8081");
    assert_string_equal(json_string_value(json_object_get(root, "admin_socket")),
                        "/srv/lr/run/agent.sock");
    assert_int_equal(json_integer_value(json_object_get(root, "threads")), 1);
    assert_string_equal(json_string_value(json_object_get(root, "log_level")), "info");
    assert_string_equal(json_string_value(json_object_get(root, "api_dialect")), "both");
    assert_string_equal(json_string_value(json_object_get(root, "engine_backend")), "lr_engine");
    json_t *bp = json_object_get(root, "bypass");
    assert_true(json_is_true(json_object_get(bp, "enabled")));
    assert_string_equal(json_string_value(json_object_get(bp, "provider")), "auto");
    json_t *ex = json_object_get(json_object_get(root, "intercept"), "extra_paths");
    assert_int_equal(json_array_size(ex), 1);
    assert_string_equal(json_string_value(json_array_get(ex, 0)), "/v1/responses");

    json_t *provs = json_object_get(root, "providers");
    assert_int_equal(json_array_size(provs), 2);
    json_t *p0 = json_array_get(provs, 0);
    assert_string_equal(json_string_value(json_object_get(p0, "name")), "openai");
    assert_string_equal(json_string_value(json_object_get(p0, "type")), "openai");
    assert_true(json_is_true(json_object_get(p0, "enabled")));
    assert_string_equal(json_string_value(json_object_get(p0, "base_url")),
                        "https://api.openai.com");
    assert_string_equal(json_string_value(json_object_get(p0, "backend")), "lr_provider_openai");
    assert_string_equal(json_string_value(json_object_get(p0, "api_key_env")), "OPENAI_API_KEY");
    assert_int_equal(json_integer_value(json_object_get(p0, "timeout_secs")), 600);
    assert_int_equal(json_integer_value(json_object_get(p0, "connect_timeout_secs")), 10);
    assert_int_equal(json_integer_value(json_object_get(p0, "max_retries")), 3);
    json_t *p1 = json_array_get(provs, 1);
    assert_string_equal(json_string_value(json_object_get(p1, "type")), "anthropic");
    assert_true(json_is_null(json_object_get(p1, "api_key_env")));

    json_t *routing = json_object_get(root, "routing");
    json_t *rules = json_object_get(routing, "rules");
    assert_int_equal(json_array_size(rules), 2);
    json_t *r0 = json_array_get(rules, 0);
    assert_string_equal(json_string_value(json_object_get(r0, "name")), "claude");
    assert_string_equal(json_string_value(json_object_get(r0, "model_pattern")), "^claude-");
    assert_int_equal(json_integer_value(json_object_get(r0, "priority")), 10);
    assert_string_equal(json_string_value(json_object_get(r0, "strategy")), "");
    assert_string_equal(json_string_value(json_object_get(r0, "primary")), "anthropic");
    assert_string_equal(json_string_value(json_array_get(json_object_get(r0, "fallbacks"), 0)),
                        "openai");
    json_t *r1 = json_array_get(rules, 1);
    assert_string_equal(json_string_value(json_object_get(r1, "strategy")), "weighted-round-robin");
    assert_true(json_is_null(json_object_get(r1, "primary")));
    json_t *t1 = json_array_get(json_object_get(r1, "targets"), 1);
    assert_string_equal(json_string_value(json_object_get(t1, "provider")), "anthropic");
    assert_int_equal(json_integer_value(json_object_get(t1, "weight")), 2);
    assert_true(json_is_array(json_object_get(r1, "alternatives")));
    json_t *cb = json_object_get(routing, "circuit_breaker");
    assert_int_equal(json_integer_value(json_object_get(cb, "failure_threshold")), 5);
    assert_int_equal(json_integer_value(json_object_get(cb, "success_threshold")), 2);
    assert_int_equal(json_integer_value(json_object_get(cb, "open_secs")), 60);
    json_t *psn = json_object_get(routing, "provider_switch_notification");
    assert_true(json_is_false(json_object_get(psn, "enabled")));
    json_t *hs = json_object_get(root, "http_server");
    assert_int_equal(json_integer_value(json_object_get(hs, "max_request_body_bytes")), 104857600);
    assert_int_equal(json_integer_value(json_object_get(hs, "sse_keepalive_interval_secs")), 15);
    json_decref(root);
    free(s);

    /* a configured admin socket wins */
    c->agent.admin_socket = xstrdup("/tmp/x.sock");
    s = render_agent_json(c, &test_paths);
    assert_contains(s, "\"admin_socket\": \"/tmp/x.sock\"");
    free(s);
    cfg_del(c);
}

static void test_mode_names(void **state)
{
    (void)state;
    enum render_mode m;
    assert_int_equal(render_mode_from_str("boltin", &m), 0);
    assert_int_equal(m, RENDER_BOLTIN);
    assert_int_equal(render_mode_from_str("standalone", &m), 0);
    assert_int_equal(m, RENDER_STANDALONE);
    assert_int_equal(render_mode_from_str("nope", &m), -1);
    assert_string_equal(render_mode_to_str(RENDER_BOLTIN), "boltin");
}

/* ---- files on disk ------------------------------------------------------------------- */

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void assert_dir_has_no_secret(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        char *s = read_all(p);
        assert_non_null(s);
        assert_not_contains(s, FAKE_KEY);
        assert_not_contains(s, FAKE_KEY2);
        free(s);
        n++;
    }
    closedir(d);
    assert_true(n >= 4);
}

static void test_write_all(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/lr-test-render-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char out[4096];
    snprintf(out, sizeof(out), "%s/sub/run", tmpl);
    struct lr_config *c = cfg_new();
    set_key(&c->providers[0], "OPENAI_API_KEY", FAKE_KEY);
    set_key(&c->providers[1], "ANTHROPIC_API_KEY", FAKE_KEY2);
    char err[512] = "";
    assert_int_equal(render_write_all(c, RENDER_STANDALONE, out, err, sizeof(err)), 0);
    struct stat st;
    assert_int_equal(stat(out, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    char p[4200];
    snprintf(p, sizeof(p), "%s/agent.json", out);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    const char *names[] = {"haproxy.cfg", "spoe-lunaroute.conf", "routes.map"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/%s", out, names[i]);
        assert_int_equal(stat(p, &st), 0);
    }
    /* paths inside are absolute */
    snprintf(p, sizeof(p), "%s/haproxy.cfg", out);
    char *cfg = read_all(p);
    char want[4300];
    snprintf(want, sizeof(want), "config %s/spoe-lunaroute.conf\n", out);
    assert_contains(cfg, want);
    free(cfg);
    assert_dir_has_no_secret(out);

    assert_int_equal(render_write_all(c, RENDER_BOLTIN, out, err, sizeof(err)), 0);
    snprintf(p, sizeof(p), "%s/frontend-snippet.cfg", out);
    char *snip = read_all(p);
    assert_non_null(snip);
    assert_contains(snip, "filter spoe engine lunaroute config");
    assert_contains(snip, "use_backend %[var(txn.lunaroute.backend),map(");
    assert_not_contains(snip, "\nfrontend ");
    free(snip);
    snprintf(p, sizeof(p), "%s/lunaroute-backends.cfg", out);
    char *be = read_all(p);
    assert_non_null(be);
    assert_contains(be, "backend lr_provider_openai\n");
    assert_contains(be, "backend lr_spoe_errors\n");
    assert_not_contains(be, "global\n");
    assert_not_contains(be, "defaults\n");
    free(be);
    assert_dir_has_no_secret(out);
    rm_rf(out);

    /* agent.local_sockets unset: on in standalone mode, off in boltin mode */
    assert_true(render_local_sockets(c, RENDER_STANDALONE));
    assert_false(render_local_sockets(c, RENDER_BOLTIN));
    c->agent.local_sockets_set = true;
    c->agent.local_sockets = false;
    assert_false(render_local_sockets(c, RENDER_STANDALONE));
    c->agent.local_sockets = true;
    assert_true(render_local_sockets(c, RENDER_BOLTIN));
    /* agent.local_sockets: HAProxy reaches both agent listeners through run_dir */
    assert_int_equal(render_write_all(c, RENDER_STANDALONE, out, err, sizeof(err)), 0);
    snprintf(p, sizeof(p), "%s/haproxy.cfg", out);
    cfg = read_all(p);
    snprintf(want, sizeof(want), "    server agent unix@%s/spoa.sock check inter 2s", out);
    assert_contains(cfg, want);
    snprintf(want, sizeof(want), "    server engine unix@%s/engine.sock check inter 2s", out);
    assert_contains(cfg, want);
    free(cfg);
    snprintf(p, sizeof(p), "%s/agent.json", out);
    char *aj = read_all(p);
    snprintf(want, sizeof(want), "\"engine_socket\": \"%s/engine.sock\"", out);
    assert_contains(aj, want);
    free(aj);
    rm_rf(out);
    /* ... which must fit a unix socket address (107 bytes) */
    char deep[4200];
    snprintf(deep, sizeof(deep), "%s/%0100d", tmpl, 0);
    assert_int_equal(render_write_all(c, RENDER_STANDALONE, deep, err, sizeof(err)), -1);
    assert_contains(err, "too long for the agent's unix sockets");
    assert_contains(err, "agent.local_sockets: false");
    c->agent.local_sockets = false;
    assert_int_equal(render_write_all(c, RENDER_STANDALONE, deep, err, sizeof(err)), 0);
    rm_rf(deep);

    /* a directory HAProxy could not reference is refused */
    char bad[4200];
    snprintf(bad, sizeof(bad), "%s/with space", tmpl);
    assert_int_equal(render_write_all(c, RENDER_STANDALONE, bad, err, sizeof(err)), -1);
    assert_contains(err, "cannot carry");
    rmdir(bad);
    snprintf(bad, sizeof(bad), "%s/sub", tmpl);
    rmdir(bad);
    rmdir(tmpl);
    cfg_del(c);
}

/* ---- haproxy -c ---------------------------------------------------------------------- */

static const char *haproxy_bin(void)
{
    const char *b = getenv("LUNAROUTE_HAPROXY_BIN");
    if (b && *b)
        return b;
    static const char *const cands[] = {"/usr/sbin/haproxy", "/usr/local/sbin/haproxy",
                                        "/usr/bin/haproxy"};
    for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++)
        if (access(cands[i], X_OK) == 0)
            return cands[i];
    return NULL;
}

static int run_haproxy_check(const char *bin, const char *f1, const char *f2)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (f2)
            execl(bin, bin, "-c", "-q", "-f", f1, "-f", f2, (char *)NULL);
        else
            execl(bin, bin, "-c", "-q", "-f", f1, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void check_with_haproxy(const char *bin, struct lr_config *c, const char *what)
{
    char tmpl[] = "/tmp/lr-test-hacheck-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char err[512] = "";
    assert_int_equal(render_write_all(c, RENDER_STANDALONE, tmpl, err, sizeof(err)), 0);
    char cfg[4096];
    snprintf(cfg, sizeof(cfg), "%s/haproxy.cfg", tmpl);
    int rc = run_haproxy_check(bin, cfg, NULL);
    if (rc != 0) {
        char *text = read_all(cfg);
        fail_msg("haproxy -c rejected the %s configuration (exit %d):\n%s", what, rc, text);
    }

    /* boltin: the backends file next to a minimal fleet config with the snippet pasted in */
    assert_int_equal(render_write_all(c, RENDER_BOLTIN, tmpl, err, sizeof(err)), 0);
    char snip_path[4200], fleet[4200], be[4200];
    snprintf(snip_path, sizeof(snip_path), "%s/frontend-snippet.cfg", tmpl);
    snprintf(fleet, sizeof(fleet), "%s/fleet.cfg", tmpl);
    snprintf(be, sizeof(be), "%s/lunaroute-backends.cfg", tmpl);
    char *snip = read_all(snip_path);
    FILE *f = fopen(fleet, "w");
    assert_non_null(f);
    fprintf(f,
            "global\n    maxconn 100\ndefaults\n    mode http\n    timeout connect 5s\n"
            "    timeout client 30s\n    timeout server 30s\n"
            "frontend fleet\n    bind 127.0.0.1:18080\n%s    default_backend fleet_app\n"
            "backend fleet_app\n    server app 127.0.0.1:9\n",
            snip);
    fclose(f);
    free(snip);
    rc = run_haproxy_check(bin, fleet, be);
    if (rc != 0)
        fail_msg("haproxy -c rejected the boltin %s configuration (exit %d)", what, rc);
    rm_rf(tmpl);
}

static void test_haproxy_accepts(void **state)
{
    (void)state;
    const char *bin = haproxy_bin();
    if (!bin) {
        print_message("haproxy not installed: skipping haproxy -c\n");
        skip();
    }
    struct lr_config *c = cfg_new();
    check_with_haproxy(bin, c, "default");
    c->agent.local_sockets_set = c->agent.local_sockets = true;
    check_with_haproxy(bin, c, "local-sockets");

    set_key(&c->providers[0], "OPENAI_API_KEY", FAKE_KEY);
    set_key(&c->providers[1], "ANTHROPIC_API_KEY", FAKE_KEY2);
    set_provider(cfg_add_provider(c), "groq", CFG_PROVIDER_OPENAI, "https", "api.groq.com", 443,
                 "/openai");
    set_provider(cfg_add_provider(c), "local", CFG_PROVIDER_OPENAI, "http", "127.0.0.1", 8000, "");
    set_provider(cfg_add_provider(c), "v6", CFG_PROVIDER_ANTHROPIC, "https", "::1", 8443, "/x");
    cfg_add_extra_path(c, "/v1/responses");
    free(c->bypass_provider);
    c->bypass_provider = xstrdup("groq");
    check_with_haproxy(bin, c, "key-configured");

    c->bypass_enabled = false;
    check_with_haproxy(bin, c, "bypass-disabled");

    c->haproxy.failure_mode = CFG_FAILURE_REJECT;
    check_with_haproxy(bin, c, "reject");
    cfg_del(c);
}

/* The agent restart back-off used by `up` (supervise.c). */
static void test_backoff(void **state)
{
    (void)state;
    double d = supervise_next_backoff(0, 0);
    assert_true(d > 0.099 && d < 0.101);
    d = supervise_next_backoff(d, 1);
    assert_true(d > 0.199 && d < 0.201);
    for (int i = 0; i < 10; i++)
        d = supervise_next_backoff(d, 1);
    assert_true(d > 4.999 && d < 5.001);
    d = supervise_next_backoff(d, 30); /* stayed up 30 s: back to the start */
    assert_true(d > 0.099 && d < 0.101);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_configured),
        cmocka_unit_test(test_no_key),
        cmocka_unit_test(test_server_lines),
        cmocka_unit_test(test_agent_host_name),
        cmocka_unit_test(test_disabled_provider_has_no_backend),
        cmocka_unit_test(test_chain_bypass_disabled),
        cmocka_unit_test(test_chain_auto),
        cmocka_unit_test(test_chain_named),
        cmocka_unit_test(test_reject_mode),
        cmocka_unit_test(test_frontend_common),
        cmocka_unit_test(test_spoe_conf),
        cmocka_unit_test(test_routes_map),
        cmocka_unit_test(test_agent_json),
        cmocka_unit_test(test_mode_names),
        cmocka_unit_test(test_write_all),
        cmocka_unit_test(test_haproxy_accepts),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
