/* Data-driven renderer tests: every tests/data/render/<case>/ holds an input.yaml, an optional
 * env.txt (NAME=value lines: the whole environment the loader sees) and an optional mode.txt
 * ("standalone", the default, or "boltin"), plus the expected files of that mode. The input
 * goes through the real loader (config_load) and the renderers with fixed paths under
 * /run/lr; each output is compared byte for byte with its expected file.
 *
 * LR_UPDATE_GOLDEN=1 rewrites the expected files instead of comparing (review the diff
 * before committing it: the goldens must be right, not just current). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "render.h"

#define MAX_ENV 32

struct env_table {
    char *kv[2 * MAX_ENV + 1]; /* name, value, ..., NULL */
};

static const char *table_getenv(const char *name, void *ud)
{
    const struct env_table *e = ud;
    for (size_t i = 0; e->kv[i]; i += 2)
        if (strcmp(e->kv[i], name) == 0)
            return e->kv[i + 1];
    return NULL;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct lr_buf_like {
        char *p;
        size_t n, cap;
    } b = {NULL, 0, 0};
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (b.n + got + 1 > b.cap) {
            b.cap = (b.n + got + 1) * 2;
            char *np = realloc(b.p, b.cap);
            assert_non_null(np);
            b.p = np;
        }
        memcpy(b.p + b.n, chunk, got);
        b.n += got;
    }
    fclose(f);
    if (!b.p) {
        b.p = calloc(1, 1);
        assert_non_null(b.p);
    }
    b.p[b.n] = 0;
    return b.p;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

/* env.txt: NAME=value per line; blank lines and lines starting with '#' are skipped. */
static void load_env(const char *path, struct env_table *e)
{
    memset(e, 0, sizeof(*e));
    char *text = read_file(path);
    if (!text)
        return;
    size_t n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (!line[0] || line[0] == '#')
            continue;
        char *eq = strchr(line, '=');
        assert_non_null(eq);
        assert_true(n < MAX_ENV);
        e->kv[2 * n] = strndup(line, (size_t)(eq - line));
        e->kv[2 * n + 1] = strdup(eq + 1);
        assert_non_null(e->kv[2 * n]);
        assert_non_null(e->kv[2 * n + 1]);
        n++;
    }
    free(text);
}

static void free_env(struct env_table *e)
{
    for (size_t i = 0; e->kv[i]; i++)
        free(e->kv[i]);
}

/* The first line where a and b differ, for the failure message. */
static void first_diff(const char *a, const char *b, char *out, size_t len)
{
    int line = 1;
    const char *la = a, *lb = b;
    while (*a && *a == *b) {
        if (*a == '\n') {
            line++;
            la = a + 1;
            lb = b + 1;
        }
        a++;
        b++;
    }
    int ea = (int)strcspn(la, "\n"), eb = (int)strcspn(lb, "\n");
    snprintf(out, len, "line %d:\n  expected: %.*s\n  rendered: %.*s", line, eb, lb, ea, la);
}

static const struct render_paths golden_paths = {
    .run_dir = "/run/lr",
    .spoe_conf = "/run/lr/spoe-lunaroute.conf",
    .routes_map = "/run/lr/routes.map",
    .master_sock = "/run/lr/haproxy-master.sock",
    .admin_socket = "/run/lr/agent.sock",
};

struct golden_out {
    const char *name;
    char *text;
};

static int run_case(const char *dir, bool update)
{
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(dir), 0); /* "input.yaml" is what the rendered comments show */

    struct env_table env;
    load_env("env.txt", &env);
    enum render_mode mode = RENDER_STANDALONE;
    char *m = read_file("mode.txt");
    if (m) {
        m[strcspn(m, "\n")] = 0;
        assert_int_equal(render_mode_from_str(m, &mode), 0);
        free(m);
    }

    struct lr_config *c = NULL;
    struct cfg_errors errs = {0};
    if (config_load("input.yaml", table_getenv, &env, &c, &errs) != 0) {
        for (size_t i = 0; i < errs.n; i++) {
            char line[1024];
            cfg_error_format(&errs.v[i], line, sizeof(line));
            print_error("%s: %s\n", dir, line);
        }
        cfg_errors_free(&errs);
        fail_msg("%s: input.yaml does not load", dir);
    }

    /* As render_write_all sets them: the unix sockets only with agent.local_sockets. */
    struct render_paths paths = golden_paths;
    if (render_local_sockets(c, mode)) {
        paths.spoa_socket = "/run/lr/spoa.sock";
        paths.engine_socket = "/run/lr/engine.sock";
    }
    struct golden_out out[5];
    size_t n = 0;
    if (mode == RENDER_STANDALONE) {
        out[n++] = (struct golden_out){"haproxy.cfg", render_haproxy_cfg(c, &paths)};
    } else {
        out[n++] = (struct golden_out){"lunaroute-backends.cfg", render_backends_cfg(c, &paths)};
        out[n++] = (struct golden_out){"frontend-snippet.cfg", render_frontend_snippet(c, &paths)};
    }
    out[n++] = (struct golden_out){"spoe-lunaroute.conf", render_spoe_conf(c, &paths, mode)};
    out[n++] = (struct golden_out){"routes.map", render_routes_map(c)};
    out[n++] = (struct golden_out){"agent.json", render_agent_json(c, &paths)};

    int mismatches = 0;
    for (size_t i = 0; i < n; i++) {
        assert_non_null(out[i].text);
        /* No value of the case's environment that names a key may appear anywhere. */
        for (size_t k = 0; env.kv[k]; k += 2)
            if (strstr(env.kv[k], "KEY") && strlen(env.kv[k + 1]) >= 8 &&
                strstr(out[i].text, env.kv[k + 1]))
                fail_msg("%s/%s contains the value of %s", dir, out[i].name, env.kv[k]);
        if (update) {
            write_file(out[i].name, out[i].text);
            continue;
        }
        char *want = read_file(out[i].name);
        if (!want) {
            print_error("%s/%s: missing expected file (run with LR_UPDATE_GOLDEN=1)\n", dir,
                        out[i].name);
            mismatches++;
        } else if (strcmp(want, out[i].text) != 0) {
            char diff[2048];
            first_diff(out[i].text, want, diff, sizeof(diff));
            print_error("%s/%s differs from the rendered output at %s\n", dir, out[i].name, diff);
            mismatches++;
        }
        free(want);
    }
    for (size_t i = 0; i < n; i++)
        free(out[i].text);
    config_free(c);
    free_env(&env);
    assert_int_equal(chdir(cwd), 0);
    return mismatches;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_golden(void **state)
{
    (void)state;
    const char *u = getenv("LR_UPDATE_GOLDEN");
    bool update = u && *u && strcmp(u, "0") != 0;
    char root[PATH_MAX];
    snprintf(root, sizeof(root), "%s/render", LR_TEST_DATA_DIR);
    DIR *d = opendir(root);
    assert_non_null(d);
    char *names[128] = {0};
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        assert_true(n < 128);
        names[n] = strdup(de->d_name);
        assert_non_null(names[n]);
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str);
    assert_true(n >= 7);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        char dir[PATH_MAX + 300];
        snprintf(dir, sizeof(dir), "%s/%s", root, names[i]);
        int r = run_case(dir, update);
        print_message("%-28s %s\n", names[i], update ? "updated" : r ? "DIFFERS" : "ok");
        bad += r;
        free(names[i]);
    }
    if (bad)
        fail_msg("%d rendered file(s) differ from tests/data/render (LR_UPDATE_GOLDEN=1 "
                 "rewrites them; review the diff)",
                 bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
