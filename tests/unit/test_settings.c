/* agent.json: full document, defaults, every error message, refcounting, file loading. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "classify.h"
#include "lr_defaults.h"
#include "settings.h"

static struct agent_settings *parse(const char *json, char *err, size_t errlen)
{
    return agent_settings_parse(json, strlen(json), err, errlen);
}

static const char full_doc[] =
    "{\n"
    "  \"version\": 1,\n"
    "  \"spoa_bind\": \"0.0.0.0:22345\",\n"
    "  \"engine_bind\": \"[::1]:18081\",\n"
    "  \"admin_socket\": \"/tmp/run/agent.sock\",\n"
    "  \"spoa_socket\": \"/tmp/run/spoa.sock\",\n"
    "  \"engine_socket\": \"/tmp/run/engine.sock\",\n"
    "  \"threads\": 4,\n"
    "  \"log_level\": \"debug\",\n"
    "  \"api_dialect\": \"openai\",\n"
    "  \"engine_backend\": \"lr_engine2\",\n"
    "  \"max_frame_size\": 4096,\n"
    "  \"bypass\": {\"enabled\": true, \"provider\": \"groq\"},\n"
    "  \"intercept\": {\"extra_paths\": [\"/v1/responses\", \"/v1/completions\"]},\n"
    "  \"providers\": [\n"
    "    {\"name\": \"openai\", \"type\": \"openai\", \"enabled\": true,\n"
    "     \"base_url\": \"https://api.openai.com/v1/\", \"backend\": \"lr_provider_openai\",\n"
    "     \"api_key_env\": \"OPENAI_API_KEY\", \"timeout_secs\": 300,\n"
    "     \"connect_timeout_secs\": 5, \"max_retries\": 2},\n"
    "    {\"name\": \"anthropic\", \"type\": \"anthropic\", \"enabled\": false,\n"
    "     \"base_url\": \"https://api.anthropic.com\", \"api_key_env\": null},\n"
    "    {\"name\": \"groq\", \"type\": \"openai\", \"base_url\": "
    "\"https://api.groq.com/openai\",\n"
    "     \"backend\": \"be_groq\", \"future_key\": [1, 2, 3]}\n"
    "  ],\n"
    "  \"routing\": {\"rules\": [{\"name\": \"r\", \"primary\": \"openai\"}]},\n"
    "  \"http_server\": {\"max_request_body_bytes\": 1048576, \"sse_keepalive_interval_secs\": "
    "30},\n"
    "  \"translation\": {\"default_max_tokens\": 2048},\n"
    "  \"unknown_top_level\": {\"ignored\": true}\n"
    "}\n";

static void test_full_document(void **state)
{
    (void)state;
    char err[256] = "";
    struct agent_settings *s = parse(full_doc, err, sizeof err);
    assert_non_null(s);
    assert_string_equal(err, "");
    assert_null(s->path);
    assert_string_equal(s->spoa_bind, "0.0.0.0:22345");
    assert_string_equal(s->engine_bind, "[::1]:18081");
    assert_string_equal(s->admin_socket, "/tmp/run/agent.sock");
    assert_string_equal(s->spoa_socket, "/tmp/run/spoa.sock");
    assert_string_equal(s->engine_socket, "/tmp/run/engine.sock");
    assert_int_equal(s->threads, 4);
    assert_string_equal(s->log_level, "debug");
    assert_string_equal(s->api_dialect, "openai");
    assert_string_equal(s->engine_backend, "lr_engine2");
    assert_int_equal(s->max_frame_size, 4096);
    assert_true(s->bypass_enabled);
    assert_string_equal(s->bypass_provider, "groq");
    assert_int_equal(s->max_request_body_bytes, 1048576);
    assert_int_equal(s->sse_keepalive_interval_secs, 30);
    assert_int_equal(s->default_max_tokens, 2048);

    assert_int_equal(s->n_providers, 3);
    const struct agent_provider *p = &s->providers[0];
    assert_string_equal(p->name, "openai");
    assert_int_equal(p->type, AGENT_PROVIDER_OPENAI);
    assert_true(p->enabled);
    assert_string_equal(p->base_url, "https://api.openai.com"); /* normalized */
    assert_string_equal(p->backend, "lr_provider_openai");
    assert_string_equal(p->api_key_env, "OPENAI_API_KEY");
    assert_int_equal(p->timeout_secs, 300);
    assert_int_equal(p->connect_timeout_secs, 5);
    assert_int_equal(p->max_retries, 2);

    p = &s->providers[1];
    assert_string_equal(p->name, "anthropic");
    assert_int_equal(p->type, AGENT_PROVIDER_ANTHROPIC);
    assert_false(p->enabled);
    assert_string_equal(p->backend, LR_PROVIDER_BACKEND_PREFIX "anthropic");
    assert_null(p->api_key_env);
    assert_int_equal(p->timeout_secs, 600);
    assert_int_equal(p->connect_timeout_secs, 10);
    assert_int_equal(p->max_retries, 3);

    p = &s->providers[2];
    assert_string_equal(p->name, "groq");
    assert_int_equal(p->type, AGENT_PROVIDER_OPENAI);
    assert_true(p->enabled);
    assert_string_equal(p->base_url, "https://api.groq.com/openai");
    assert_string_equal(p->backend, "be_groq");

    assert_ptr_equal(agent_settings_provider(s, "groq"), &s->providers[2]);
    assert_null(agent_settings_provider(s, "mistral"));
    assert_null(agent_settings_provider(s, NULL));

    assert_non_null(s->routing);
    assert_true(json_is_object(s->routing));
    assert_int_equal(json_array_size(json_object_get(s->routing, "rules")), 1);
    assert_non_null(s->root);

    /* Intercept list: defaults, then extras, in order. */
    static const char *const want[] = {LR_DEFAULT_INTERCEPT_PATHS, "/v1/responses",
                                       "/v1/completions"};
    assert_int_equal(s->n_intercept_paths, LR_DEFAULT_INTERCEPT_COUNT + 2);
    for (size_t i = 0; i < s->n_intercept_paths; i++) {
        assert_string_equal(s->intercept_paths[i], want[i]);
        assert_true(agent_settings_is_intercepted(s, want[i], strlen(want[i])));
    }
    assert_false(agent_settings_is_intercepted(s, "/v1/files", 9));
    assert_false(agent_settings_is_intercepted(s, "/v1/models", 9)); /* prefix */
    assert_false(agent_settings_is_intercepted(s, NULL, 0));
    assert_false(agent_settings_is_intercepted(NULL, "/v1/models", 10));

    agent_settings_unref(s);
}

static void test_defaults(void **state)
{
    (void)state;
    char err[256] = "";
    struct agent_settings *s = parse("{}", err, sizeof err);
    assert_non_null(s);
    assert_string_equal(s->spoa_bind, "127.0.0.1:12345");
    assert_string_equal(s->engine_bind, "127.0.0.1:8081");
    assert_null(s->admin_socket);
    assert_null(s->spoa_socket);
    assert_null(s->engine_socket);
    assert_int_equal(s->threads, 1);
    assert_string_equal(s->log_level, "info");
    assert_string_equal(s->api_dialect, "both");
    assert_string_equal(s->engine_backend, LR_ENGINE_BACKEND);
    assert_int_equal(s->max_frame_size, LR_SPOP_MAX_FRAME_SIZE);
    assert_true(s->bypass_enabled);
    assert_string_equal(s->bypass_provider, "auto");
    assert_int_equal(s->n_providers, 0);
    assert_null(s->providers);
    assert_int_equal(s->max_request_body_bytes, 104857600ull);
    assert_int_equal(s->sse_keepalive_interval_secs, 15);
    assert_int_equal(s->default_max_tokens, 4096);
    assert_null(s->routing);
    assert_non_null(s->root);
    assert_int_equal(s->n_intercept_paths, LR_DEFAULT_INTERCEPT_COUNT);
    static const char *const want[] = {LR_DEFAULT_INTERCEPT_PATHS};
    for (size_t i = 0; i < LR_DEFAULT_INTERCEPT_COUNT; i++)
        assert_string_equal(s->intercept_paths[i], want[i]);
    agent_settings_unref(s);

    /* Provider defaults: the two public providers need only a name. */
    s = parse("{\"providers\":[{\"name\":\"openai\"},{\"name\":\"anthropic\"}],"
              "\"bypass\":{},\"intercept\":{},\"http_server\":{},\"routing\":null}",
              err, sizeof err);
    assert_non_null(s);
    assert_int_equal(s->n_providers, 2);
    assert_int_equal(s->providers[0].type, AGENT_PROVIDER_OPENAI);
    assert_string_equal(s->providers[0].base_url, "https://api.openai.com");
    assert_string_equal(s->providers[0].backend, "lr_provider_openai");
    assert_true(s->providers[0].enabled);
    assert_null(s->providers[0].api_key_env);
    assert_int_equal(s->providers[1].type, AGENT_PROVIDER_ANTHROPIC);
    assert_string_equal(s->providers[1].base_url, "https://api.anthropic.com");
    assert_string_equal(s->providers[1].backend, "lr_provider_anthropic");
    assert_true(s->bypass_enabled);
    assert_string_equal(s->bypass_provider, "auto");
    assert_null(s->routing);
    agent_settings_unref(s);
}

static void test_base_url_normalized(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"https://x.example", "https://x.example"},
        {"https://x.example/", "https://x.example"},
        {"https://x.example/v1", "https://x.example"},
        {"https://x.example/v1/", "https://x.example"},
        {"http://127.0.0.1:9000/openai/v1", "http://127.0.0.1:9000/openai"},
        {"https://x.example/v10", "https://x.example/v10"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char json[256], err[256] = "";
        snprintf(json, sizeof json,
                 "{\"providers\":[{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"%s\"}]}",
                 cases[i].in);
        struct agent_settings *s = parse(json, err, sizeof err);
        assert_non_null(s);
        assert_string_equal(s->providers[0].base_url, cases[i].out);
        agent_settings_unref(s);
    }
}

struct err_case {
    const char *json;
    const char *err; /* exact message, or a prefix when it ends with '*' */
};

static const struct err_case err_cases[] = {
    /* JSON syntax, with line:col from jansson ('*': prefix match, the rest is jansson's). */
    {"", "1:0: '[' or '{' expected*"},
    {"{\n  \"threads\": ,\n}", "2:14: unexpected token*"},
    {"{\"threads\": 1,\n \"threads\": 2}", "2:10: duplicate object key*"},
    {"{} trailing", "1:11: end of file expected*"},
    {"[]", "expected a JSON object at the top level"},
    /* version */
    {"{\"version\": 2}", "version: unsupported version 2 (expected 1)"},
    {"{\"version\": \"1\"}", "version: expected an integer"},
    /* top-level types, enums and ranges */
    {"{\"spoa_bind\": 12345}", "spoa_bind: expected a string"},
    {"{\"spoa_bind\": \"12345\"}", "spoa_bind: expected host:port or [ipv6]:port"},
    {"{\"spoa_bind\": \"127.0.0.1:70000\"}", "spoa_bind: expected host:port or [ipv6]:port"},
    {"{\"spoa_bind\": \"[::1:80\"}", "spoa_bind: expected host:port or [ipv6]:port"},
    {"{\"spoa_bind\": \"::1:80\"}", "spoa_bind: expected host:port or [ipv6]:port"},
    {"{\"engine_bind\": \"localhost:\"}", "engine_bind: expected host:port or [ipv6]:port"},
    {"{\"admin_socket\": 1}", "admin_socket: expected a string"},
    {"{\"admin_socket\": \"\"}", "admin_socket: expected a path of 1 to 107 bytes"},
    {"{\"spoa_socket\": 1}", "spoa_socket: expected a string"},
    {"{\"spoa_socket\": \"run/spoa.sock\"}",
     "spoa_socket: expected an absolute path of at most 107 bytes"},
    {"{\"engine_socket\": \"\"}", "engine_socket: expected an absolute path of at most 107 bytes"},
    {"{\"spoa_socket\": \"/r/a.sock\", \"engine_socket\": \"/r/a.sock\"}",
     "spoa_socket and engine_socket: the same path"},
    {"{\"threads\": 0}", "threads: must be between 1 and 64"},
    {"{\"threads\": 65}", "threads: must be between 1 and 64"},
    {"{\"threads\": -1}", "threads: must be between 1 and 64"},
    {"{\"threads\": 1.5}", "threads: expected an integer"},
    {"{\"threads\": \"4\"}", "threads: expected an integer"},
    {"{\"log_level\": \"loud\"}", "log_level: expected error, warn, info, debug or trace"},
    {"{\"log_level\": null}", "log_level: expected a string"},
    {"{\"api_dialect\": \"gemini\"}",
     "api_dialect: expected \"openai\", \"anthropic\" or \"both\""},
    {"{\"engine_backend\": \"lr engine\"}",
     "engine_backend: expected 1 to 127 characters of [A-Za-z0-9_.:-]"},
    {"{\"engine_backend\": \"\"}",
     "engine_backend: expected 1 to 127 characters of [A-Za-z0-9_.:-]"},
    {"{\"max_frame_size\": 255}", "max_frame_size: must be between 256 and 16380"},
    {"{\"max_frame_size\": 16381}", "max_frame_size: must be between 256 and 16380"},
    /* providers */
    {"{\"providers\": {}}", "providers: expected an array"},
    {"{\"providers\": [1]}", "providers[0]: expected an object"},
    {"{\"providers\": [{}]}", "providers[0].name: required"},
    {"{\"providers\": [{\"name\": 1}]}", "providers[0].name: expected a string"},
    {"{\"providers\": [{\"name\": \"OpenAI\"}]}",
     "providers[0].name: expected 1 to 48 characters of [a-z0-9_-]"},
    {"{\"providers\": [{\"name\": \"\"}]}",
     "providers[0].name: expected 1 to 48 characters of [a-z0-9_-]"},
    {"{\"providers\": [{\"name\": \"a123456789012345678901234567890123456789012345678\"}]}",
     "providers[0].name: expected 1 to 48 characters of [a-z0-9_-]"},
    {"{\"providers\": [{\"name\": \"openai\"}, {\"name\": \"openai\"}]}",
     "providers[1].name: duplicate provider \"openai\""},
    {"{\"providers\": [{\"name\": \"openai\"}, {\"name\": \"x\", \"type\": \"gemini\"}]}",
     "providers[1].type: expected \"openai\" or \"anthropic\""},
    {"{\"providers\": [{\"name\": \"openai\", \"type\": 1}]}",
     "providers[0].type: expected \"openai\" or \"anthropic\""},
    {"{\"providers\": [{\"name\": \"groq\", \"base_url\": \"https://g.example\"}]}",
     "providers[0].type: required for provider \"groq\""},
    {"{\"providers\": [{\"name\": \"groq\", \"type\": \"openai\"}]}",
     "providers[0].base_url: required for provider \"groq\""},
    {"{\"providers\": [{\"name\": \"openai\", \"base_url\": \"ftp://x\"}]}",
     "providers[0].base_url: expected an http:// or https:// URL with a host"},
    {"{\"providers\": [{\"name\": \"openai\", \"base_url\": \"https://\"}]}",
     "providers[0].base_url: expected an http:// or https:// URL with a host"},
    {"{\"providers\": [{\"name\": \"openai\", \"base_url\": 5}]}",
     "providers[0].base_url: expected a string"},
    {"{\"providers\": [{\"name\": \"openai\", \"enabled\": \"yes\"}]}",
     "providers[0].enabled: expected true or false"},
    {"{\"providers\": [{\"name\": \"openai\", \"backend\": \"a b\"}]}",
     "providers[0].backend: expected 1 to 127 characters of [A-Za-z0-9_.:-]"},
    {"{\"providers\": [{\"name\": \"openai\", \"api_key_env\": 1}]}",
     "providers[0].api_key_env: expected a string or null"},
    {"{\"providers\": [{\"name\": \"openai\", \"api_key_env\": \"1KEY\"}]}",
     "providers[0].api_key_env: expected an environment variable name"},
    {"{\"providers\": [{\"name\": \"openai\", \"api_key_env\": \"sk-abc\"}]}",
     "providers[0].api_key_env: expected an environment variable name"},
    {"{\"providers\": [{\"name\": \"openai\", \"timeout_secs\": 0}]}",
     "providers[0].timeout_secs: must be between 1 and 86400"},
    {"{\"providers\": [{\"name\": \"openai\", \"connect_timeout_secs\": 3601}]}",
     "providers[0].connect_timeout_secs: must be between 1 and 3600"},
    {"{\"providers\": [{\"name\": \"openai\", \"max_retries\": 101}]}",
     "providers[0].max_retries: must be between 0 and 100"},
    {"{\"providers\": [{\"name\": \"openai\", \"max_retries\": true}]}",
     "providers[0].max_retries: expected an integer"},
    /* bypass */
    {"{\"bypass\": true}", "bypass: expected an object"},
    {"{\"bypass\": {\"enabled\": 1}}", "bypass.enabled: expected true or false"},
    {"{\"bypass\": {\"provider\": 1}}", "bypass.provider: expected a string"},
    {"{\"bypass\": {\"provider\": \"openai\"}}",
     "bypass.provider: unknown provider \"openai\" (expected \"auto\" or the name of an "
     "enabled provider)"},
    {"{\"bypass\": {\"provider\": \"AUTO\"}, \"providers\": [{\"name\": \"openai\"}]}",
     "bypass.provider: unknown provider \"AUTO\" (expected \"auto\" or the name of an "
     "enabled provider)"},
    {"{\"bypass\": {\"provider\": \"anthropic\"}, \"providers\": [{\"name\": \"openai\"},"
     " {\"name\": \"anthropic\", \"enabled\": false}]}",
     "bypass.provider: provider \"anthropic\" is not enabled"},
    /* intercept */
    {"{\"intercept\": []}", "intercept: expected an object"},
    {"{\"intercept\": {\"extra_paths\": \"/v1/responses\"}}",
     "intercept.extra_paths: expected an array"},
    {"{\"intercept\": {\"extra_paths\": [\"/ok\", 3]}}",
     "intercept.extra_paths[1]: expected a string"},
    {"{\"intercept\": {\"extra_paths\": [\"/ok\", \"v1/responses\"]}}",
     "intercept.extra_paths[1]: must start with '/'"},
    {"{\"intercept\": {\"extra_paths\": [\"\"]}}", "intercept.extra_paths[0]: must start with '/'"},
    {"{\"intercept\": {\"extra_paths\": [\"/v1/x?y=1\"]}}",
     "intercept.extra_paths[0]: must not contain '?', '#', spaces or control characters"},
    {"{\"intercept\": {\"extra_paths\": [\"/v1/a b\"]}}",
     "intercept.extra_paths[0]: must not contain '?', '#', spaces or control characters"},
    /* http_server, routing */
    {"{\"http_server\": 1}", "http_server: expected an object"},
    {"{\"http_server\": {\"max_request_body_bytes\": 0}}",
     "http_server.max_request_body_bytes: must be between 1 and 1099511627776"},
    {"{\"http_server\": {\"sse_keepalive_interval_secs\": 0}}",
     "http_server.sse_keepalive_interval_secs: must be between 1 and 3600"},
    {"{\"translation\": {\"default_max_tokens\": 0}}",
     "translation.default_max_tokens: must be between 1 and 1000000"},
    {"{\"translation\": []}", "translation: expected an object"},
    {"{\"routing\": []}", "routing: expected an object"},
};

static void test_errors(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
        char err[256] = "";
        struct agent_settings *s = parse(err_cases[i].json, err, sizeof err);
        const char *want = err_cases[i].err;
        size_t wn = strlen(want);
        bool prefix = wn > 0 && want[wn - 1] == '*';
        bool match = prefix ? strncmp(err, want, wn - 1) == 0 : strcmp(err, want) == 0;
        if (s || !match) {
            fprintf(stderr, "case %zu: %s\n  got:  %s\n  want: %s\n", i, err_cases[i].json,
                    s ? "(parsed)" : err, err_cases[i].err);
            failures++;
        }
        agent_settings_unref(s);
    }
    assert_int_equal(failures, 0);
}

static void test_error_buffer_edge_cases(void **state)
{
    (void)state;
    /* A tiny buffer is truncated, not overflowed; NULL/0 is accepted. */
    char err[8];
    memset(err, 'x', sizeof err);
    assert_null(parse("{\"threads\": 0}", err, sizeof err));
    assert_string_equal(err, "threads");
    assert_null(parse("{\"threads\": 0}", NULL, 0));
    assert_null(agent_settings_parse(NULL, 0, err, sizeof err));
    /* Embedded NUL bytes are rejected by the JSON parser. */
    static const char nul[] = "{\"spoa_bind\": \"1\0\"}";
    char e2[256] = "";
    assert_null(agent_settings_parse(nul, sizeof nul - 1, e2, sizeof e2));
    assert_true(strlen(e2) > 0);
    /* "\u0000" inside a string is rejected too (no JSON_ALLOW_NUL). */
    assert_null(parse("{\"log_level\": \"in\\u0000fo\"}", e2, sizeof e2));
}

static void test_refcount(void **state)
{
    (void)state;
    char err[256];
    struct agent_settings *s = parse(full_doc, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(atomic_load(&s->refs), 1);
    assert_ptr_equal(agent_settings_ref(s), s);
    assert_ptr_equal(agent_settings_ref(s), s);
    assert_int_equal(atomic_load(&s->refs), 3);
    agent_settings_unref(s);
    agent_settings_unref(s);
    assert_int_equal(atomic_load(&s->refs), 1);
    /* Still usable while a reference is held. */
    assert_string_equal(s->providers[2].name, "groq");
    agent_settings_unref(s); /* freed: ASan reports a leak otherwise */
    agent_settings_unref(NULL);
    assert_null(agent_settings_ref(NULL));
}

static char *write_temp(const char *content)
{
    char *path = strdup("/tmp/lr_test_settings_XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    close(fd);
    return path;
}

static void test_load(void **state)
{
    (void)state;
    char err[512] = "";
    char *path = write_temp(full_doc);
    struct agent_settings *s = agent_settings_load(path, err, sizeof err);
    assert_non_null(s);
    assert_string_equal(s->path, path);
    assert_int_equal(s->n_providers, 3);
    agent_settings_unref(s);
    unlink(path);
    free(path);

    /* Missing file: the error names the path. */
    assert_null(agent_settings_load("/nonexistent/dir/agent.json", err, sizeof err));
    assert_string_equal(err, "/nonexistent/dir/agent.json: No such file or directory");

    /* A directory is not a settings file. */
    assert_null(agent_settings_load("/tmp", err, sizeof err));
    assert_string_equal(err, "/tmp: not a regular file");

    /* Syntax errors: path:line:col: message. */
    path = write_temp("{\n  \"threads\": 2,\n  \"log_level\": info\n}\n");
    assert_null(agent_settings_load(path, err, sizeof err));
    char want[512];
    snprintf(want, sizeof want, "%s:3:19: invalid token", path);
    assert_memory_equal(err, want, strlen(want));
    unlink(path);
    free(path);

    /* Validation errors: path: message. */
    path = write_temp("{\"version\": 2}");
    assert_null(agent_settings_load(path, err, sizeof err));
    snprintf(want, sizeof want, "%s: version: unsupported version 2 (expected 1)", path);
    assert_string_equal(err, want);
    unlink(path);
    free(path);

    assert_null(agent_settings_load(NULL, err, sizeof err));
}

/* What classify() relies on is precomputed consistently at load time. */
static void test_precomputed(void **state)
{
    (void)state;
    char err[256];
    struct agent_settings *s = parse(full_doc, err, sizeof err);
    assert_non_null(s);
    assert_false(s->bypass_auto);
    assert_ptr_equal(s->cls_named, &s->providers[2]);
    /* anthropic is disabled: the namespace stays with the named provider. */
    assert_ptr_equal(s->cls_named_ns, &s->providers[2]);
    assert_ptr_equal(s->cls_auto_openai, &s->providers[0]);
    assert_ptr_equal(s->cls_auto_anthropic, &s->providers[0]);
    for (size_t i = 0; i < s->n_intercept_paths; i++)
        assert_int_equal(s->intercept_path_lens[i], strlen(s->intercept_paths[i]));
    agent_settings_unref(s);
}

static void test_type_to_str(void **state)
{
    (void)state;
    assert_string_equal(agent_provider_type_to_str(AGENT_PROVIDER_OPENAI), "openai");
    assert_string_equal(agent_provider_type_to_str(AGENT_PROVIDER_ANTHROPIC), "anthropic");
    assert_string_equal(agent_provider_type_to_str(AGENT_PROVIDER_TYPE_COUNT), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_document),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_base_url_normalized),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_buffer_edge_cases),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_precomputed),
        cmocka_unit_test(test_type_to_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
