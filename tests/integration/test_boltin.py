"""Bolt-on mode (DESIGN §7, issue 4): `render --mode boltin` dropped into an existing fleet.

The test writes a fleet-style haproxy.cfg of its own (global/defaults, one frontend with its
own ACLs and rules, two unrelated app backends), pastes the rendered frontend-snippet.cfg into
that frontend before the fleet's use_backend rules, loads lunaroute-backends.cfg with an extra
-f, runs the real agent next to it, and proves that:
  * `haproxy -c -f fleet.cfg -f lunaroute-backends.cfg` accepts it;
  * LLM paths are classified and routed (bypass to the provider mocks, intercepted paths to
    the engine listener);
  * the fleet's other traffic (/app1/..., Host app2.local, the fleet's own /healthz) reaches
    the fleet's apps unchanged, is never sent to the agent and never touches a LunaRoute
    backend;
  * with boltin.hosts set, only that Host is LLM traffic.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

# One log line per request: what the fleet's own rules and LunaRoute decided. A request the
# agent was asked about always has txn.lunaroute.route set (the agent answers every NOTIFY);
# txn.lr_llm is the snippet's own scope flag.
LOG_FORMAT = ("lrfleet uri=%HU host=%[var(txn.fleet_host)] backend=%b route=%[var(txn.lunaroute.route)]"
              " llm=%[var(txn.lr_llm)] spoe_error=%[var(txn.lunaroute.error)]")


def fleet_cfg(port, run_dir, snippet, app1, app2):
    return """global
    maxconn 200
    stats socket {run}/fleet.sock mode 600 level admin
    log stderr format raw local0 info

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fleet_www
    bind 127.0.0.1:{port}
    log-format "{logfmt}"
    acl is_app1 path_beg /app1
    acl is_app2 req.hdr(host),field(1,:) -i app2.local
    acl fleet_health path /healthz
    http-request set-header X-Fleet seen
    http-request set-var(txn.fleet_host) req.hdr(host)
{snippet}    use_backend app2 if is_app2
    use_backend app1 if is_app1 || fleet_health
    default_backend app1

backend app1
    server a1 {app1}

backend app2
    server a2 {app2}
""".format(run=run_dir, port=port, logfmt=LOG_FORMAT, snippet=snippet, app1=app1, app2=app2)


def need(cond, msg):
    if not cond:
        raise AssertionError(msg)


def run(argv, env=None, timeout=30):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=lrtest.child_env(env), stdin=subprocess.DEVNULL)


class Fleet:
    """The fleet's HAProxy with the LunaRoute fragment, and the agent beside it."""

    def __init__(self, tc, boltin):
        self.dir = tempfile.mkdtemp(prefix="lrtest-boltin-")
        os.chmod(self.dir, 0o700)
        self.failed = False
        self.procs = []
        self.openai = tc.class_mock("openai")
        self.anthropic = tc.class_mock("anthropic")
        self.app1 = tc.class_mock("app1")
        self.app2 = tc.class_mock("app2")
        self.boltin = boltin

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def start(self, attempts=3):
        for attempt in range(attempts):
            ports = set()
            while len(ports) < 4:
                ports.add(lrtest.free_port())
            self.port, stats, self.spoa, self.engine = sorted(ports)
            cfg = {
                "providers": {"openai": {"base_url": self.openai.url},
                              "anthropic": {"base_url": self.anthropic.url}},
                "bypass": {"enabled": True, "provider": "auto"},
                # haproxy.* is not used by boltin; keep it off the ports in use.
                "haproxy": {"bind": "127.0.0.1:%d" % self.port,
                            "stats_bind": "127.0.0.1:%d" % stats},
                "agent": {"spoa_bind": "127.0.0.1:%d" % self.spoa,
                          "engine_bind": "127.0.0.1:%d" % self.engine},
                "run_dir": self.dir,
                "boltin": self.boltin,
            }
            with open(self.path("lunaroute.yaml"), "w") as f:
                f.write(lrtest.to_yaml(cfg))
            r = run([lrtest.bin_path("lunaroute-control"), "render", "--mode", "boltin",
                     "--config", self.path("lunaroute.yaml"), "--out", self.dir])
            need(r.returncode == 0, r.stdout + r.stderr)
            for f in ("lunaroute-backends.cfg", "frontend-snippet.cfg", "spoe-lunaroute.conf",
                      "routes.map", "agent.json"):
                need(os.path.exists(self.path(f)), f)
            with open(self.path("frontend-snippet.cfg")) as f:
                snippet = f.read()
            with open(self.path("fleet.cfg"), "w") as f:
                f.write(fleet_cfg(self.port, self.dir, snippet, self.app1.host_port,
                                  self.app2.host_port))
            chk = run([lrtest.HAPROXY, "-c", "-f", self.path("fleet.cfg"),
                       "-f", self.path("lunaroute-backends.cfg")])
            self.check_output = chk.stdout + chk.stderr
            need(chk.returncode == 0, "haproxy -c rejected the fleet:\n" + self.check_output)
            self.agent = lrtest.Proc("agent", [lrtest.bin_path("lunaroute-agent"), "--settings",
                                               self.path("agent.json")], self.dir,
                                     lrtest.child_env())
            self.haproxy = lrtest.Proc("haproxy", [lrtest.HAPROXY, "-W", "-f",
                                                   self.path("fleet.cfg"), "-f",
                                                   self.path("lunaroute-backends.cfg")],
                                       self.dir, lrtest.child_env())
            self.procs = [self.agent, self.haproxy]
            if self.wait_ready():
                return
            logs = self.logs().lower()
            if attempt + 1 < attempts and any(p in logs for p in lrtest.ADDR_IN_USE_PATTERNS):
                self.stop()
                continue
            self.failed = True
            raise AssertionError("fleet not ready (dir %s)\n%s" % (self.dir, self.logs()))

    def show_stat(self):
        try:
            return lrtest.parse_show_stat(lrtest.haproxy_cmd(self.path("fleet.sock"),
                                                              "show stat"))
        except OSError:
            return []

    def row(self, px, sv):
        for r in self.show_stat():
            if r.get("pxname") == px and r.get("svname") == sv:
                return r
        return None

    def wait_ready(self):
        def ok():
            if any(p.poll() is not None for p in self.procs):
                return None
            if not (lrtest.port_accepts(self.port) and lrtest.port_accepts(self.engine)):
                return False
            r = self.row("lr_spoa", "agent")
            return bool(r) and r.get("status", "").startswith("UP") and \
                "L7OK" in r.get("check_status", "")
        return lrtest.wait_until(ok, lrtest.READY_TIMEOUT, 0.1)

    def backend_sessions(self):
        """Total sessions per backend (health checks are not counted)."""
        return {r["pxname"]: int(r.get("stot") or 0) for r in self.show_stat()
                if r.get("svname") == "BACKEND"}

    def logs(self):
        out = []
        for p in self.procs:
            for fn in (p.stdout_path, p.stderr_path):
                t = lrtest.read_text(fn)
                if t.strip():
                    out.append("---- %s ----\n%s" % (os.path.basename(fn), lrtest.tail(t, 60)))
        return "\n".join(out)

    def log_lines(self):
        return [l for l in lrtest.read_text(self.haproxy.stderr_path).splitlines()
                if "lrfleet " in l]

    def log_for(self, uri, host=None):
        """The fleet's log line of the request to uri (and host), waiting for it."""
        def find():
            for l in self.log_lines():
                if (" uri=%s " % uri) in l and (host is None or (" host=%s " % host) in l):
                    return l
            return None
        line = lrtest.wait_until(find, 5.0)
        need(line, "no log line for %s in:\n%s" % (uri, "\n".join(
            self.log_lines())))
        return line

    def http(self, method, path, headers=None, body=None, host=None):
        h = list(headers or [])
        if host:
            h.append(("Host", host))
        return lrtest.http(self.port, method, path, h, body)

    def stop(self):
        problems = []
        for p in self.procs:
            rc, forced = p.stop()
            if p is self.agent and (forced or rc != 0):
                problems.append("agent exited %s%s" % (rc, " (killed)" if forced else ""))
        for p in self.procs:
            found = lrtest.sanitizer_findings(lrtest.read_text(p.stderr_path))
            if found:
                problems.append("sanitizer report in %s: %s" % (p.name, found[:5]))
        if problems:
            self.failed = True
        return problems

    def finish(self):
        if self.failed or lrtest.KEEP:
            lrtest.log("kept boltin dir: %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class BoltinCase(lrtest.LRTestCase):
    BOLTIN = {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fleet = Fleet(cls, cls.BOLTIN)
        try:
            cls.fleet.start()
        except BaseException:
            cls.fleet.failed = True
            cls.fleet.stop()
            cls.fleet.finish()
            raise

    @classmethod
    def tearDownClass(cls):
        problems = cls.fleet.stop()
        cls.fleet.finish()
        super().tearDownClass()
        if problems:
            raise AssertionError("teardown:\n%s\n%s" % ("\n".join(problems), cls.fleet.logs()))

    def setUp(self):
        for m in (self.fleet.openai, self.fleet.anthropic, self.fleet.app1, self.fleet.app2):
            m.clear()

    def assert_app_request(self, mock, method, path, client_headers):
        reqs = mock.wait_for(1)
        self.assertEqual(len(reqs), 1, "%s: %r" % (mock.name, reqs))
        req = reqs[0]
        self.assertEqual((req.method, req.path), (method, path))
        for k, v in client_headers:
            self.assertHeader(req, k, v)
        self.assertHeader(req, "X-Fleet", "seen")  # the fleet's own rule still ran
        return req


class BoltinPaths(BoltinCase):
    """Default scope: any host, paths under /v1/."""

    BOLTIN = {"path_prefixes": ["/v1/"]}

    def test_haproxy_check_and_names(self):
        self.assertNotIn("ALERT", self.fleet.check_output)
        with open(self.fleet.path("lunaroute-backends.cfg")) as f:
            be = f.read()
        # Every section LunaRoute adds to the fleet is lr_-prefixed.
        for kind, name in re.findall(r"^(backend|frontend|resolvers|listen|peers)\s+(\S+)",
                                     be, re.M):
            self.assertTrue(name.startswith("lr_"), "%s %s is not lr_-prefixed" % (kind, name))
        with open(self.fleet.path("frontend-snippet.cfg")) as f:
            snip = f.read()
        for name in re.findall(r"^\s*acl\s+(\S+)", snip, re.M):
            self.assertTrue(name.startswith("lr_"), "acl %s is not lr_-prefixed" % name)
        for scope, name in re.findall(r"set-var\((\w+)\.([\w.]+)\)", snip):
            self.assertTrue(name.startswith(("lr_", "lunaroute.")), name)
        with open(self.fleet.path("spoe-lunaroute.conf")) as f:
            self.assertIn("event on-frontend-http-request if lr_llm_path", f.read())

    def test_bypass_openai(self):
        r = self.fleet.http("POST", "/v1/embeddings?x=1", [("Content-Type", "application/json"),
                                                          ("Authorization", "Bearer client")],
                            b'{"model":"m","input":"hi"}')
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "openai")
        req = self.fleet.openai.wait_for(1)[0]
        self.assertEqual(req.target, "/v1/embeddings?x=1")
        self.assertHeader(req, "Authorization", "Bearer client")
        line = self.fleet.log_for("/v1/embeddings?x=1")
        self.assertIn("route=bypass", line)  # the agent answered
        self.assertIn("llm=1", line)
        self.assertIn("backend=lr_provider_openai", line)
        self.assertNoRequests(self.fleet.anthropic, self.fleet.app1, self.fleet.app2)

    def test_bypass_anthropic_namespace(self):
        r = self.fleet.http("POST", "/v1/messages/count_tokens",
                            [("anthropic-version", "2023-06-01"),
                             ("Content-Type", "application/json")], b'{"model":"c"}')
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "anthropic")
        self.assertEqual(self.fleet.anthropic.wait_for(1)[0].path, "/v1/messages/count_tokens")
        self.assertIn("backend=lr_provider_anthropic",
                      self.fleet.log_for("/v1/messages/count_tokens"))
        self.assertNoRequests(self.fleet.app1, self.fleet.app2)

    def test_intercepted_to_engine(self):
        before = self.fleet.backend_sessions()
        r = self.fleet.http("POST", "/v1/chat/completions", [("Content-Type",
                                                              "application/json")],
                            b'{"model":"gpt-x","messages":[]}')
        self.assertTrue(r.status < 600, r)
        line = self.fleet.log_for("/v1/chat/completions")
        self.assertIn("route=engine", line)
        self.assertIn("backend=lr_engine", line)
        after = self.fleet.backend_sessions()
        self.assertEqual(after.get("lr_engine", 0) - before.get("lr_engine", 0), 1,
                         (before, after))
        self.assertNoRequests(self.fleet.app1, self.fleet.app2)

    def test_fleet_apps_untouched(self):
        before = self.fleet.backend_sessions()
        hdrs = [("X-Client-Id", "abc123"), ("Authorization", "Bearer app-token"),
                ("anthropic-version", "2023-06-01")]
        r = self.fleet.http("GET", "/app1/x?q=1", hdrs)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "app1")
        req = self.assert_app_request(self.fleet.app1, "GET", "/app1/x", hdrs)
        self.assertEqual(req.target, "/app1/x?q=1")

        r = self.fleet.http("POST", "/v1/whatever", hdrs, b"payload", host="app2.local")
        self.assertEqual(r.status, 200, r)
        # Host app2.local, but a /v1/ path: with no boltin.hosts that is LLM traffic
        # (classified by its anthropic-version header).
        self.assertEqual(r.json()["mock"], "anthropic")
        self.fleet.anthropic.clear()

        r = self.fleet.http("PUT", "/profile", hdrs, b"body-bytes", host="app2.local")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "app2")
        req = self.assert_app_request(self.fleet.app2, "PUT", "/profile", hdrs)
        self.assertEqual(req.body, b"body-bytes")

        # The fleet's own /healthz: routed by the fleet to app1, not to the engine.
        r = self.fleet.http("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "app1")

        # Not one of them was sent to the agent (route would be set: the agent answers every
        # NOTIFY), none was counted as an agent failure, none touched a LunaRoute backend.
        for uri, host in (("/app1/x?q=1", None), ("/profile", "app2.local"),
                          ("/healthz", None)):
            line = self.fleet.log_for(uri, host)
            self.assertIn(" route=- ", line)
            self.assertIn(" llm=- ", line)
            self.assertIn(" spoe_error=-", line)
        after = self.fleet.backend_sessions()
        for be in after:
            if be.startswith("lr_"):
                want = 1 if be == "lr_provider_anthropic" else 0
                self.assertEqual(after[be] - before.get(be, 0), want,
                                 "%s: %r -> %r" % (be, before, after))
        table = lrtest.haproxy_cmd(self.fleet.path("fleet.sock"), "show table lr_spoe_errors")
        self.assertNotIn("gpc0=", table, table)
        self.assertNoRequests(self.fleet.openai, self.fleet.anthropic)


class BoltinHosts(BoltinCase):
    """Scope by Host: only llm.local is LLM traffic (any path under /v1/)."""

    BOLTIN = {"hosts": ["LLM.local"], "path_prefixes": ["/v1/"]}

    def test_only_the_llm_host(self):
        r = self.fleet.http("POST", "/v1/embeddings", [("Content-Type", "application/json")],
                            b"{}", host="llm.local:8443")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "openai")
        self.assertIn("route=bypass", self.fleet.log_for("/v1/embeddings", "llm.local:8443"))

        # Same path on another host: the fleet's (default_backend app1), never the agent.
        r = self.fleet.http("POST", "/v1/embeddings", [("X-Client-Id", "z")], b"{}",
                            host="www.example")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "app1")
        line = self.fleet.log_for("/v1/embeddings", "www.example")
        self.assertIn(" route=- ", line)
        self.assertIn("backend=app1", line)

        r = self.fleet.http("GET", "/v1/models", host="app2.local")
        self.assertEqual(r.json()["mock"], "app2")
        self.assertEqual(self.fleet.openai.count(), 1)

        # The LLM host outside the prefixes is not LLM traffic either.
        r = self.fleet.http("GET", "/healthz", host="llm.local")
        self.assertEqual(r.json()["mock"], "app1")


if __name__ == "__main__":
    lrtest.main()
