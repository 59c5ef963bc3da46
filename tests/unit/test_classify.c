/* Classifier: one table of (settings, request) -> (route, backend, provider), LunaRoute's
 * smart-bypass cases first, then ours. Every case checks all three outputs exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "classify.h"
#include "lr_defaults.h"
#include "settings.h"

/* Settings documents the table refers to. */
enum cfg {
    CFG_AUTO = 0,        /* openai + anthropic, bypass auto */
    CFG_NO_BYPASS,       /* bypass disabled */
    CFG_EXTRA,           /* auto + intercept.extra_paths ["/v1/responses"] */
    CFG_OPENAI,          /* named openai */
    CFG_ANTHROPIC,       /* named anthropic */
    CFG_GROQ,            /* named groq (type openai) + openai + anthropic */
    CFG_GROQ_ONLY,       /* named groq, no anthropic-type provider */
    CFG_ANT_OFF,         /* anthropic disabled, auto */
    CFG_NONE,            /* no providers */
    CFG_ALL_OFF,         /* providers, all disabled */
    CFG_CUSTOM_ANT,      /* custom anthropic-type "claude" first, then "anthropic" */
    CFG_ONLY_CUSTOM_ANT, /* openai + custom anthropic-type "claude" */
    CFG_CUSTOM_OA,       /* "oai2" (openai type) before "openai" */
    CFG_ENGINE_BE,       /* custom engine_backend + custom provider backend */
    CFG_ONLY_ANT,        /* only anthropic: openai-ish requests go to the first enabled */
    CFG_COUNT
};

static const char *const cfg_json[CFG_COUNT] = {
    [CFG_AUTO] = "{\"providers\":[{\"name\":\"openai\",\"type\":\"openai\"},"
                 "{\"name\":\"anthropic\",\"type\":\"anthropic\"}]}",
    [CFG_NO_BYPASS] = "{\"bypass\":{\"enabled\":false},\"providers\":[{\"name\":\"openai\"},"
                      "{\"name\":\"anthropic\"}]}",
    [CFG_EXTRA] = "{\"intercept\":{\"extra_paths\":[\"/v1/responses\"]},"
                  "\"providers\":[{\"name\":\"openai\"},{\"name\":\"anthropic\"}]}",
    [CFG_OPENAI] = "{\"bypass\":{\"provider\":\"openai\"},"
                   "\"providers\":[{\"name\":\"openai\"},{\"name\":\"anthropic\"}]}",
    [CFG_ANTHROPIC] = "{\"bypass\":{\"provider\":\"anthropic\"},"
                      "\"providers\":[{\"name\":\"openai\"},{\"name\":\"anthropic\"}]}",
    [CFG_GROQ] = "{\"bypass\":{\"provider\":\"groq\"},\"providers\":[{\"name\":\"openai\"},"
                 "{\"name\":\"anthropic\"},{\"name\":\"groq\",\"type\":\"openai\","
                 "\"base_url\":\"https://api.groq.com/openai\"}]}",
    [CFG_GROQ_ONLY] = "{\"bypass\":{\"provider\":\"groq\"},\"providers\":[{\"name\":\"groq\","
                      "\"type\":\"openai\",\"base_url\":\"https://api.groq.com/openai\"}]}",
    [CFG_ANT_OFF] = "{\"providers\":[{\"name\":\"openai\"},"
                    "{\"name\":\"anthropic\",\"enabled\":false}]}",
    [CFG_NONE] = "{}",
    [CFG_ALL_OFF] = "{\"providers\":[{\"name\":\"openai\",\"enabled\":false},"
                    "{\"name\":\"anthropic\",\"enabled\":false}]}",
    [CFG_CUSTOM_ANT] = "{\"providers\":[{\"name\":\"claude\",\"type\":\"anthropic\","
                       "\"base_url\":\"https://claude.example\"},{\"name\":\"openai\"},"
                       "{\"name\":\"anthropic\"}]}",
    [CFG_ONLY_CUSTOM_ANT] = "{\"providers\":[{\"name\":\"openai\"},{\"name\":\"claude\","
                            "\"type\":\"anthropic\",\"base_url\":\"https://claude.example\"}]}",
    [CFG_CUSTOM_OA] = "{\"providers\":[{\"name\":\"oai2\",\"type\":\"openai\","
                      "\"base_url\":\"https://oai2.example\"},{\"name\":\"openai\"}]}",
    [CFG_ENGINE_BE] = "{\"engine_backend\":\"my_engine\",\"providers\":[{\"name\":\"openai\","
                      "\"backend\":\"be_oa\"}]}",
    [CFG_ONLY_ANT] = "{\"providers\":[{\"name\":\"anthropic\"}]}",
};

static struct agent_settings *cfgs[CFG_COUNT];

/* Header signals. */
#define H_NONE 0
#define H_AV   1 /* anthropic-version */
#define H_XK   2 /* x-api-key */

#define ENGINE    CLASSIFY_ENGINE
#define BYPASS    CLASSIFY_BYPASS
#define BE_OA     LR_PROVIDER_BACKEND_PREFIX "openai"
#define BE_AN     LR_PROVIDER_BACKEND_PREFIX "anthropic"
#define BE_GROQ   LR_PROVIDER_BACKEND_PREFIX "groq"
#define BE_CLAUDE LR_PROVIDER_BACKEND_PREFIX "claude"
#define BE_ENG    LR_ENGINE_BACKEND

struct tcase {
    enum cfg cfg;
    const char *path; /* NULL allowed */
    unsigned headers;
    enum classify_route route;
    const char *backend;
    const char *provider;
};

static const struct tcase cases[] = {
    /* LunaRoute's intercepted set -> engine, with bypass on and off. */
    {CFG_AUTO, "/v1/chat/completions", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_AUTO, "/v1/messages", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_AUTO, "/v1/messages", H_AV | H_XK, ENGINE, BE_ENG, ""},
    {CFG_AUTO, "/v1/models", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_AUTO, "/healthz", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_AUTO, "/readyz", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_AUTO, "/metrics", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_NO_BYPASS, "/v1/chat/completions", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_NO_BYPASS, "/v1/messages", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_NO_BYPASS, "/v1/models", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_NO_BYPASS, "/healthz", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_NO_BYPASS, "/readyz", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_NO_BYPASS, "/metrics", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_OPENAI, "/v1/chat/completions", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_GROQ, "/v1/messages", H_NONE, ENGINE, BE_ENG, ""},

    /* Everything else bypasses to OpenAI in auto mode. */
    {CFG_AUTO, "/v1/embeddings", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/v1/audio/transcriptions", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/v1/images/generations", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/v1/files", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/v1/moderations", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/v1/responses", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/", H_NONE, BYPASS, BE_OA, "openai"},

    /* intercept.extra_paths. */
    {CFG_EXTRA, "/v1/responses", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_EXTRA, "/v1/responses/resp_123", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_EXTRA, "/v1/chat/completions", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_EXTRA, "/v1/embeddings", H_NONE, BYPASS, BE_OA, "openai"},

    /* Near misses are not intercepted: exact match only. */
    {CFG_AUTO, "/v1/chat/completions/", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/v1/chat/completionsX", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/v1/chat/completion", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/V1/MODELS", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/v1/models/gpt-4", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "v1/models", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "//v1/models", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/healthz/", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "/v1/messagesX", H_NONE, BYPASS, BE_OA, "openai"},

    /* Bypass disabled: everything goes to the engine. */
    {CFG_NO_BYPASS, "/v1/embeddings", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_NO_BYPASS, "/v1/messages/count_tokens", H_AV, ENGINE, BE_ENG, ""},
    {CFG_NO_BYPASS, "/v1/files", H_XK, ENGINE, BE_ENG, ""},
    {CFG_NO_BYPASS, NULL, H_NONE, ENGINE, BE_ENG, ""},

    /* Auto: Anthropic signals. */
    {CFG_AUTO, "/v1/embeddings", H_AV, BYPASS, BE_AN, "anthropic"},
    {CFG_AUTO, "/v1/files", H_XK, BYPASS, BE_AN, "anthropic"},
    {CFG_AUTO, "/v1/files", H_AV | H_XK, BYPASS, BE_AN, "anthropic"},
    {CFG_AUTO, "/v1/messages/count_tokens", H_NONE, BYPASS, BE_AN, "anthropic"},
    {CFG_AUTO, "/v1/messages/batches", H_NONE, BYPASS, BE_AN, "anthropic"},
    {CFG_AUTO, "/v1/messages/batches/msgbatch_1/results", H_NONE, BYPASS, BE_AN, "anthropic"},
    {CFG_AUTO, "/v1/messages/", H_NONE, BYPASS, BE_AN, "anthropic"},

    /* Named openai: the Anthropic namespace still reaches Anthropic. */
    {CFG_OPENAI, "/v1/embeddings", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_OPENAI, "/v1/embeddings", H_AV | H_XK, BYPASS, BE_OA, "openai"},
    {CFG_OPENAI, "/v1/messages/count_tokens", H_NONE, BYPASS, BE_AN, "anthropic"},
    {CFG_OPENAI, "/v1/messages/batches", H_NONE, BYPASS, BE_AN, "anthropic"},

    /* Named anthropic: everything bypassed goes there. */
    {CFG_ANTHROPIC, "/v1/embeddings", H_NONE, BYPASS, BE_AN, "anthropic"},
    {CFG_ANTHROPIC, "/v1/messages/count_tokens", H_NONE, BYPASS, BE_AN, "anthropic"},
    {CFG_ANTHROPIC, "/v1/messages", H_NONE, ENGINE, BE_ENG, ""},

    /* Named custom provider. */
    {CFG_GROQ, "/v1/embeddings", H_NONE, BYPASS, BE_GROQ, "groq"},
    {CFG_GROQ, "/v1/embeddings", H_AV, BYPASS, BE_GROQ, "groq"},
    {CFG_GROQ, "/v1/messages/count_tokens", H_NONE, BYPASS, BE_AN, "anthropic"},
    {CFG_GROQ_ONLY, "/v1/messages/count_tokens", H_NONE, BYPASS, BE_GROQ, "groq"},
    {CFG_GROQ_ONLY, "/v1/audio/speech", H_NONE, BYPASS, BE_GROQ, "groq"},

    /* Anthropic disabled: Anthropic-ish requests go to the first enabled provider. */
    {CFG_ANT_OFF, "/v1/messages/count_tokens", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_ANT_OFF, "/v1/embeddings", H_AV, BYPASS, BE_OA, "openai"},
    {CFG_ANT_OFF, "/v1/embeddings", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_ONLY_ANT, "/v1/embeddings", H_NONE, BYPASS, BE_AN, "anthropic"},
    {CFG_ONLY_ANT, "/v1/files", H_XK, BYPASS, BE_AN, "anthropic"},

    /* No enabled provider: the engine answers. */
    {CFG_NONE, "/v1/embeddings", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_NONE, "/v1/messages/count_tokens", H_AV, ENGINE, BE_ENG, ""},
    {CFG_NONE, "/v1/chat/completions", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_ALL_OFF, "/v1/embeddings", H_NONE, ENGINE, BE_ENG, ""},
    {CFG_ALL_OFF, "/v1/files", H_XK, ENGINE, BE_ENG, ""},

    /* Preference among providers of a type: the one named like the type, else the first. */
    {CFG_CUSTOM_ANT, "/v1/files", H_XK, BYPASS, BE_AN, "anthropic"},
    {CFG_CUSTOM_ANT, "/v1/embeddings", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_ONLY_CUSTOM_ANT, "/v1/files", H_XK, BYPASS, BE_CLAUDE, "claude"},
    {CFG_ONLY_CUSTOM_ANT, "/v1/messages/batches", H_NONE, BYPASS, BE_CLAUDE, "claude"},
    {CFG_ONLY_CUSTOM_ANT, "/v1/embeddings", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_CUSTOM_OA, "/v1/embeddings", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_CUSTOM_OA, "/v1/files", H_AV, BYPASS, LR_PROVIDER_BACKEND_PREFIX "oai2", "oai2"},

    /* Configured backend names are used verbatim. */
    {CFG_ENGINE_BE, "/v1/models", H_NONE, ENGINE, "my_engine", ""},
    {CFG_ENGINE_BE, "/v1/embeddings", H_NONE, BYPASS, "be_oa", "openai"},

    /* Empty or missing path counts as "/". */
    {CFG_AUTO, NULL, H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "", H_NONE, BYPASS, BE_OA, "openai"},
    {CFG_AUTO, "", H_AV, BYPASS, BE_AN, "anthropic"},
};

static const char *cfg_name(enum cfg c)
{
    static const char *const names[CFG_COUNT] = {
        "auto",       "no_bypass",       "extra",     "openai",    "anthropic",
        "groq",       "groq_only",       "ant_off",   "none",      "all_off",
        "custom_ant", "only_custom_ant", "custom_oa", "engine_be", "only_ant",
    };
    return names[c];
}

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < CFG_COUNT; i++) {
        char err[256] = "";
        cfgs[i] = agent_settings_parse(cfg_json[i], strlen(cfg_json[i]), err, sizeof err);
        if (!cfgs[i]) {
            fprintf(stderr, "config %s: %s\n", cfg_name((enum cfg)i), err);
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < CFG_COUNT; i++) {
        agent_settings_unref(cfgs[i]);
        cfgs[i] = NULL;
    }
    return 0;
}

static void test_table(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct tcase *c = &cases[i];
        struct classify_input in = {
            .method = "POST",
            .method_len = 4,
            .path = c->path,
            .path_len = c->path ? strlen(c->path) : 0,
            .anthropic_version_count = (c->headers & H_AV) ? 1 : 0,
            .x_api_key_count = (c->headers & H_XK) ? 2 : 0,
        };
        struct classify_result out = {.route = CLASSIFY_ROUTE_COUNT};
        classify(cfgs[c->cfg], &in, &out);
        if (out.route != c->route || !out.backend || strcmp(out.backend, c->backend) != 0 ||
            !out.provider || strcmp(out.provider, c->provider) != 0) {
            fprintf(stderr, "case %zu (%s, %s, h=%u): got %s/%s/%s, want %s/%s/%s\n", i,
                    cfg_name(c->cfg), c->path ? c->path : "(null)", c->headers,
                    classify_route_to_str(out.route), out.backend ? out.backend : "(null)",
                    out.provider ? out.provider : "(null)", classify_route_to_str(c->route),
                    c->backend, c->provider);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

/* The auth scheme is informational: it never changes the decision. */
static void test_auth_scheme_ignored(void **state)
{
    (void)state;
    static const char *const schemes[] = {NULL, "bearer ", "basic", "x-api-key", ""};
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        struct classify_input in = {
            .path = "/v1/embeddings",
            .path_len = strlen("/v1/embeddings"),
            .auth_scheme = schemes[i],
            .auth_scheme_len = schemes[i] ? strlen(schemes[i]) : 0,
        };
        struct classify_result out;
        classify(cfgs[CFG_AUTO], &in, &out);
        assert_int_equal(out.route, CLASSIFY_BYPASS);
        assert_string_equal(out.backend, BE_OA);
        assert_string_equal(out.provider, "openai");
    }
}

/* path_len is authoritative: bytes after it are not part of the path. */
static void test_path_len_respected(void **state)
{
    (void)state;
    struct classify_input in = {.path = "/v1/modelsXYZ", .path_len = strlen("/v1/models")};
    struct classify_result out;
    classify(cfgs[CFG_AUTO], &in, &out);
    assert_int_equal(out.route, CLASSIFY_ENGINE);
    assert_string_equal(out.backend, BE_ENG);
    assert_string_equal(out.provider, "");

    in.path = "/v1/messages/count_tokens";
    in.path_len = strlen("/v1/messages/");
    classify(cfgs[CFG_AUTO], &in, &out);
    assert_int_equal(out.route, CLASSIFY_BYPASS);
    assert_string_equal(out.provider, "anthropic");

    in.path_len = strlen("/v1/messages");
    classify(cfgs[CFG_AUTO], &in, &out);
    assert_int_equal(out.route, CLASSIFY_ENGINE);
}

/* Results point into the settings: stable for as long as the caller holds a reference. */
static void test_result_points_into_settings(void **state)
{
    (void)state;
    struct classify_input in = {.path = "/v1/files", .path_len = 9};
    struct classify_result out;
    const struct agent_settings *s = cfgs[CFG_AUTO];
    classify(s, &in, &out);
    const struct agent_provider *p = agent_settings_provider(s, "openai");
    assert_non_null(p);
    assert_ptr_equal(out.backend, p->backend);
    assert_ptr_equal(out.provider, p->name);
}

static void test_null_inputs(void **state)
{
    (void)state;
    struct classify_result out;
    classify(cfgs[CFG_AUTO], NULL, &out);
    assert_int_equal(out.route, CLASSIFY_BYPASS);
    assert_string_equal(out.backend, BE_OA);
    assert_string_equal(out.provider, "openai");

    struct classify_input in = {.path = "/v1/files", .path_len = 9};
    classify(NULL, &in, &out);
    assert_int_equal(out.route, CLASSIFY_ENGINE);
    assert_string_equal(out.backend, LR_ENGINE_BACKEND);
    assert_string_equal(out.provider, "");
}

static void test_route_to_str(void **state)
{
    (void)state;
    assert_string_equal(classify_route_to_str(CLASSIFY_ENGINE), "engine");
    assert_string_equal(classify_route_to_str(CLASSIFY_BYPASS), "bypass");
    assert_string_equal(classify_route_to_str(CLASSIFY_ROUTE_COUNT), "unknown");
    assert_string_equal(classify_route_to_str(12345), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_auth_scheme_ignored),
        cmocka_unit_test(test_path_len_respected),
        cmocka_unit_test(test_result_points_into_settings),
        cmocka_unit_test(test_null_inputs),
        cmocka_unit_test(test_route_to_str),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
