/* Prometheus registry: every series is updated, rendered, and checked as exact lines. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"
#include "router.h"
#include "settings.h"
#include "spop.h"
#include "stats.h"

static char *render(struct router *r)
{
    struct lr_buf b = {0};

    assert_int_equal(metrics_render(&b, r), 0);
    assert_non_null(b.data);
    return lr_buf_steal_str(&b);
}

/* True when `line` is one whole line of text. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

static void assert_line(const char *text, const char *line)
{
    if (!has_line(text, line))
        fail_msg("missing line: %s", line);
}

static void assert_no_line(const char *text, const char *line)
{
    if (has_line(text, line))
        fail_msg("unexpected line: %s", line);
}

/* Lines that start with prefix. */
static size_t count_prefix(const char *text, const char *prefix)
{
    size_t n = 0, l = strlen(prefix);

    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, l) == 0)
            n++;
    return n;
}

static int setup(void **state)
{
    (void)state;
    metrics_reset();
    stats_reset();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    metrics_free_all();
    return 0;
}

static void test_requests_total(void **state)
{
    char *t;

    (void)state;
    metrics_request("openai", "gpt-4o", 200, 0.5);
    metrics_request("openai", "gpt-4o", 200, 0.25);
    metrics_request("openai", "gpt-4o", 502, 1);
    metrics_request("anthropic", "claude-sonnet-4", 200, 2);
    metrics_request("openai", NULL, -1, 0);
    metrics_request("openai", "", 12345, 0);
    t = render(NULL);
    assert_line(t,
                "lunaroute_requests_total{provider=\"openai\",model=\"gpt-4o\",status=\"200\"} 2");
    assert_line(t,
                "lunaroute_requests_total{provider=\"openai\",model=\"gpt-4o\",status=\"502\"} 1");
    assert_line(t, "lunaroute_requests_total{provider=\"anthropic\",model=\"claude-sonnet-4\","
                   "status=\"200\"} 1");
    /* no model: model=""; a status that is not an HTTP status: 0 */
    assert_line(t, "lunaroute_requests_total{provider=\"openai\",model=\"\",status=\"0\"} 2");
    assert_int_equal(count_prefix(t, "lunaroute_requests_total{"), 4);
    /* the client-view histogram got every request */
    assert_line(t, "lunaroute_request_duration_seconds_count{provider=\"openai\"} 5");
    assert_line(t, "lunaroute_request_duration_seconds_sum{provider=\"openai\"} 1.75");
    assert_line(t, "lunaroute_request_duration_seconds_count{provider=\"anthropic\"} 1");
    assert_line(t, "lunaroute_request_duration_seconds_bucket{provider=\"anthropic\",le=\"1\"} 0");
    assert_line(t,
                "lunaroute_request_duration_seconds_bucket{provider=\"anthropic\",le=\"2.5\"} 1");
    free(t);
}

static const char *const les[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
                                  "2.5",   "5",    "10",    "30",   "60",  "120",  "300", "+Inf"};

/* Reads every bucket of one histogram series, checks order and cumulativeness, and that
 * +Inf equals _count. */
static void read_buckets(const char *t, const char *name, const char *prov, uint64_t out[16])
{
    char line[256], count_line[256];
    uint64_t prev = 0;

    for (size_t i = 0; i < 16; i++) {
        const char *p;
        int n = snprintf(line, sizeof line, "%s_bucket{provider=\"%s\",le=\"%s\"} ", name, prov,
                         les[i]);

        p = strstr(t, line);
        if (!p)
            fail_msg("missing bucket %s", line);
        out[i] = strtoull(p + n, NULL, 10);
        assert_true(out[i] >= prev);
        prev = out[i];
    }
    snprintf(count_line, sizeof count_line, "%s_count{provider=\"%s\"} %llu", name, prov,
             (unsigned long long)out[15]);
    assert_line(t, count_line);
}

static void test_histograms(void **state)
{
    uint64_t b[16];
    char *t;

    (void)state;
    metrics_upstream("openai", -1); /* clamped to 0 */
    metrics_upstream("openai", 0.0078125);
    metrics_upstream("openai", 0.25);     /* on a bound: counted in it */
    metrics_upstream("openai", 1024);     /* +Inf only */
    metrics_upstream("openai", NAN);      /* ignored */
    metrics_upstream("openai", INFINITY); /* ignored */
    metrics_ttft("anthropic", 0.005);
    metrics_ttft("anthropic", 300);
    metrics_ttft("anthropic", 300.001);
    t = render(NULL);

    read_buckets(t, "lunaroute_upstream_duration_seconds", "openai", b);
    const uint64_t want_up[16] = {1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4};
    assert_memory_equal(b, want_up, sizeof(b));
    assert_line(t, "lunaroute_upstream_duration_seconds_sum{provider=\"openai\"} 1024.2578125");
    assert_line(t, "lunaroute_upstream_duration_seconds_count{provider=\"openai\"} 4");
    assert_line(t,
                "lunaroute_upstream_duration_seconds_bucket{provider=\"openai\",le=\"0.005\"} 1");
    assert_line(t, "lunaroute_upstream_duration_seconds_bucket{provider=\"openai\",le=\"+Inf\"} 4");

    read_buckets(t, "lunaroute_time_to_first_token_seconds", "anthropic", b);
    const uint64_t want_tt[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3};
    assert_memory_equal(b, want_tt, sizeof(b));

    /* every provider seen has every histogram, zeros included */
    read_buckets(t, "lunaroute_time_to_first_token_seconds", "openai", b);
    assert_int_equal(b[15], 0);
    assert_line(t, "lunaroute_time_to_first_token_seconds_sum{provider=\"openai\"} 0");
    read_buckets(t, "lunaroute_request_duration_seconds", "anthropic", b);
    assert_int_equal(b[15], 0);
    free(t);
}

static void test_escaping(void **state)
{
    char *t;

    (void)state;
    metrics_request("my\"prov", "a\"b\\c\nd", 200, 0.1);
    t = render(NULL);
    assert_line(t, "lunaroute_requests_total{provider=\"my\\\"prov\",model=\"a\\\"b\\\\c\\nd\","
                   "status=\"200\"} 1");
    assert_line(t, "lunaroute_retries_total{provider=\"my\\\"prov\"} 0");
    free(t);
}

static void test_model_cap(void **state)
{
    char model[32], *t, long_model[300];

    (void)state;
    for (int i = 0; i < METRICS_MAX_MODELS + 10; i++) {
        snprintf(model, sizeof model, "m%d", i);
        metrics_request("openai", model, 200, 0.1);
    }
    metrics_request("openai", "m0", 200, 0.1); /* known: still its own series */
    metrics_request("openai", "other", 200, 0.1);
    metrics_request("openai", "\xff\xfe", 200, 0.1); /* not UTF-8 */
    memset(long_model, 'x', sizeof long_model - 1);
    long_model[sizeof long_model - 1] = 0;
    metrics_request("openai", long_model, 200, 0.1);
    metrics_request("openai", "caf\xc3\xa9", 200, 0.1); /* UTF-8 but a new model: other */
    t = render(NULL);
    assert_line(t, "lunaroute_requests_total{provider=\"openai\",model=\"m0\",status=\"200\"} 2");
    assert_line(t, "lunaroute_requests_total{provider=\"openai\",model=\"m255\",status=\"200\"} 1");
    assert_no_line(t,
                   "lunaroute_requests_total{provider=\"openai\",model=\"m256\",status=\"200\"} 1");
    assert_line(t,
                "lunaroute_requests_total{provider=\"openai\",model=\"other\",status=\"200\"} 14");
    assert_int_equal(count_prefix(t, "lunaroute_requests_total{"), METRICS_MAX_MODELS + 1);
    free(t);

    /* below the cap, a valid UTF-8 name is kept as is; an invalid one is still "other" */
    metrics_reset();
    metrics_request("openai", "caf\xc3\xa9", 200, 0.1);
    metrics_request("openai", "\xc0\xaf", 200, 0.1); /* overlong */
    t = render(NULL);
    assert_line(t, "lunaroute_requests_total{provider=\"openai\",model=\"caf\xc3\xa9\","
                   "status=\"200\"} 1");
    assert_line(t,
                "lunaroute_requests_total{provider=\"openai\",model=\"other\",status=\"200\"} 1");
    free(t);
}

static void test_provider_cap(void **state)
{
    char name[32], *t;

    (void)state;
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "p%d", i);
        metrics_retry(name);
    }
    t = render(NULL);
    assert_line(t, "lunaroute_retries_total{provider=\"p0\"} 1");
    assert_line(t, "lunaroute_retries_total{provider=\"p62\"} 1");
    assert_no_line(t, "lunaroute_retries_total{provider=\"p63\"} 1");
    assert_line(t, "lunaroute_retries_total{provider=\"other\"} 37");
    assert_int_equal(count_prefix(t, "lunaroute_retries_total{"), 64);
    free(t);
}

/* The requests_total table itself is bounded: past the limit, new combinations share one
 * overflow series. */
static void test_series_cap(void **state)
{
    char model[32], *t;

    (void)state;
    for (int m = 0; m < 256; m++) {
        snprintf(model, sizeof model, "m%d", m);
        for (int s = 0; s < 64; s++)
            metrics_request("openai", model, 100 + s, 0);
    }
    metrics_request("openai", "m0", 100, 0); /* existing series still count */
    metrics_request("openai", "m255", 163, 0);
    t = render(NULL);
    assert_int_equal(count_prefix(t, "lunaroute_requests_total{"), 16384);
    assert_line(t, "lunaroute_requests_total{provider=\"openai\",model=\"m0\",status=\"100\"} 2");
    assert_line(t,
                "lunaroute_requests_total{provider=\"other\",model=\"other\",status=\"other\"} 2");
    free(t);
}

static void test_other_families(void **state)
{
    char *t;

    (void)state;
    metrics_stream_chunks("openai", 10);
    metrics_stream_chunks("openai", 5);
    metrics_fallback(METRICS_FALLBACK_5XX);
    metrics_fallback(METRICS_FALLBACK_5XX);
    metrics_fallback(METRICS_FALLBACK_RATE_LIMITED);
    metrics_fallback("custom");
    metrics_retry("openai");
    metrics_retry("openai");
    metrics_upstream_active("openai", 1);
    metrics_upstream_active("openai", 1);
    metrics_upstream_active("openai", -1);
    metrics_upstream_active("anthropic", 1);
    metrics_upstream_active("anthropic", -1);
    t = render(NULL);
    assert_line(t, "lunaroute_stream_chunks_total{provider=\"openai\"} 15");
    assert_line(t, "lunaroute_stream_chunks_total{provider=\"anthropic\"} 0");
    assert_line(t, "lunaroute_fallbacks_total{reason=\"upstream_5xx\"} 2");
    assert_line(t, "lunaroute_fallbacks_total{reason=\"rate_limited\"} 1");
    assert_line(t, "lunaroute_fallbacks_total{reason=\"connect_error\"} 0");
    assert_line(t, "lunaroute_fallbacks_total{reason=\"timeout\"} 0");
    assert_line(t, "lunaroute_fallbacks_total{reason=\"circuit_open\"} 0");
    assert_line(t, "lunaroute_fallbacks_total{reason=\"custom\"} 1");
    assert_line(t, "lunaroute_retries_total{provider=\"openai\"} 2");
    assert_line(t, "lunaroute_upstream_active{provider=\"openai\"} 1");
    assert_line(t, "lunaroute_upstream_active{provider=\"anthropic\"} 0");
    free(t);
}

static void test_translation_series(void **state)
{
    char *t, name[32];

    (void)state;
    metrics_translation(1);
    metrics_translation(1);
    metrics_translation(0);
    metrics_translation_dropped(1, "frequency_penalty");
    metrics_translation_dropped(1, "frequency_penalty");
    metrics_translation_dropped(0, "top_k");
    t = render(NULL);
    assert_line(t, "lunaroute_translations_total{direction=\"openai_to_anthropic\"} 2");
    assert_line(t, "lunaroute_translations_total{direction=\"anthropic_to_openai\"} 1");
    assert_line(t, "lunaroute_translation_dropped_fields_total{direction=\"openai_to_anthropic\","
                   "field=\"frequency_penalty\"} 2");
    assert_line(t, "lunaroute_translation_dropped_fields_total{direction=\"anthropic_to_openai\","
                   "field=\"top_k\"} 1");
    /* a zero pair is not rendered */
    assert_null(strstr(t, "direction=\"anthropic_to_openai\",field=\"frequency_penalty\""));
    free(t);
    /* field names are bounded: past the cap they count as "other" */
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "f%d", i);
        metrics_translation_dropped(1, name);
    }
    t = render(NULL);
    assert_non_null(strstr(t, "field=\"other\"} "));
    assert_null(strstr(t, "field=\"f199\""));
    free(t);
}

static const struct {
    const char *name, *type;
} families[] = {
    {"lunaroute_requests_total", "counter"},
    {"lunaroute_request_duration_seconds", "histogram"},
    {"lunaroute_upstream_duration_seconds", "histogram"},
    {"lunaroute_time_to_first_token_seconds", "histogram"},
    {"lunaroute_stream_chunks_total", "counter"},
    {"lunaroute_fallbacks_total", "counter"},
    {"lunaroute_translations_total", "counter"},
    {"lunaroute_translation_dropped_fields_total", "counter"},
    {"lunaroute_retries_total", "counter"},
    {"lunaroute_circuit_state", "gauge"},
    {"lunaroute_circuit_transitions_total", "counter"},
    {"lunaroute_classifications_total", "counter"},
    {"lunaroute_spop_errors_total", "counter"},
    {"lunaroute_spop_frames_total", "counter"},
    {"lunaroute_spop_notify_total", "counter"},
    {"lunaroute_spop_ack_total", "counter"},
    {"lunaroute_active_connections", "gauge"},
    {"lunaroute_upstream_active", "gauge"},
    {"lunaroute_engine_requests_total", "counter"},
};

static void check_families(const char *t)
{
    char want[128];

    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        snprintf(want, sizeof want, "# HELP %s ", families[i].name);
        assert_int_equal(count_prefix(t, want), 1);
        snprintf(want, sizeof want, "# TYPE %s %s", families[i].name, families[i].type);
        assert_line(t, want);
    }
    /* and nothing else is declared */
    assert_int_equal(count_prefix(t, "# TYPE "), sizeof families / sizeof families[0]);
    assert_int_equal(count_prefix(t, "# HELP "), sizeof families / sizeof families[0]);
}

static void test_help_type_every_family(void **state)
{
    char *t;

    (void)state;
    t = render(NULL); /* empty registry */
    check_families(t);
    assert_int_equal(t[strlen(t) - 1], '\n');
    free(t);
    metrics_request("openai", "gpt-4o", 200, 0.1);
    t = render(NULL);
    check_families(t);
    free(t);
}

/* Every sample line belongs to the family declared last by # TYPE (families are not
 * interleaved), as the text format requires. */
static void test_families_contiguous(void **state)
{
    const char *fam = NULL;
    size_t fam_len = 0;
    char *t;

    (void)state;
    metrics_request("openai", "gpt-4o", 200, 0.1);
    metrics_ttft("openai", 0.1);
    metrics_fallback(METRICS_FALLBACK_TIMEOUT);
    stats_inc(STATS_SPOP_FRAMES_IN);
    t = render(NULL);
    for (const char *p = t; *p; p = strchr(p, '\n') + 1) {
        if (strncmp(p, "# TYPE ", 7) == 0) {
            fam = p + 7;
            fam_len = strcspn(fam, " ");
        } else if (*p != '#') {
            assert_non_null(fam);
            assert_memory_equal(p, fam, fam_len);
            assert_true(strchr("{ _", p[fam_len]) != NULL);
        }
    }
    free(t);
}

static void test_spoa_series(void **state)
{
    char *t;

    (void)state;
    stats_reset();
    stats_add(STATS_SPOP_FRAMES_IN, 5);
    stats_add(STATS_SPOP_NOTIFY_IN, 3);
    stats_add(STATS_SPOP_ACK_OUT, 2);
    stats_inc(STATS_SPOP_CONN_OPEN);
    stats_inc(STATS_SPOP_CONN_OPEN);
    stats_dec(STATS_SPOP_CONN_OPEN);
    stats_add(STATS_ENGINE_CONN_OPEN, 4);
    stats_add(STATS_ENGINE_REQUESTS, 7);
    stats_spop_error(SPOP_ST_TIMEOUT);
    stats_spop_error(SPOP_ST_TIMEOUT);
    stats_spop_error(SPOP_ST_UNKNOWN);
    for (int i = 0; i < 3; i++)
        stats_classification(CLASSIFY_ENGINE, stats_provider_index(""));
    stats_classification(CLASSIFY_BYPASS, stats_provider_index("openai"));
    t = render(NULL);
    assert_line(t, "lunaroute_spop_frames_total 5");
    assert_line(t, "lunaroute_spop_notify_total 3");
    assert_line(t, "lunaroute_spop_ack_total 2");
    assert_line(t, "lunaroute_active_connections{listener=\"spop\"} 1");
    assert_line(t, "lunaroute_active_connections{listener=\"engine\"} 4");
    assert_line(t, "lunaroute_engine_requests_total 7");
    assert_line(t, "lunaroute_spop_errors_total{status=\"a timeout occurred\"} 2");
    assert_line(t, "lunaroute_spop_errors_total{status=\"an unknown error occurred\"} 1");
    assert_line(t, "lunaroute_spop_errors_total{status=\"I/O error\"} 0");
    assert_int_equal(count_prefix(t, "lunaroute_spop_errors_total{"), STATS_SPOP_STATUS_COUNT - 1);
    assert_no_line(t, "lunaroute_spop_errors_total{status=\"normal\"} 0");
    assert_line(t, "lunaroute_classifications_total{route=\"engine\",provider=\"none\"} 3");
    assert_line(t, "lunaroute_classifications_total{route=\"bypass\",provider=\"openai\"} 1");
    assert_int_equal(count_prefix(t, "lunaroute_classifications_total{"), 2);
    free(t);

    stats_reset();
    t = render(NULL);
    assert_line(t, "lunaroute_spop_frames_total 0");
    assert_line(t, "lunaroute_active_connections{listener=\"spop\"} 0");
    assert_int_equal(count_prefix(t, "lunaroute_classifications_total{"), 0);
    free(t);
}

static void test_reset(void **state)
{
    char *t;

    (void)state;
    metrics_request("openai", "gpt-4o", 200, 0.1);
    metrics_fallback(METRICS_FALLBACK_5XX);
    metrics_fallback("custom");
    metrics_reset();
    t = render(NULL);
    assert_int_equal(count_prefix(t, "lunaroute_requests_total{"), 0);
    assert_int_equal(count_prefix(t, "lunaroute_retries_total{"), 0);
    assert_line(t, "lunaroute_fallbacks_total{reason=\"upstream_5xx\"} 0");
    assert_int_equal(count_prefix(t, "lunaroute_fallbacks_total{"), 5);
    free(t);
    /* usable again after reset */
    metrics_request("openai", "gpt-4o", 200, 0.1);
    t = render(NULL);
    assert_line(t,
                "lunaroute_requests_total{provider=\"openai\",model=\"gpt-4o\",status=\"200\"} 1");
    free(t);
}

static void test_circuit_series(void **state)
{
    static const char json[] =
        "{\"providers\":[{\"name\":\"openai\",\"type\":\"openai\"},"
        "{\"name\":\"anthropic\",\"type\":\"anthropic\"}],"
        "\"routing\":{\"circuit_breaker\":{\"failure_threshold\":1,\"success_threshold\":1,"
        "\"open_secs\":10}}}";
    char err[256], *t;
    struct agent_settings *s = agent_settings_parse(json, strlen(json), err, sizeof err);
    struct router *r;
    const struct agent_provider *oa;

    (void)state;
    if (!s)
        fail_msg("settings: %s", err);
    r = router_new(s, err, sizeof err);
    if (!r)
        fail_msg("router: %s", err);
    oa = router_provider(r, 0);
    assert_string_equal(oa->name, "openai");

    t = render(r);
    assert_line(t, "lunaroute_circuit_state{provider=\"openai\"} 0");
    assert_line(t, "lunaroute_circuit_state{provider=\"anthropic\"} 0");
    /* configured providers have their series before any request */
    assert_line(t, "lunaroute_retries_total{provider=\"anthropic\"} 0");
    assert_line(t, "lunaroute_upstream_duration_seconds_count{provider=\"openai\"} 0");
    assert_int_equal(count_prefix(t, "lunaroute_circuit_transitions_total{"), 12);
    assert_line(t, "lunaroute_circuit_transitions_total{provider=\"openai\",from=\"closed\","
                   "to=\"open\"} 0");
    free(t);

    assert_true(router_admit(r, oa, 100));
    router_report(r, oa, ROUTER_FAILED, -1, 100); /* closed -> open */
    t = render(r);
    assert_line(t, "lunaroute_circuit_state{provider=\"openai\"} 1");
    assert_line(t, "lunaroute_circuit_state{provider=\"anthropic\"} 0");
    assert_line(t, "lunaroute_circuit_transitions_total{provider=\"openai\",from=\"closed\","
                   "to=\"open\"} 1");
    free(t);

    assert_true(router_admit(r, oa, 111)); /* open -> half_open, probe */
    t = render(r);
    assert_line(t, "lunaroute_circuit_state{provider=\"openai\"} 2");
    assert_line(t, "lunaroute_circuit_transitions_total{provider=\"openai\",from=\"open\","
                   "to=\"half_open\"} 1");
    free(t);
    router_report(r, oa, ROUTER_OK, -1, 112); /* half_open -> closed */
    t = render(r);
    assert_line(t, "lunaroute_circuit_state{provider=\"openai\"} 0");
    assert_line(t, "lunaroute_circuit_transitions_total{provider=\"openai\",from=\"half_open\","
                   "to=\"closed\"} 1");
    assert_line(t, "lunaroute_circuit_transitions_total{provider=\"openai\",from=\"open\","
                   "to=\"closed\"} 0");
    check_families(t);
    free(t);

    router_free(r);
    agent_settings_unref(s);
}

enum { THREADS = 4, PER_THREAD = 5000 };

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        metrics_request("openai", "gpt-4o", 200, 0.01);
        metrics_upstream_active("openai", 1);
        metrics_upstream_active("openai", -1);
    }
    return NULL;
}

static void test_threads(void **state)
{
    pthread_t th[THREADS];
    char *t;

    (void)state;
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    t = render(NULL);
    assert_line(t, "lunaroute_requests_total{provider=\"openai\",model=\"gpt-4o\",status=\"200\"} "
                   "20000");
    assert_line(t, "lunaroute_upstream_active{provider=\"openai\"} 0");
    free(t);
}

/* render appends: what was in the buffer stays */
static void test_render_appends(void **state)
{
    struct lr_buf b = {0};

    (void)state;
    assert_int_equal(lr_buf_puts(&b, "prefix\n"), 0);
    assert_int_equal(metrics_render(&b, NULL), 0);
    assert_memory_equal(b.data, "prefix\n# HELP ", 14);
    lr_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_requests_total, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histograms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_families, setup, teardown),
        cmocka_unit_test_setup_teardown(test_translation_series, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_type_every_family, setup, teardown),
        cmocka_unit_test_setup_teardown(test_families_contiguous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spoa_series, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_circuit_series, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_render_appends, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
