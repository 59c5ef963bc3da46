/* Renderers: the config model -> haproxy.cfg, spoe-lunaroute.conf, routes.map, agent.json
 * (standalone) or lunaroute-backends.cfg + frontend-snippet.cfg (boltin). Pure text
 * production; render_write_all is the only function doing I/O.
 *
 * Secrets: only cfg_provider.api_key_env (a variable NAME) is ever written; api_key is
 * consulted solely to decide whether credentials are configured. */
#include "render.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "buf.h"
#include "config.h"
#include "lr_defaults.h"

/* ---- small helpers ------------------------------------------------------------------- */

static const char *const mode_names[RENDER_MODE_COUNT] = {
    [RENDER_STANDALONE] = "standalone",
    [RENDER_BOLTIN] = "boltin",
};

const char *render_mode_to_str(unsigned m)
{
    return m < RENDER_MODE_COUNT ? mode_names[m] : "?";
}

int render_mode_from_str(const char *s, enum render_mode *out)
{
    for (unsigned i = 0; s && i < RENDER_MODE_COUNT; i++) {
        if (strcmp(s, mode_names[i]) == 0) {
            *out = (enum render_mode)i;
            return 0;
        }
    }
    return -1;
}

/* Local copies of the enum names so the renderers do not depend on the loader's object
 * file (they must match config.c's *_to_str). */
static const char *ptype_str(enum cfg_provider_type t)
{
    return t == CFG_PROVIDER_ANTHROPIC ? "anthropic" : "openai";
}

static const char *dialect_str(enum cfg_dialect d)
{
    switch (d) {
    case CFG_DIALECT_OPENAI:
        return "openai";
    case CFG_DIALECT_ANTHROPIC:
        return "anthropic";
    default:
        return "both";
    }
}

static const char *strategy_str(enum cfg_strategy s)
{
    switch (s) {
    case CFG_STRATEGY_ROUND_ROBIN:
        return "round-robin";
    case CFG_STRATEGY_WEIGHTED_ROUND_ROBIN:
        return "weighted-round-robin";
    case CFG_STRATEGY_LIMITS_ALTERNATIVE:
        return "limits-alternative";
    default:
        return "";
    }
}

/* An output buffer with a sticky allocation-failure flag, so the renderers can print
 * without checking every call. */
struct out {
    struct lr_buf b;
    bool failed;
};

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(struct out *o, const char *fmt, ...)
{
    if (o->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (lr_buf_vprintf(&o->b, fmt, ap) < 0)
        o->failed = true;
    va_end(ap);
}

static char *out_finish(struct out *o)
{
    if (o->failed) {
        lr_buf_free(&o->b);
        return NULL;
    }
    if (o->b.len == 0 && lr_buf_puts(&o->b, "") < 0)
        return NULL;
    return lr_buf_steal_str(&o->b);
}

/* The config file's name for a "# rendered from" comment: control characters (a newline
 * would end the comment) are shown as '?'. */
static void out_source(struct out *o, const struct lr_config *c)
{
    if (!c->source_file) {
        outf(o, "built-in defaults");
        return;
    }
    for (const char *s = c->source_file; *s; s++)
        outf(o, "%c", (unsigned char)*s < ' ' || *s == 0x7f ? '?' : *s);
}

static bool has_key(const struct cfg_provider *p)
{
    return p->api_key_env && p->api_key_env[0] && p->api_key && p->api_key[0];
}

static bool is_ip_literal(const char *host)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
}

static bool is_ipv6_literal(const char *host)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET6, host, tmp) == 1;
}

/* Whether a server line should re-resolve `host` at runtime through `resolvers lr_dns`.
 * Not for IP literals, and not for localhost names: DNS answers NXDOMAIN for them (they
 * live in /etc/hosts), and HAProxy would then take the server down after `hold nx`. */
static bool needs_dns(const char *host)
{
    size_t n = strlen(host);
    static const char suffix[] = ".localhost";
    if (n == 0 || is_ip_literal(host) || strcasecmp(host, "localhost") == 0)
        return false;
    return !(n > sizeof(suffix) - 1 && strcasecmp(host + n - (sizeof(suffix) - 1), suffix) == 0);
}

/* The host part of a "host:port" / "[v6]:port" bind, into buf; "" for wildcards. */
static const char *bind_host(const char *bind, char *buf, size_t len)
{
    const char *colon = strrchr(bind, ':');
    size_t hl = colon ? (size_t)(colon - bind) : strlen(bind);
    if (hl >= 2 && bind[0] == '[' && bind[hl - 1] == ']') {
        bind++;
        hl -= 2;
    }
    if (hl >= len || (hl == 1 && bind[0] == '*'))
        hl = 0;
    memcpy(buf, bind, hl);
    buf[hl] = 0;
    return buf;
}

static bool bind_needs_dns(const char *bind)
{
    char host[256];
    return needs_dns(bind_host(bind, host, sizeof(host)));
}

/* "host" or "[v6]" as it must appear before ":port". */
static void out_host(struct out *o, const char *host)
{
    if (is_ipv6_literal(host))
        outf(o, "[%s]", host);
    else
        outf(o, "%s", host);
}

/* A listener address as a connect address: a wildcard host becomes loopback. */
static void out_connect_addr(struct out *o, const char *bind)
{
    const char *colon = strrchr(bind, ':');
    if (!colon) {
        outf(o, "%s", bind);
        return;
    }
    size_t hl = (size_t)(colon - bind);
    if (hl == 0 || (hl == 1 && bind[0] == '*') || (hl == 7 && !strncmp(bind, "0.0.0.0", 7)))
        outf(o, "127.0.0.1%s", colon);
    else if ((hl == 4 && !strncmp(bind, "[::]", 4)) || (hl == 2 && !strncmp(bind, "::", 2)))
        outf(o, "[::1]%s", colon);
    else
        outf(o, "%s", bind);
}

static const struct cfg_provider *find_enabled(const struct lr_config *c, const char *name)
{
    for (size_t i = 0; name && i < c->n_providers; i++)
        if (c->providers[i].enabled && strcmp(c->providers[i].name, name) == 0)
            return &c->providers[i];
    return NULL;
}

/* Enabled provider of `type`: the one named like the type wins, else the first in config
 * order; NULL when none (classify.h rule 4, first half). */
static const struct cfg_provider *pick_of_type(const struct lr_config *c,
                                               enum cfg_provider_type type)
{
    const struct cfg_provider *first = NULL;
    for (size_t i = 0; i < c->n_providers; i++) {
        const struct cfg_provider *p = &c->providers[i];
        if (!p->enabled || p->type != type)
            continue;
        if (strcmp(p->name, ptype_str(type)) == 0)
            return p;
        if (!first)
            first = p;
    }
    return first;
}

/* classify.h rule 4 in full: the wanted type, else the first enabled provider, else NULL. */
static const struct cfg_provider *pick_auto(const struct lr_config *c, enum cfg_provider_type type)
{
    const struct cfg_provider *p = pick_of_type(c, type);
    for (size_t i = 0; !p && i < c->n_providers; i++)
        if (c->providers[i].enabled)
            p = &c->providers[i];
    return p;
}

/* ---- haproxy.cfg pieces ------------------------------------------------------------ */

static bool any_named_host(const struct lr_config *c)
{
    for (size_t i = 0; i < c->n_providers; i++)
        if (c->providers[i].enabled && needs_dns(c->providers[i].host))
            return true;
    return bind_needs_dns(c->agent.spoa_bind) || bind_needs_dns(c->agent.engine_bind);
}

static void out_resolvers(struct out *o, const struct lr_config *c)
{
    if (!any_named_host(c))
        return;
    /* init-addr last,libc,none + runtime resolution: HAProxy starts even when DNS is
     * unreachable and picks the address up once it resolves. */
    outf(o, "resolvers lr_dns\n"
            "    parse-resolv-conf\n"
            "    hold valid 60s\n"
            "\n");
}

static void out_provider_backend(struct out *o, const struct cfg_provider *p)
{
    bool default_port = p->port == (p->tls ? 443u : 80u);

    outf(o, "backend %s%s\n", LR_PROVIDER_BACKEND_PREFIX, p->name);
    outf(o, "    mode http\n");
    outf(o, "    http-reuse safe\n");
    outf(o, "    timeout connect %us\n", p->connect_timeout_secs);
    outf(o, "    timeout server %us\n", p->timeout_secs);
    outf(o, "    retries %u\n", p->max_retries);
    /* Without it HAProxy holds small response chunks (SSE events) for up to 200 ms. */
    outf(o, "    option http-no-delay\n");
    /* Hop-by-hop headers (RFC 9110 7.6.1) are for this hop only; a websocket upgrade keeps
     * its Connection/Upgrade pair, which HAProxy handles itself. */
    outf(o, "    http-request del-header Connection if !{ req.hdr(upgrade) -m found }\n"
            "    http-request del-header Keep-Alive\n"
            "    http-request del-header Proxy-Connection\n"
            "    http-request del-header Proxy-Authorization\n"
            "    http-request del-header TE\n");
    outf(o, "    http-request set-header Host ");
    out_host(o, p->host);
    if (!default_port)
        outf(o, ":%u", p->port);
    outf(o, "\n");
    if (p->path_prefix && p->path_prefix[0])
        outf(o, "    http-request set-path %s%%[path]\n", p->path_prefix);
    if (has_key(p)) {
        /* Only the variable's name: HAProxy reads the value from its environment. */
        if (p->type == CFG_PROVIDER_ANTHROPIC) {
            outf(o, "    http-request set-header x-api-key \"%%[env(%s)]\"\n", p->api_key_env);
            outf(o, "    http-request del-header Authorization\n");
            outf(o, "    http-request set-header anthropic-version 2023-06-01 if !{ "
                    "req.hdr(anthropic-version) -m found }\n");
        } else {
            outf(o, "    http-request set-header Authorization \"Bearer %%[env(%s)]\"\n",
                 p->api_key_env);
            outf(o, "    http-request del-header x-api-key\n");
        }
    }
    outf(o, "    server %s ", p->name);
    out_host(o, p->host);
    outf(o, ":%u", p->port);
    if (p->tls) {
        outf(o, " ssl verify required ca-file @system-ca");
        if (!is_ip_literal(p->host))
            outf(o, " sni str(%s)", p->host);
        outf(o, " alpn http/1.1");
    }
    if (needs_dns(p->host))
        outf(o, " init-addr last,libc,none resolvers lr_dns");
    outf(o, "\n\n");
}

/* Health checks of the agent's two listeners. Once a check found the agent gone (killed,
 * restarting), HAProxy checks every 250 ms and one success brings the server back: a
 * restarted agent serves again within a second, not after rise x inter (4 s by default). */
#define AGENT_CHECK "check inter 2s downinter 250ms rise 1"

/* One of the agent's listeners as a server: its unix socket when agent.local_sockets (no
 * TCP/IP stack on the way: less CPU per request on both sides), else its TCP address. */
static void out_agent_server(struct out *o, const char *name, const char *bind,
                             const char *unix_path, const char *fall)
{
    outf(o, "    server %s ", name);
    if (unix_path) {
        outf(o, "unix@%s " AGENT_CHECK " %s\n\n", unix_path, fall);
        return;
    }
    out_connect_addr(o, bind);
    outf(o, " " AGENT_CHECK " %s%s\n\n", fall,
         bind_needs_dns(bind) ? " init-addr last,libc,none resolvers lr_dns" : "");
}

/* Everything a boltin fleet loads with an extra -f: the backends and their helpers. */
static void out_backends(struct out *o, const struct lr_config *c, const struct render_paths *p)
{
    out_resolvers(o, c);

    outf(o, "# Counts requests the agent did not answer (down, slow, error).\n"
            "backend lr_spoe_errors\n"
            "    stick-table type integer size 1 store gpc0\n"
            "\n");

    outf(o, "backend %s\n", LR_SPOA_BACKEND);
    outf(o, "    mode tcp\n"
            "    balance roundrobin\n"
            "    option spop-check\n"
            "    timeout connect 1s\n"
            "    timeout server 30s\n");
    out_agent_server(o, "agent", c->agent.spoa_bind, p->spoa_socket, "fall 2");

    outf(o, "backend %s\n", LR_ENGINE_BACKEND);
    outf(o, "    mode http\n"
            "    http-reuse always\n"
            "    option http-no-delay\n"
            "    option httpchk GET /healthz\n"
            "    http-check expect status 200\n");
    out_agent_server(o, "engine", c->agent.engine_bind, p->engine_socket, "fall 3");

    for (size_t i = 0; i < c->n_providers; i++)
        if (c->providers[i].enabled)
            out_provider_backend(o, &c->providers[i]);
}

/* Sets route/provider/backend for requests matching `guard` (the agent did not answer,
 * and in boltin mode the request is LLM traffic) and one of `terms` (ACL expressions; none
 * means always). The backend is set last: once it is set, lr_answered holds and later
 * lines of the chain no longer apply. */
static void out_static_target(struct out *o, const char *guard, const char *const *terms,
                              size_t n_terms, const struct cfg_provider *p)
{
    char cond[256];
    size_t off = 0;
    if (n_terms == 0)
        off = (size_t)snprintf(cond, sizeof(cond), "%s", guard);
    for (size_t i = 0; i < n_terms && off < sizeof(cond); i++)
        off += (size_t)snprintf(cond + off, sizeof(cond) - off, "%s%s %s", i ? " || " : "", guard,
                                terms[i]);
    const char *pfx = "    http-request set-var(txn." LR_SPOE_VAR_PREFIX ".";
    if (!p) {
        outf(o, "%s" LR_VAR_ROUTE ") str(engine) if %s\n", pfx, cond);
        outf(o, "%s" LR_VAR_BACKEND ") str(" LR_ENGINE_BACKEND ") if %s\n", pfx, cond);
        return;
    }
    outf(o, "%s" LR_VAR_ROUTE ") str(bypass) if %s\n", pfx, cond);
    outf(o, "%s" LR_VAR_PROVIDER ") str(%s) if %s\n", pfx, p->name, cond);
    outf(o, "%s" LR_VAR_BACKEND ") str(" LR_PROVIDER_BACKEND_PREFIX "%s) if %s\n", pfx, p->name,
         cond);
}

/* The boltin scope ACLs (a request of the fleet's frontend is LLM traffic when both hold;
 * an absent one always holds), shared by the snippet and the SPOE message condition.
 * Returns the condition naming them ("lr_llm_host lr_llm_path", "" for everything). */
static const char *out_scope_acls(struct out *o, const struct lr_config *c)
{
    if (c->boltin.n_hosts) {
        outf(o, "    acl lr_llm_host req.hdr(host),field(1,:) -i");
        for (size_t i = 0; i < c->boltin.n_hosts; i++)
            outf(o, " %s", c->boltin.hosts[i]);
        outf(o, "\n");
    }
    if (c->boltin.n_path_prefixes) {
        outf(o, "    acl lr_llm_path path_beg");
        for (size_t i = 0; i < c->boltin.n_path_prefixes; i++)
            outf(o, " %s", c->boltin.path_prefixes[i]);
        outf(o, "\n");
    }
    if (c->boltin.n_hosts && c->boltin.n_path_prefixes)
        return "lr_llm_host lr_llm_path";
    if (c->boltin.n_hosts)
        return "lr_llm_host";
    if (c->boltin.n_path_prefixes)
        return "lr_llm_path";
    return "";
}

/* Anthropic namespace or Anthropic headers: two OR terms of one static chain step. */
static const char *const anthropic_terms[] = {"lr_anthropic_ns", "lr_anthropic_hdr"};

/* The frontend rules shared by standalone and boltin: SPOE filter, ACLs mirroring the
 * classifier, the failure counting, the static fallback (or the 503), the whitelist map.
 * In boltin mode every rule is also conditioned on lr_llm, so the fleet's other traffic
 * is neither classified nor counted nor routed here. */
static void out_frontend_rules(struct out *o, const struct lr_config *c,
                               const struct render_paths *p, enum render_mode mode)
{
    static const char *const defaults[] = {LR_DEFAULT_INTERCEPT_PATHS};
    bool boltin = mode == RENDER_BOLTIN;
    const char *guard = boltin ? "lr_llm !lr_answered" : "!lr_answered";

    outf(o, "    filter spoe engine %s config %s\n", LR_SPOE_ENGINE, p->spoe_conf);
    outf(o, "\n");
    if (boltin) {
        outf(o, "    # LLM traffic: the same test as the SPOE message's condition.\n");
        const char *scope = out_scope_acls(o, c);
        outf(o, "    http-request set-var(txn.lr_llm) bool(true)%s%s\n", scope[0] ? " if " : "",
             scope);
        outf(o, "    acl lr_llm var(txn.lr_llm) -m bool\n");
    }
    /* Referencing every variable the agent sets also registers its name: HAProxy 2.6's
     * SPOE only sets variables already known from the configuration. */
    outf(o, "    acl lr_answered var(txn.%s.%s) -m found\n", LR_SPOE_VAR_PREFIX, LR_VAR_BACKEND);
    outf(o, "    acl lr_route_set var(txn.%s.%s) -m found\n", LR_SPOE_VAR_PREFIX, LR_VAR_ROUTE);
    outf(o, "    acl lr_provider_set var(txn.%s.%s) -m found\n", LR_SPOE_VAR_PREFIX,
         LR_VAR_PROVIDER);
    outf(o, "    acl lr_spoe_error var(txn.%s.error) -m found\n", LR_SPOE_VAR_PREFIX);
    outf(o, "    acl lr_intercept path");
    for (size_t i = 0; i < LR_DEFAULT_INTERCEPT_COUNT; i++)
        outf(o, " %s", defaults[i]);
    for (size_t i = 0; i < c->n_extra_paths; i++)
        outf(o, " %s", c->extra_paths[i]);
    outf(o, "\n");
    outf(o, "    acl lr_anthropic_ns path_beg /v1/messages/\n");
    outf(o, "    acl lr_anthropic_hdr req.hdr_cnt(anthropic-version) gt 0\n");
    outf(o, "    acl lr_anthropic_hdr req.hdr_cnt(x-api-key) gt 0\n");
    outf(o, "\n");
    outf(o, "    # The agent did not answer: count it (table lr_spoe_errors, gpc0).\n");
    outf(o, "    http-request track-sc2 int(1) table lr_spoe_errors if %s\n", guard);
    outf(o, "    http-request sc-inc-gpc0(2) if %s\n", guard);

    if (c->haproxy.failure_mode == CFG_FAILURE_REJECT) {
        outf(o,
             "    http-request return status 503 content-type application/json string "
             "'{\"error\":{\"message\":\"LunaRoute agent unavailable\",\"type\":"
             "\"service_unavailable\",\"code\":503}}' if %s\n",
             guard);
    } else {
        outf(o, "    # Static fallback, same rules as the agent's classifier; first match "
                "wins.\n");
        static const char *const intercept[] = {"lr_intercept"};
        out_static_target(o, guard, intercept, 1, NULL);
        if (!c->bypass_enabled) {
            out_static_target(o, guard, NULL, 0, NULL);
        } else if (!c->bypass_provider || strcmp(c->bypass_provider, "auto") == 0) {
            const struct cfg_provider *a = pick_auto(c, CFG_PROVIDER_ANTHROPIC);
            const struct cfg_provider *oa = pick_auto(c, CFG_PROVIDER_OPENAI);
            if (a != oa)
                out_static_target(o, guard, anthropic_terms, 2, a);
            out_static_target(o, guard, NULL, 0, oa);
        } else {
            const struct cfg_provider *named = find_enabled(c, c->bypass_provider);
            if (named && named->type != CFG_PROVIDER_ANTHROPIC) {
                const struct cfg_provider *a = pick_of_type(c, CFG_PROVIDER_ANTHROPIC);
                if (a)
                    out_static_target(o, guard, anthropic_terms, 1, a);
            }
            out_static_target(o, guard, NULL, 0, named);
        }
    }
    outf(o, "\n");
    /* Whitelist: an unexpected value can never select lr_spoa or a foreign backend. */
    outf(o, "    use_backend %%[var(txn.%s.%s),map(%s,%s)]%s\n", LR_SPOE_VAR_PREFIX, LR_VAR_BACKEND,
         p->routes_map, LR_ENGINE_BACKEND, boltin ? " if lr_llm" : "");
}

char *render_haproxy_cfg(const struct lr_config *c, const struct render_paths *p)
{
    struct out o = {0};

    outf(&o, "# Rendered by lunaroute-control from ");
    out_source(&o, c);
    outf(&o, ". Do not edit: re-render instead.\n");
    outf(&o, "global\n");
    outf(&o, "    maxconn %u\n", c->haproxy.maxconn);
    outf(&o, "    stats socket %s/haproxy.sock mode 600 level admin\n", p->run_dir);
    outf(&o, "    log stderr format short local0 notice\n");
    outf(&o, "    hard-stop-after 30s\n");
    outf(&o, "\n");
    /* idle-close-on-response: on a reload the old worker does not close its idle client
     * connections at once (a pooled client could be sending on one at that very moment: a
     * broken pipe, a failed request); it answers the next request on each with "Connection:
     * close", bounded by hard-stop-after. */
    outf(&o, "defaults\n"
             "    mode http\n"
             "    log global\n"
             "    option dontlognull\n"
             "    option idle-close-on-response\n"
             "    timeout connect 10s\n"
             "    timeout client 600s\n"
             "    timeout server 600s\n"
             "    timeout http-request 30s\n"
             "    timeout http-keep-alive 60s\n"
             "    timeout queue 10s\n");
    outf(&o, "\n");

    outf(&o, "frontend lr_front\n");
    outf(&o, "    bind %s\n", c->haproxy.bind);
    /* The variables in the log line also make HAProxy 2.6 know their names. */
    outf(&o,
         "    log-format \"%%ci:%%cp [%%tr] %%ft %%b/%%s %%TR/%%Tw/%%Tc/%%Tr/%%Ta %%ST %%B "
         "%%tsc %%ac/%%fc/%%bc/%%sc/%%rc %%sq/%%bq %%HM %%{+Q}HPO"
         " route=%%[var(txn.%s.%s)] backend=%%[var(txn.%s.%s)]"
         " provider=%%[var(txn.%s.%s)] spoe_error=%%[var(txn.%s.error)]\"\n",
         LR_SPOE_VAR_PREFIX, LR_VAR_ROUTE, LR_SPOE_VAR_PREFIX, LR_VAR_BACKEND, LR_SPOE_VAR_PREFIX,
         LR_VAR_PROVIDER, LR_SPOE_VAR_PREFIX);
    out_frontend_rules(&o, c, p, RENDER_STANDALONE);
    outf(&o, "    default_backend %s\n", LR_ENGINE_BACKEND);
    outf(&o, "\n");

    outf(&o, "frontend lr_stats\n");
    outf(&o, "    bind %s\n", c->haproxy.stats_bind);
    outf(&o, "    no log\n"
             "    http-request use-service prometheus-exporter if { path /metrics }\n"
             "    stats enable\n"
             "    stats uri /stats\n"
             "    stats refresh 10s\n"
             "\n");

    out_backends(&o, c, p);
    return out_finish(&o);
}

/* Boltin: backends only, loaded by the fleet with an extra -f. */
char *render_backends_cfg(const struct lr_config *c, const struct render_paths *p)
{
    struct out o = {0};
    outf(&o, "# LunaRoute backends, rendered by lunaroute-control from ");
    out_source(&o, c);
    outf(&o, ".\n# Load next to your own configuration: haproxy -f haproxy.cfg -f "
             "lunaroute-backends.cfg\n\n");
    out_backends(&o, c, p);
    return out_finish(&o);
}

char *render_frontend_snippet(const struct lr_config *c, const struct render_paths *p)
{
    struct out o = {0};
    outf(&o, "    # ---- LunaRoute: paste into your HTTP frontend (rendered by lunaroute-control "
             "from ");
    out_source(&o, c);
    outf(&o, ").\n"
             "    # Put these lines before your own use_backend rules. Only LLM traffic (acl "
             "lr_llm:\n"
             "    # boltin.hosts and boltin.path_prefixes) is classified and routed here; "
             "every other\n"
             "    # request is left to your own rules. Uses sticky counter sc2 for LLM "
             "requests only.\n"
             "    # Needs lunaroute-backends.cfg loaded with an extra -f.\n");
    out_frontend_rules(&o, c, p, RENDER_BOLTIN);
    outf(&o, "    # ---- end of LunaRoute\n");
    return out_finish(&o);
}

char *render_spoe_conf(const struct lr_config *c, const struct render_paths *p,
                       enum render_mode mode)
{
    (void)p;
    struct out o = {0};
    outf(&o, "# Rendered by lunaroute-control. Do not edit: re-render instead.\n");
    outf(&o, "[%s]\n", LR_SPOE_ENGINE);
    outf(&o, "spoe-agent %s\n", LR_SPOE_AGENT);
    outf(&o, "    messages %s\n", LR_SPOE_MESSAGE);
    outf(&o, "    option var-prefix %s\n", LR_SPOE_VAR_PREFIX);
    outf(&o, "    option set-on-error error\n");
    outf(&o, "    option pipelining\n");
    outf(&o, "    timeout hello 500ms\n"
             "    timeout idle 30s\n"
             "    timeout processing 200ms\n");
    outf(&o, "    use-backend %s\n", LR_SPOA_BACKEND);
    /* SPOE would log every exchange at notice level: a line built and written per request.
     * Only the failed ones (warning) are logged. */
    outf(&o, "    option dontlog-normal\n");
    outf(&o, "    log global\n");
    outf(&o, "\n");
    /* Never the body and never a credential value: only counts and the auth scheme. */
    outf(&o, "spoe-message %s\n", LR_SPOE_MESSAGE);
    outf(&o,
         "    args %s=method %s=path %s=req.hdr_cnt(anthropic-version) "
         "%s=req.hdr_cnt(x-api-key) %s=http_auth_type,lower\n",
         LR_ARG_METHOD, LR_ARG_PATH, LR_ARG_ANTHROPIC_VERSION, LR_ARG_X_API_KEY,
         LR_ARG_AUTH_SCHEME);
    if (mode == RENDER_BOLTIN) {
        /* Only LLM traffic of the fleet's frontend is sent to the agent. */
        const char *scope = out_scope_acls(&o, c);
        outf(&o, "    event on-frontend-http-request%s%s\n", scope[0] ? " if " : "", scope);
    } else {
        outf(&o, "    event on-frontend-http-request\n");
    }
    return out_finish(&o);
}

char *render_routes_map(const struct lr_config *c)
{
    struct out o = {0};
    outf(&o, "%s %s\n", LR_ENGINE_BACKEND, LR_ENGINE_BACKEND);
    for (size_t i = 0; i < c->n_providers; i++)
        if (c->providers[i].enabled)
            outf(&o, "%s%s %s%s\n", LR_PROVIDER_BACKEND_PREFIX, c->providers[i].name,
                 LR_PROVIDER_BACKEND_PREFIX, c->providers[i].name);
    return out_finish(&o);
}

/* ---- agent.json ---------------------------------------------------------------------- */

/* json_object_set_new that remembers a failure (jansson returns -1 on NULL values too). */
static void jset(json_t *obj, const char *key, json_t *val, bool *failed)
{
    if (json_object_set_new(obj, key, val) < 0)
        *failed = true;
}

static void jappend(json_t *arr, json_t *val, bool *failed)
{
    if (json_array_append_new(arr, val) < 0)
        *failed = true;
}

static json_t *jstr(const char *s)
{
    return json_string(s ? s : "");
}

static json_t *targets_json(const struct cfg_target *t, size_t n, bool *failed)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *o = json_object();
        if (o) {
            jset(o, "provider", jstr(t[i].provider), failed);
            jset(o, "weight", json_integer(t[i].weight), failed);
        }
        jappend(arr, o, failed);
    }
    return arr;
}

static json_t *routing_json(const struct lr_config *c, bool *failed)
{
    json_t *routing = json_object();
    json_t *rules = json_array();
    for (size_t i = 0; rules && i < c->n_rules; i++) {
        const struct cfg_rule *r = &c->rules[i];
        json_t *o = json_object();
        if (o) {
            jset(o, "name", jstr(r->name), failed);
            jset(o, "model_pattern", jstr(r->model_pattern), failed);
            jset(o, "priority", json_integer(r->priority), failed);
            jset(o, "strategy", jstr(strategy_str(r->strategy)), failed);
            jset(o, "primary", r->primary ? json_string(r->primary) : json_null(), failed);
            json_t *fb = json_array();
            for (size_t k = 0; fb && k < r->n_fallbacks; k++)
                jappend(fb, jstr(r->fallbacks[k].provider), failed);
            jset(o, "fallbacks", fb, failed);
            jset(o, "targets", targets_json(r->targets, r->n_targets, failed), failed);
            jset(o, "alternatives", targets_json(r->alternatives, r->n_alternatives, failed),
                 failed);
        }
        jappend(rules, o, failed);
    }
    if (!routing) {
        json_decref(rules);
        *failed = true;
        return NULL;
    }
    jset(routing, "rules", rules, failed);

    json_t *cb = json_object();
    if (cb) {
        jset(cb, "failure_threshold", json_integer(c->circuit_breaker.failure_threshold), failed);
        jset(cb, "success_threshold", json_integer(c->circuit_breaker.success_threshold), failed);
        jset(cb, "open_secs", json_integer(c->circuit_breaker.open_secs), failed);
    }
    jset(routing, "circuit_breaker", cb, failed);

    json_t *psn = json_object();
    if (psn) {
        jset(psn, "enabled", json_boolean(c->provider_switch_notification.enabled), failed);
        jset(psn, "default_message",
             c->provider_switch_notification.default_message
                 ? json_string(c->provider_switch_notification.default_message)
                 : json_null(),
             failed);
    }
    jset(routing, "provider_switch_notification", psn, failed);
    return routing;
}

char *render_agent_json(const struct lr_config *c, const struct render_paths *p)
{
    bool failed = false;
    json_t *root = json_object();
    if (!root)
        return NULL;

    char admin[PATH_MAX];
    if (c->agent.admin_socket && c->agent.admin_socket[0])
        snprintf(admin, sizeof(admin), "%s", c->agent.admin_socket);
    else if (p->admin_socket && p->admin_socket[0])
        snprintf(admin, sizeof(admin), "%s", p->admin_socket);
    else
        snprintf(admin, sizeof(admin), "%s/agent.sock", p->run_dir);

    jset(root, "version", json_integer(1), &failed);
    jset(root, "spoa_bind", jstr(c->agent.spoa_bind), &failed);
    jset(root, "engine_bind", jstr(c->agent.engine_bind), &failed);
    jset(root, "admin_socket", json_string(admin), &failed);
    if (p->spoa_socket)
        jset(root, "spoa_socket", json_string(p->spoa_socket), &failed);
    if (p->engine_socket)
        jset(root, "engine_socket", json_string(p->engine_socket), &failed);
    jset(root, "threads", json_integer(c->agent.threads), &failed);
    jset(root, "log_level", jstr(c->log_level ? c->log_level : "info"), &failed);
    jset(root, "api_dialect", json_string(dialect_str(c->dialect)), &failed);
    jset(root, "engine_backend", json_string(LR_ENGINE_BACKEND), &failed);

    json_t *bypass = json_object();
    if (bypass) {
        jset(bypass, "enabled", json_boolean(c->bypass_enabled), &failed);
        jset(bypass, "provider", jstr(c->bypass_provider ? c->bypass_provider : "auto"), &failed);
    }
    jset(root, "bypass", bypass, &failed);

    json_t *intercept = json_object();
    json_t *extra = json_array();
    for (size_t i = 0; extra && i < c->n_extra_paths; i++)
        jappend(extra, jstr(c->extra_paths[i]), &failed);
    if (intercept)
        jset(intercept, "extra_paths", extra, &failed);
    else
        json_decref(extra);
    jset(root, "intercept", intercept, &failed);

    json_t *providers = json_array();
    for (size_t i = 0; providers && i < c->n_providers; i++) {
        const struct cfg_provider *pr = &c->providers[i];
        json_t *o = json_object();
        if (o) {
            char backend[256];
            snprintf(backend, sizeof(backend), "%s%s", LR_PROVIDER_BACKEND_PREFIX, pr->name);
            jset(o, "name", jstr(pr->name), &failed);
            jset(o, "type", json_string(ptype_str(pr->type)), &failed);
            jset(o, "enabled", json_boolean(pr->enabled), &failed);
            jset(o, "base_url", jstr(pr->base_url), &failed);
            jset(o, "backend", json_string(backend), &failed);
            /* The variable's NAME only; never pr->api_key. */
            jset(o, "api_key_env", has_key(pr) ? json_string(pr->api_key_env) : json_null(),
                 &failed);
            jset(o, "timeout_secs", json_integer(pr->timeout_secs), &failed);
            jset(o, "connect_timeout_secs", json_integer(pr->connect_timeout_secs), &failed);
            jset(o, "max_retries", json_integer(pr->max_retries), &failed);
        }
        jappend(providers, o, &failed);
    }
    jset(root, "providers", providers, &failed);

    jset(root, "routing", routing_json(c, &failed), &failed);

    json_t *hs = json_object();
    if (hs) {
        jset(hs, "max_request_body_bytes",
             json_integer((json_int_t)c->http_server.max_request_body_bytes), &failed);
        jset(hs, "sse_keepalive_interval_secs",
             json_integer(c->http_server.sse_keepalive_interval_secs), &failed);
    }
    jset(root, "http_server", hs, &failed);

    json_t *tr = json_object();
    if (tr)
        jset(tr, "default_max_tokens", json_integer(c->translation.default_max_tokens), &failed);
    jset(root, "translation", tr, &failed);

    char *text = NULL;
    if (!failed)
        text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text)
        return NULL;
    /* json_dumps memory belongs to jansson's allocator (malloc by default); hand back a
     * malloc'd copy with a trailing newline. */
    size_t n = strlen(text);
    char *res = malloc(n + 2);
    if (res) {
        memcpy(res, text, n);
        res[n] = '\n';
        res[n + 1] = 0;
    }
    free(text);
    return res;
}

/* ---- writing ------------------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* mkdir -p; the last component gets `mode`, intermediate ones 0755 (like mkdir -p). */
static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp))
        return -ENAMETOOLONG;
    memcpy(tmp, path, n + 1);
    while (n > 1 && tmp[n - 1] == '/')
        tmp[--n] = 0;
    for (char *s = tmp + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (stat(tmp, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    return 0;
}

static int path_join(char *buf, size_t len, const char *dir, const char *name)
{
    int n = snprintf(buf, len, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Characters that would break the HAProxy configuration lines the directory appears in
 * (map(<file>,<default>), "filter ... config <file>", "stats socket <file>"). */
static bool path_is_cfg_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || strchr("#\"'\\,()%$", *s))
            return false;
    return true;
}

int render_write_file(const char *dir, const char *name, const char *text, mode_t mode, char *err,
                      size_t errlen)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path) ||
        snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%ld", dir, name, (long)getpid()) >=
            (int)sizeof(tmp)) {
        set_err(err, errlen, "%s/%s: path too long", dir, name);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        set_err(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t len = strlen(text), off = 0;
    int rc = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = -errno;
            break;
        }
        off += (size_t)w;
    }
    if (rc == 0 && fchmod(fd, mode) < 0) /* umask or a leftover temp file */
        rc = -errno;
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        set_err(err, errlen, "%s: %s", path, strerror(-rc));
        unlink(tmp);
        return -1;
    }
    return 0;
}

struct rfile {
    const char *name;
    char *text;
    mode_t mode;
};

bool render_local_sockets(const struct lr_config *c, enum render_mode mode)
{
    return c->agent.local_sockets_set ? c->agent.local_sockets : mode == RENDER_STANDALONE;
}

int render_write_all(const struct lr_config *c, enum render_mode mode, const char *out_dir,
                     char *err, size_t errlen)
{
    if ((unsigned)mode >= RENDER_MODE_COUNT) {
        set_err(err, errlen, "unknown render mode");
        return -1;
    }
    int rc = mkdir_p(out_dir, 0700);
    if (rc < 0) {
        set_err(err, errlen, "%s: %s", out_dir, strerror(-rc));
        return -1;
    }
    char dir[PATH_MAX];
    if (!realpath(out_dir, dir)) {
        set_err(err, errlen, "%s: %s", out_dir, strerror(errno));
        return -1;
    }
    if (!path_is_cfg_safe(dir)) {
        set_err(err, errlen,
                "%s: directory path contains characters HAProxy configuration cannot carry "
                "(space, quote, comma, parenthesis, '#', '%%', '$' or '\\')",
                dir);
        return -1;
    }
    char spoe[PATH_MAX], map[PATH_MAX], msock[PATH_MAX], admin[PATH_MAX];
    char ssock[PATH_MAX], esock[PATH_MAX];
    if (path_join(spoe, sizeof(spoe), dir, "spoe-lunaroute.conf") < 0 ||
        path_join(map, sizeof(map), dir, "routes.map") < 0 ||
        path_join(msock, sizeof(msock), dir, "haproxy-master.sock") < 0 ||
        path_join(admin, sizeof(admin), dir, "agent.sock") < 0 ||
        path_join(ssock, sizeof(ssock), dir, "spoa.sock") < 0 ||
        path_join(esock, sizeof(esock), dir, "engine.sock") < 0) {
        set_err(err, errlen, "%s: path too long", dir);
        return -1;
    }
    bool local = render_local_sockets(c, mode);
    if (local && strlen(esock) > LR_UNIX_PATH_MAX) {
        set_err(err, errlen,
                "%s: too long for the agent's unix sockets (%s is %zu bytes, at most %d): "
                "use a shorter run_dir, or agent.local_sockets: false",
                dir, esock, strlen(esock), LR_UNIX_PATH_MAX);
        return -1;
    }
    struct render_paths p = {
        .run_dir = dir,
        .spoe_conf = spoe,
        .routes_map = map,
        .master_sock = msock,
        .admin_socket = admin,
        .spoa_socket = local ? ssock : NULL,
        .engine_socket = local ? esock : NULL,
    };

    struct rfile files[5] = {{0}};
    size_t n = 0;
    if (mode == RENDER_STANDALONE) {
        files[n++] = (struct rfile){"haproxy.cfg", render_haproxy_cfg(c, &p), 0644};
    } else {
        files[n++] = (struct rfile){"lunaroute-backends.cfg", render_backends_cfg(c, &p), 0644};
        files[n++] = (struct rfile){"frontend-snippet.cfg", render_frontend_snippet(c, &p), 0644};
    }
    files[n++] = (struct rfile){"spoe-lunaroute.conf", render_spoe_conf(c, &p, mode), 0644};
    files[n++] = (struct rfile){"routes.map", render_routes_map(c), 0644};
    files[n++] = (struct rfile){"agent.json", render_agent_json(c, &p), 0600};

    int ret = 0;
    for (size_t i = 0; i < n; i++) {
        if (!files[i].text) {
            set_err(err, errlen, "%s: out of memory while rendering", files[i].name);
            ret = -1;
            break;
        }
    }
    /* The referenced files first, the main configuration last, so a reader that follows
     * the references never sees a half-rendered set. */
    for (size_t i = n; ret == 0 && i-- > 0;)
        if (render_write_file(dir, files[i].name, files[i].text, files[i].mode, err, errlen) < 0)
            ret = -1;
    if (ret == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(files[i].text);
    return ret;
}
