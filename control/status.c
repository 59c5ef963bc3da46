#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "admin_client.h"
#include "buf.h"
#include "sha256.h"

#define STATUS_TIMEOUT_SECS 3.0
#define STATUS_MAX_FILE     (64u * 1024u * 1024u)

const char status_fields_help[] =
    "output: one JSON document (keys sorted). Fields:\n"
    "  ok                       true when the agent and HAProxy both answered (exit 0), else\n"
    "                           false (exit 1)\n"
    "  time                     when this was collected (UTC, ISO 8601)\n"
    "  run_dir                  the run directory looked at\n"
    "  bypass                   shortcut: {provider, source} from the agent, or null when the\n"
    "                           agent did not answer\n"
    "  control.running          a lunaroute-control is alive with the pid in control.pid\n"
    "  control.pid              pid from control.pid, or null\n"
    "  control.config.path      the configuration file `up` runs with (from its command line or\n"
    "                           LUNAROUTE_CONFIG), or null (built-in defaults / unknown)\n"
    "  control.config.source    \"--config\" | \"LUNAROUTE_CONFIG\" | \"defaults\" | \"unknown\"\n"
    "  control.config.sha256    SHA-256 of that file, or null\n"
    "  control.rendered.<file>  SHA-256 of each rendered file in run_dir (haproxy.cfg,\n"
    "                           spoe-lunaroute.conf, routes.map, agent.json), null if missing\n"
    "  agent.reachable          the admin socket answered GET /v1/status\n"
    "  agent.socket             the admin socket (agent.json \"admin_socket\")\n"
    "  agent.error              why it is not reachable (only when reachable is false)\n"
    "  agent.pid_file           pid from agent.pid (written by `up`), or null\n"
    "  agent.settings_in_sync   agent.settings.digest equals control.rendered[\"agent.json\"]:\n"
    "                           the agent runs the last rendered settings\n"
    "  agent.version            lunaroute-agent version\n"
    "  agent.pid                the agent's pid\n"
    "  agent.uptime_secs        seconds since the agent started; agent.started_at (UTC)\n"
    "  agent.threads            loop threads\n"
    "  agent.settings.path      agent.json it loaded; .digest: SHA-256 of its bytes (as\n"
    "                           `sha256sum` prints); .loaded_at: when (UTC)\n"
    "  agent.bypass.enabled     bypass on/off (bypass.enabled)\n"
    "  agent.bypass.provider    the bypass provider in force: \"auto\" or a provider name\n"
    "  agent.bypass.source      \"runtime\" (switch-provider, persisted) or \"config\"\n"
    "  agent.bypass.config_provider  the value agent.json names\n"
    "  agent.bypass.persisted   provider in <run_dir>/bypass-provider.json, or null\n"
    "  agent.spop.connections_open / connections_total   SPOP connections from HAProxy\n"
    "  agent.spop.frames / notify / ack                  SPOP frames received, NOTIFYs\n"
    "                           received, ACKs sent\n"
    "  agent.spop.socket_errors read/write errors on SPOP sockets\n"
    "  agent.spop.errors.<status>  SPOP connections closed with that error status (the\n"
    "                           status text, as in /metrics: \"I/O error\", \"frame is too "
    "big\",...)\n"
    "  agent.engine.connections_open / connections_total / requests / responses_4xx /\n"
    "                           responses_5xx   the routing-engine listener\n"
    "  agent.classifications.<route>.<provider>  classified requests (route engine|bypass;\n"
    "                           provider \"none\" for engine)\n"
    "  haproxy.reachable        <run_dir>/haproxy.sock answered\n"
    "  haproxy.socket           that socket; haproxy.error: why not (when unreachable)\n"
    "  haproxy.master_pid       pid from haproxy.pid (the master), or null\n"
    "  haproxy.version / release_date / pid (worker) / uptime_secs / threads /\n"
    "  haproxy.current_connections / max_connections   from `show info`\n"
    "  haproxy.backends.<name>  every backend (lr_spoa, lr_engine, lr_provider_*, ...):\n"
    "      status, current_sessions, total_sessions, servers_active, servers_backup,\n"
    "      responses_5xx, and servers.<name>: status (UP/DOWN/MAINT/no check), check_status\n"
    "      (e.g. L7OK, L4CON), check_desc, addr, weight, current_sessions, total_sessions,\n"
    "      last_change_secs, errors_connect, errors_response (from `show stat`)\n"
    "  haproxy.frontends.<name> status, current_sessions, total_sessions, requests_total\n"
    "  haproxy.servers_state.<backend>.<server>  from `show servers state` (what a reload\n"
    "                           carries over), per server:\n"
    "      op_state             DOWN | STARTING | UP | STOPPING (operational state)\n"
    "      admin_state          [] or the administrative flags: FMAINT (forced maintenance),\n"
    "                           IMAINT (inherited), CMAINT (configured disabled), FDRAIN,\n"
    "                           IDRAIN, RMAINT (DNS resolution failed), HMAINT (FQDN set at\n"
    "                           runtime)\n"
    "      addr / port / fqdn   the address in use (fqdn null when none)\n"
    "      weight / initial_weight   current and configured weight\n"
    "      secs_since_change    seconds since the last operational change\n"
    "      check_result         UNKNOWN | NEUTRAL | FAILED | PASSED | CONDPASS (last check)\n"
    "      check_health         the rise/fall counter of the health check\n"
    "      check_state          [] or flags: INPROGRESS, CONFIGURED, ENABLED, PAUSED, AGENT\n"
    "      use_ssl              the server is reached over TLS\n"
    "  haproxy.servers_state_error  why `show servers state` failed (only then; servers_state\n"
    "                           is null)\n"
    "No field carries an API key or an environment value.\n";

/* ---- small helpers ---- */

static void iso8601(time_t t, char *buf, size_t n)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, n, "%lld", (long long)t);
}

/* SHA-256 of a file as a JSON string, or JSON null when it cannot be read. */
static json_t *file_sha256(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return json_null();
    struct lr_sha256 c;
    lr_sha256_init(&c);
    char buf[16384];
    size_t total = 0;
    bool ok = true;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ok = false;
            break;
        }
        if (n == 0)
            break;
        total += (size_t)n;
        if (total > STATUS_MAX_FILE) {
            ok = false;
            break;
        }
        lr_sha256_update(&c, buf, (size_t)n);
    }
    close(fd);
    if (!ok)
        return json_null();
    uint8_t d[32];
    char hex[LR_SHA256_HEX_LEN + 1];
    lr_sha256_final(&c, d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return json_string(hex);
}

static long read_pid(const char *dir, const char *name)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
        return 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 0)
        pid = 0;
    fclose(f);
    return pid;
}

static bool pid_alive(long pid)
{
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* Reads a small /proc file whose entries are NUL-separated. */
static char *read_proc(long pid, const char *what, size_t *len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/%s", pid, what);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct lr_buf b = {0};
    char buf[4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || b.len > 1024 * 1024 || lr_buf_append(&b, buf, (size_t)n) < 0)
            break;
    }
    close(fd);
    *len = b.len;
    if (!b.len) {
        lr_buf_free(&b);
        return NULL;
    }
    return lr_buf_steal_str(&b);
}

/* The configuration `up` was started with: --config/-c on its command line, else
 * LUNAROUTE_CONFIG in its environment (only that variable is looked at). */
static json_t *control_config(long pid)
{
    json_t *c = json_object();
    char *path = NULL;
    const char *source = "unknown";
    size_t len = 0;
    char *cmd = pid ? read_proc(pid, "cmdline", &len) : NULL;
    if (cmd) {
        source = "defaults";
        for (size_t off = 0; off < len;) {
            const char *a = cmd + off;
            size_t al = strnlen(a, len - off);
            const char *next = off + al + 1 < len ? a + al + 1 : NULL;
            if ((!strcmp(a, "--config") || !strcmp(a, "-c")) && next) {
                path = strdup(next);
                source = "--config";
            } else if (!strncmp(a, "--config=", 9)) {
                path = strdup(a + 9);
                source = "--config";
            }
            off += al + 1;
        }
        free(cmd);
    }
    if (!path && pid) {
        char *env = read_proc(pid, "environ", &len);
        for (size_t off = 0; env && off < len;) {
            const char *a = env + off;
            size_t al = strnlen(a, len - off);
            if (!strncmp(a, "LUNAROUTE_CONFIG=", 17) && a[17]) {
                path = strdup(a + 17);
                source = "LUNAROUTE_CONFIG";
            }
            off += al + 1;
        }
        if (env) {
            explicit_bzero(env, len); /* other variables may be credentials */
            free(env);
        }
    }
    /* A relative path is relative to the supervisor's working directory. */
    if (path && path[0] != '/') {
        char cwdlink[64], cwd[PATH_MAX], full[PATH_MAX * 2];
        snprintf(cwdlink, sizeof(cwdlink), "/proc/%ld/cwd", pid);
        ssize_t n = readlink(cwdlink, cwd, sizeof(cwd) - 1);
        if (n > 0) {
            cwd[n] = 0;
            snprintf(full, sizeof(full), "%s/%s", cwd, path);
            char *abs = strdup(full);
            if (abs) {
                free(path);
                path = abs;
            }
        }
    }
    json_object_set_new(c, "path", path ? json_string(path) : json_null());
    json_object_set_new(c, "source", json_string(source));
    json_object_set_new(c, "sha256", path ? file_sha256(path) : json_null());
    free(path);
    return c;
}

/* ---- HAProxy ---- */

/* Splits one CSV line in place (HAProxy does not quote its stat fields). */
static size_t split_csv(char *line, char **cols, size_t max)
{
    size_t n = 0;
    char *p = line;
    while (n < max) {
        cols[n++] = p;
        char *comma = strchr(p, ',');
        if (!comma)
            break;
        *comma = 0;
        p = comma + 1;
    }
    return n;
}

#define STAT_MAX_COLS 128

struct stat_cols {
    char *names[STAT_MAX_COLS];
    size_t n;
};

static const char *col(const struct stat_cols *h, char **vals, size_t nvals, const char *name)
{
    for (size_t i = 0; i < h->n && i < nvals; i++)
        if (!strcmp(h->names[i], name))
            return vals[i];
    return NULL;
}

/* A numeric column as a JSON integer, a text column as a string; absent/empty: null. */
static json_t *jnum(const char *v)
{
    if (!v || !*v)
        return json_null();
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end)
        return json_string(v);
    return json_integer(x);
}

static json_t *jtext(const char *v)
{
    return v && *v ? json_string(v) : json_null();
}

json_t *status_parse_show_stat(const char *csv)
{
    json_t *root = json_object(), *backends = json_object(), *frontends = json_object();
    char *text = strdup(csv ? csv : "");
    if (!root || !backends || !frontends || !text) {
        json_decref(root);
        json_decref(backends);
        json_decref(frontends);
        free(text);
        return NULL;
    }
    json_object_set_new(root, "backends", backends);
    json_object_set_new(root, "frontends", frontends);
    struct stat_cols h = {0};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\r')
            line[--ll] = 0;
        if (!ll)
            continue;
        if (!strncmp(line, "# ", 2)) {
            h.n = split_csv(line + 2, h.names, STAT_MAX_COLS);
            continue;
        }
        if (!h.n)
            continue;
        char *vals[STAT_MAX_COLS];
        size_t nv = split_csv(line, vals, STAT_MAX_COLS);
        const char *px = col(&h, vals, nv, "pxname"), *sv = col(&h, vals, nv, "svname");
        const char *type = col(&h, vals, nv, "type");
        if (!px || !sv || !type)
            continue;
        if (!strcmp(type, "0")) { /* frontend */
            json_t *f = json_object();
            json_object_set_new(f, "status", jtext(col(&h, vals, nv, "status")));
            json_object_set_new(f, "current_sessions", jnum(col(&h, vals, nv, "scur")));
            json_object_set_new(f, "total_sessions", jnum(col(&h, vals, nv, "stot")));
            json_object_set_new(f, "requests_total", jnum(col(&h, vals, nv, "req_tot")));
            json_object_set_new(frontends, px, f);
            continue;
        }
        if (strcmp(type, "1") != 0 && strcmp(type, "2") != 0)
            continue;
        json_t *b = json_object_get(backends, px);
        if (!b) {
            b = json_object();
            json_object_set_new(b, "servers", json_object());
            json_object_set_new(backends, px, b);
        }
        if (!strcmp(type, "1")) {
            json_object_set_new(b, "status", jtext(col(&h, vals, nv, "status")));
            json_object_set_new(b, "current_sessions", jnum(col(&h, vals, nv, "scur")));
            json_object_set_new(b, "total_sessions", jnum(col(&h, vals, nv, "stot")));
            json_object_set_new(b, "servers_active", jnum(col(&h, vals, nv, "act")));
            json_object_set_new(b, "servers_backup", jnum(col(&h, vals, nv, "bck")));
            json_object_set_new(b, "responses_5xx", jnum(col(&h, vals, nv, "hrsp_5xx")));
            continue;
        }
        json_t *s = json_object();
        json_object_set_new(s, "status", jtext(col(&h, vals, nv, "status")));
        json_object_set_new(s, "check_status", jtext(col(&h, vals, nv, "check_status")));
        json_object_set_new(s, "check_desc", jtext(col(&h, vals, nv, "check_desc")));
        json_object_set_new(s, "addr", jtext(col(&h, vals, nv, "addr")));
        json_object_set_new(s, "weight", jnum(col(&h, vals, nv, "weight")));
        json_object_set_new(s, "current_sessions", jnum(col(&h, vals, nv, "scur")));
        json_object_set_new(s, "total_sessions", jnum(col(&h, vals, nv, "stot")));
        json_object_set_new(s, "last_change_secs", jnum(col(&h, vals, nv, "lastchg")));
        json_object_set_new(s, "errors_connect", jnum(col(&h, vals, nv, "econ")));
        json_object_set_new(s, "errors_response", jnum(col(&h, vals, nv, "eresp")));
        json_object_set_new(json_object_get(b, "servers"), sv, s);
    }
    free(text);
    return root;
}

/* `show servers state` enumerations (doc/management.txt, format version 1). */
static const char *op_state_name(long v)
{
    static const char *const names[] = {"DOWN", "STARTING", "UP", "STOPPING"};
    return v >= 0 && v < 4 ? names[v] : NULL;
}

static const char *check_result_name(long v)
{
    static const char *const names[] = {"UNKNOWN", "NEUTRAL", "FAILED", "PASSED", "CONDPASS"};
    return v >= 0 && v < 5 ? names[v] : NULL;
}

/* A bit mask as the array of the names of its bits (unknown bits as "0x.."). */
static json_t *flag_names(const char *v, const char *const *names, size_t n)
{
    if (!v || !*v)
        return json_null();
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || *v == '-')
        return json_string(v);
    json_t *a = json_array();
    for (unsigned i = 0; a && i < 64; i++) {
        unsigned long long bit = 1ULL << i;
        if (!(x & bit))
            continue;
        if (i < n && names[i]) {
            json_array_append_new(a, json_string(names[i]));
        } else {
            char hex[24];
            snprintf(hex, sizeof(hex), "0x%llx", bit);
            json_array_append_new(a, json_string(hex));
        }
    }
    return a;
}

static json_t *jenum(const char *v, const char *(*name)(long))
{
    if (!v || !*v)
        return json_null();
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    const char *n = errno || *end ? NULL : name(x);
    return json_string(n ? n : v);
}

/* "-" is `show servers state`'s empty value. */
static json_t *jdash(const char *v)
{
    return v && *v && strcmp(v, "-") != 0 ? json_string(v) : json_null();
}

json_t *status_parse_servers_state(const char *text)
{
    static const char *const admin_flags[] = {"FMAINT", "IMAINT", "CMAINT", "FDRAIN",
                                              "IDRAIN", "RMAINT", "HMAINT"};
    static const char *const check_flags[] = {"INPROGRESS", "CONFIGURED", "ENABLED", "PAUSED",
                                              "AGENT"};
    json_t *root = json_object();
    char *copy = strdup(text ? text : "");
    if (!root || !copy) {
        json_decref(root);
        free(copy);
        return NULL;
    }
    struct stat_cols h = {0};
    char *save = NULL;
    bool versioned = false;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\r')
            line[--ll] = 0;
        if (!ll)
            continue;
        if (!versioned) {
            versioned = true;
            if (strcmp(line, "1") != 0) /* only format 1 is known */
                break;
            continue;
        }
        char *cols[STAT_MAX_COLS];
        size_t n = 0;
        char *tsave = NULL;
        bool header = line[0] == '#';
        for (char *t = strtok_r(header ? line + 1 : line, " ", &tsave); t && n < STAT_MAX_COLS;
             t = strtok_r(NULL, " ", &tsave))
            cols[n++] = t;
        if (header) {
            memcpy(h.names, cols, n * sizeof(cols[0]));
            h.n = n;
            continue;
        }
        const char *be = col(&h, cols, n, "be_name"), *sv = col(&h, cols, n, "srv_name");
        if (!be || !sv)
            continue;
        json_t *b = json_object_get(root, be);
        if (!b) {
            b = json_object();
            json_object_set_new(root, be, b);
        }
        json_t *o = json_object();
        json_object_set_new(o, "op_state", jenum(col(&h, cols, n, "srv_op_state"), op_state_name));
        json_object_set_new(o, "admin_state",
                            flag_names(col(&h, cols, n, "srv_admin_state"), admin_flags,
                                       sizeof(admin_flags) / sizeof(admin_flags[0])));
        json_object_set_new(o, "addr", jdash(col(&h, cols, n, "srv_addr")));
        json_object_set_new(o, "port", jnum(col(&h, cols, n, "srv_port")));
        json_object_set_new(o, "fqdn", jdash(col(&h, cols, n, "srv_fqdn")));
        json_object_set_new(o, "weight", jnum(col(&h, cols, n, "srv_uweight")));
        json_object_set_new(o, "initial_weight", jnum(col(&h, cols, n, "srv_iweight")));
        json_object_set_new(o, "secs_since_change",
                            jnum(col(&h, cols, n, "srv_time_since_last_change")));
        json_object_set_new(o, "check_result",
                            jenum(col(&h, cols, n, "srv_check_result"), check_result_name));
        json_object_set_new(o, "check_health", jnum(col(&h, cols, n, "srv_check_health")));
        json_object_set_new(o, "check_state",
                            flag_names(col(&h, cols, n, "srv_check_state"), check_flags,
                                       sizeof(check_flags) / sizeof(check_flags[0])));
        const char *ssl = col(&h, cols, n, "srv_use_ssl");
        json_object_set_new(o, "use_ssl",
                            ssl && *ssl ? json_boolean(strcmp(ssl, "0") != 0) : json_null());
        json_object_set_new(b, sv, o);
    }
    free(copy);
    return root;
}

json_t *status_parse_show_info(const char *text)
{
    static const struct {
        const char *key, *field;
        bool num;
    } fields[] = {
        {"Version", "version", false},
        {"Release_date", "release_date", false},
        {"Pid", "pid", true},
        {"Uptime_sec", "uptime_secs", true},
        {"Nbthread", "threads", true},
        {"CurrConns", "current_connections", true},
        {"Maxconn", "max_connections", true},
    };
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t ll = nl ? (size_t)(nl - line) : strlen(line);
        const char *colon = memchr(line, ':', ll);
        if (colon) {
            size_t kl = (size_t)(colon - line);
            const char *v = colon + 1;
            while (v < line + ll && *v == ' ')
                v++;
            size_t vl = (size_t)(line + ll - v);
            while (vl && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
                vl--;
            for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
                if (strlen(fields[i].key) != kl || memcmp(line, fields[i].key, kl) != 0)
                    continue;
                char val[256];
                snprintf(val, sizeof(val), "%.*s", (int)vl, v);
                json_object_set_new(o, fields[i].field, fields[i].num ? jnum(val) : jtext(val));
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return o;
}

static json_t *haproxy_status(const char *run_dir, bool *reachable)
{
    char sock[PATH_MAX], err[512] = "";
    json_t *h = json_object();
    *reachable = false;
    if ((size_t)snprintf(sock, sizeof(sock), "%s/haproxy.sock", run_dir) >= sizeof(sock)) {
        json_object_set_new(h, "reachable", json_false());
        json_object_set_new(h, "error", json_string("run directory path too long"));
        return h;
    }
    json_object_set_new(h, "socket", json_string(sock));
    long mpid = read_pid(run_dir, "haproxy.pid");
    json_object_set_new(h, "master_pid",
                        mpid && pid_alive(mpid) ? json_integer(mpid) : json_null());
    char *info = NULL, *stat = NULL;
    if (haproxy_cli_command(sock, "show info", STATUS_TIMEOUT_SECS, &info, err, sizeof(err)) !=
            ADMIN_CLIENT_OK ||
        haproxy_cli_command(sock, "show stat", STATUS_TIMEOUT_SECS, &stat, err, sizeof(err)) !=
            ADMIN_CLIENT_OK) {
        json_object_set_new(h, "reachable", json_false());
        json_object_set_new(h, "error", json_string(err));
        free(info);
        free(stat);
        return h;
    }
    *reachable = true;
    json_object_set_new(h, "reachable", json_true());
    char *state = NULL, serr[512] = "";
    json_t *ss = NULL;
    if (haproxy_cli_command(sock, "show servers state", STATUS_TIMEOUT_SECS, &state, serr,
                            sizeof(serr)) == ADMIN_CLIENT_OK)
        ss = status_parse_servers_state(state);
    else
        json_object_set_new(h, "servers_state_error", json_string(serr));
    json_object_set_new(h, "servers_state", ss ? ss : json_null());
    free(state);
    json_t *i = status_parse_show_info(info);
    if (i)
        json_object_update(h, i);
    json_decref(i);
    json_t *st = status_parse_show_stat(stat);
    if (st)
        json_object_update(h, st);
    json_decref(st);
    free(info);
    free(stat);
    return h;
}

/* ---- agent ---- */

static json_t *agent_status(const char *run_dir, const char *rendered_digest, bool *reachable)
{
    char sock[PATH_MAX], err[512] = "";
    json_t *a = json_object();
    *reachable = false;
    long pid = read_pid(run_dir, "agent.pid");
    json_object_set_new(a, "pid_file", pid ? json_integer(pid) : json_null());
    if (admin_client_socket_path(run_dir, sock, sizeof(sock), err, sizeof(err)) < 0) {
        json_object_set_new(a, "reachable", json_false());
        json_object_set_new(a, "socket", json_null());
        json_object_set_new(a, "error", json_string(err));
        return a;
    }
    json_object_set_new(a, "socket", json_string(sock));
    struct admin_response r;
    int rc = admin_client_request(sock, "GET", "/v1/status", NULL, STATUS_TIMEOUT_SECS, &r, err,
                                  sizeof(err));
    json_t *doc = NULL;
    if (rc == ADMIN_CLIENT_OK) {
        json_error_t jerr;
        doc = json_loadb(r.body, r.body_len, 0, &jerr);
        if (r.status != 200 || !json_is_object(doc)) {
            snprintf(err, sizeof(err), "GET /v1/status answered %d%s", r.status,
                     json_is_object(doc) ? "" : " without a JSON object");
            json_decref(doc);
            doc = NULL;
        }
        admin_response_free(&r);
    }
    if (!doc) {
        json_object_set_new(a, "reachable", json_false());
        json_object_set_new(a, "error", json_string(err));
        return a;
    }
    *reachable = true;
    json_object_update(a, doc);
    json_object_set_new(a, "reachable", json_true());
    const json_t *dg = json_object_get(json_object_get(doc, "settings"), "digest");
    json_object_set_new(a, "settings_in_sync",
                        json_boolean(json_is_string(dg) && rendered_digest &&
                                     !strcmp(json_string_value(dg), rendered_digest)));
    json_decref(doc);
    return a;
}

/* ---- the document ---- */

int status_collect(const char *run_dir, json_t **out)
{
    static const char *const rendered[] = {"haproxy.cfg", "spoe-lunaroute.conf", "routes.map",
                                           "agent.json"};
    char dir[PATH_MAX], when[32], path[PATH_MAX * 2];
    json_t *root = json_object();
    *out = NULL;
    if (!root)
        return -1;
    if (!realpath(run_dir, dir))
        snprintf(dir, sizeof(dir), "%s", run_dir);
    iso8601(time(NULL), when, sizeof(when));
    json_object_set_new(root, "time", json_string(when));
    json_object_set_new(root, "run_dir", json_string(dir));

    json_t *control = json_object(), *files = json_object();
    long cpid = read_pid(dir, "control.pid");
    bool crun = pid_alive(cpid);
    json_object_set_new(control, "running", json_boolean(crun));
    json_object_set_new(control, "pid", cpid ? json_integer(cpid) : json_null());
    json_object_set_new(control, "config", control_config(crun ? cpid : 0));
    for (size_t i = 0; i < sizeof(rendered) / sizeof(rendered[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, rendered[i]);
        json_object_set_new(files, rendered[i], file_sha256(path));
    }
    json_object_set_new(control, "rendered", files);
    json_object_set_new(root, "control", control);

    bool agent_ok, ha_ok;
    const json_t *adg = json_object_get(files, "agent.json");
    json_t *agent =
        agent_status(dir, json_is_string(adg) ? json_string_value(adg) : NULL, &agent_ok);
    json_object_set_new(root, "agent", agent);
    json_object_set_new(root, "haproxy", haproxy_status(dir, &ha_ok));

    const json_t *b = json_object_get(agent, "bypass");
    if (agent_ok && json_is_object(b))
        json_object_set_new(root, "bypass",
                            json_pack("{s:O?, s:O?}", "provider", json_object_get(b, "provider"),
                                      "source", json_object_get(b, "source")));
    else
        json_object_set_new(root, "bypass", json_null());
    json_object_set_new(root, "ok", json_boolean(agent_ok && ha_ok));
    *out = root;
    return agent_ok && ha_ok ? 0 : 1;
}
