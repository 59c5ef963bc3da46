/* Unit tests for control/config.c: defaults, YAML, ${VAR}, environment overrides,
 * validation messages with exact positions, LunaRoute-shaped files, and secrets. Every test
 * uses a fake environment table, never the process environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* ---- fake environment ---------------------------------------------------------------- */

struct fake_env {
    const char *kv[32]; /* name, value, name, value, ..., NULL */
};

static const char *fake_getenv(const char *name, void *ud)
{
    const struct fake_env *e = ud;
    for (size_t i = 0; e && e->kv[i]; i += 2)
        if (strcmp(e->kv[i], name) == 0)
            return e->kv[i + 1];
    return NULL;
}

static struct fake_env empty_env = {{NULL}};

/* ---- helpers ------------------------------------------------------------------------- */

static char all_errs[16384];

/* Loads yaml; fills all_errs with every formatted error, one per line. */
static int load_env(const char *yaml, struct fake_env *env, struct lr_config **c)
{
    struct cfg_errors errs = {0};
    int rc = config_load_string(yaml, yaml ? strlen(yaml) : 0, "t.yaml", fake_getenv,
                                env ? env : &empty_env, c, &errs);
    all_errs[0] = 0;
    size_t off = 0;
    for (size_t i = 0; i < errs.n; i++) {
        char line[1024];
        cfg_error_format(&errs.v[i], line, sizeof(line));
        off += (size_t)snprintf(all_errs + off, sizeof(all_errs) - off, "%s\n", line);
        if (off >= sizeof(all_errs))
            off = sizeof(all_errs) - 1;
    }
    if (rc == 0) {
        assert_int_equal(errs.n, 0);
        assert_non_null(*c);
    } else {
        assert_null(*c);
        assert_true(errs.n > 0);
    }
    cfg_errors_free(&errs);
    return rc;
}

static struct lr_config *ok(const char *yaml, struct fake_env *env)
{
    struct lr_config *c = NULL;
    int rc = load_env(yaml, env, &c);
    if (rc != 0)
        fprintf(stderr, "unexpected errors:\n%s", all_errs);
    assert_int_equal(rc, 0);
    return c;
}

/* Fails to load, and one of the errors is exactly `want`. */
static void fails_with(const char *yaml, struct fake_env *env, const char *want)
{
    struct lr_config *c = NULL;
    int rc = load_env(yaml, env, &c);
    assert_int_equal(rc, -1);
    char needle[1100];
    snprintf(needle, sizeof(needle), "%s\n", want);
    bool found = strncmp(all_errs, needle, strlen(needle)) == 0;
    if (!found) {
        char n2[1102];
        snprintf(n2, sizeof(n2), "\n%s\n", want);
        found = strstr(all_errs, n2) != NULL;
    }
    if (!found) {
        fprintf(stderr, "wanted: %s\ngot:\n%s", want, all_errs);
        if (getenv("LR_TEST_KEEP_GOING"))
            return;
    }
    assert_true(found);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static const struct cfg_provider *prov(const struct lr_config *c, const char *name)
{
    const struct cfg_provider *p = config_provider(c, name);
    assert_non_null(p);
    return p;
}

/* ---- defaults ------------------------------------------------------------------------ */

static void check_defaults(const struct lr_config *c)
{
    assert_int_equal(c->dialect, CFG_DIALECT_BOTH);
    assert_int_equal(c->n_providers, 2);
    const struct cfg_provider *o = &c->providers[0], *a = &c->providers[1];
    assert_string_equal(o->name, "openai");
    assert_int_equal(o->type, CFG_PROVIDER_OPENAI);
    assert_true(o->enabled);
    assert_string_equal(o->base_url, "https://api.openai.com");
    assert_true(o->tls);
    assert_string_equal(o->host, "api.openai.com");
    assert_int_equal(o->port, 443);
    assert_string_equal(o->path_prefix, "");
    assert_null(o->api_key);
    assert_null(o->api_key_env);
    assert_int_equal(o->timeout_secs, 600);
    assert_int_equal(o->connect_timeout_secs, 10);
    assert_int_equal(o->max_retries, 3);
    assert_string_equal(a->name, "anthropic");
    assert_int_equal(a->type, CFG_PROVIDER_ANTHROPIC);
    assert_string_equal(a->base_url, "https://api.anthropic.com");
    assert_string_equal(a->host, "api.anthropic.com");
    assert_int_equal(a->timeout_secs, 600);
    assert_true(c->bypass_enabled);
    assert_string_equal(c->bypass_provider, "auto");
    assert_int_equal(c->n_extra_paths, 0);
    assert_int_equal(c->n_rules, 0);
    assert_int_equal(c->circuit_breaker.failure_threshold, 5);
    assert_int_equal(c->circuit_breaker.success_threshold, 2);
    assert_int_equal(c->circuit_breaker.open_secs, 60);
    assert_false(c->provider_switch_notification.enabled);
    assert_non_null(c->provider_switch_notification.default_message);
    assert_true(strlen(c->provider_switch_notification.default_message) > 10);
    assert_int_equal(c->http_server.max_request_body_bytes, 104857600);
    assert_int_equal(c->http_server.sse_keepalive_interval_secs, 15);
    assert_int_equal(c->translation.default_max_tokens, 4096);
    assert_string_equal(c->haproxy.bind, "127.0.0.1:8080");
    assert_string_equal(c->haproxy.stats_bind, "127.0.0.1:8404");
    assert_int_equal(c->haproxy.maxconn, 4000);
    assert_int_equal(c->haproxy.failure_mode, CFG_FAILURE_STATIC);
    assert_string_equal(c->agent.spoa_bind, "127.0.0.1:12345");
    assert_string_equal(c->agent.engine_bind, "127.0.0.1:8081");
    assert_null(c->agent.admin_socket);
    assert_int_equal(c->agent.threads, 1);
    assert_false(c->agent.local_sockets_set); /* per mode: render_local_sockets() */
    assert_string_equal(c->run_dir, "./run");
    assert_string_equal(c->log_level, "info");
    assert_int_equal(config_secret_count(c), 0);
}

static void test_defaults(void **state)
{
    (void)state;
    struct lr_config *c = NULL;
    struct cfg_errors errs = {0};
    assert_int_equal(config_load(NULL, fake_getenv, &empty_env, &c, &errs), 0);
    assert_null(c->source_file);
    check_defaults(c);
    config_free(c);

    /* empty file, comment-only file and a bare "---" are the defaults too */
    const char *empties[] = {"", "# nothing here\n", "---\n", "~\n"};
    for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        c = ok(empties[i], NULL);
        check_defaults(c);
        config_free(c);
    }
    config_free(NULL);
    cfg_errors_free(NULL);
}

static void test_enum_names(void **state)
{
    (void)state;
    assert_string_equal(cfg_dialect_to_str(CFG_DIALECT_BOTH), "both");
    assert_string_equal(cfg_provider_type_to_str(CFG_PROVIDER_ANTHROPIC), "anthropic");
    assert_string_equal(cfg_failure_mode_to_str(CFG_FAILURE_REJECT), "reject");
    assert_string_equal(cfg_strategy_to_str(CFG_STRATEGY_NONE), "");
    assert_string_equal(cfg_strategy_to_str(CFG_STRATEGY_WEIGHTED_ROUND_ROBIN),
                        "weighted-round-robin");
    assert_string_equal(cfg_strategy_to_str(CFG_STRATEGY_LIMITS_ALTERNATIVE), "limits-alternative");
    assert_string_equal(cfg_dialect_to_str(99), "?");
}

/* ---- a full file ----------------------------------------------------------------------- */

static const char full_yaml[] =
    "api_dialect: openai\n"
    "providers:\n"
    "  openai:\n"
    "    enabled: true\n"
    "    base_url: https://api.openai.com/v1/\n"
    "    api_key: ${OPENAI_API_KEY}\n"
    "    http_client: {timeout_secs: 300, connect_timeout_secs: 5, max_retries: 2}\n"
    "  anthropic:\n"
    "    enabled: false\n"
    "    base_url: https://api.anthropic.com\n"
    "  groq:\n"
    "    provider_type: openai\n"
    "    base_url: https://api.groq.com/openai/v1\n"
    "    api_key: ${GROQ_API_KEY}\n"
    "bypass: {enabled: false, provider: groq}\n"
    "intercept: {extra_paths: [/v1/responses, /v1/embeddings]}\n"
    "routing:\n"
    "  rules:\n"
    "    - {name: low, model_pattern: '^gpt-', primary: openai, fallbacks: [groq], priority: 1}\n"
    "    - name: high\n"
    "      model_pattern: \"^llama\"\n"
    "      primary: groq\n"
    "      fallbacks: [openai]\n"
    "      priority: 50\n"
    "    - {name: rr, model_pattern: '^mix', strategy: round-robin, providers: [openai, groq]}\n"
    "  circuit_breaker: {failure_threshold: 3, success_threshold: 1, open_secs: 30}\n"
    "  provider_switch_notification: {enabled: true, default_message: \"switched\"}\n"
    "http_server: {max_request_body_bytes: 1048576, sse_keepalive_interval_secs: 20}\n"
    "translation: {default_max_tokens: 1024}\n"
    "haproxy: {bind: 0.0.0.0:9080, stats_bind: 127.0.0.1:9404, maxconn: 100, failure_mode: "
    "reject}\n"
    "agent: {spoa_bind: 127.0.0.1:22345, engine_bind: 127.0.0.1:9081, admin_socket: "
    "/tmp/a.sock, threads: 4, local_sockets: false}\n"
    "run_dir: /var/run/lr\n"
    "logging: {level: debug}\n";

static void test_full_file(void **state)
{
    (void)state;
    struct fake_env env = {{"OPENAI_API_KEY", "sk-test-openai", "GROQ_API_KEY", "gsk-test", NULL}};
    struct lr_config *c = ok(full_yaml, &env);
    assert_string_equal(c->source_file, "t.yaml");
    assert_int_equal(c->dialect, CFG_DIALECT_OPENAI);
    assert_int_equal(c->n_providers, 3);
    const struct cfg_provider *o = prov(c, "openai");
    assert_string_equal(o->base_url, "https://api.openai.com");
    assert_string_equal(o->api_key, "sk-test-openai");
    assert_string_equal(o->api_key_env, "OPENAI_API_KEY");
    assert_int_equal(o->timeout_secs, 300);
    assert_int_equal(o->connect_timeout_secs, 5);
    assert_int_equal(o->max_retries, 2);
    assert_int_equal(o->pos.line, 3);
    assert_int_equal(o->pos.col, 3);
    assert_false(prov(c, "anthropic")->enabled);
    const struct cfg_provider *g = prov(c, "groq");
    assert_int_equal(g->type, CFG_PROVIDER_OPENAI);
    assert_true(g->enabled);
    assert_string_equal(g->base_url, "https://api.groq.com/openai");
    assert_string_equal(g->host, "api.groq.com");
    assert_string_equal(g->path_prefix, "/openai");
    assert_int_equal(g->port, 443);
    assert_string_equal(g->api_key_env, "GROQ_API_KEY");
    assert_int_equal(g->timeout_secs, 600);
    assert_false(c->bypass_enabled);
    assert_string_equal(c->bypass_provider, "groq");
    assert_int_equal(c->n_extra_paths, 2);
    assert_string_equal(c->extra_paths[0], "/v1/responses");
    assert_string_equal(c->extra_paths[1], "/v1/embeddings");
    /* sorted: priority 50, then 10 (default), then 1 */
    assert_int_equal(c->n_rules, 3);
    assert_string_equal(c->rules[0].name, "high");
    assert_int_equal(c->rules[0].priority, 50);
    assert_string_equal(c->rules[0].primary, "groq");
    assert_int_equal(c->rules[0].n_fallbacks, 1);
    assert_string_equal(c->rules[0].fallbacks[0].provider, "openai");
    assert_int_equal(c->rules[0].pos.line, 20);
    assert_int_equal(c->rules[0].pos.col, 7);
    assert_string_equal(c->rules[1].name, "rr");
    assert_int_equal(c->rules[1].priority, 10);
    assert_int_equal(c->rules[1].strategy, CFG_STRATEGY_ROUND_ROBIN);
    assert_int_equal(c->rules[1].n_targets, 2);
    assert_string_equal(c->rules[1].targets[1].provider, "groq");
    assert_int_equal(c->rules[1].targets[1].weight, 1);
    assert_null(c->rules[1].primary);
    assert_string_equal(c->rules[2].name, "low");
    assert_string_equal(c->rules[2].model_pattern, "^gpt-");
    assert_int_equal(c->rules[2].strategy, CFG_STRATEGY_NONE);
    assert_int_equal(c->circuit_breaker.failure_threshold, 3);
    assert_int_equal(c->circuit_breaker.success_threshold, 1);
    assert_int_equal(c->circuit_breaker.open_secs, 30);
    assert_true(c->provider_switch_notification.enabled);
    assert_string_equal(c->provider_switch_notification.default_message, "switched");
    assert_int_equal(c->http_server.max_request_body_bytes, 1048576);
    assert_int_equal(c->http_server.sse_keepalive_interval_secs, 20);
    assert_int_equal(c->translation.default_max_tokens, 1024);
    assert_string_equal(c->haproxy.bind, "0.0.0.0:9080");
    assert_string_equal(c->haproxy.stats_bind, "127.0.0.1:9404");
    assert_int_equal(c->haproxy.maxconn, 100);
    assert_int_equal(c->haproxy.failure_mode, CFG_FAILURE_REJECT);
    assert_string_equal(c->agent.spoa_bind, "127.0.0.1:22345");
    assert_string_equal(c->agent.engine_bind, "127.0.0.1:9081");
    assert_string_equal(c->agent.admin_socket, "/tmp/a.sock");
    assert_int_equal(c->agent.threads, 4);
    assert_true(c->agent.local_sockets_set);
    assert_false(c->agent.local_sockets);
    assert_string_equal(c->run_dir, "/var/run/lr");
    assert_string_equal(c->log_level, "debug");
    /* secrets: openai and groq are enabled with keys */
    assert_int_equal(config_secret_count(c), 2);
    const char *n, *v;
    config_secret_get(c, 0, &n, &v);
    assert_string_equal(n, "OPENAI_API_KEY");
    assert_string_equal(v, "sk-test-openai");
    config_secret_get(c, 1, &n, &v);
    assert_string_equal(n, "GROQ_API_KEY");
    assert_string_equal(v, "gsk-test");
    config_secret_get(c, 2, &n, &v);
    assert_null(n);
    assert_null(v);
    config_free(c);
}

static void test_load_from_file(void **state)
{
    (void)state;
    char path[] = "/tmp/lr-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *yaml = "bypass:\n  enabled: maybe\n";
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    struct lr_config *c = NULL;
    struct cfg_errors errs = {0};
    assert_int_equal(config_load(path, fake_getenv, &empty_env, &c, &errs), -1);
    assert_int_equal(errs.n, 1);
    char buf[512], want[512];
    cfg_error_format(&errs.v[0], buf, sizeof(buf));
    snprintf(want, sizeof(want), "%s:2:12: bypass.enabled: expected a boolean (true or false)",
             path);
    assert_string_equal(buf, want);
    cfg_errors_free(&errs);
    unlink(path);

    assert_int_equal(config_load("/nonexistent/lunaroute.yaml", fake_getenv, &empty_env, &c, &errs),
                     -1);
    assert_int_equal(errs.n, 1);
    cfg_error_format(&errs.v[0], buf, sizeof(buf));
    assert_string_equal(buf, "/nonexistent/lunaroute.yaml: cannot read the configuration "
                             "file: No such file or directory");
    cfg_errors_free(&errs);
}

/* ---- LunaRoute-shaped files ---------------------------------------------------------- */

/* Modelled on erans/lunaroute examples/configs/bypass-enabled-default.yaml */
static const char lr_bypass_default[] = "# LunaRoute Configuration - Bypass Enabled (Default)\n"
                                        "host: \"127.0.0.1\"\n"
                                        "port: 8081\n"
                                        "api_dialect: openai\n"
                                        "\n"
                                        "providers:\n"
                                        "  openai:\n"
                                        "    enabled: true\n"
                                        "    api_key: ${OPENAI_API_KEY}\n"
                                        "\n"
                                        "# bypass:\n"
                                        "#   enabled: true\n";

/* examples/configs/bypass-disabled.yaml */
static const char lr_bypass_disabled[] = "host: \"127.0.0.1\"\n"
                                         "port: 8081\n"
                                         "api_dialect: openai\n"
                                         "\n"
                                         "providers:\n"
                                         "  openai:\n"
                                         "    enabled: true\n"
                                         "    api_key: ${OPENAI_API_KEY}\n"
                                         "\n"
                                         "bypass:\n"
                                         "  enabled: false\n";

/* examples/configs/bypass-explicit-provider.yaml */
static const char lr_bypass_explicit[] = "host: \"127.0.0.1\"\n"
                                         "port: 8081\n"
                                         "api_dialect: both\n"
                                         "\n"
                                         "providers:\n"
                                         "  openai:\n"
                                         "    enabled: true\n"
                                         "    api_key: ${OPENAI_API_KEY}\n"
                                         "\n"
                                         "  anthropic:\n"
                                         "    enabled: true\n"
                                         "    api_key: ${ANTHROPIC_API_KEY}\n"
                                         "\n"
                                         "bypass:\n"
                                         "  enabled: true\n"
                                         "  provider: \"openai\"\n"
                                         "\n"
                                         "routing:\n"
                                         "  rules:\n"
                                         "    - name: \"claude-to-anthropic\"\n"
                                         "      model_pattern: \"^claude-.*\"\n"
                                         "      primary: \"anthropic\"\n"
                                         "\n"
                                         "    - name: \"gpt-to-openai\"\n"
                                         "      model_pattern: \"^gpt-.*\"\n"
                                         "      primary: \"openai\"\n";

/* examples/configs/routing-strategies.yaml and provider-switch-notification.yaml (shortened):
 * provider `type`, provider-level timeout_secs/max_retries, "$VAR" keys, nested strategies,
 * matcher blocks, circuit_breaker.timeout_secs, ignored sections. */
static const char lr_strategies[] = "server:\n"
                                    "  host: \"127.0.0.1\"\n"
                                    "  port: 8081\n"
                                    "api_dialect: \"openai\"\n"
                                    "logging:\n"
                                    "  level: \"info\"\n"
                                    "  log_requests: true\n"
                                    "  log_responses: false\n"
                                    "providers:\n"
                                    "  openai-primary:\n"
                                    "    type: \"openai\"\n"
                                    "    api_key: \"$OPENAI_API_KEY\"\n"
                                    "    base_url: \"https://api.openai.com/v1\"\n"
                                    "    headers:\n"
                                    "      X-Environment: \"production\"\n"
                                    "    timeout_secs: 60\n"
                                    "  openai-backup:\n"
                                    "    type: \"openai\"\n"
                                    "    api_key: \"$OPENAI_BACKUP_KEY\"\n"
                                    "    base_url: \"https://api.openai.com/v1\"\n"
                                    "    timeout_secs: 60\n"
                                    "    max_retries: 2\n"
                                    "    switch_notification_message: |\n"
                                    "      Using the backup.\n"
                                    "  anthropic-primary:\n"
                                    "    type: \"anthropic\"\n"
                                    "    api_key: \"$ANTHROPIC_API_KEY\"\n"
                                    "    base_url: \"https://api.anthropic.com\"\n"
                                    "    api_version: \"2023-06-01\"\n"
                                    "  emergency-fallback:\n"
                                    "    type: \"openai\"\n"
                                    "    api_key: \"$EMERGENCY_API_KEY\"\n"
                                    "    timeout_secs: 30\n"
                                    "routing:\n"
                                    "  provider_switch_notification:\n"
                                    "    enabled: true\n"
                                    "    default_message: |\n"
                                    "      IMPORTANT: alternative provider.\n"
                                    "  health_monitor:\n"
                                    "    healthy_threshold: 0.95\n"
                                    "    min_requests: 10\n"
                                    "  circuit_breaker:\n"
                                    "    failure_threshold: 5\n"
                                    "    success_threshold: 2\n"
                                    "    timeout_secs: 30\n"
                                    "  rules:\n"
                                    "    - name: \"gpt-round-robin\"\n"
                                    "      priority: 20\n"
                                    "      matcher:\n"
                                    "        model_pattern: \"^gpt-.*\"\n"
                                    "      strategy:\n"
                                    "        type: \"round-robin\"\n"
                                    "        providers:\n"
                                    "          - \"openai-primary\"\n"
                                    "          - \"openai-backup\"\n"
                                    "      fallbacks:\n"
                                    "        - \"emergency-fallback\"\n"
                                    "    - name: \"claude-weighted\"\n"
                                    "      priority: 20\n"
                                    "      matcher:\n"
                                    "        model_pattern: \"^claude-.*\"\n"
                                    "      strategy:\n"
                                    "        type: \"weighted-round-robin\"\n"
                                    "        providers:\n"
                                    "          - id: \"anthropic-primary\"\n"
                                    "            weight: 80\n"
                                    "          - id: \"emergency-fallback\"\n"
                                    "            weight: 20\n"
                                    "    - name: \"gpt4-with-rate-limit-protection\"\n"
                                    "      priority: 18\n"
                                    "      matcher:\n"
                                    "        model_pattern: \"^gpt-4.*\"\n"
                                    "      strategy:\n"
                                    "        type: \"limits-alternative\"\n"
                                    "        primary_providers:\n"
                                    "          - \"openai-primary\"\n"
                                    "          - \"openai-backup\"\n"
                                    "        alternative_providers:\n"
                                    "          - \"anthropic-primary\"\n"
                                    "        exponential_backoff_base_secs: 60\n"
                                    "      fallbacks:\n"
                                    "        - \"emergency-fallback\"\n"
                                    "    - name: \"default-fallback\"\n"
                                    "      priority: 1\n"
                                    "      matcher:\n"
                                    "        always: true\n"
                                    "      primary: \"openai-primary\"\n"
                                    "      fallbacks:\n"
                                    "        - \"anthropic-primary\"\n"
                                    "session_recording:\n"
                                    "  enabled: true\n"
                                    "  storage_path: \"~/.lunaroute/sessions\"\n"
                                    "observability:\n"
                                    "  metrics:\n"
                                    "    enabled: true\n"
                                    "listeners:\n"
                                    "  - type: \"http\"\n"
                                    "    address: \"0.0.0.0:8081\"\n"
                                    "ui:\n"
                                    "  enabled: false\n"
                                    "session_stats_max_sessions: 100\n";

static void test_lunaroute_bypass_default(void **state)
{
    (void)state;
    struct fake_env env = {{"OPENAI_API_KEY", "sk-lr-1", NULL}};
    struct lr_config *c = ok(lr_bypass_default, &env);
    assert_int_equal(c->dialect, CFG_DIALECT_OPENAI);
    assert_int_equal(c->n_providers, 1); /* a providers: map lists all that exist */
    assert_null(config_provider(c, "anthropic"));
    assert_true(c->bypass_enabled);
    assert_string_equal(c->bypass_provider, "auto");
    assert_string_equal(prov(c, "openai")->api_key, "sk-lr-1");
    assert_string_equal(prov(c, "openai")->api_key_env, "OPENAI_API_KEY");
    /* LunaRoute's host/port are accepted and ignored: our listener is haproxy.bind */
    assert_string_equal(c->haproxy.bind, "127.0.0.1:8080");
    config_free(c);

    /* without the key: client credentials pass through */
    c = ok(lr_bypass_default, NULL);
    assert_null(prov(c, "openai")->api_key);
    assert_null(prov(c, "openai")->api_key_env);
    assert_int_equal(config_secret_count(c), 0);
    config_free(c);
}

static void test_lunaroute_bypass_disabled(void **state)
{
    (void)state;
    struct lr_config *c = ok(lr_bypass_disabled, NULL);
    assert_false(c->bypass_enabled);
    assert_int_equal(c->n_providers, 1);
    config_free(c);
}

static void test_lunaroute_bypass_explicit(void **state)
{
    (void)state;
    struct fake_env env = {{"OPENAI_API_KEY", "sk-o", "ANTHROPIC_API_KEY", "sk-ant-a", NULL}};
    struct lr_config *c = ok(lr_bypass_explicit, &env);
    assert_int_equal(c->dialect, CFG_DIALECT_BOTH);
    assert_true(c->bypass_enabled);
    assert_string_equal(c->bypass_provider, "openai");
    assert_int_equal(c->n_rules, 2);
    assert_string_equal(c->rules[0].name, "claude-to-anthropic");
    assert_string_equal(c->rules[0].primary, "anthropic");
    assert_int_equal(c->rules[0].priority, 10);
    assert_string_equal(c->rules[1].model_pattern, "^gpt-.*");
    assert_int_equal(config_secret_count(c), 2);
    config_free(c);
}

static void test_lunaroute_strategies(void **state)
{
    (void)state;
    struct fake_env env = {{"OPENAI_API_KEY", "sk-p", "OPENAI_BACKUP_KEY", "sk-b", NULL}};
    struct lr_config *c = ok(lr_strategies, &env);
    assert_int_equal(c->n_providers, 4);
    const struct cfg_provider *p = prov(c, "openai-primary");
    assert_int_equal(p->type, CFG_PROVIDER_OPENAI);
    assert_string_equal(p->base_url, "https://api.openai.com");
    assert_int_equal(p->timeout_secs, 60);
    assert_string_equal(p->api_key, "sk-p");
    assert_string_equal(p->api_key_env, "OPENAI_API_KEY"); /* "$NAME" form */
    assert_int_equal(prov(c, "openai-backup")->max_retries, 2);
    assert_int_equal(prov(c, "anthropic-primary")->type, CFG_PROVIDER_ANTHROPIC);
    assert_null(prov(c, "anthropic-primary")->api_key); /* unset: pass-through */
    const struct cfg_provider *e = prov(c, "emergency-fallback");
    assert_string_equal(e->base_url, "https://api.openai.com"); /* default for its type */
    assert_int_equal(e->timeout_secs, 30);
    assert_int_equal(c->circuit_breaker.open_secs, 30);
    assert_true(c->provider_switch_notification.enabled);
    assert_string_equal(c->provider_switch_notification.default_message,
                        "IMPORTANT: alternative provider.\n");
    assert_int_equal(c->n_rules, 4);
    const struct cfg_rule *r = &c->rules[0];
    assert_string_equal(r->name, "gpt-round-robin");
    assert_int_equal(r->strategy, CFG_STRATEGY_ROUND_ROBIN);
    assert_string_equal(r->model_pattern, "^gpt-.*");
    assert_int_equal(r->n_targets, 2);
    assert_string_equal(r->targets[0].provider, "openai-primary");
    assert_int_equal(r->n_fallbacks, 1);
    r = &c->rules[1];
    assert_int_equal(r->strategy, CFG_STRATEGY_WEIGHTED_ROUND_ROBIN);
    assert_int_equal(r->n_targets, 2);
    assert_string_equal(r->targets[0].provider, "anthropic-primary");
    assert_int_equal(r->targets[0].weight, 80);
    assert_int_equal(r->targets[1].weight, 20);
    r = &c->rules[2];
    assert_int_equal(r->priority, 18);
    assert_int_equal(r->strategy, CFG_STRATEGY_LIMITS_ALTERNATIVE);
    assert_int_equal(r->n_targets, 2);
    assert_int_equal(r->n_alternatives, 1);
    assert_string_equal(r->alternatives[0].provider, "anthropic-primary");
    r = &c->rules[3];
    assert_string_equal(r->model_pattern, ".*");
    assert_string_equal(r->primary, "openai-primary");
    config_free(c);
}

static void test_flat_strategy_forms(void **state)
{
    (void)state;
    struct lr_config *c =
        ok("providers: {a: {type: openai}, b: {type: anthropic}}\n"
           "routing:\n"
           "  rules:\n"
           "    - {model_pattern: x, strategy: weighted-round-robin, targets: [a, b], weights: "
           "[3, 1]}\n"
           "    - {model_pattern: y, strategy: weighted-round-robin, providers: [{provider: a, "
           "weight: 2}, b]}\n"
           "    - {model_pattern: z, strategy: limits-alternative, providers: [a], alternatives: "
           "[b]}\n",
           NULL);
    assert_int_equal(c->n_rules, 3);
    assert_string_equal(c->rules[0].name, "rule-1");
    assert_int_equal(c->rules[0].targets[0].weight, 3);
    assert_int_equal(c->rules[0].targets[1].weight, 1);
    assert_int_equal(c->rules[1].targets[0].weight, 2);
    assert_int_equal(c->rules[1].targets[1].weight, 1);
    assert_int_equal(c->rules[2].n_alternatives, 1);
    assert_string_equal(c->rules[2].alternatives[0].provider, "b");
    config_free(c);
}

/* ---- ${VAR} ---------------------------------------------------------------------------- */

static void test_var_expansion(void **state)
{
    (void)state;
    struct fake_env env = {{"LR_HOSTPART", "0.0.0.0", "LR_DIR", "/srv", "EMPTY", "", NULL}};
    struct lr_config *c = ok("haproxy:\n"
                             "  bind: ${LR_HOSTPART}:${LR_PORT:-9999}\n"
                             "run_dir: ${LR_DIR}/run-${EMPTY}x\n"
                             "logging: {level: \"${LR_LEVEL:-warning}\"}\n"
                             "agent: {threads: \"${LR_THREADS:-8}\"}\n",
                             &env);
    assert_string_equal(c->haproxy.bind, "0.0.0.0:9999");
    assert_string_equal(c->run_dir, "/srv/run-x");
    assert_string_equal(c->log_level, "warn");
    assert_int_equal(c->agent.threads, 8);
    config_free(c);

    fails_with("run_dir: ./run\nagent:\n  spoa_bind: ${NOPE_VAR}\n", NULL,
               "t.yaml:3:14: environment variable NOPE_VAR is not set");
    fails_with("run_dir: \"${UNCLOSED\"\n", NULL,
               "t.yaml:1:10: run_dir: unterminated '${' (missing '}')");
    fails_with("run_dir: \"${1BAD}\"\n", NULL,
               "t.yaml:1:10: run_dir: invalid variable reference in '${...}'");

    /* unset key variable: no key, and no error */
    c = ok("providers:\n  openai:\n    api_key: ${MISSING_KEY}\n", NULL);
    assert_null(prov(c, "openai")->api_key);
    assert_null(prov(c, "openai")->api_key_env);
    config_free(c);
    struct fake_env empty_key = {{"MY_KEY", "", NULL}};
    c = ok("providers:\n  openai:\n    api_key: ${MY_KEY}\n", &empty_key);
    assert_null(prov(c, "openai")->api_key);
    config_free(c);
}

static void test_api_key_env_naming(void **state)
{
    (void)state;
    struct fake_env env = {{"GROQ_KEY", "gsk-1", NULL}};
    struct lr_config *c;
    c = ok("providers:\n"
           "  groq:\n"
           "    provider_type: openai\n"
           "    api_key: ${GROQ_KEY}\n"
           "  my-proxy_1:\n"
           "    provider_type: anthropic\n"
           "    api_key: literal-key-123\n"
           "  openai:\n"
           "    api_key: ${OPENAI_FILE_KEY:-from-default}\n",
           &env);
    assert_string_equal(prov(c, "groq")->api_key_env, "GROQ_KEY");
    assert_string_equal(prov(c, "groq")->api_key, "gsk-1");
    assert_string_equal(prov(c, "my-proxy_1")->api_key_env, "LUNAROUTE_MY_PROXY_1_API_KEY");
    assert_string_equal(prov(c, "my-proxy_1")->api_key, "literal-key-123");
    assert_string_equal(prov(c, "openai")->api_key_env, "OPENAI_FILE_KEY");
    assert_string_equal(prov(c, "openai")->api_key, "from-default");
    config_free(c);

    /* env override: OPENAI_API_KEY beats the file's key and names itself */
    struct fake_env env2 = {{"OPENAI_API_KEY", "sk-env", "FILE_KEY", "sk-file", NULL}};
    c = ok("providers:\n  openai:\n    api_key: ${FILE_KEY}\n  anthropic:\n    api_key: lit\n",
           &env2);
    assert_string_equal(prov(c, "openai")->api_key, "sk-env");
    assert_string_equal(prov(c, "openai")->api_key_env, "OPENAI_API_KEY");
    assert_string_equal(prov(c, "anthropic")->api_key_env, "LUNAROUTE_ANTHROPIC_API_KEY");
    config_free(c);
}

/* ---- environment overrides ------------------------------------------------------------ */

static void test_env_overrides(void **state)
{
    (void)state;
    const char *yaml = "api_dialect: openai\n"
                       "haproxy: {bind: 10.0.0.1:7000}\n"
                       "bypass: {enabled: true, provider: openai}\n"
                       "providers:\n"
                       "  openai: {base_url: https://file.example/v1, http_client: "
                       "{timeout_secs: 5, connect_timeout_secs: 6, max_retries: 7}}\n"
                       "  anthropic: {}\n"
                       "logging: {level: error}\n"
                       "run_dir: /file\n";
    struct fake_env env = {{"LUNAROUTE_DIALECT",
                            "Anthropic",
                            "LUNAROUTE_PORT",
                            "7100",
                            "LUNAROUTE_BYPASS_ENABLED",
                            "OFF",
                            "LUNAROUTE_BYPASS_PROVIDER",
                            "anthropic",
                            "LUNAROUTE_OPENAI_BASE_URL",
                            "http://127.0.0.1:9000/",
                            "LUNAROUTE_OPENAI_TIMEOUT_SECS",
                            "11",
                            "LUNAROUTE_OPENAI_CONNECT_TIMEOUT_SECS",
                            "12",
                            "LUNAROUTE_OPENAI_MAX_RETRIES",
                            "0",
                            "LUNAROUTE_ANTHROPIC_BASE_URL",
                            "https://proxy.example:8443/anth",
                            "LUNAROUTE_ANTHROPIC_MAX_RETRIES",
                            "9",
                            "LUNAROUTE_LOG_LEVEL",
                            "DEBUG",
                            "LUNAROUTE_RUN_DIR",
                            "/env",
                            "ANTHROPIC_API_KEY",
                            "sk-ant-env",
                            NULL}};
    struct lr_config *c = ok(yaml, &env);
    assert_int_equal(c->dialect, CFG_DIALECT_ANTHROPIC);
    assert_string_equal(c->haproxy.bind, "10.0.0.1:7100");
    assert_false(c->bypass_enabled);
    assert_string_equal(c->bypass_provider, "anthropic");
    const struct cfg_provider *o = prov(c, "openai");
    assert_string_equal(o->base_url, "http://127.0.0.1:9000");
    assert_false(o->tls);
    assert_int_equal(o->port, 9000);
    assert_int_equal(o->timeout_secs, 11);
    assert_int_equal(o->connect_timeout_secs, 12);
    assert_int_equal(o->max_retries, 0);
    const struct cfg_provider *a = prov(c, "anthropic");
    assert_string_equal(a->base_url, "https://proxy.example:8443/anth");
    assert_int_equal(a->port, 8443);
    assert_string_equal(a->path_prefix, "/anth");
    assert_int_equal(a->max_retries, 9);
    assert_string_equal(a->api_key, "sk-ant-env");
    assert_string_equal(a->api_key_env, "ANTHROPIC_API_KEY");
    assert_string_equal(c->log_level, "debug");
    assert_string_equal(c->run_dir, "/env");
    config_free(c);

    /* LUNAROUTE_HOST alone, IPv6 gets brackets; the port is kept */
    struct fake_env env6 = {{"LUNAROUTE_HOST", "::1", NULL}};
    c = ok(NULL, &env6);
    assert_string_equal(c->haproxy.bind, "[::1]:8080");
    config_free(c);
    struct fake_env envh = {{"LUNAROUTE_HOST", "0.0.0.0", "LUNAROUTE_PORT", "9090", NULL}};
    c = ok(NULL, &envh);
    assert_string_equal(c->haproxy.bind, "0.0.0.0:9090");
    config_free(c);

    /* an empty variable counts as unset */
    struct fake_env envempty = {{"LUNAROUTE_BYPASS_ENABLED", "", "OPENAI_API_KEY", "", NULL}};
    c = ok(NULL, &envempty);
    assert_true(c->bypass_enabled);
    assert_null(prov(c, "openai")->api_key);
    config_free(c);

    /* a key variable does not bring back a provider the file left out */
    struct fake_env envk = {{"ANTHROPIC_API_KEY", "sk-ant-zzz", NULL}};
    c = ok("providers: {openai: {}}\n", &envk);
    assert_null(config_provider(c, "anthropic"));
    assert_int_equal(config_secret_count(c), 0);
    config_free(c);
}

static void test_bypass_enabled_env(void **state)
{
    (void)state;
    static const char *const truthy[] = {"true", "1", "yes", "on", "TRUE", "Yes", "oN"};
    static const char *const falsy[] = {"false", "0", "no", "off", "FALSE", "No", "OFF"};
    for (size_t i = 0; i < 7; i++) {
        struct fake_env e1 = {{"LUNAROUTE_BYPASS_ENABLED", truthy[i], NULL}};
        struct lr_config *c = ok("bypass: {enabled: false}\n", &e1);
        assert_true(c->bypass_enabled);
        config_free(c);
        struct fake_env e2 = {{"LUNAROUTE_BYPASS_ENABLED", falsy[i], NULL}};
        c = ok(NULL, &e2);
        assert_false(c->bypass_enabled);
        config_free(c);
    }
    struct fake_env bad = {{"LUNAROUTE_BYPASS_ENABLED", "maybe", NULL}};
    fails_with(NULL, &bad,
               "LUNAROUTE_BYPASS_ENABLED: expected true/1/yes/on or false/0/no/off (got "
               "'maybe')");
    struct fake_env bad2 = {{"LUNAROUTE_BYPASS_ENABLED", "2", NULL}};
    fails_with("run_dir: x\n", &bad2,
               "LUNAROUTE_BYPASS_ENABLED: expected true/1/yes/on or false/0/no/off (got '2')");
}

static void test_env_errors(void **state)
{
    (void)state;
    struct fake_env e1 = {{"LUNAROUTE_PORT", "70000", NULL}};
    fails_with(NULL, &e1, "LUNAROUTE_PORT: must be a port number between 1 and 65535");
    struct fake_env e2 = {{"LUNAROUTE_DIALECT", "klingon", NULL}};
    fails_with(NULL, &e2,
               "LUNAROUTE_DIALECT: must be one of openai, anthropic, both (got 'klingon')");
    struct fake_env e3 = {{"LUNAROUTE_OPENAI_TIMEOUT_SECS", "0", NULL}};
    fails_with(NULL, &e3, "LUNAROUTE_OPENAI_TIMEOUT_SECS: must be an integer between 1 and 86400");
    struct fake_env e4 = {{"LUNAROUTE_ANTHROPIC_MAX_RETRIES", "x", NULL}};
    fails_with(NULL, &e4, "LUNAROUTE_ANTHROPIC_MAX_RETRIES: must be an integer between 0 and 10");
    struct fake_env e5 = {{"LUNAROUTE_OPENAI_BASE_URL", "ftp://x", NULL}};
    fails_with(NULL, &e5, "LUNAROUTE_OPENAI_BASE_URL: must start with http:// or https://");
    struct fake_env e6 = {{"LUNAROUTE_LOG_LEVEL", "loud", NULL}};
    fails_with(NULL, &e6,
               "LUNAROUTE_LOG_LEVEL: must be one of error, warn, info, debug (got 'loud')");
    struct fake_env e7 = {{"LUNAROUTE_BYPASS_PROVIDER", "groq", NULL}};
    fails_with(NULL, &e7,
               "LUNAROUTE_BYPASS_PROVIDER: bypass.provider 'groq' is not an enabled provider "
               "(use auto or one of the enabled providers)");
    struct fake_env e8 = {{"LUNAROUTE_PORT", "8081", NULL}};
    fails_with(NULL, &e8,
               "LUNAROUTE_PORT: agent.engine_bind 127.0.0.1:8081 clashes with haproxy.bind "
               "127.0.0.1:8081");
    struct fake_env e9 = {{"LUNAROUTE_HOST", "bad host!", NULL}};
    fails_with(NULL, &e9, "LUNAROUTE_HOST: must be a host name or IP address");
}

/* ---- file errors with exact positions -------------------------------------------------- */

static void test_error_positions(void **state)
{
    (void)state;
    /* YAML syntax */
    fails_with("bypass:\n  enabled: true\n provider: x\n", NULL,
               "t.yaml:3:2: did not find expected key (while parsing a block mapping)");
    fails_with("a: [1, 2\n", NULL,
               "t.yaml:2:1: did not find expected ',' or ']' (while parsing a flow sequence)");
    fails_with("- a\n- b\n", NULL, "t.yaml:1:1: the top level must be a mapping (key: value)");
    fails_with("just a string\n", NULL, "t.yaml:1:1: the top level must be a mapping (key: value)");
    fails_with("run_dir: a\n---\nrun_dir: b\n", NULL,
               "t.yaml:3:1: only one YAML document is allowed");
    /* keys */
    fails_with("bypas:\n  enabled: false\n", NULL,
               "t.yaml:1:1: unknown key 'bypas' (did you mean 'bypass'?)");
    fails_with("bypass:\n  enabeld: false\n", NULL,
               "t.yaml:2:3: unknown key 'enabeld' (did you mean 'enabled'?)");
    fails_with("zzzzzz: 1\n", NULL, "t.yaml:1:1: unknown key 'zzzzzz'");
    fails_with("run_dir: a\nrun_dir: b\n", NULL, "t.yaml:2:1: duplicate key 'run_dir'");
    fails_with("providers:\n  openai: {}\n  openai: {}\n", NULL,
               "t.yaml:3:3: duplicate key 'openai'");
    fails_with("? [a]\n: 1\n", NULL, "t.yaml:1:3: mapping keys must be strings");
    /* types */
    fails_with("bypass: {enabled: 3}\n", NULL,
               "t.yaml:1:19: bypass.enabled: expected a boolean (true or false)");
    fails_with("agent: {local_sockets: maybe}\n", NULL,
               "t.yaml:1:24: agent.local_sockets: expected a boolean (true or false)");
    fails_with("haproxy:\n  maxconn: lots\n", NULL,
               "t.yaml:2:12: haproxy.maxconn: expected an integer");
    fails_with("haproxy:\n  maxconn: [1]\n", NULL,
               "t.yaml:2:12: haproxy.maxconn: expected an integer");
    fails_with("run_dir: {a: 1}\n", NULL, "t.yaml:1:10: run_dir: expected a string");
    fails_with("bypass: [1]\n", NULL, "t.yaml:1:9: bypass: expected a mapping");
    fails_with("intercept: {extra_paths: /x}\n", NULL,
               "t.yaml:1:26: intercept.extra_paths: expected a list");
    /* ranges */
    fails_with("providers:\n  openai:\n    http_client: {timeout_secs: 0}\n", NULL,
               "t.yaml:3:33: providers.openai.http_client.timeout_secs: must be between 1 and "
               "86400");
    fails_with("providers:\n  openai:\n    http_client:\n      max_retries: 11\n", NULL,
               "t.yaml:4:20: providers.openai.http_client.max_retries: must be between 0 and 10");
    fails_with("haproxy: {maxconn: 1000001}\n", NULL,
               "t.yaml:1:20: haproxy.maxconn: must be between 1 and 1000000");
    fails_with("agent: {threads: 65}\n", NULL,
               "t.yaml:1:18: agent.threads: must be between 1 and 64");
    fails_with("routing: {circuit_breaker: {failure_threshold: 0}}\n", NULL,
               "t.yaml:1:48: routing.circuit_breaker.failure_threshold: must be between 1 and "
               "1000000");
    fails_with("http_server: {max_request_body_bytes: 17179869185}\n", NULL,
               "t.yaml:1:39: http_server.max_request_body_bytes: must be between 1 and "
               "17179869184");
    fails_with("http_server: {sse_keepalive_interval_secs: 3601}\n", NULL,
               "t.yaml:1:44: http_server.sse_keepalive_interval_secs: must be between 1 and "
               "3600");
    fails_with("translation: {default_max_tokens: 0}\n", NULL,
               "t.yaml:1:35: translation.default_max_tokens: must be between 1 and 1000000");
    fails_with("translation: {default_max_token: 5}\n", NULL,
               "t.yaml:1:15: unknown key 'default_max_token' (did you mean "
               "'default_max_tokens'?)");
    fails_with("haproxy: {maxconn: 99999999999999999999999}\n", NULL,
               "t.yaml:1:20: haproxy.maxconn: must be between 1 and 1000000");
    /* enums */
    fails_with("api_dialect: cobol\n", NULL,
               "t.yaml:1:14: api_dialect: must be one of openai, anthropic, both (got 'cobol')");
    fails_with("haproxy: {failure_mode: panic}\n", NULL,
               "t.yaml:1:25: haproxy.failure_mode: must be one of static, reject (got 'panic')");
    fails_with("logging: {level: loud}\n", NULL,
               "t.yaml:1:18: logging.level: must be one of error, warn, info, debug (got "
               "'loud')");
    fails_with("providers:\n  x: {provider_type: gemini}\n", NULL,
               "t.yaml:2:22: providers.x.provider_type: must be one of openai, anthropic (got "
               "'gemini')");
    fails_with("providers: {a: {type: openai}}\nrouting:\n  rules:\n"
               "    - {model_pattern: x, strategy: random, providers: [a]}\n",
               NULL,
               "t.yaml:4:36: routing.rules[0].strategy: must be one of round-robin, "
               "weighted-round-robin, limits-alternative (got 'random')");
    /* providers */
    fails_with("providers:\n  Groq!: {provider_type: openai}\n", NULL,
               "t.yaml:2:3: provider name 'Groq!' must be 1-48 characters of [a-z0-9_-]");
    fails_with("providers:\n  groq:\n    base_url: https://api.groq.com\n", NULL,
               "t.yaml:2:3: providers.groq: provider_type (openai or anthropic) is required");
    fails_with("providers:\n  openai: {provider_type: anthropic}\n", NULL,
               "t.yaml:2:27: providers.openai: the provider named 'openai' must have type "
               "openai");
    fails_with("providers:\n  openai: {enabled: false}\n", NULL,
               "no enabled provider: configure and enable at least one provider");
    fails_with("providers: {}\n", NULL,
               "no enabled provider: configure and enable at least one provider");
    /* base_url */
    fails_with("providers:\n  openai: {base_url: \"api.openai.com\"}\n", NULL,
               "t.yaml:2:22: providers.openai.base_url: must start with http:// or https://");
    fails_with("providers:\n  openai: {base_url: \"https://u:p@h.example\"}\n", NULL,
               "t.yaml:2:22: providers.openai.base_url: must not contain credentials "
               "(user:password@)");
    fails_with("providers:\n  openai: {base_url: \"https://h.example/x?a=1\"}\n", NULL,
               "t.yaml:2:22: providers.openai.base_url: must not contain a query string or "
               "fragment");
    fails_with("providers:\n  openai: {base_url: \"https://h.example#f\"}\n", NULL,
               "t.yaml:2:22: providers.openai.base_url: must not contain a query string or "
               "fragment");
    fails_with("providers:\n  openai: {base_url: \"https://h.example:0\"}\n", NULL,
               "t.yaml:2:22: providers.openai.base_url: has an invalid port (1-65535)");
    fails_with("providers:\n  openai: {base_url: \"https://h.example:65536\"}\n", NULL,
               "t.yaml:2:22: providers.openai.base_url: has an invalid port (1-65535)");
    fails_with("providers:\n  openai: {base_url: \"https://\"}\n", NULL,
               "t.yaml:2:22: providers.openai.base_url: has no host");
    fails_with("providers:\n  openai: {base_url: \"https://::1/\"}\n", NULL,
               "t.yaml:2:22: providers.openai.base_url: has an IPv6 address that is not in "
               "brackets");
    /* bypass */
    fails_with("bypass:\n  provider: groq\n", NULL,
               "t.yaml:2:13: bypass.provider 'groq' is not an enabled provider (use auto or one "
               "of the enabled providers)");
    fails_with("providers: {openai: {}, anthropic: {enabled: false}}\n"
               "bypass: {provider: anthropic}\n",
               NULL,
               "t.yaml:2:20: bypass.provider 'anthropic' is not an enabled provider (use auto "
               "or one of the enabled providers)");
    /* intercept */
    fails_with("intercept:\n  extra_paths: [/ok, v1/x]\n", NULL,
               "t.yaml:2:22: intercept.extra_paths[1]: must start with '/' and contain no '?', "
               "'#', quotes or spaces");
    fails_with("intercept:\n  extra_paths: [\"/a?b\"]\n", NULL,
               "t.yaml:2:17: intercept.extra_paths[0]: must start with '/' and contain no '?', "
               "'#', quotes or spaces");
    fails_with("intercept:\n  extra_paths: [\"/a b\"]\n", NULL,
               "t.yaml:2:17: intercept.extra_paths[0]: must start with '/' and contain no '?', "
               "'#', quotes or spaces");
    /* rules */
    fails_with("routing:\n  rules:\n    - name: r\n      model_pattern: \"(unclosed\"\n"
               "      primary: openai\n",
               NULL,
               "t.yaml:4:22: routing.rules[0].model_pattern: invalid regular expression: "
               "Unmatched ( or \\(");
    /* fuzz_config found this shape: glibc's regcomp needs gigabytes for stacked `+` */
    fails_with("routing:\n  rules:\n    - name: r\n      model_pattern: \"^cla+++++++++++++++"
               "+++++++++++++++ude-\"\n      primary: openai\n",
               NULL,
               "t.yaml:4:22: routing.rules[0].model_pattern: invalid regular expression: "
               "pattern too complex (nested or stacked repetitions expand beyond 4096 atoms)");
    fails_with("routing:\n  rules:\n    - name: r\n      model_pattern: x\n"
               "      primary: nope\n",
               NULL, "t.yaml:5:16: rule 'r': unknown provider 'nope'");
    fails_with("routing:\n  rules:\n    - {name: r, model_pattern: x, primary: openai, "
               "fallbacks: [openai, ghost]}\n",
               NULL, "t.yaml:3:72: rule 'r': unknown provider 'ghost'");
    fails_with("routing:\n  rules:\n    - {name: r, primary: openai}\n", NULL,
               "t.yaml:3:7: routing.rules[0]: needs 'model_pattern' (or matcher.model_pattern)");
    fails_with("routing:\n  rules:\n    - {name: r, model_pattern: x}\n", NULL,
               "t.yaml:3:7: routing.rules[0]: needs 'primary' or a 'strategy'");
    fails_with("routing:\n  rules:\n    - {model_pattern: x, strategy: round-robin}\n", NULL,
               "t.yaml:3:36: routing.rules[0]: strategy round-robin needs providers");
    fails_with("routing:\n  rules:\n    - {model_pattern: x, strategy: round-robin, providers: "
               "[openai], weights: [1]}\n",
               NULL,
               "t.yaml:3:79: routing.rules[0].weights: only used with strategy "
               "weighted-round-robin");
    fails_with("routing:\n  rules:\n    - {model_pattern: x, strategy: weighted-round-robin, "
               "providers: [openai, anthropic], weights: [1]}\n",
               NULL, "t.yaml:3:99: routing.rules[0].weights: has 1 entries for 2 providers");
    fails_with("routing:\n  rules:\n    - {model_pattern: x, primary: openai, providers: "
               "[openai]}\n",
               NULL, "t.yaml:3:54: routing.rules[0]: a provider list needs a 'strategy'");
    fails_with("routing:\n  rules:\n    - model_pattern: x\n      strategy:\n"
               "        providers: [openai]\n",
               NULL, "t.yaml:5:9: routing.rules[0].strategy: needs 'type'");
    fails_with("routing:\n  rules: {a: 1}\n", NULL, "t.yaml:2:10: routing.rules: expected a list");
    /* binds */
    fails_with("haproxy: {bind: \"8080\"}\n", NULL, "t.yaml:1:17: haproxy.bind: must be host:port");
    fails_with("haproxy: {stats_bind: \"127.0.0.1:0\"}\n", NULL,
               "t.yaml:1:23: haproxy.stats_bind: has an invalid port (1-65535)");
    fails_with("agent: {spoa_bind: \"::1:9000\"}\n", NULL,
               "t.yaml:1:20: agent.spoa_bind: has an IPv6 address that is not in brackets");
    fails_with("agent:\n  engine_bind: 127.0.0.1:8404\n", NULL,
               "t.yaml:2:16: agent.engine_bind 127.0.0.1:8404 clashes with haproxy.stats_bind "
               "127.0.0.1:8404");
    fails_with("haproxy: {bind: \"*:12345\"}\n", NULL,
               "t.yaml:1:17: agent.spoa_bind 127.0.0.1:12345 clashes with haproxy.bind *:12345");
    fails_with("agent: {admin_socket: \"\"}\n", NULL,
               "t.yaml:1:23: agent.admin_socket: must be a path of 1 to 107 bytes");
    fails_with("run_dir: \"\"\n", NULL, "t.yaml:1:10: run_dir: must not be empty");
}

static void test_ok_edge_values(void **state)
{
    (void)state;
    /* a provider block without enabled is enabled; null blocks are fine */
    struct lr_config *c = ok("providers:\n  openai:\n  anthropic: {enabled: false}\n"
                             "bypass:\n  provider: ~\n"
                             "haproxy: {bind: \"[::1]:8080\", stats_bind: \":8404\"}\n"
                             "agent: {engine_bind: \"localhost:9999\"}\n"
                             "http_server: {max_request_body_bytes: 17179869184}\n",
                             NULL);
    assert_true(prov(c, "openai")->enabled);
    assert_false(prov(c, "anthropic")->enabled);
    assert_string_equal(c->bypass_provider, "auto");
    assert_string_equal(c->haproxy.bind, "[::1]:8080");
    assert_int_equal(c->http_server.max_request_body_bytes, 1ull << 34);
    config_free(c);
}

static void test_multiple_errors(void **state)
{
    (void)state;
    struct lr_config *c = NULL;
    int rc = load_env("bypas: {}\n"
                      "haproxy: {maxconn: 0}\n"
                      "agent: {threads: 0}\n"
                      "logging: {level: loud}\n",
                      NULL, &c);
    assert_int_equal(rc, -1);
    assert_int_equal(count_lines(all_errs), 4);
    assert_non_null(strstr(all_errs, "t.yaml:1:1: unknown key 'bypas'"));
    assert_non_null(strstr(all_errs, "t.yaml:2:20: haproxy.maxconn"));
    assert_non_null(strstr(all_errs, "t.yaml:3:18: agent.threads"));
    assert_non_null(strstr(all_errs, "t.yaml:4:18: logging.level"));

    /* file and env errors together */
    struct fake_env env = {{"LUNAROUTE_PORT", "x", NULL}};
    rc = load_env("api_dialect: nope\n", &env, &c);
    assert_int_equal(rc, -1);
    assert_int_equal(count_lines(all_errs), 2);

    /* a flood of errors is capped */
    char big[8192];
    size_t off = 0;
    for (int i = 0; i < 200; i++)
        off += (size_t)snprintf(big + off, sizeof(big) - off, "k%d: 1\n", i);
    rc = load_env(big, NULL, &c);
    assert_int_equal(rc, -1);
    assert_true(count_lines(all_errs) <= 65);
    assert_non_null(strstr(all_errs, "too many errors"));
}

static void test_secrets_never_in_errors(void **state)
{
    (void)state;
    const char *secret = "sk-SECRET-abcdef0123456789";
    struct fake_env env = {{"OPENAI_API_KEY", secret, "KEYVAR", secret, NULL}};
    const char *yamls[] = {
        /* literal key, then lots of broken things */
        "providers:\n  openai:\n    api_key: sk-SECRET-abcdef0123456789\n"
        "    enabled: sk-SECRET-abcdef0123456789\n"
        "    http_client: {timeout_secs: sk-SECRET-abcdef0123456789}\n"
        "api_dialect: sk-SECRET-abcdef0123456789\n",
        /* key variable reused where values are echoed */
        "providers:\n  openai: {api_key: \"${KEYVAR}\"}\n"
        "api_dialect: ${KEYVAR}\nbypass: {provider: \"${KEYVAR}\"}\n"
        "logging: {level: \"${KEYVAR}\"}\n",
        /* a key pasted inside ${...} */
        "providers:\n  openai: {api_key: \"${sk-SECRET-abcdef0123456789}\"}\n",
        "providers:\n  openai: {api_key: [sk-SECRET-abcdef0123456789]}\n",
        "sk-SECRET-abcdef0123456789: 1\n",
    };
    for (size_t i = 0; i < sizeof(yamls) / sizeof(yamls[0]); i++) {
        struct lr_config *c = NULL;
        assert_int_equal(load_env(yamls[i], &env, &c), -1);
        assert_true(all_errs[0] != 0);
        if (strstr(all_errs, "SECRET"))
            fprintf(stderr, "leak in case %zu:\n%s", i, all_errs);
        assert_null(strstr(all_errs, "SECRET"));
        assert_null(strstr(all_errs, "abcdef0123456789"));
    }
    struct fake_env env2 = {{"LUNAROUTE_DIALECT", secret, "OPENAI_API_KEY", secret, NULL}};
    struct lr_config *c = NULL;
    assert_int_equal(load_env(NULL, &env2, &c), -1);
    assert_null(strstr(all_errs, "SECRET"));
}

static void test_base_url_table(void **state)
{
    (void)state;
    static const struct {
        const char *in, *norm, *host, *prefix;
        unsigned port;
        bool tls;
    } t[] = {
        {"https://api.openai.com", "https://api.openai.com", "api.openai.com", "", 443, true},
        {"https://api.openai.com/", "https://api.openai.com", "api.openai.com", "", 443, true},
        {"https://api.openai.com/v1", "https://api.openai.com", "api.openai.com", "", 443, true},
        {"https://api.openai.com/v1/", "https://api.openai.com", "api.openai.com", "", 443, true},
        {"https://api.groq.com/openai/v1", "https://api.groq.com/openai", "api.groq.com", "/openai",
         443, true},
        {"https://x.example/a/b//", "https://x.example/a/b", "x.example", "/a/b", 443, true},
        {"http://localhost:8000", "http://localhost:8000", "localhost", "", 8000, false},
        {"http://127.0.0.1", "http://127.0.0.1", "127.0.0.1", "", 80, false},
        {"HTTPS://API.Example.COM:8443/v1", "https://api.example.com:8443", "api.example.com", "",
         8443, true},
        {"http://[::1]:9000/v1/", "http://[::1]:9000", "::1", "", 9000, false},
        {"https://[2001:db8::1]/p", "https://[2001:db8::1]/p", "2001:db8::1", "/p", 443, true},
        {"https://h.example/v1x", "https://h.example/v1x", "h.example", "/v1x", 443, true},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char yaml[256];
        snprintf(yaml, sizeof(yaml), "providers:\n  openai: {base_url: \"%s\"}\n", t[i].in);
        struct lr_config *c = ok(yaml, NULL);
        const struct cfg_provider *p = prov(c, "openai");
        assert_string_equal(p->base_url, t[i].norm);
        assert_string_equal(p->host, t[i].host);
        assert_string_equal(p->path_prefix, t[i].prefix);
        assert_int_equal(p->port, t[i].port);
        assert_int_equal(p->tls, t[i].tls);
        config_free(c);
    }
}

static void test_aliases_and_odd_yaml(void **state)
{
    (void)state;
    struct lr_config *c;
    /* "x-common" is unknown -> rejected; anchors inside known keys work */
    fails_with("x-common: &to {timeout_secs: 42}\n", NULL, "t.yaml:1:1: unknown key 'x-common'");
    c = ok("providers:\n  openai: {http_client: &hc {timeout_secs: 42}}\n"
           "  anthropic: {http_client: *hc}\n",
           NULL);
    assert_int_equal(prov(c, "anthropic")->timeout_secs, 42);
    config_free(c);
    /* self-referencing alias must not loop */
    fails_with("routing: &r {rules: [*r]}\n", NULL, "t.yaml:1:14: unknown key 'rules'");
    /* NUL in a scalar */
    static const char nul[] = "run_dir: \"a\\0b\"\n";
    fails_with(nul, NULL, "t.yaml:1:10: run_dir: contains a NUL character");
}

/* render --mode boltin scope: defaults, parsing, normalisation, errors. */
static void test_boltin_section(void **state)
{
    (void)state;
    struct lr_config *c = ok(NULL, NULL);
    assert_int_equal(c->boltin.n_hosts, 0);
    assert_int_equal(c->boltin.n_path_prefixes, 1);
    assert_string_equal(c->boltin.path_prefixes[0], "/v1/");
    config_free(c);

    c = ok("boltin:\n  hosts: [LLM.Example.com, api.internal]\n"
           "  path_prefixes: [/v1/, /llm/]\n",
           NULL);
    assert_int_equal(c->boltin.n_hosts, 2);
    assert_string_equal(c->boltin.hosts[0], "llm.example.com");
    assert_string_equal(c->boltin.hosts[1], "api.internal");
    assert_int_equal(c->boltin.n_path_prefixes, 2);
    assert_string_equal(c->boltin.path_prefixes[1], "/llm/");
    config_free(c);

    /* an empty list lifts the restriction; null keeps the default */
    c = ok("boltin: {hosts: [llm.local], path_prefixes: []}\n", NULL);
    assert_int_equal(c->boltin.n_path_prefixes, 0);
    config_free(c);
    c = ok("boltin: {path_prefixes: null}\n", NULL);
    assert_int_equal(c->boltin.n_path_prefixes, 1);
    config_free(c);

    struct fake_env env = {{"LLM_HOST", "llm.corp", NULL}};
    c = ok("boltin: {hosts: [\"${LLM_HOST}\"]}\n", &env);
    assert_string_equal(c->boltin.hosts[0], "llm.corp");
    config_free(c);

    fails_with("boltin: {hosts: [\"llm:443\"]}\n", NULL,
               "t.yaml:1:18: boltin.hosts[0]: must be a host name (letters, digits, '.', '-', "
               "'_'; no port) (got 'llm:443')");
    fails_with("boltin: {hosts: [a, A]}\n", NULL,
               "t.yaml:1:21: boltin.hosts[1]: 'a' is listed twice");
    fails_with("boltin: {path_prefixes: [\"/v1/\", \"/a b\"]}\n", NULL,
               "t.yaml:1:34: boltin.path_prefixes[1]: must start with '/' and contain no '?', "
               "'#', quotes or spaces (got '/a b')");
    fails_with("boltin: {path_prefixes: ['/a\"b']}\n", NULL,
               "t.yaml:1:26: boltin.path_prefixes[0]: must start with '/' and contain no '?', "
               "'#', quotes or spaces (got '/a\"b')");
    fails_with("boltin: {path_prefixes: /v1/}\n", NULL,
               "t.yaml:1:25: boltin.path_prefixes: expected a list");
    fails_with("boltin: {host: [x]}\n", NULL,
               "t.yaml:1:10: unknown key 'host' (did you mean 'hosts'?)");
    fails_with("boltin: [x]\n", NULL, "t.yaml:1:9: boltin: expected a mapping");
}

/* Issue 4's validate list, all in one file: each error with its exact position, in file
 * order, then the environment's. */
static void test_validate_catalogue(void **state)
{
    (void)state;
    struct fake_env env = {{"THREADS", "many", "LUNAROUTE_BYPASS_ENABLED", "maybe", NULL}};
    struct lr_config *c = NULL;
    int rc =
        load_env("providers:\n"
                 "  openai: {base_url: \"api.openai.com\"}\n"
                 "  anthropic: {base_url: \"https://\"}\n"
                 "  groq: {provider_type: openai, base_url: https://api.groq.com, http_client: "
                 "{max_retries: 11}}\n"
                 "routing:\n"
                 "  rules:\n"
                 "    - {name: bad-re, model_pattern: \"gpt-(4\", primary: openai}\n"
                 "    - {name: ghost, model_pattern: \"^x\", primary: nobody, fallbacks: [openai, "
                 "phantom]}\n"
                 "haproxy: {bind: \"127.0.0.1:9000\", stats_bind: \"127.0.0.1:9000\", maxconn: 0}\n"
                 "agent: {threads: \"${THREADS}\"}\n"
                 "logging: {levle: info}\n",
                 &env, &c);
    assert_int_equal(rc, -1);
    assert_string_equal(
        all_errs,
        "t.yaml:2:22: providers.openai.base_url: must start with http:// or https://\n"
        "t.yaml:3:25: providers.anthropic.base_url: has no host\n"
        "t.yaml:4:92: providers.groq.http_client.max_retries: must be between 0 and 10\n"
        "t.yaml:7:37: routing.rules[0].model_pattern: invalid regular expression: Unmatched ( "
        "or \\(\n"
        "t.yaml:8:51: rule 'ghost': unknown provider 'nobody'\n"
        "t.yaml:8:79: rule 'ghost': unknown provider 'phantom'\n"
        "t.yaml:9:47: haproxy.stats_bind 127.0.0.1:9000 clashes with haproxy.bind "
        "127.0.0.1:9000\n"
        "t.yaml:9:74: haproxy.maxconn: must be between 1 and 1000000\n"
        "t.yaml:10:18: agent.threads: expected an integer (from ${THREADS})\n"
        "t.yaml:11:11: unknown key 'levle' (did you mean 'level'?)\n"
        "LUNAROUTE_BYPASS_ENABLED: expected true/1/yes/on or false/0/no/off (got 'maybe')\n");

    /* a bad value inside a larger expansion, a bad enum and bool from the environment */
    struct fake_env env2 = {{"N", "9", "MODE", "loud", "ON", "sometimes", NULL}};
    rc = load_env("haproxy: {maxconn: \"${N}0000000\", failure_mode: \"${MODE}\"}\n"
                  "bypass: {enabled: \"${ON}\"}\n",
                  &env2, &c);
    assert_int_equal(rc, -1);
    assert_string_equal(
        all_errs,
        "t.yaml:1:20: haproxy.maxconn: must be between 1 and 1000000 (after ${...} expansion)\n"
        "t.yaml:1:49: haproxy.failure_mode: must be one of static, reject (got 'loud') (from "
        "${MODE})\n"
        "t.yaml:2:19: bypass.enabled: expected a boolean (true or false) (from ${ON})\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_enum_names),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_load_from_file),
        cmocka_unit_test(test_lunaroute_bypass_default),
        cmocka_unit_test(test_lunaroute_bypass_disabled),
        cmocka_unit_test(test_lunaroute_bypass_explicit),
        cmocka_unit_test(test_lunaroute_strategies),
        cmocka_unit_test(test_flat_strategy_forms),
        cmocka_unit_test(test_var_expansion),
        cmocka_unit_test(test_api_key_env_naming),
        cmocka_unit_test(test_env_overrides),
        cmocka_unit_test(test_bypass_enabled_env),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_error_positions),
        cmocka_unit_test(test_ok_edge_values),
        cmocka_unit_test(test_multiple_errors),
        cmocka_unit_test(test_secrets_never_in_errors),
        cmocka_unit_test(test_base_url_table),
        cmocka_unit_test(test_aliases_and_odd_yaml),
        cmocka_unit_test(test_boltin_section),
        cmocka_unit_test(test_validate_catalogue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
