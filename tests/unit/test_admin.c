/* The admin API in-process: an admin server on a temp unix socket and its own ev loop, with
 * a fake publish callback standing in for the server's per-thread swap. Status fields, the
 * bypass-provider switch (valid, unknown, disabled, bad JSON), persistence and its re-apply,
 * clearing, 404/405, bad HTTP, socket mode and cleanup; settings copies; SHA-256 vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include <cmocka.h>
#include <ev.h>
#include <jansson.h>

#include "admin.h"
#include "buf.h"
#include "classify.h"
#include "lr_defaults.h"
#include "metrics.h"
#include "settings.h"
#include "sha256.h"

static const char settings_fmt[] =
    "{\"version\":1,\"spoa_bind\":\"127.0.0.1:0\",\"engine_bind\":\"127.0.0.1:0\","
    "\"admin_socket\":\"%s/agent.sock\",\"log_level\":\"warn\","
    "\"bypass\":{\"enabled\":true,\"provider\":\"%s\"},"
    "\"providers\":["
    "{\"name\":\"openai\",\"type\":\"openai\",\"enabled\":true,"
    "\"base_url\":\"https://api.openai.com\",\"api_key_env\":\"OPENAI_API_KEY\"},"
    "{\"name\":\"anthropic\",\"type\":\"anthropic\",\"enabled\":true,"
    "\"base_url\":\"https://api.anthropic.com\"},"
    "{\"name\":\"groq\",\"type\":\"openai\",\"enabled\":false,"
    "\"base_url\":\"https://api.groq.com/openai\"}]}";

struct fx {
    char dir[64];
    char sock[100];
    char json[2048];
    struct ev_loop *loop;
    struct admin *admin;
    struct agent_settings *cur; /* "the server's" settings in force */
    int publishes;
    int fail_publish;
    char settings_path[128]; /* the "agent.json" POST /v1/reload re-reads */
};

static struct agent_settings *fake_current(void *ud)
{
    struct fx *f = ud;
    return agent_settings_ref(f->cur);
}

static int fake_publish(void *ud, struct agent_settings *s, char *err, size_t errlen)
{
    struct fx *f = ud;
    if (f->fail_publish) {
        snprintf(err, errlen, "publish refused (test)");
        return -1;
    }
    agent_settings_unref(f->cur);
    f->cur = agent_settings_ref(s);
    f->publishes++;
    return 0;
}

/* The server's reload callback, minus its counters: the real file reload. */
static int fake_reload(void *ud, struct admin_reload_result *res, char *err, size_t errlen)
{
    struct fx *f = ud;
    return admin_reload_file(f->settings_path, f->cur, fake_publish, f, res, err, errlen);
}

static struct agent_settings *parse_settings(struct fx *f, const char *provider)
{
    char err[512] = "";
    snprintf(f->json, sizeof(f->json), settings_fmt, f->dir, provider);
    struct agent_settings *s = agent_settings_parse(f->json, strlen(f->json), err, sizeof(err));
    if (!s)
        fail_msg("settings: %s", err);
    return s;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/lr-admin-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->sock, sizeof(f->sock), "%s/agent.sock", f->dir);
    f->cur = parse_settings(f, "auto");
    f->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(f->loop);
    struct admin_config c = {
        .socket_path = f->cur->admin_socket,
        .threads = 2,
        .current = fake_current,
        .publish = fake_publish,
        .reload = fake_reload,
        .ud = f,
    };
    snprintf(f->settings_path, sizeof(f->settings_path), "%s/agent.json", f->dir);
    char err[256] = "";
    f->admin = admin_new(f->loop, &c, err, sizeof(err));
    if (!f->admin)
        fail_msg("admin_new: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char p[160];
    admin_free(f->admin);
    ev_loop_destroy(f->loop);
    agent_settings_unref(f->cur);
    snprintf(p, sizeof(p), "%s/%s", f->dir, ADMIN_PERSIST_FILE);
    unlink(p);
    unlink(f->sock);
    unlink(f->settings_path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Sends raw bytes, runs the loop until the server closes; returns the raw response. */
static char *exchange_raw(struct fx *f, const char *req, size_t len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", f->sock);
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    assert_int_equal(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
    assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    struct lr_buf out = {0};
    time_t deadline = time(NULL) + 5;
    for (;;) {
        ev_run(f->loop, EVRUN_NOWAIT);
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0) {
            assert_int_equal(lr_buf_append(&out, buf, (size_t)n), 0);
            continue;
        }
        if (n == 0)
            break;
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNRESET);
        if (errno == ECONNRESET)
            break;
        assert_true(time(NULL) < deadline);
        usleep(1000);
    }
    close(fd);
    ev_run(f->loop, EVRUN_NOWAIT); /* reap */
    char *s = lr_buf_steal_str(&out);
    return s ? s : strdup("");
}

/* One request; returns the status and the parsed JSON body (asserts it is JSON). */
static json_t *request(struct fx *f, const char *method, const char *path, const char *body,
                       int *status)
{
    char req[4096];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, body ? strlen(body) : 0, body ? body : "");
    char *raw = exchange_raw(f, req, (size_t)n);
    int st = 0;
    assert_int_equal(sscanf(raw, "HTTP/1.1 %d", &st), 1);
    *status = st;
    assert_non_null(strstr(raw, "Content-Type: application/json\r\n"));
    assert_non_null(strstr(raw, "Connection: close\r\n"));
    const char *b = strstr(raw, "\r\n\r\n");
    assert_non_null(b);
    json_error_t jerr;
    json_t *doc = json_loads(b + 4, 0, &jerr);
    if (!doc)
        fail_msg("response body is not JSON (%s): %s", jerr.text, raw);
    free(raw);
    return doc;
}

static const char *jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static const char *backend_for(const struct agent_settings *s, const char *path, bool anthropic)
{
    struct classify_input in = {.path = path, .path_len = strlen(path)};
    struct classify_result res;
    in.anthropic_version_count = anthropic ? 1 : 0;
    classify(s, &in, &res);
    return res.backend;
}

static bool persist_exists(struct fx *f, char *content, size_t n, mode_t *mode)
{
    char p[160];
    snprintf(p, sizeof(p), "%s/%s", f->dir, ADMIN_PERSIST_FILE);
    struct stat st;
    if (stat(p, &st) < 0)
        return false;
    if (mode)
        *mode = st.st_mode & 0777;
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    size_t r = fread(content, 1, n - 1, fp);
    content[r] = 0;
    fclose(fp);
    return true;
}

/* ---- tests ---- */

static void test_socket_mode(void **state)
{
    struct fx *f = *state;
    struct stat st;
    assert_int_equal(lstat(f->sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_status(void **state)
{
    struct fx *f = *state;
    int st;
    json_t *doc = request(f, "GET", "/v1/status", NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(doc, "version"), LR_VERSION);
    assert_true(json_is_integer(json_object_get(doc, "uptime_secs")));
    assert_int_equal(json_integer_value(json_object_get(doc, "pid")), getpid());
    assert_int_equal(json_integer_value(json_object_get(doc, "threads")), 2);

    const json_t *s = json_object_get(doc, "settings");
    assert_true(json_is_object(s));
    assert_true(json_is_null(json_object_get(s, "path"))); /* parsed from memory */
    char hex[LR_SHA256_HEX_LEN + 1];
    lr_sha256_hex(f->json, strlen(f->json), hex);
    assert_string_equal(jstr(s, "digest"), hex);
    assert_non_null(jstr(s, "loaded_at"));
    assert_int_equal(strlen(jstr(s, "loaded_at")), 20); /* 2024-01-01T00:00:00Z */

    const json_t *b = json_object_get(doc, "bypass");
    assert_true(json_is_true(json_object_get(b, "enabled")));
    assert_string_equal(jstr(b, "provider"), "auto");
    assert_string_equal(jstr(b, "source"), "config");
    assert_string_equal(jstr(b, "config_provider"), "auto");
    assert_true(json_is_null(json_object_get(b, "persisted")));

    const json_t *sp = json_object_get(doc, "spop");
    static const char *const spop_keys[] = {"connections_open", "connections_total", "frames",
                                            "notify", "ack"};
    for (size_t i = 0; i < sizeof(spop_keys) / sizeof(spop_keys[0]); i++)
        assert_true(json_is_integer(json_object_get(sp, spop_keys[i])));
    const json_t *errs = json_object_get(sp, "errors");
    assert_true(json_is_object(errs));
    assert_true(json_is_integer(json_object_get(errs, "I/O error"))); /* /metrics' labels */
    const json_t *e = json_object_get(doc, "engine");
    assert_true(json_is_integer(json_object_get(e, "connections_open")));
    assert_true(json_is_integer(json_object_get(e, "requests")));
    const json_t *cls = json_object_get(doc, "classifications");
    assert_true(json_is_object(json_object_get(cls, "engine")));
    assert_true(json_is_object(json_object_get(cls, "bypass")));

    /* No secret-bearing field: the key variable's name is not even there. */
    char *text = json_dumps(doc, 0);
    assert_null(strstr(text, "OPENAI_API_KEY"));
    free(text);
    json_decref(doc);
}

static void test_switch_persist_clear(void **state)
{
    struct fx *f = *state;
    int st;
    char content[512];
    mode_t mode = 0;

    assert_string_equal(backend_for(f->cur, "/v1/embeddings", false), "lr_provider_openai");
    json_t *doc = request(f, "POST", "/v1/bypass-provider", "{\"provider\": \"anthropic\"}", &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(doc, "provider"), "anthropic");
    assert_string_equal(jstr(doc, "previous"), "auto");
    assert_string_equal(jstr(doc, "source"), "runtime");
    json_decref(doc);
    assert_int_equal(f->publishes, 1);
    assert_string_equal(f->cur->bypass_provider, "anthropic");
    assert_true(f->cur->bypass_runtime);
    /* The classifier of the published copy routes bypassed paths to anthropic. */
    assert_string_equal(backend_for(f->cur, "/v1/embeddings", false), "lr_provider_anthropic");
    assert_string_equal(backend_for(f->cur, "/v1/chat/completions", false), LR_ENGINE_BACKEND);

    assert_true(persist_exists(f, content, sizeof(content), &mode));
    assert_int_equal(mode, 0600);
    assert_non_null(strstr(content, "\"provider\": \"anthropic\""));

    doc = request(f, "GET", "/v1/status", NULL, &st);
    const json_t *b = json_object_get(doc, "bypass");
    assert_string_equal(jstr(b, "provider"), "anthropic");
    assert_string_equal(jstr(b, "source"), "runtime");
    assert_string_equal(jstr(b, "config_provider"), "auto");
    assert_string_equal(jstr(b, "persisted"), "anthropic");
    json_decref(doc);

    /* A restart (fresh load of the same agent.json) re-applies the runtime choice. */
    struct agent_settings *fresh = admin_apply_persisted(parse_settings(f, "auto"));
    assert_string_equal(fresh->bypass_provider, "anthropic");
    assert_true(fresh->bypass_runtime);
    assert_string_equal(backend_for(fresh, "/v1/embeddings", false), "lr_provider_anthropic");
    agent_settings_unref(fresh);

    /* Switch again to a named openai provider: previous is anthropic. */
    doc = request(f, "POST", "/v1/bypass-provider", "{\"provider\": \"openai\"}", &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(doc, "previous"), "anthropic");
    json_decref(doc);
    /* Named openai, but an Anthropic-namespace path still goes to anthropic (classify rule 3). */
    assert_string_equal(backend_for(f->cur, "/v1/messages/count_tokens", false),
                        "lr_provider_anthropic");
    assert_string_equal(backend_for(f->cur, "/v1/embeddings", true), "lr_provider_openai");

    /* DELETE clears: back to agent.json's value, file removed. */
    doc = request(f, "DELETE", "/v1/bypass-provider", NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(doc, "provider"), "auto");
    assert_string_equal(jstr(doc, "previous"), "openai");
    assert_string_equal(jstr(doc, "source"), "config");
    json_decref(doc);
    assert_false(f->cur->bypass_runtime);
    assert_false(persist_exists(f, content, sizeof(content), NULL));

    /* "auto" explicitly is a runtime choice too; {"provider": null} clears it. */
    doc = request(f, "POST", "/v1/bypass-provider", "{\"provider\": \"auto\"}", &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(doc, "source"), "runtime");
    json_decref(doc);
    assert_true(persist_exists(f, content, sizeof(content), NULL));
    doc = request(f, "POST", "/v1/bypass-provider", "{\"provider\": null}", &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(doc, "source"), "config");
    json_decref(doc);
    assert_false(persist_exists(f, content, sizeof(content), NULL));
    assert_int_equal(f->publishes, 5);

    doc = request(f, "GET", "/v1/bypass-provider", NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(doc, "provider"), "auto");
    json_decref(doc);
}

static void test_switch_refused(void **state)
{
    struct fx *f = *state;
    int st;
    char content[256];
    static const struct {
        const char *body;
        int status;
        const char *needle;
    } cases[] = {
        {"{\"provider\": \"nope\"}", 400, "provider 'nope' is not configured"},
        {"{\"provider\": \"groq\"}", 400, "provider 'groq' is disabled"},
        {"{\"provider\": \"Bad Name!\"}", 400, "invalid provider name"},
        {"{\"provider\": 3}", 400, "expected {\"provider\""},
        {"{}", 400, "expected {\"provider\""},
        {"[\"openai\"]", 400, "expected {\"provider\""},
        {"{\"provider\": ", 400, "invalid JSON"},
        {"", 400, "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *doc = request(f, "POST", "/v1/bypass-provider", cases[i].body, &st);
        assert_int_equal(st, cases[i].status);
        const char *e = jstr(doc, "error");
        assert_non_null(e);
        if (!strstr(e, cases[i].needle))
            fail_msg("case %zu: error %s lacks %s", i, e, cases[i].needle);
        json_decref(doc);
    }
    assert_int_equal(f->publishes, 0);
    assert_string_equal(f->cur->bypass_provider, "auto");
    assert_false(persist_exists(f, content, sizeof(content), NULL));

    /* A publish failure leaves neither the switch nor the file behind. */
    f->fail_publish = 1;
    json_t *doc = request(f, "POST", "/v1/bypass-provider", "{\"provider\": \"openai\"}", &st);
    assert_int_equal(st, 500);
    json_decref(doc);
    assert_false(persist_exists(f, content, sizeof(content), NULL));
    assert_string_equal(f->cur->bypass_provider, "auto");
}

static void test_not_found_and_bad_http(void **state)
{
    struct fx *f = *state;
    int st;
    json_t *doc = request(f, "GET", "/v1/nothing", NULL, &st);
    assert_int_equal(st, 404);
    assert_non_null(strstr(jstr(doc, "error"), "/v1/nothing"));
    json_decref(doc);
    doc = request(f, "POST", "/v1/status", "{}", &st);
    assert_int_equal(st, 405);
    json_decref(doc);
    doc = request(f, "PUT", "/v1/bypass-provider", "{}", &st);
    assert_int_equal(st, 405);
    json_decref(doc);
    /* query strings are ignored */
    doc = request(f, "GET", "/v1/status?pretty=1", NULL, &st);
    assert_int_equal(st, 200);
    json_decref(doc);

    static const char garbage[] = "HELLO\x01 WORLD\r\n\r\n";
    char *raw = exchange_raw(f, garbage, sizeof(garbage) - 1);
    assert_non_null(strstr(raw, "HTTP/1.1 400 "));
    assert_non_null(strstr(raw, "bad HTTP request"));
    free(raw);

    /* A body over the limit is refused without reading it all into memory. */
    size_t big = 70 * 1024;
    char *req = malloc(big + 256);
    assert_non_null(req);
    int n =
        snprintf(req, 256, "POST /v1/bypass-provider HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", big);
    memset(req + n, 'x', big);
    raw = exchange_raw(f, req, (size_t)n + big);
    assert_non_null(strstr(raw, "HTTP/1.1 413 "));
    free(raw);
    free(req);
}

static void test_persisted_invalid_ignored(void **state)
{
    struct fx *f = *state;
    char p[160];
    snprintf(p, sizeof(p), "%s/%s", f->dir, ADMIN_PERSIST_FILE);
    static const char *const bad[] = {"{\"provider\": \"groq\"}", "{\"provider\": \"gone\"}",
                                      "not json", "{\"provider\": 1}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FILE *fp = fopen(p, "w");
        assert_non_null(fp);
        fputs(bad[i], fp);
        fclose(fp);
        struct agent_settings *s = admin_apply_persisted(parse_settings(f, "openai"));
        assert_string_equal(s->bypass_provider, "openai");
        assert_false(s->bypass_runtime);
        agent_settings_unref(s);
    }
    unlink(p);
    /* No admin socket configured: nothing to apply. */
    static const char noadmin[] = "{\"providers\":[{\"name\":\"openai\"}]}";
    char err[256];
    struct agent_settings *s = agent_settings_parse(noadmin, sizeof(noadmin) - 1, err, sizeof(err));
    assert_non_null(s);
    assert_ptr_equal(admin_apply_persisted(s), s);
    agent_settings_unref(s);
}

static void test_stale_socket_and_cleanup(void **state)
{
    struct fx *f = *state;
    char err[256] = "";
    /* A second server on the same live socket is refused. */
    struct admin_config c = {
        .socket_path = f->sock, .current = fake_current, .publish = fake_publish, .ud = f};
    assert_null(admin_new(f->loop, &c, err, sizeof(err)));
    assert_non_null(strstr(err, "another process"));
    /* Freeing removes the socket; a stale socket file is replaced. */
    admin_free(f->admin);
    f->admin = NULL;
    struct stat st;
    assert_int_equal(lstat(f->sock, &st), -1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", f->sock);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(fd); /* bound, never listening: stale */
    f->admin = admin_new(f->loop, &c, err, sizeof(err));
    if (!f->admin)
        fail_msg("admin_new over a stale socket: %s", err);
    int status;
    json_t *doc = request(f, "GET", "/v1/status", NULL, &status);
    assert_int_equal(status, 200);
    json_decref(doc);
    /* A regular file in the way is not deleted. */
    char other[160];
    snprintf(other, sizeof(other), "%s/not-a-socket", f->dir);
    FILE *fp = fopen(other, "w");
    assert_non_null(fp);
    fclose(fp);
    c.socket_path = other;
    assert_null(admin_new(f->loop, &c, err, sizeof(err)));
    assert_non_null(strstr(err, "not a socket"));
    assert_int_equal(lstat(other, &st), 0);
    unlink(other);
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
}

/* Writes agent.json for the fixture with this bypass provider (and optional extra top-level
 * text, e.g. ",\"threads\":3"); returns its SHA-256. */
static void write_agent_json(struct fx *f, const char *provider, const char *extra, char *hex)
{
    char text[2600];
    snprintf(f->json, sizeof(f->json), settings_fmt, f->dir, provider);
    size_t n = strlen(f->json);
    snprintf(text, sizeof(text), "%.*s%s}", (int)(n - 1), f->json, extra ? extra : "");
    write_file(f->settings_path, text);
    lr_sha256_hex(text, strlen(text), hex);
}

static void test_reload_ok_unchanged_bad(void **state)
{
    struct fx *f = *state;
    int st;
    char hex[LR_SHA256_HEX_LEN + 1], hex2[LR_SHA256_HEX_LEN + 1], cur_digest[65];

    /* A new file (bypass provider openai instead of the fixture's auto): published. */
    snprintf(cur_digest, sizeof(cur_digest), "%s", f->cur->digest);
    write_agent_json(f, "openai", NULL, hex);
    json_t *doc = request(f, "POST", "/v1/reload", NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(doc, "digest"), hex);
    assert_string_equal(jstr(doc, "previous_digest"), cur_digest);
    assert_true(json_is_true(json_object_get(doc, "changed")));
    assert_string_equal(jstr(doc, "bypass_provider"), "openai");
    assert_int_equal(json_array_size(json_object_get(doc, "restart_required")), 0);
    json_decref(doc);
    assert_int_equal(f->publishes, 1);
    assert_string_equal(f->cur->digest, hex);
    assert_string_equal(f->cur->path, f->settings_path);
    assert_string_equal(f->cur->bypass_provider, "openai");
    assert_string_equal(backend_for(f->cur, "/v1/embeddings", true), "lr_provider_openai");

    /* The same file again: published (as SIGHUP does) but reported unchanged. */
    doc = request(f, "POST", "/v1/reload", "", &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(doc, "digest"), hex);
    assert_false(json_is_true(json_object_get(doc, "changed")));
    json_decref(doc);
    assert_int_equal(f->publishes, 2);

    /* A runtime bypass provider survives a reload of a file naming another one. */
    doc = request(f, "POST", "/v1/bypass-provider", "{\"provider\": \"anthropic\"}", &st);
    assert_int_equal(st, 200);
    json_decref(doc);
    write_agent_json(f, "auto", ",\"threads\":3", hex2);
    doc = request(f, "POST", "/v1/reload", NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(jstr(doc, "digest"), hex2);
    assert_true(json_is_true(json_object_get(doc, "changed")));
    assert_string_equal(jstr(doc, "bypass_provider"), "anthropic");
    const json_t *rr = json_object_get(doc, "restart_required");
    assert_int_equal(json_array_size(rr), 1);
    assert_string_equal(json_string_value(json_array_get(rr, 0)), "threads");
    json_decref(doc);
    assert_string_equal(f->cur->bypass_provider, "anthropic");
    assert_true(f->cur->bypass_runtime);
    assert_string_equal(agent_settings_config_bypass_provider(f->cur), "auto");
    assert_int_equal(f->publishes, 4);

    /* Bad files: 400 with the position, nothing published, the old settings stay. */
    static const struct {
        const char *text; /* NULL: no file at all */
        const char *needle;
    } bad[] = {
        {"{\"version\": 1, ", "agent.json:1:"},
        {"{\"version\":1,\"bypass\":{\"provider\":\"nosuch\"}}", "nosuch"},
        {"[]", "agent.json"},
        {NULL, "agent.json"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (bad[i].text)
            write_file(f->settings_path, bad[i].text);
        else
            unlink(f->settings_path);
        doc = request(f, "POST", "/v1/reload", NULL, &st);
        assert_int_equal(st, 400);
        const char *e = jstr(doc, "error");
        assert_non_null(e);
        if (!strstr(e, bad[i].needle))
            fail_msg("bad case %zu: error '%s' lacks '%s'", i, e, bad[i].needle);
        assert_null(json_object_get(doc, "digest"));
        json_decref(doc);
        assert_int_equal(f->publishes, 4);
        assert_string_equal(f->cur->digest, hex2);
        assert_string_equal(f->cur->bypass_provider, "anthropic");
    }

    /* A publish failure: 500, old settings kept. */
    write_agent_json(f, "openai", NULL, hex);
    f->fail_publish = 1;
    doc = request(f, "POST", "/v1/reload", NULL, &st);
    assert_int_equal(st, 500);
    assert_non_null(strstr(jstr(doc, "error"), "publish refused (test)"));
    json_decref(doc);
    assert_string_equal(f->cur->digest, hex2);

    /* Only POST. */
    doc = request(f, "GET", "/v1/reload", NULL, &st);
    assert_int_equal(st, 405);
    json_decref(doc);
}

static void test_reload_not_configured(void **state)
{
    struct fx *f = *state;
    char err[256] = "";
    /* An admin API without a reload callback (settings not from a file): 501. */
    admin_free(f->admin);
    struct admin_config c = {
        .socket_path = f->sock, .current = fake_current, .publish = fake_publish, .ud = f};
    f->admin = admin_new(f->loop, &c, err, sizeof(err));
    assert_non_null(f->admin);
    int st;
    json_t *doc = request(f, "POST", "/v1/reload", NULL, &st);
    assert_int_equal(st, 501);
    assert_non_null(jstr(doc, "error"));
    json_decref(doc);
    /* admin_reload_file without a path refuses, publishing nothing. */
    struct admin_reload_result res;
    assert_int_equal(admin_reload_file(NULL, f->cur, fake_publish, f, &res, err, sizeof(err)),
                     ADMIN_RELOAD_BAD_FILE);
    assert_int_equal(f->publishes, 0);
}

static void test_settings_copy(void **state)
{
    struct fx *f = *state;
    char err[256] = "";
    struct agent_settings *base = parse_settings(f, "openai");
    struct agent_settings *s =
        agent_settings_with_bypass_provider(base, "anthropic", err, sizeof(err));
    assert_non_null(s);
    assert_string_equal(s->digest, base->digest);
    assert_int_equal(s->loaded_at, base->loaded_at);
    assert_int_equal(s->n_providers, 3);
    assert_false(s->bypass_auto);
    assert_ptr_equal(s->cls_named, &s->providers[1]); /* points into its own copy */
    assert_string_equal(agent_settings_config_bypass_provider(s), "openai");
    struct agent_settings *back = agent_settings_with_bypass_provider(s, NULL, err, sizeof(err));
    assert_non_null(back);
    assert_string_equal(back->bypass_provider, "openai");
    assert_false(back->bypass_runtime);
    assert_ptr_equal(back->cls_named, &back->providers[0]);
    struct agent_settings *a = agent_settings_with_bypass_provider(base, "auto", err, sizeof(err));
    assert_non_null(a);
    assert_true(a->bypass_auto);
    assert_string_equal(backend_for(a, "/v1/embeddings", true), "lr_provider_anthropic");
    assert_null(agent_settings_with_bypass_provider(base, "groq", err, sizeof(err)));
    assert_non_null(strstr(err, "is disabled"));
    agent_settings_unref(a);
    agent_settings_unref(back);
    agent_settings_unref(s);
    agent_settings_unref(base); /* the copies own their documents: order does not matter */
}

static void test_metrics_gauge(void **state)
{
    struct fx *f = *state;
    int st;
    json_t *doc = request(f, "POST", "/v1/bypass-provider", "{\"provider\": \"anthropic\"}", &st);
    assert_int_equal(st, 200);
    json_decref(doc);
    struct lr_buf b = {0};
    assert_int_equal(metrics_render(&b, NULL), 0);
    assert_non_null(
        strstr((const char *)b.data, "lunaroute_bypass_provider_info{provider=\"anthropic\"} 1\n"));
    lr_buf_free(&b);
    metrics_free_all();
}

static void test_sha256(void **state)
{
    (void)state;
    char hex[LR_SHA256_HEX_LEN + 1];
    lr_sha256_hex("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    lr_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    static const char two[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    lr_sha256_hex(two, sizeof(two) - 1, hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* incremental == one shot, across block boundaries */
    char big[1000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7);
    struct lr_sha256 c;
    uint8_t d1[32];
    lr_sha256_init(&c);
    for (size_t i = 0; i < sizeof(big); i += 37)
        lr_sha256_update(&c, big + i, sizeof(big) - i < 37 ? sizeof(big) - i : 37);
    lr_sha256_final(&c, d1);
    char hex2[LR_SHA256_HEX_LEN + 1];
    lr_sha256_hex(big, sizeof(big), hex);
    for (int i = 0; i < 32; i++)
        snprintf(hex2 + 2 * i, 3, "%02x", d1[i]);
    assert_string_equal(hex, hex2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_socket_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_persist_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_and_bad_http, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persisted_invalid_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_socket_and_cleanup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settings_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_ok_unchanged_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_not_configured, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_gauge, setup, teardown),
        cmocka_unit_test(test_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
