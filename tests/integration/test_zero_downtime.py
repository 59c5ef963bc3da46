"""Zero downtime under load (issue 4): a stack under `lunaroute-control up` serves a continuous,
bounded load while, in separate tests,
  (a) the config file changes twice: an agent-side-only change (applied through the agent's
      admin API, POST /v1/reload: HAProxy's master and worker pids stay), then a HAProxy-side
      change (HAProxy reloaded through the master CLI: a new worker);
  (b) HAProxy is reloaded (SIGUSR2 to the master);
  (c) the agent is restarted: SIGTERM -> it drains -> `up` starts a new one;
  (d) idle keep-alive connections across a HAProxy reload (no load).

The load: five client threads against HAProxy, each a different kind of request:
  bypass-ka     POST /v1/embeddings on one keep-alive connection (reused like a pooling client:
                a connection the server already closed is replaced before it is reused)
  bypass-new    POST /v1/embeddings, a new connection each time
  chat-ka       POST /v1/chat/completions (intercepted, engine), non-streaming, keep-alive
  chat-new      the same, a new connection each time
  chat-stream   POST /v1/chat/completions "stream": true (intercepted, SSE), new connections
The mock provider answers chat requests slowly (0.3-0.9 s, streams in 3 events over ~0.8 s) so
requests are in flight on the agent when the event happens. Every response is checked in full
(status 200, the mock's body for that very request, the whole stream up to [DONE]); anything
else is a failure, and every failure is counted and printed.

Asserted: bypassed requests never fail, in (a), (b) and (c); intercepted requests never fail in
(a) and (b). In (c), the intercepted requests that were in flight on the draining agent (the
mock had them before the SIGTERM) all finish; new intercepted requests during the restart
follow haproxy.failure_mode: static (the default here) routes them by the rendered static
fallback to lr_engine, i.e. to the agent's engine listener, which is closed until the new
agent listens -- HAProxy's connect retries (retries 3, one per second) usually bridge the
restart; what is observed is printed (count of failures and their statuses) and every failure
must be a clean HTTP error from HAProxy (503/502/504), never a hang or a reset.
"""

import http.client
import json
import os
import random
import select
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

CHAT_DELAY = (0.3, 0.9)
STREAM_EVENTS = 3
STREAM_GAP = 0.25
KINDS = ("bypass-ka", "bypass-new", "chat-ka", "chat-new", "chat-stream")
PAUSE = 0.02  # between two requests of one client thread: a bounded load


def chat_reply(rid):
    return {"id": "chatcmpl-%s" % rid, "object": "chat.completion", "model": "gpt-zd",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "echo %s" % rid}}]}


def stream_event(rid, i):
    return "data: %s\n\n" % json.dumps({"id": "chatcmpl-%s" % rid, "object":
                                        "chat.completion.chunk", "choices": [
                                            {"index": 0, "delta": {"content": "%s-%d" % (rid, i)}}]})


class SlowChat:
    """The provider's /v1/chat/completions: slow answers that name the request they answer.
    Records, per request id, when the mock received it and when its answer should be done."""

    def __init__(self):
        self.lock = threading.Lock()
        self.arrived = {}  # rid -> (arrival monotonic, planned end monotonic)

    def __call__(self, req):
        body = req.json()
        rid = body.get("user", "?")
        now = time.monotonic()
        if body.get("stream"):
            chunks = [stream_event(rid, i) for i in range(STREAM_EVENTS)] + ["data: [DONE]\n\n"]
            with self.lock:
                self.arrived[rid] = (now, now + 0.2 + STREAM_GAP * STREAM_EVENTS)
            return lrtest.MockStream(chunks, delay=STREAM_GAP, first_delay=0.2)
        delay = random.uniform(*CHAT_DELAY)
        with self.lock:
            self.arrived[rid] = (now, now + delay)
        return lrtest.MockResponse.json(chat_reply(rid), delay=delay)

    def in_flight(self, at=None):
        at = time.monotonic() if at is None else at
        with self.lock:
            return [rid for rid, (t0, t1) in self.arrived.items() if t0 <= at < t1]

    def arrival(self, rid):
        with self.lock:
            return self.arrived.get(rid, (None, None))[0]


class Load:
    """The client threads, one per kind. results: dicts {kind, rid, t0, t1, ok, status, why}."""

    def __init__(self, port):
        self.port = port
        self.results = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.seq = 0
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True, name=k)
                        for k in KINDS]

    def _rid(self, kind):
        with self.lock:
            self.seq += 1
            return "%s-%d" % (kind, self.seq)

    def _conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)

    @staticmethod
    def _stale(conn):
        """What a pooling client checks before reusing a connection: readable while idle
        means the server closed it (EOF) -- do not send on it."""
        if conn.sock is None:
            return False
        r, _, _ = select.select([conn.sock], [], [], 0)
        return bool(r)

    def _one(self, kind, conn):
        rid = self._rid(kind)
        if kind.startswith("bypass"):
            path, body = "/v1/embeddings", {"input": rid, "model": "text-embedding-zd"}
        else:
            path = "/v1/chat/completions"
            body = {"model": "gpt-zd", "user": rid,
                    "messages": [{"role": "user", "content": "hi %s" % rid}]}
            if kind == "chat-stream":
                body["stream"] = True
        data = json.dumps(body).encode()
        t0 = time.monotonic()
        res = {"kind": kind, "rid": rid, "t0": t0, "t1": None, "ok": False, "status": None,
               "why": ""}
        try:
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            payload = r.read()
            res["status"] = r.status
            res["why"] = self._check(kind, rid, r.status, payload)
            res["ok"] = not res["why"]
            if r.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            res["why"] = "%s: %s" % (type(e).__name__, e)
            conn.close()
        res["t1"] = time.monotonic()
        with self.lock:
            self.results.append(res)

    @staticmethod
    def _check(kind, rid, status, payload):
        if status != 200:
            return "HTTP %d: %r" % (status, payload[:200])
        text = payload.decode("utf-8", "replace")
        if kind.startswith("bypass"):
            try:
                doc = json.loads(text)
            except ValueError:
                return "non-JSON body %r" % text[:200]
            if doc.get("mock") != "openai" or doc.get("path") != "/v1/embeddings":
                return "unexpected body %r" % text[:200]
            return ""
        if kind in ("chat-ka", "chat-new"):
            try:
                doc = json.loads(text)
            except ValueError:
                return "non-JSON body %r" % text[:200]
            if doc != chat_reply(rid):
                return "not the answer to %s: %r" % (rid, text[:200])
            return ""
        want = [stream_event(rid, i) for i in range(STREAM_EVENTS)]
        pos = 0
        for ev in want:
            pos = text.find(ev, pos)
            if pos < 0:
                return "stream lacks %r: %r" % (ev[:60], text[:300])
        if not text.rstrip().endswith("data: [DONE]"):
            return "stream did not end with [DONE]: %r" % text[-200:]
        return ""

    def _run(self, kind):
        keep = kind.endswith("-ka")
        conn = self._conn()
        while not self.stop_ev.is_set():
            if not keep or self._stale(conn):
                conn.close()
                conn = self._conn()
            self._one(kind, conn)
            self.stop_ev.wait(PAUSE)
        conn.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        with self.lock:
            return list(self.results)

    def count(self, kind=None):
        with self.lock:
            return sum(1 for r in self.results if kind is None or r["kind"] == kind)


def summarize(name, results, t_event):
    lines = ["%s: %d requests" % (name, len(results))]
    for k in KINDS:
        rs = [r for r in results if r["kind"] == k]
        bad = [r for r in rs if not r["ok"]]
        around = [r for r in rs if r["t0"] <= t_event <= r["t1"]]
        avg = sum(r["t1"] - r["t0"] for r in rs) / len(rs) if rs else 0.0
        lines.append("  %-12s %4d requests (avg %.2fs), %d failed, %d in flight at the event"
                     % (k, len(rs), avg, len(bad), len(around)))
        for r in bad[:10]:
            lines.append("      FAILED %s at %+.2fs..%+.2fs: %s"
                         % (r["rid"], r["t0"] - t_event, r["t1"] - t_event, r["why"][:160]))
    return "\n".join(lines)


class ZeroDowntime(lrtest.LRTestCase):
    def start_zd_stack(self, name):
        self.openai = self.mock("openai")
        self.anthropic = self.mock("anthropic")
        self.chat = SlowChat()
        self.openai.on("/v1/chat/completions", self.chat)
        s = self.new_stack(name=name, mocks={"openai": self.openai, "anthropic": self.anthropic},
                           config={"bypass": {"enabled": True, "provider": "openai"},
                                   "haproxy": {"failure_mode": "static"}})
        s.start(mode="up")
        self.assertTrue(lrtest.wait_until(lambda: lrtest.stat_is_socket(s.path("agent.sock")),
                                          5), "the agent serves no admin socket")
        # Both request kinds work before the load starts.
        r = s.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")
        self.assertEqual(r.status, 200, r)
        return s

    def start_load(self, s):
        load = Load(s.port).start()
        self.addCleanup(load.stop)
        ok = lrtest.wait_until(lambda: all(load.count(k) >= 2 for k in KINDS), 20, 0.1)
        if not ok:
            self.fail("the load did not get going: %s" % summarize("warm-up", load.stop(),
                                                                    time.monotonic()))
        return load

    def wait_in_flight(self, load, n=2, timeout=10):
        """Until at least n intercepted requests are mid-answer at the mock (for >= 0.1 s)."""
        ok = lrtest.wait_until(lambda: len(self.chat.in_flight(time.monotonic() + 0.1)) >= n,
                               timeout, 0.01)
        if not ok:
            self.fail("no intercepted request in flight; so far: %s" % summarize(
                "load", load.stop(), time.monotonic()))

    def settle(self, load, secs=2.5):
        """Keeps the load running for secs more and until each kind made progress."""
        marks = {k: load.count(k) for k in KINDS}
        time.sleep(secs)
        ok = lrtest.wait_until(lambda: all(load.count(k) >= marks[k] + 2 for k in KINDS), 20,
                               0.1)
        self.assertTrue(ok, "some kind of request stopped making progress: %r -> %r"
                        % (marks, {k: load.count(k) for k in KINDS}))

    def worker_pid(self, s):
        out = lrtest.haproxy_cmd(s.stats_sock, "show info")
        for line in out.splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        return None

    def reload_haproxy(self, s):
        """SIGUSR2 to the master; returns once a new worker answers on the stats socket."""
        master = lrtest.read_pidfile(s.path("haproxy.pid"))
        self.assertEqual(len(master), 1)
        worker = self.worker_pid(s)
        os.kill(master[0], signal.SIGUSR2)
        ok = lrtest.wait_until(lambda: self.worker_pid(s) not in (None, worker), 20, 0.2)
        self.assertTrue(ok, "HAProxy did not reload\n" + s.log_tails())

    def write_config(self, s, change):
        s.config = lrtest.deep_merge(s.config, change)
        tmp = s.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(lrtest.to_yaml(s.config))
        os.rename(tmp, s.config_path)

    def control_log(self, s):
        return lrtest.read_text(s.path("control.stderr")) + \
            lrtest.read_text(s.path("control.stdout"))

    def agent_digest(self, s):
        r = s.control("status", "--run-dir", s.run_dir)
        try:
            return json.loads(r.stdout)["agent"]["settings"]["digest"]
        except (ValueError, KeyError, TypeError):
            return None

    def assert_no_failures(self, results, kinds, what):
        bad = [r for r in results if r["kind"] in kinds and not r["ok"]]
        self.assertEqual(bad, [], "%s: %d failed request(s)" % (what, len(bad)))

    # -- (a) ---------------------------------------------------------------------------------
    def test_a_config_reload_under_load(self):
        s = self.start_zd_stack("zd-config")
        master = lrtest.read_pidfile(s.path("haproxy.pid"))
        worker = self.worker_pid(s)
        agent = lrtest.read_pidfile(s.path("agent.pid"))
        load = self.start_load(s)

        # 1. agent-side only: a routing setting; HAProxy's files do not change.
        self.wait_in_flight(load)
        hafiles = {f: lrtest.read_text(s.path(f)) for f in
                   ("haproxy.cfg", "spoe-lunaroute.conf", "routes.map")}
        aj = lrtest.read_text(s.path("agent.json"))
        t_a1 = time.monotonic()
        self.write_config(s, {"routing": {"circuit_breaker": {"failure_threshold": 7}}})
        ok = lrtest.wait_until(lambda: lrtest.read_text(s.path("agent.json")) != aj and
                               self.agent_digest(s) == lrtest.sha256(
                                   lrtest.read_text(s.path("agent.json")).encode()), 15, 0.2)
        self.assertTrue(ok, "the agent did not get the new agent.json\n" + s.log_tails())
        self.assertEqual({f: lrtest.read_text(s.path(f)) for f in hafiles}, hafiles,
                         "an agent-only change changed HAProxy's files")
        self.assertIn("applied the new settings through its admin API", self.control_log(s))
        self.assertEqual(lrtest.read_pidfile(s.path("haproxy.pid")), master)
        self.assertEqual(self.worker_pid(s), worker, "HAProxy was reloaded for an agent change")
        self.assertEqual(lrtest.read_pidfile(s.path("agent.pid")), agent)
        self.settle(load, 1.5)

        # 2. HAProxy-side: maxconn; HAProxy is reloaded through the master CLI.
        self.wait_in_flight(load)
        t_a2 = time.monotonic()
        self.write_config(s, {"haproxy": {"maxconn": 1234}})
        ok = lrtest.wait_until(lambda: self.worker_pid(s) not in (None, worker), 20, 0.2)
        self.assertTrue(ok, "HAProxy was not reloaded\n" + s.log_tails())
        self.assertTrue(lrtest.wait_until(
            lambda: "haproxy reloaded: worker pid" in self.control_log(s), 10, 0.2),
            self.control_log(s)[-3000:])
        self.assertIn("`reload` on the master CLI", self.control_log(s))
        self.assertEqual(lrtest.read_pidfile(s.path("haproxy.pid")), master)
        self.settle(load)
        results = load.stop()
        lrtest.log(summarize("(a1) agent-only config change", results, t_a1))
        lrtest.log(summarize("(a2) haproxy-side config change", results, t_a2))
        self.assert_no_failures(results, KINDS, "(a) config reload")
        for t in (t_a1, t_a2):
            self.assertTrue([r for r in results if r["kind"].startswith("chat")
                             and r["t0"] <= t <= r["t1"]],
                            "no intercepted request was in flight at the change")

    # -- (b) ---------------------------------------------------------------------------------
    def test_b_haproxy_reload_under_load(self):
        """Also the fault suite's HAProxy-reload scenario (issue 7): zero failures of any
        kind, then the agent is back at its baseline (Stack.check_after_fault)."""
        s = self.start_zd_stack("zd-haproxy")
        baseline = s.fault_baseline()
        load = self.start_load(s)
        self.wait_in_flight(load)
        t_b = time.monotonic()
        self.reload_haproxy(s)
        self.settle(load)
        results = load.stop()
        lrtest.log(summarize("(b) HAProxy reload (SIGUSR2)", results, t_b))
        self.assert_no_failures(results, KINDS, "(b) HAProxy reload")
        self.assertTrue([r for r in results if r["kind"].startswith("chat")
                         and r["t0"] <= t_b <= r["t1"]],
                        "no intercepted request was in flight at the reload")
        # The old worker's connections to the agent are gone once it exited.
        s.check_after_fault(baseline, "after the HAProxy reload", settle=10)

    # -- (d) ---------------------------------------------------------------------------------
    def test_d_idle_keepalive_connection_survives_reload(self):
        """A pooled client's idle keep-alive connections are not cut by a reload (option
        idle-close-on-response): the old worker answers the next request on each, with
        `Connection: close`. Without it the old worker closes them at once, and a client that
        sends at that moment gets a broken pipe -- (b)'s rare failure, made deterministic."""
        s = self.start_zd_stack("zd-idle")
        reqs = {"bypass": ("POST", "/v1/embeddings", json.dumps({"input": "x"}).encode()),
                "intercepted": ("GET", "/healthz", None)}

        def ask(c, kind):
            method, path, body = reqs[kind]
            c.request(method, path, body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            return r

        conns = {}
        for kind in reqs:
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=20)
            self.addCleanup(c.close)
            r = ask(c, kind)
            self.assertEqual((r.status, r.will_close), (200, False), kind)
            conns[kind] = c
        self.reload_haproxy(s)
        time.sleep(1.0)  # the old worker has long had its soft-stop signal
        for kind, c in conns.items():
            self.assertFalse(Load._stale(c), "%s: the old worker closed an idle keep-alive "
                             "connection at the reload" % kind)
            r = ask(c, kind)
            self.assertEqual(r.status, 200, kind)
            self.assertTrue(r.will_close, "%s: the old worker kept the connection open" % kind)

    # -- (c) ---------------------------------------------------------------------------------
    def test_c_agent_restart_under_load(self):
        s = self.start_zd_stack("zd-agent")
        old = lrtest.read_pidfile(s.path("agent.pid"))
        self.assertEqual(len(old), 1)
        load = self.start_load(s)
        self.wait_in_flight(load)
        in_flight = set(self.chat.in_flight())
        s.expect_agent_answers = False  # during the restart HAProxy uses the static fallback
        t_c = time.monotonic()
        os.kill(old[0], signal.SIGTERM)
        new = lrtest.wait_until(
            lambda: [p for p in lrtest.read_pidfile(s.path("agent.pid"))
                     if p != old[0] and lrtest.pid_alive(p)], 15, 0.05)
        self.assertTrue(new, "`up` did not restart the agent\n" + s.log_tails())
        t_new = time.monotonic()
        self.assertTrue(s.wait_spoa(True, 15), "lr_spoa did not come back UP")
        t_up = time.monotonic()
        self.settle(load)
        results = load.stop()
        lrtest.log(summarize("(c) agent restart (SIGTERM, drain, restart by up)", results, t_c))
        lrtest.log("(c) new agent pid after %.2fs, lr_spoa UP after %.2fs"
                   % (t_new - t_c, t_up - t_c))
        self.assertIn("agent pid %d exited with status 0" % old[0], self.control_log(s))

        # Bypassed: nothing lost.
        self.assert_no_failures(results, ("bypass-ka", "bypass-new"), "(c) bypass")
        chats = [r for r in results if r["kind"].startswith("chat")]
        # In flight on the draining agent: the mock had them before the SIGTERM. All finish.
        draining = [r for r in chats if r["rid"] in in_flight or
                    (self.chat.arrival(r["rid"]) is not None and
                     self.chat.arrival(r["rid"]) < t_c and r["t1"] > t_c)]
        self.assertTrue(draining, "no intercepted request was in flight on the agent")
        lrtest.log("(c) %d intercepted request(s) in flight on the draining agent, %d failed"
                   % (len(draining), len([r for r in draining if not r["ok"]])))
        self.assert_no_failures(draining, KINDS, "(c) in flight on the draining agent")
        # Started before the SIGTERM (whether or not the agent had them yet).
        before = [r for r in chats if r["t0"] < t_c]
        lrtest.log("(c) %d intercepted request(s) started before the SIGTERM, %d failed"
                   % (len(before), len([r for r in before if not r["ok"]])))
        self.assert_no_failures(before, KINDS, "(c) intercepted, started before the SIGTERM")
        # New intercepted requests during the restart: failure_mode static -> lr_engine via the
        # static fallback. Observed outcome is printed; a failure must be a clean HTTP error.
        during = [r for r in chats if t_c <= r["t0"] <= t_up]
        bad = [r for r in during if not r["ok"]]
        lrtest.log("(c) %d intercepted request(s) started during the restart: %d ok, %d failed "
                   "(statuses %r)" % (len(during), len(during) - len(bad), len(bad),
                                      sorted({r["status"] for r in bad}, key=str)))
        row = s.server_row("lr_engine", "engine") or {}
        lrtest.log("(c) HAProxy: %s request(s) the agent did not answer (static fallback used), "
                   "lr_engine/engine connect errors %s, connect retries %s, redispatches %s"
                   % (s.spoe_errors(), row.get("econ"), row.get("wretr"), row.get("wredis")))
        unclean = [r for r in bad if r["status"] not in (502, 503, 504)]
        self.assertEqual(unclean, [], "intercepted requests during the restart failed without "
                                      "an HTTP error from HAProxy")
        after = [r for r in chats if r["t0"] > t_up + 0.5]
        self.assertTrue(after, "no intercepted request after the restart")
        self.assert_no_failures(after, KINDS, "(c) intercepted after the new agent is UP")


if __name__ == "__main__":
    lrtest.main()
