/* The pure parts of control's operations:
 *  - validate's HAProxy checks (control/validate.c): the bolt-on harness wraps the snippet as
 *    is in a minimal fleet configuration; with a real haproxy, the harness of a rendered
 *    boltin configuration is accepted, and broken bolt-on output (a snippet naming a backend
 *    nobody defines, a snippet with a bad keyword, the backends file left out) is rejected
 *    with HAProxy's message (these cases skip when haproxy is not installed);
 *  - status's `show servers state` parser; supervise's `show proc` parser (master reloads). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dirent.h>
#include <limits.h>

#include <cmocka.h>

#include "buf.h"
#include "config.h"
#include "render.h"
#include "status.h"
#include "supervise.h"
#include "validate.h"

static void test_harness_text(void **state)
{
    (void)state;
    static const char snip[] = "    filter spoe engine lunaroute config /x/spoe.conf\n"
                               "    use_backend lr_engine if { path /v1/x }";
    char *h = validate_boltin_harness(snip);
    assert_non_null(h);
    /* sections in order, the snippet verbatim inside the frontend, before its own rules */
    const char *g = strstr(h, "\nglobal\n");
    const char *d = strstr(h, "\ndefaults\n");
    const char *f = strstr(h, "\nfrontend lr_validate_fleet\n");
    const char *s = strstr(h, snip);
    const char *own = strstr(h, "    default_backend lr_validate_app\n");
    const char *be = strstr(h, "\nbackend lr_validate_app\n");
    assert_non_null(g);
    assert_non_null(d);
    assert_non_null(f);
    assert_non_null(s);
    assert_non_null(own);
    assert_non_null(be);
    assert_true(g < d && d < f && f < s && s < own && own < be);
    assert_non_null(strstr(h, "    mode http\n"));
    /* a snippet without a final newline still ends its line */
    assert_non_null(strstr(h, "{ path /v1/x }\n"));
    free(h);
    h = validate_boltin_harness("");
    assert_non_null(h);
    assert_non_null(strstr(h, "frontend lr_validate_fleet\n"));
    free(h);
}

struct fx {
    char dir[64];
    char haproxy[PATH_MAX];
    char harness[PATH_MAX];
    char backends[PATH_MAX + 32];
};

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char p[PATH_MAX];
            snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/lr-validate-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    if (supervise_find_program("LUNAROUTE_HAPROXY_BIN", "haproxy", f->haproxy, sizeof(f->haproxy)) <
            0 &&
        supervise_find_program(NULL, "/usr/sbin/haproxy", f->haproxy, sizeof(f->haproxy)) < 0)
        f->haproxy[0] = 0;
    /* The built-in defaults, rendered for a fleet. */
    struct lr_config *c = NULL;
    struct cfg_errors errs = {0};
    assert_int_equal(
        config_load_string("{}\n", 3, "test.yaml", cfg_getenv_process, NULL, &c, &errs), 0);
    cfg_errors_free(&errs);
    char err[512] = "";
    if (render_write_all(c, RENDER_BOLTIN, f->dir, err, sizeof(err)) < 0)
        fail_msg("render boltin: %s", err);
    config_free(c);
    if (validate_write_boltin_harness(f->dir, f->harness, sizeof(f->harness), err, sizeof(err)) < 0)
        fail_msg("harness: %s", err);
    snprintf(f->backends, sizeof(f->backends), "%s/lunaroute-backends.cfg", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    rm_dir(f->dir);
    free(f);
    return 0;
}

/* Runs the check; returns haproxy's exit status and its output in *out (malloc'd). */
static int check(struct fx *f, const char *const *cfgs, size_t n, char **out)
{
    struct lr_buf b = {0};
    int st = validate_haproxy_check(f->haproxy, cfgs, n, NULL, &b);
    *out = lr_buf_steal_str(&b);
    if (!*out)
        *out = strdup("");
    lr_buf_free(&b);
    return st;
}

static void append_to_snippet(struct fx *f, const char *line)
{
    char p[PATH_MAX + 32], err[512] = "";
    snprintf(p, sizeof(p), "%s/frontend-snippet.cfg", f->dir);
    FILE *fp = fopen(p, "a");
    assert_non_null(fp);
    fputs(line, fp);
    fclose(fp);
    if (validate_write_boltin_harness(f->dir, f->harness, sizeof(f->harness), err, sizeof(err)) < 0)
        fail_msg("harness: %s", err);
}

static void test_rendered_boltin_accepted(void **state)
{
    struct fx *f = *state;
    if (!f->haproxy[0])
        skip();
    const char *cfgs[] = {f->harness, f->backends};
    char *out;
    int st = check(f, cfgs, 2, &out);
    if (st != 0)
        fail_msg("haproxy -c rejected the rendered boltin files (%d):\n%s", st, out);
    free(out);
    /* The harness alone is not enough: the snippet needs lunaroute-backends.cfg. */
    st = check(f, cfgs, 1, &out);
    assert_int_not_equal(st, 0);
    assert_non_null(strstr(out, "lr_"));
    free(out);
}

static void test_broken_snippet_rejected(void **state)
{
    struct fx *f = *state;
    if (!f->haproxy[0])
        skip();
    const char *cfgs[] = {f->harness, f->backends};
    char *out;
    append_to_snippet(f, "    use_backend lr_provider_nosuch if { path /nosuch }\n");
    int st = check(f, cfgs, 2, &out);
    assert_int_not_equal(st, 0);
    if (!strstr(out, "lr_provider_nosuch"))
        fail_msg("haproxy's message does not name the missing backend:\n%s", out);
    free(out);
}

static void test_broken_keyword_rejected(void **state)
{
    struct fx *f = *state;
    if (!f->haproxy[0])
        skip();
    const char *cfgs[] = {f->harness, f->backends};
    char *out;
    append_to_snippet(f, "    http-request frobnicate\n");
    int st = check(f, cfgs, 2, &out);
    assert_int_not_equal(st, 0);
    if (!strstr(out, VALIDATE_HARNESS_FILE))
        fail_msg("haproxy's message does not point into the harness:\n%s", out);
    free(out);
}

static void test_missing_snippet_and_bad_binary(void **state)
{
    struct fx *f = *state;
    char p[PATH_MAX + 32], err[512] = "", path[PATH_MAX];
    snprintf(p, sizeof(p), "%s/frontend-snippet.cfg", f->dir);
    unlink(p);
    assert_int_equal(validate_write_boltin_harness(f->dir, path, sizeof(path), err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "frontend-snippet.cfg"));
    const char *cfgs[] = {f->backends};
    struct lr_buf b = {0};
    assert_int_equal(validate_haproxy_check("/nonexistent/haproxy", cfgs, 1, NULL, &b), 127);
    lr_buf_free(&b);
    assert_int_equal(validate_haproxy_check("/bin/true", cfgs, 0, NULL, NULL), -1);
}

/* As HAProxy 2.6 prints it (one line per server; the header names the columns). */
static const char servers_state[] =
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port "
    "srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 lr_spoa 1 agent 127.0.0.1 2 0 1 1 627 15 3 1 6 0 0 0 - 12345 - 0 0 - - 0\n"
    "4 lr_provider_openai 1 openai 10.0.0.1 0 37 1 1 12 8 2 0 14 0 0 0 api.openai.com 443 - 1 "
    "0 - - 0\n"
    "4 lr_provider_openai 2 spare 10.0.0.2 3 8 0 2 5 1 0 0 6 0 0 0 - 443 - 1 0 - - 0\n";

static void test_servers_state(void **state)
{
    (void)state;
    json_t *doc = status_parse_servers_state(servers_state);
    assert_non_null(doc);
    assert_int_equal(json_object_size(doc), 2);
    const json_t *a = json_object_get(json_object_get(doc, "lr_spoa"), "agent");
    assert_string_equal(json_string_value(json_object_get(a, "op_state")), "UP");
    assert_int_equal(json_array_size(json_object_get(a, "admin_state")), 0);
    assert_string_equal(json_string_value(json_object_get(a, "addr")), "127.0.0.1");
    assert_int_equal(json_integer_value(json_object_get(a, "port")), 12345);
    assert_true(json_is_null(json_object_get(a, "fqdn")));
    assert_int_equal(json_integer_value(json_object_get(a, "secs_since_change")), 627);
    assert_string_equal(json_string_value(json_object_get(a, "check_result")), "PASSED");
    assert_int_equal(json_integer_value(json_object_get(a, "check_health")), 1);
    const json_t *cs = json_object_get(a, "check_state"); /* 6 = CONFIGURED|ENABLED */
    assert_int_equal(json_array_size(cs), 2);
    assert_string_equal(json_string_value(json_array_get(cs, 0)), "CONFIGURED");
    assert_string_equal(json_string_value(json_array_get(cs, 1)), "ENABLED");
    assert_true(json_is_false(json_object_get(a, "use_ssl")));

    const json_t *be = json_object_get(doc, "lr_provider_openai");
    assert_int_equal(json_object_size(be), 2);
    const json_t *o = json_object_get(be, "openai");
    assert_string_equal(json_string_value(json_object_get(o, "op_state")), "DOWN");
    const json_t *as = json_object_get(o, "admin_state"); /* 37 = 0x01|0x04|0x20 */
    assert_int_equal(json_array_size(as), 3);
    assert_string_equal(json_string_value(json_array_get(as, 0)), "FMAINT");
    assert_string_equal(json_string_value(json_array_get(as, 1)), "CMAINT");
    assert_string_equal(json_string_value(json_array_get(as, 2)), "RMAINT");
    assert_string_equal(json_string_value(json_object_get(o, "fqdn")), "api.openai.com");
    assert_string_equal(json_string_value(json_object_get(o, "check_result")), "FAILED");
    assert_true(json_is_true(json_object_get(o, "use_ssl")));
    const json_t *sp = json_object_get(be, "spare");
    assert_string_equal(json_string_value(json_object_get(sp, "op_state")), "STOPPING");
    assert_string_equal(json_string_value(json_array_get(json_object_get(sp, "admin_state"), 0)),
                        "FDRAIN");
    assert_int_equal(json_integer_value(json_object_get(sp, "weight")), 0);
    assert_int_equal(json_integer_value(json_object_get(sp, "initial_weight")), 2);
    assert_string_equal(json_string_value(json_object_get(sp, "check_result")), "UNKNOWN");
    json_decref(doc);

    /* Unknown format version, empty, garbage: an empty object, never a crash. */
    static const char *const odd[] = {"2\n# be_id be_name\n1 x\n", "", "\n\n", "1\nno header\n",
                                      "1\n# be_name srv_name srv_op_state\nb s 99\n"};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        doc = status_parse_servers_state(odd[i]);
        assert_non_null(doc);
        if (i == 4) /* an unknown state number is kept as is */
            assert_string_equal(json_string_value(json_object_get(
                                    json_object_get(json_object_get(doc, "b"), "s"), "op_state")),
                                "99");
        else
            assert_int_equal(json_object_size(doc), 0);
        json_decref(doc);
    }
}

static void test_show_proc(void **state)
{
    (void)state;
    struct supervise_proc_info pi;
    static const char v26[] =
        "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
        "19871           master          2 [failed: 1]   0d00h10m29s     2.6.12-1+deb12u4\n"
        "# workers\n"
        "23323           worker          1               0d00h00m02s     2.6.12-1+deb12u4\n"
        "# old workers\n"
        "19874           worker          2               0d00h10m29s     2.6.12-1+deb12u4\n"
        "# programs\n\n";
    assert_int_equal(supervise_parse_show_proc(v26, &pi), 0);
    assert_int_equal(pi.master_pid, 19871);
    assert_int_equal(pi.reloads, 2);
    assert_int_equal(pi.failed_reloads, 1);
    assert_int_equal(pi.worker_pid, 23323);
    /* Without the failed count (older/newer formats): -1, not 0. */
    assert_int_equal(supervise_parse_show_proc("#<PID> <type>\n7 master 0 0d00h00m01s 2.4\n"
                                               "# workers\n8 worker 0 0d 2.4\n",
                                               &pi),
                     0);
    assert_int_equal(pi.failed_reloads, -1);
    assert_int_equal(pi.worker_pid, 8);
    assert_int_equal(supervise_parse_show_proc("Unknown command\n", &pi), -1);
    assert_int_equal(supervise_parse_show_proc("", &pi), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_harness_text),
        cmocka_unit_test(test_servers_state),
        cmocka_unit_test(test_show_proc),
        cmocka_unit_test_setup_teardown(test_rendered_boltin_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_snippet_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_keyword_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_snippet_and_bad_binary, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
