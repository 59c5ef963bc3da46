"""agent.local_sockets (the default): HAProxy reaches the agent's SPOP and engine listeners
through unix sockets in run_dir (spoa.sock, engine.sock) instead of loopback TCP; the TCP
listeners stay up for anyone else (health checks, other HAProxies).

  - rendered: the lr_spoa and lr_engine servers are unix@<run_dir>/...; agent.json names the
    sockets; the files are sockets with mode 0660;
  - served: bypassed and intercepted requests (plain and streamed) are classified by the agent
    (no SPOE error) and served by the engine, while no TCP connection to the agent's ports
    exists: HAProxy used the unix sockets;
  - the TCP engine listener still answers;
  - SIGTERM: the agent drains and removes its socket files; SIGKILL leaves them behind, and a
    new agent replaces the stale files and serves again through the same HAProxy.

The other integration tests run with agent.local_sockets: false (see lrtest.base_config).
"""

import os
import signal
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockStream  # noqa: E402

JSON = ("Content-Type", "application/json")
CHAT = "/v1/chat/completions"
CHAT_BODY = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
STREAM_BODY = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}'
EVENTS = ['data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,'
          '"delta":{"content":"tok%d"}}]}\n\n' % i for i in range(3)] + ["data: [DONE]\n\n"]


class LocalSockets(lrtest.LRTestCase):
    def start_local(self):
        self.openai = self.mock("openai")
        self.anthropic = self.mock("anthropic")
        # None deletes the harness's `local_sockets: false`: the built-in default applies.
        return self.start_stack(mocks={"openai": self.openai, "anthropic": self.anthropic},
                                config={"agent": {"local_sockets": None}})

    def assert_sockets(self, s):
        for name in ("spoa.sock", "engine.sock"):
            st = os.lstat(s.path(name))
            self.assertTrue(stat.S_ISSOCK(st.st_mode), name)
            self.assertEqual(st.st_mode & 0o777, 0o660, name)

    def assert_no_tcp_to_agent(self, s):
        for k in ("spoa", "engine"):
            self.assertEqual(lrtest.established_peers(s.ports[k]), set(),
                             "a TCP connection to the agent's %s port: HAProxy should use "
                             "the unix socket" % k)

    def serve_round(self, s, tag):
        """Bypass, engine and stream through HAProxy, all classified by the agent."""
        errors = s.spoe_errors()
        m0 = s.metrics()
        r = s.http("POST", "/v1/embeddings", [JSON], b'{"input":"%s"}' % tag.encode())
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "openai")
        r = s.http("POST", CHAT, [JSON], CHAT_BODY)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "openai")
        self.openai.on(CHAT, MockStream(EVENTS, delay=0.01))
        try:
            resp, _, _ = s.stream("POST", CHAT, [JSON], STREAM_BODY)
        finally:
            self.openai.on(CHAT, None)
        self.assertEqual(resp.status, 200, resp)
        self.assertIn(b"tok2", resp.body)
        self.assertIn(b"[DONE]", resp.body)
        m1 = s.metrics()
        # +1 classification per request (the /metrics requests themselves are classified too)
        self.assertGreaterEqual(
            lrtest.metric(m1, "lunaroute_classifications_total", route="bypass") -
            lrtest.metric(m0, "lunaroute_classifications_total", route="bypass"), 1)
        self.assertGreaterEqual(
            lrtest.metric(m1, "lunaroute_classifications_total", route="engine") -
            lrtest.metric(m0, "lunaroute_classifications_total", route="engine"), 3)
        self.assertEqual(
            lrtest.metric(m1, "lunaroute_requests_total", provider="openai") -
            lrtest.metric(m0, "lunaroute_requests_total", provider="openai"), 2)
        self.assertEqual(s.spoe_errors(), errors,
                         "HAProxy counted requests the agent did not answer")

    def test_rendered_and_served(self):
        s = self.start_local()
        cfg = lrtest.read_text(s.path("haproxy.cfg"))
        run_dir = os.path.realpath(s.run_dir)
        self.assertIn("\n    server agent unix@%s/spoa.sock check " % run_dir, cfg)
        self.assertIn("\n    server engine unix@%s/engine.sock check " % run_dir, cfg)
        agent_json = lrtest.read_text(s.path("agent.json"))
        self.assertIn('"spoa_socket": "%s/spoa.sock"' % run_dir, agent_json)
        self.assertIn('"engine_socket": "%s/engine.sock"' % run_dir, agent_json)
        self.assert_sockets(s)
        status, check = s.spoa_state()
        self.assertTrue(status.startswith("UP") and "L7OK" in check, (status, check))

        self.assertEqual(s.spoe_errors(), 0)
        self.serve_round(s, "first")
        self.assert_no_tcp_to_agent(s)
        # the TCP engine listener is still there for others
        r = s.engine_http("GET", "/healthz")
        self.assertEqual(r.status, 200, r)

    def restart_agent(self, s):
        s.start_agent()
        self.assertTrue(lrtest.wait_until(
            lambda: all(lrtest.stat_is_socket(s.path(n)) for n in ("spoa.sock", "engine.sock")),
            10), "the new agent did not create its sockets")
        self.assertTrue(lrtest.wait_until(lambda: s.spoa_up(), 15), s.spoa_state())

    def test_agent_restarts(self):
        s = self.start_local()
        self.serve_round(s, "before")

        # SIGTERM: drained, socket files removed
        a = s.procs["agent"]
        s.expect_agent_answers = False
        os.kill(a.pid, signal.SIGTERM)
        self.assertTrue(lrtest.wait_until(lambda: a.poll() is not None, 10), "agent did not exit")
        for name in ("spoa.sock", "engine.sock"):
            self.assertFalse(os.path.lexists(s.path(name)), "%s left behind" % name)

        # a new agent binds again; HAProxy's health check finds it, requests are classified
        self.restart_agent(s)
        self.assert_sockets(s)
        self.serve_round(s, "after-term")

        # SIGKILL leaves the files; the next agent replaces them
        s.kill_agent()
        self.assertTrue(lrtest.wait_until(lambda: s.procs["agent"].poll() is not None, 10))
        self.assertTrue(lrtest.stat_is_socket(s.path("spoa.sock")), "SIGKILL removed the file?")
        self.restart_agent(s)
        self.assert_sockets(s)
        self.serve_round(s, "after-kill")
        self.assert_no_tcp_to_agent(s)


if __name__ == "__main__":
    lrtest.main()
