/* Router: rule matching and priority, the strategies, health feedback (circuit breaker,
 * rate-limit windows), dialect filtering, readiness, thread safety, the switch notification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include "router.h"
#include "settings.h"

#define P(name, type)                                                                              \
    "{\"name\":\"" name "\",\"type\":\"" type "\",\"base_url\":\"https://" name ".example\"}"

/* Builds a router from an agent.json document. The router keeps its own settings reference,
 * so the caller's is dropped here. */
static struct router *mk(const char *json)
{
    char err[256];
    struct agent_settings *s = agent_settings_parse(json, strlen(json), err, sizeof err);
    if (!s)
        fail_msg("settings: %s", err);
    struct router *r = router_new(s, err, sizeof err);
    if (!r)
        fail_msg("router: %s", err);
    agent_settings_unref(s);
    return r;
}

/* "a,b,c*": the plan's providers in order, '*' marking unavailable ones. */
static const char *names(const struct router_plan *pl)
{
    static char buf[512];
    size_t k = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < pl->n; i++)
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s%s%s", i ? "," : "", pl->p[i]->name,
                              pl->unavailable[i] ? "*" : "");
    return buf;
}

static const char *plan_at(struct router *r, enum router_dialect d, const char *model, double now,
                           struct router_plan *pl)
{
    router_plan(r, d, model, model ? strlen(model) : 0, now, pl);
    return names(pl);
}

static const struct agent_provider *prov(struct router *r, const char *name)
{
    for (size_t i = 0; i < router_provider_count(r); i++)
        if (strcmp(router_provider(r, i)->name, name) == 0)
            return router_provider(r, i);
    fail_msg("no provider %s", name);
    return NULL;
}

/* ------------------------------------------------------------------------------------- */

static const char *const cfg_rules =
    "{\"providers\":[" P("claude2", "anthropic") "," P("openai", "openai") "," P(
        "oa2",
        "openai") "," P("anthropic",
                        "anthropic") "," P("oa3",
                                           "openai") "],"
                                                     "\"routing\":{\"rules\":["
                                                     "{\"name\":\"low\",\"model_pattern\":\"^gpt-"
                                                     "\",\"priority\":1,\"strategy\":\"\","
                                                     "\"primary\":\"oa2\",\"fallbacks\":[],"
                                                     "\"targets\":[],\"alternatives\":[]},"
                                                     "{\"name\":\"high\",\"model_pattern\":\"^gpt-"
                                                     "4\",\"priority\":20,\"primary\":\"openai\","
                                                     "\"fallbacks\":[\"oa3\"]},"
                                                     "{\"name\":\"tie-a\",\"model_pattern\":\"^"
                                                     "o1\",\"priority\":5,\"primary\":\"oa3\"},"
                                                     "{\"name\":\"tie-b\",\"model_pattern\":\"^"
                                                     "o1\",\"priority\":5,\"primary\":\"openai\"},"
                                                     "{\"name\":\"claude\",\"model_pattern\":\"^"
                                                     "claude-(opus|sonnet)\",\"primary\":"
                                                     "\"anthropic\","
                                                     "\"fallbacks\":[\"claude2\"]}]}}";

static void test_rule_matching(void **state)
{
    (void)state;
    struct router *r = mk(cfg_rules);
    struct router_plan pl;
    /* higher priority wins although it comes later in the file */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "gpt-4o", 0, &pl), "openai,oa3");
    assert_string_equal(pl.rule, "high");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "gpt-3.5-turbo", 0, &pl), "oa2");
    assert_string_equal(pl.rule, "low");
    /* equal priorities keep file order */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "o1-mini", 0, &pl), "oa3");
    assert_string_equal(pl.rule, "tie-a");
    assert_string_equal(plan_at(r, ROUTER_ANTHROPIC, "claude-sonnet-4", 0, &pl),
                        "anthropic,claude2");
    assert_string_equal(pl.rule, "claude");
    /* no match: the providers of the request's dialect, the one named like it first */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "llama-3", 0, &pl), "openai,oa2,oa3");
    assert_null(pl.rule);
    assert_string_equal(plan_at(r, ROUTER_ANTHROPIC, "claude-haiku", 0, &pl), "anthropic,claude2");
    assert_null(pl.rule);
    /* NULL and empty models match no rule, not even an always-matching one */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, NULL, 0, &pl), "openai,oa2,oa3");
    assert_null(pl.rule);
    assert_int_equal(router_plan(r, ROUTER_OPENAI, "gpt-4", 0, 0, &pl), 3);
    assert_null(pl.rule);
    /* the model is model_len bytes, not NUL-terminated */
    assert_int_equal(router_plan(r, ROUTER_OPENAI, "gpt-4o", 3, 0, &pl), 3);
    assert_null(pl.rule);
    assert_int_equal(router_plan(r, ROUTER_OPENAI, "gpt-4xxxx", 5, 0, &pl), 2);
    assert_string_equal(pl.rule, "high");
    /* embedded NUL: no match */
    assert_int_equal(router_plan(r, ROUTER_OPENAI, "gpt-4\0x", 7, 0, &pl), 3);
    assert_null(pl.rule);
    /* longer than 256 bytes: no match */
    char big[300];
    memset(big, 'x', sizeof big);
    memcpy(big, "gpt-4", 5);
    assert_int_equal(router_plan(r, ROUTER_OPENAI, big, 256, 0, &pl), 2);
    assert_string_equal(pl.rule, "high");
    assert_int_equal(router_plan(r, ROUTER_OPENAI, big, 257, 0, &pl), 3);
    assert_null(pl.rule);
    router_free(r);
}

static void test_no_rules_defaults(void **state)
{
    (void)state;
    struct router_plan pl;
    /* no routing block at all; the dialect's namesake disabled */
    struct router *r =
        mk("{\"providers\":[{\"name\":\"openai\",\"type\":\"openai\","
           "\"enabled\":false}," P("groq", "openai") "," P("anthropic", "anthropic") "]}");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "gpt-4", 0, &pl), "groq");
    assert_string_equal(plan_at(r, ROUTER_ANTHROPIC, "x", 0, &pl), "anthropic");
    assert_int_equal(router_provider_count(r), 3);
    assert_string_equal(router_provider(r, 0)->name, "openai");
    assert_null(router_provider(r, 3));
    router_free(r);
    /* nothing configured for a dialect */
    r = mk("{\"providers\":[" P("anthropic", "anthropic") "]}");
    assert_int_equal(router_plan(r, ROUTER_OPENAI, "gpt-4", 5, 0, &pl), 0);
    assert_null(pl.rule);
    router_free(r);
    r = mk("{}");
    assert_int_equal(router_plan(r, ROUTER_OPENAI, "gpt-4", 5, 0, &pl), 0);
    assert_false(router_any_available(r, 0));
    router_free(r);
}

static void test_primary_fallbacks(void **state)
{
    (void)state;
    struct router_plan pl;
    struct router *r = mk("{\"providers\":[" P("openai", "openai") "," P("oa2", "openai") "," P(
        "oa3", "openai") ","
                         "{\"name\":\"off\",\"type\":\"openai\",\"base_url\":\"https://"
                         "off.example\",\"enabled\":false}],"
                         "\"routing\":{\"rules\":["
                         "{\"name\":\"r1\",\"model_pattern\":\"^a$\",\"primary\":\"oa3\","
                         "\"fallbacks\":[\"openai\",\"oa2\"]},"
                         /* duplicates, unknown and disabled providers are dropped */
                         "{\"name\":\"r2\",\"model_pattern\":\"^b$\",\"primary\":\"oa2\","
                         "\"fallbacks\":[\"nope\",\"oa2\",\"off\",\"openai\",\"openai\"]}]}}");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "a", 0, &pl), "oa3,openai,oa2");
    assert_string_equal(pl.rule, "r1");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "b", 0, &pl), "oa2,openai");
    router_free(r);
}

static const char *const cfg_abc =
    "{\"providers\":[" P("a", "openai") "," P("b", "openai") "," P("c", "openai") "]";

static void test_round_robin(void **state)
{
    (void)state;
    char json[1024];
    snprintf(json, sizeof json,
             "%s,\"routing\":{\"rules\":[{\"name\":\"rr\",\"model_pattern\":\".\","
             "\"strategy\":\"round-robin\",\"primary\":null,\"fallbacks\":[],"
             "\"targets\":[{\"provider\":\"a\",\"weight\":1},{\"provider\":\"b\",\"weight\":1},"
             "{\"provider\":\"c\",\"weight\":1}],\"alternatives\":[]}]}}",
             cfg_abc);
    struct router *r = mk(json);
    struct router_plan pl;
    static const char *const want[6] = {"a,b,c", "b,c,a", "c,a,b", "a,b,c", "b,c,a", "c,a,b"};
    for (int i = 0; i < 6; i++) {
        assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 0, &pl), want[i]);
        assert_string_equal(pl.rule, "rr");
    }
    /* an unhealthy target still takes its turn, behind the healthy ones */
    router_report(r, prov(r, "a"), ROUTER_RATE_LIMITED, 10, 0);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 1, &pl), "b,c,a*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 1, &pl), "b,c,a*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 1, &pl), "c,b,a*");
    router_free(r);
}

static struct router *mk_wrr(const char *weights_json)
{
    char json[1024];
    snprintf(json, sizeof json,
             "%s,\"routing\":{\"rules\":[{\"name\":\"w\",\"model_pattern\":\".\","
             "\"strategy\":\"weighted-round-robin\",\"targets\":%s}]}}",
             cfg_abc, weights_json);
    return mk(json);
}

static void test_wrr_5_1_1(void **state)
{
    (void)state;
    struct router *r =
        mk_wrr("[{\"provider\":\"a\",\"weight\":5},{\"provider\":\"b\",\"weight\":1},"
               "{\"provider\":\"c\",\"weight\":1}]");
    struct router_plan pl;
    /* nginx's example: {a, a, b, a, c, a, a}, then it repeats */
    static const char *const firsts = "aabacaaaabacaa";
    for (int i = 0; firsts[i]; i++) {
        plan_at(r, ROUTER_OPENAI, "m", 0, &pl);
        assert_int_equal(pl.n, 3);
        if (pl.p[0]->name[0] != firsts[i])
            fail_msg("pick %d: %s, want %c", i, names(&pl), firsts[i]);
    }
    router_free(r);
    /* the rest follow by descending current weight */
    r = mk_wrr("[{\"provider\":\"a\",\"weight\":5},{\"provider\":\"b\",\"weight\":1},"
               "{\"provider\":\"c\",\"weight\":1}]");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 0, &pl), "a,b,c"); /* a-2 b1 c1 */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 0, &pl), "a,b,c"); /* a-4 b2 c2 */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 0, &pl), "b,c,a"); /* a1 b-4 c3 */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 0, &pl), "a,c,b"); /* a-1 b-3 c4 */
    router_free(r);
}

static void test_wrr_80_20(void **state)
{
    (void)state;
    struct router *r =
        mk_wrr("[{\"provider\":\"a\",\"weight\":80},{\"provider\":\"b\",\"weight\":20}]");
    struct router_plan pl;
    int na = 0, nb = 0, run = 0, max_run = 0;
    for (int i = 0; i < 100; i++) {
        plan_at(r, ROUTER_OPENAI, "m", 0, &pl);
        assert_int_equal(pl.n, 2);
        if (pl.p[0]->name[0] == 'a') {
            na++;
            run++;
            max_run = run > max_run ? run : max_run;
            assert_string_equal(pl.p[1]->name, "b");
        } else {
            nb++;
            run = 0;
            assert_string_equal(pl.p[1]->name, "a");
        }
    }
    assert_int_equal(na, 80);
    assert_int_equal(nb, 20);
    assert_true(max_run <= 4);
    router_free(r);
    /* weight 0: never first, still a last resort */
    r = mk_wrr("[{\"provider\":\"a\",\"weight\":0},{\"provider\":\"b\",\"weight\":1},"
               "{\"provider\":\"c\",\"weight\":1}]");
    for (int i = 0; i < 10; i++) {
        plan_at(r, ROUTER_OPENAI, "m", 0, &pl);
        assert_int_equal(pl.n, 3);
        assert_string_equal(pl.p[2]->name, "a");
        assert_string_equal(pl.p[0]->name, (i % 2) ? "c" : "b");
    }
    router_free(r);
}

static void test_limits_alternative(void **state)
{
    (void)state;
    struct router *r =
        mk("{\"providers\":[" P("p1", "openai") "," P("p2", "openai") "," P("alt1", "openai") "," P(
            "alt2", "openai") "],\"routing\":{\"rules\":[{\"name\":\"la\",\"model_pattern\":\".\","
                              "\"strategy\":\"limits-alternative\",\"targets\":[{\"provider\":"
                              "\"p1\",\"weight\":1},"
                              "{\"provider\":\"p2\",\"weight\":1}],\"alternatives\":[{\"provider\":"
                              "\"alt1\",\"weight\":1},"
                              "{\"provider\":\"alt2\",\"weight\":1}]}]}}");
    struct router_plan pl;
    /* primaries while they are not rate-limited */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 100, &pl), "p1,p2,alt1,alt2");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 100, &pl), "p1,p2,alt1,alt2");
    router_report(r, prov(r, "p1"), ROUTER_RATE_LIMITED, 30, 100);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 101, &pl), "p2,alt1,alt2,p1*");
    router_report(r, prov(r, "p2"), ROUTER_RATE_LIMITED, 60, 101);
    /* then the alternatives, rate-limited primaries last */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 102, &pl), "alt1,alt2,p1*,p2*");
    router_report(r, prov(r, "alt1"), ROUTER_RATE_LIMITED, 5, 102);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 103, &pl), "alt2,p1*,p2*,alt1*");
    /* Retry-After windows expire: providers come back in their configured place */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 107, &pl), "alt1,alt2,p1*,p2*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 129.9, &pl), "alt1,alt2,p1*,p2*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 130, &pl), "p1,alt1,alt2,p2*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 161, &pl), "p1,p2,alt1,alt2");
    /* rate limiting does not touch the circuit */
    struct circuit c;
    router_circuit_snapshot(r, 0, &c);
    assert_int_equal(c.state, CIRCUIT_CLOSED);
    assert_int_equal(c.failures, 0);
    router_free(r);
}

static void test_rate_limit_backoff(void **state)
{
    (void)state;
    struct router *r = mk("{\"providers\":[" P("openai", "openai") "," P("oa2", "openai") "]}");
    const struct agent_provider *oa = prov(r, "openai");
    struct router_plan pl;
    /* no Retry-After: 1 s, 2 s, 4 s for consecutive 429s */
    router_report(r, oa, ROUTER_RATE_LIMITED, -1, 0);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 0.99, &pl), "oa2,openai*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 1, &pl), "openai,oa2");
    router_report(r, oa, ROUTER_RATE_LIMITED, -1, 1);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 2.99, &pl), "oa2,openai*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 3, &pl), "openai,oa2");
    router_report(r, oa, ROUTER_RATE_LIMITED, -1, 3);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 6.99, &pl), "oa2,openai*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 7, &pl), "openai,oa2");
    /* a failure does not reset the count; success does */
    router_report(r, oa, ROUTER_FAILED, -1, 7);
    router_report(r, oa, ROUTER_RATE_LIMITED, -1, 7);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 14.99, &pl), "oa2,openai*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 15, &pl), "openai,oa2");
    router_report(r, oa, ROUTER_OK, -1, 15);
    router_report(r, oa, ROUTER_RATE_LIMITED, -1, 20);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 20.5, &pl), "oa2,openai*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 21, &pl), "openai,oa2");
    /* capped at 60 s */
    double t = 100;
    for (int i = 0; i < 12; i++)
        router_report(r, oa, ROUTER_RATE_LIMITED, -1, t);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", t + 59.9, &pl), "oa2,openai*");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", t + 60, &pl), "openai,oa2");
    /* an explicit Retry-After wins over the back-off, 0 included */
    router_report(r, oa, ROUTER_RATE_LIMITED, 0, 200);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 200, &pl), "openai,oa2");
    /* a provider that is not ours is ignored */
    struct agent_provider other = *oa;
    router_report(r, &other, ROUTER_RATE_LIMITED, 50, 300);
    assert_true(router_admit(r, &other, 300));
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 301, &pl), "openai,oa2");
    router_free(r);
}

static const char *const cfg_cb = "{\"providers\":[" P("openai", "openai") "," P(
    "oa2", "openai") "],"
                     "\"routing\":{\"rules\":[{\"name\":\"r\",\"model_pattern\":\".\",\"primary\":"
                     "\"openai\","
                     "\"fallbacks\":[\"oa2\"]}],\"circuit_breaker\":{\"failure_threshold\":3,"
                     "\"success_threshold\":2,\"open_secs\":30}}}";

static void test_circuit_open_and_recover(void **state)
{
    (void)state;
    struct router *r = mk(cfg_cb);
    const struct agent_provider *oa = prov(r, "openai");
    struct router_plan pl;
    for (int i = 0; i < 2; i++) {
        assert_true(router_admit(r, oa, 10));
        router_report(r, oa, ROUTER_FAILED, -1, 10);
    }
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 10, &pl), "openai,oa2");
    assert_true(router_any_available(r, 10));
    router_report(r, oa, ROUTER_FAILED, -1, 10);
    /* open: moved to the end, marked unavailable, refused */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 11, &pl), "oa2,openai*");
    assert_false(router_admit(r, oa, 11));
    assert_false(router_admit(r, oa, 39.9));
    struct circuit c;
    router_circuit_snapshot(r, 0, &c);
    assert_int_equal(c.state, CIRCUIT_OPEN);
    assert_int_equal(c.transitions[CIRCUIT_CLOSED][CIRCUIT_OPEN], 1);
    /* open_secs later: back first; one probe at a time */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 40, &pl), "openai,oa2");
    assert_true(router_admit(r, oa, 40));
    assert_false(router_admit(r, oa, 40));
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 40, &pl), "oa2,openai*");
    router_report(r, oa, ROUTER_OK, -1, 41);
    router_circuit_snapshot(r, 0, &c);
    assert_int_equal(c.state, CIRCUIT_HALF_OPEN);
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "m", 41, &pl), "openai,oa2");
    assert_true(router_admit(r, oa, 41));
    router_report(r, oa, ROUTER_OK, -1, 42);
    router_circuit_snapshot(r, 0, &c);
    assert_int_equal(c.state, CIRCUIT_CLOSED);
    assert_int_equal(c.transitions[CIRCUIT_OPEN][CIRCUIT_HALF_OPEN], 1);
    assert_int_equal(c.transitions[CIRCUIT_HALF_OPEN][CIRCUIT_CLOSED], 1);
    assert_true(router_admit(r, oa, 42));
    assert_true(router_admit(r, oa, 42));
    /* a probe that ends in a 429 or an abandon frees the slot without a verdict */
    for (int i = 0; i < 3; i++)
        router_report(r, oa, ROUTER_FAILED, -1, 50);
    assert_true(router_admit(r, oa, 80));
    router_report(r, oa, ROUTER_ABANDONED, -1, 80);
    assert_true(router_admit(r, oa, 80));
    router_report(r, oa, ROUTER_RATE_LIMITED, 1, 80);
    assert_true(router_admit(r, oa, 81));
    router_report(r, oa, ROUTER_FAILED, -1, 81); /* reopens */
    router_circuit_snapshot(r, 0, &c);
    assert_int_equal(c.state, CIRCUIT_OPEN);
    assert_int_equal(c.transitions[CIRCUIT_HALF_OPEN][CIRCUIT_OPEN], 1);
    assert_false(router_admit(r, oa, 110.9));
    assert_true(router_admit(r, oa, 111));
    /* out-of-range snapshot */
    router_circuit_snapshot(r, 99, &c);
    assert_int_equal(c.state, CIRCUIT_CLOSED);
    router_free(r);
}

static void test_cross_dialect(void **state)
{
    (void)state;
    struct router *r = mk("{\"providers\":[" P("openai", "openai") "," P(
        "anthropic",
        "anthropic") "],"
                     "\"routing\":{\"rules\":[{\"name\":\"mix\",\"model_pattern\":\"^claude\","
                     "\"primary\":\"anthropic\",\"fallbacks\":[\"openai\"]}]}}");
    struct router_plan pl;
    /* a rule's providers serve either dialect (translated), in the rule's order */
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "claude-3", 0, &pl), "anthropic,openai");
    assert_string_equal(pl.rule, "mix");
    assert_string_equal(plan_at(r, ROUTER_ANTHROPIC, "claude-3", 0, &pl), "anthropic,openai");
    /* with no rule, only the request's own dialect */
    assert_string_equal(plan_at(r, ROUTER_ANTHROPIC, "x", 0, &pl), "anthropic");
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "x", 0, &pl), "openai");
    router_free(r);
}

static void test_any_available(void **state)
{
    (void)state;
    struct router *r = mk("{\"providers\":[" P(
        "openai",
        "openai") ",{\"name\":\"off\",\"type\":\"openai\",\"base_url\":\"https://off.example\","
                  "\"enabled\":false}],\"routing\":{\"circuit_breaker\":{\"failure_threshold\":2,"
                  "\"success_threshold\":1,\"open_secs\":10}}}");
    const struct agent_provider *oa = prov(r, "openai");
    assert_true(router_any_available(r, 0));
    router_report(r, oa, ROUTER_FAILED, -1, 0);
    router_report(r, oa, ROUTER_FAILED, -1, 0);
    assert_false(router_any_available(r, 1));
    /* rate limiting does not make the agent unready */
    router_report(r, oa, ROUTER_RATE_LIMITED, 100, 1);
    assert_false(router_any_available(r, 9.9));
    assert_true(router_any_available(r, 10));
    assert_true(router_admit(r, oa, 10));
    router_report(r, oa, ROUTER_OK, -1, 10);
    assert_true(router_any_available(r, 10));
    router_free(r);
    assert_false(router_any_available(NULL, 0));
}

static void test_new_errors(void **state)
{
    (void)state;
    char err[256];
    const char *json = "{\"providers\":[" P(
        "openai",
        "openai") "],\"routing\":{\"rules\":["
                  "{\"name\":\"ok\",\"model_pattern\":\"^a\",\"primary\":\"openai\"},"
                  "{\"name\":\"broken\",\"model_pattern\":\"(unclosed\",\"primary\":\"openai\"}]}}";
    struct agent_settings *s = agent_settings_parse(json, strlen(json), err, sizeof err);
    assert_non_null(s);
    err[0] = '\0';
    assert_null(router_new(s, err, sizeof err));
    assert_non_null(strstr(err, "broken"));
    assert_non_null(strstr(err, "model_pattern"));
    agent_settings_unref(s);
    /* an unknown provider is skipped: control has validated the names */
    struct router *r = mk("{\"providers\":[" P(
        "openai", "openai") "],\"routing\":{\"rules\":["
                            "{\"name\":\"x\",\"model_pattern\":\"^a\",\"primary\":\"ghost\","
                            "\"fallbacks\":[\"openai\"]}]}}");
    struct router_plan pl;
    assert_string_equal(plan_at(r, ROUTER_OPENAI, "a", 0, &pl), "openai");
    assert_string_equal(pl.rule, "x");
    router_free(r);
    router_free(NULL);
    assert_null(router_new(NULL, err, sizeof err));
}

static void test_backoff(void **state)
{
    (void)state;
    assert_true(router_backoff(1, 0.5) > 0.0999 && router_backoff(1, 0.5) < 0.1001);
    assert_true(router_backoff(2, 0.5) > 0.1999 && router_backoff(2, 0.5) < 0.2001);
    assert_true(router_backoff(5, 0.5) > 1.5999 && router_backoff(5, 0.5) < 1.6001);
    assert_true(router_backoff(6, 0.5) > 1.9999 && router_backoff(6, 0.5) < 2.0001);
    assert_true(router_backoff(0, 0.5) == router_backoff(1, 0.5));
    assert_true(router_backoff(1, 0) > 0.0799 && router_backoff(1, 0) < 0.0801);
    for (unsigned a = 0; a < 70; a++) {
        for (double x = 0; x < 1; x += 0.125) {
            double b = router_backoff(a, x);
            double base = a <= 1 ? 0.1 : (a >= 6 ? 2.0 : 0.1 * (double)(1u << (a - 1)));
            assert_true(b >= base * 0.8 - 1e-9 && b < base * 1.2 + 1e-9);
            assert_true(b >= 0.08 - 1e-9 && b <= 2.4 + 1e-9);
        }
    }
    assert_true(router_backoff(100000, 0.99) <= 2.4);
    assert_true(router_backoff(3, -5) >= 0.32 - 1e-9);
    assert_true(router_backoff(3, 7) <= 0.48 + 1e-9);
}

static void test_switch_message(void **state)
{
    (void)state;
    struct router *r = mk("{\"providers\":[" P("openai", "openai") "]}");
    assert_null(router_switch_message(r));
    router_free(r);
    r = mk("{\"routing\":{\"provider_switch_notification\":{\"enabled\":true,"
           "\"default_message\":\"switched to ${new_provider}\"}}}");
    assert_string_equal(router_switch_message(r), "switched to ${new_provider}");
    router_free(r);
    r = mk("{\"routing\":{\"provider_switch_notification\":{\"enabled\":true,"
           "\"default_message\":null}}}");
    assert_non_null(router_switch_message(r));
    assert_non_null(strstr(router_switch_message(r), "alternative AI provider"));
    router_free(r);
    r = mk("{\"routing\":{\"provider_switch_notification\":{\"enabled\":false,"
           "\"default_message\":\"x\"}}}");
    assert_null(router_switch_message(r));
    router_free(r);
    assert_string_equal(router_outcome_to_str(ROUTER_RATE_LIMITED), "rate_limited");
    assert_string_equal(router_outcome_to_str(ROUTER_OUTCOME_COUNT), "?");
}

static void test_switch_format(void **state)
{
    (void)state;
    char *s = router_switch_format(
        "From ${original_provider} to ${new_provider} due to ${reason} (${model}) ${model}$",
        "openai", "groq", ROUTER_SWITCH_SERVICE_ISSUE, "gpt-4");
    assert_string_equal(s, "From openai to groq due to a temporary service issue (gpt-4) gpt-4$");
    free(s);
    s = router_switch_format("${reason}|${unknown}|${model", NULL, NULL, ROUTER_SWITCH_RATE_LIMIT,
                             NULL);
    assert_string_equal(s, "high demand|${unknown}|${model");
    free(s);
    s = router_switch_format("${new_provider}${reason}", "a", "", ROUTER_SWITCH_CIRCUIT_BREAKER,
                             "m");
    assert_string_equal(s, "service maintenance");
    free(s);
    assert_string_equal(router_switch_reason_to_str(ROUTER_SWITCH_RATE_LIMIT), "rate_limit");
}

static json_t *body(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j)
        fail_msg("json: %s", e.text);
    return j;
}

static void assert_json(json_t *j, const char *want)
{
    char *got = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (strcmp(got, want) != 0)
        fail_msg("got  %s\nwant %s", got, want);
    free(got);
}

static void test_switch_inject(void **state)
{
    (void)state;
    json_t *b = body("{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
                     "{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_int_equal(router_switch_inject(b, ROUTER_OPENAI, "NOTE"), 1);
    assert_json(
        b, "{\"model\":\"gpt-4\",\"messages\":[{\"role\":\"system\",\"content\":\"S\"},"
           "{\"role\":\"user\",\"content\":\"NOTE\"},{\"role\":\"user\",\"content\":\"hi\"}]}");
    /* idempotent */
    assert_int_equal(router_switch_inject(b, ROUTER_OPENAI, "NOTE"), 0);
    json_decref(b);
    b = body("{\"model\":\"c\",\"system\":\"S\",\"messages\":[{\"role\":\"user\","
             "\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}]}");
    assert_int_equal(router_switch_inject(b, ROUTER_ANTHROPIC, "NOTE"), 1);
    assert_json(b, "{\"model\":\"c\",\"system\":\"S\",\"messages\":[{\"role\":\"user\","
                   "\"content\":\"NOTE\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                   "\"text\":\"hi\"}]}]}");
    json_decref(b);
    /* LunaRoute's check: the first message already starts with "IMPORTANT:" */
    b = body("{\"messages\":[{\"role\":\"user\",\"content\":\"IMPORTANT: earlier\"}]}");
    assert_int_equal(router_switch_inject(b, ROUTER_ANTHROPIC, "other"), 0);
    json_decref(b);
    b = body("{\"messages\":[]}");
    assert_int_equal(router_switch_inject(b, ROUTER_OPENAI, "N"), 1);
    assert_json(b, "{\"messages\":[{\"role\":\"user\",\"content\":\"N\"}]}");
    json_decref(b);
    b = body("{\"prompt\":\"x\"}");
    assert_int_equal(router_switch_inject(b, ROUTER_OPENAI, "N"), -1);
    json_decref(b);
    b = body("[1]");
    assert_int_equal(router_switch_inject(b, ROUTER_OPENAI, "N"), -1);
    json_decref(b);
    assert_int_equal(router_switch_inject(NULL, ROUTER_OPENAI, "N"), -1);
}

/* ------------------------------------------------------------------------------------- */
/* Concurrency smoke test: 4 threads plan, admit and report 10k times each. */

#define N_THREADS 4
#define N_ITERS   10000

struct worker {
    struct router *r;
    int mode; /* 0: round-robin, all OK; 1: mixed outcomes */
    unsigned seed;
    unsigned long firsts[4];
    int errors;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < N_ITERS; i++) {
        struct router_plan pl;
        double now = w->mode ? (double)i / 100.0 : 0;
        size_t n = router_plan(w->r, ROUTER_OPENAI, "m", 1, now, &pl);
        if (n != 4 || !pl.rule) {
            w->errors++;
            continue;
        }
        for (size_t a = 0; a < n; a++)
            for (size_t b = a + 1; b < n; b++)
                if (pl.p[a] == pl.p[b])
                    w->errors++;
        w->firsts[pl.p[0]->name[1] - '1']++;
        const struct agent_provider *p = pl.p[0];
        if (!router_admit(w->r, p, now)) {
            if (!w->mode)
                w->errors++;
            continue;
        }
        enum router_outcome o = ROUTER_OK;
        if (w->mode)
            o = (enum router_outcome)(rand_r(&w->seed) % ROUTER_OUTCOME_COUNT);
        router_report(w->r, p, o, (o == ROUTER_RATE_LIMITED && (i & 1)) ? 0.05 : -1, now);
        (void)router_any_available(w->r, now);
    }
    return NULL;
}

static void run_workers(struct router *r, int mode, struct worker *ws)
{
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        ws[i] = (struct worker){.r = r, .mode = mode, .seed = 1234u + (unsigned)i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_run, &ws[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
}

static void test_concurrency(void **state)
{
    (void)state;
    const char *json =
        "{\"providers\":[" P("p1", "openai") "," P("p2", "openai") "," P("p3", "openai") "," P(
            "p4",
            "openai") "],\"routing\":{\"rules\":[{\"name\":\"rr\",\"model_pattern\":\".\","
                      "\"strategy\":\"round-robin\",\"targets\":[\"p1\",\"p2\",\"p3\",\"p4\"]}],"
                      "\"circuit_breaker\":{\"failure_threshold\":2,\"success_threshold\":2,\"open_"
                      "secs\":1}}}";
    struct worker ws[N_THREADS];
    struct router *r = mk(json);
    run_workers(r, 0, ws);
    unsigned long firsts[4] = {0};
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(ws[i].errors, 0);
        for (int k = 0; k < 4; k++)
            firsts[k] += ws[i].firsts[k];
    }
    /* every rotation step was taken exactly once */
    for (int k = 0; k < 4; k++)
        assert_int_equal(firsts[k], N_THREADS * N_ITERS / 4);
    router_free(r);

    r = mk(json);
    run_workers(r, 1, ws);
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(ws[i].errors, 0);
    uint64_t total = 0;
    for (size_t i = 0; i < router_provider_count(r); i++) {
        struct circuit c;
        router_circuit_snapshot(r, i, &c);
        /* every state is entered as often as it is left, give or take the current one */
        for (int s = 0; s < CIRCUIT_STATE_COUNT; s++) {
            uint64_t in = 0, out = 0;
            for (int t = 0; t < CIRCUIT_STATE_COUNT; t++) {
                in += c.transitions[t][s];
                out += c.transitions[s][t];
            }
            uint64_t expect_in =
                out + (c.state == (enum circuit_state)s ? 1 : 0) - (s == CIRCUIT_CLOSED ? 1 : 0);
            assert_int_equal(in, expect_in);
            total += in;
        }
        assert_int_equal(c.transitions[CIRCUIT_CLOSED][CIRCUIT_HALF_OPEN], 0);
        assert_int_equal(c.transitions[CIRCUIT_OPEN][CIRCUIT_CLOSED], 0);
    }
    assert_true(total > 0);
    router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rule_matching),
        cmocka_unit_test(test_no_rules_defaults),
        cmocka_unit_test(test_primary_fallbacks),
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_wrr_5_1_1),
        cmocka_unit_test(test_wrr_80_20),
        cmocka_unit_test(test_limits_alternative),
        cmocka_unit_test(test_rate_limit_backoff),
        cmocka_unit_test(test_circuit_open_and_recover),
        cmocka_unit_test(test_cross_dialect),
        cmocka_unit_test(test_any_available),
        cmocka_unit_test(test_new_errors),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_switch_message),
        cmocka_unit_test(test_switch_format),
        cmocka_unit_test(test_switch_inject),
        cmocka_unit_test(test_concurrency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
