"""Client disconnects at every phase of a request (issues #3 and #7), straight on the engine
port and through HAProxy: mid request line, mid headers, mid body, after the whole request
while the provider is still thinking, mid non-streamed response, mid stream.

For each one, exactly:
  * the provider never sees a request that was not complete, and a transfer in progress is
    cancelled at once: the mock provider observes its connection closed within 1 s of the
    client's close;
  * nothing leaks in the agent: no TCP socket of the agent is left in a state other than
    LISTEN/ESTABLISHED (a CLOSE_WAIT would be a peer's close we never acted on), its other fds
    (files, pipes, eventfds, unix sockets) are back to the baseline count, none of its
    connections is with the gone client, its pooled provider connections do not grow, and
    `lunaroute_active_connections{listener="engine"}` equals the engine connections really
    open (HAProxy's idle ones when going through HAProxy, none otherwise);
  * the agent stays healthy (/healthz 200, still running).
"""

import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockHang, MockStream  # noqa: E402

CHAT = "/v1/chat/completions"
CANCEL_WITHIN = 1.0


def chat_body(stream=False):
    return json.dumps({"model": "gpt-4o", "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()


def request_bytes(port, body, content_length=None):
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (CHAT.encode(), port,
                                             len(body) if content_length is None
                                             else content_length)) + body


class Disconnects(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(mocks={"openai": cls.openai,
                                                 "anthropic": cls.anthropic})

    def setUp(self):
        self.openai.on(CHAT, None)
        # Warm up both paths (provider connection pooled, HAProxy's engine connections open).
        for send in (self.stack.engine_http, self.stack.http):
            r = send("POST", CHAT, [("Content-Type", "application/json")], chat_body())
            self.assertEqual(r.status, 200, r)
        self.openai.clear()
        self.base = self.snapshot()

    # -- agent accounting -------------------------------------------------------------------
    def snapshot(self):
        k = lrtest.proc_fd_kinds(self.stack.agent_pid())
        k["to_mock"] = sum(1 for st, _, rp in k["tcp"]
                           if st == "ESTABLISHED" and rp == self.openai.port)
        return k

    def engine_gauge(self):
        r = self.stack.engine_http("GET", "/metrics", [("Connection", "close")])
        g = lrtest.metric(lrtest.parse_metrics(r.body.decode()), "lunaroute_active_connections",
                          listener="engine")
        return g - 1  # this request's own connection

    def fd_leaks(self, client_port):
        """What is wrong with the agent's fds now, as texts (empty: settled)."""
        snap = self.snapshot()
        bad = []
        odd = [t for t in snap["tcp"] if t[0] not in ("LISTEN", "ESTABLISHED")]
        if odd:
            bad.append("agent sockets in %r" % odd)
        if snap["unhashed"]:
            bad.append("agent holds closed/reset sockets: fds %r" % snap["unhashed"])
        for kind in ("unix", "other"):
            if snap[kind] != self.base[kind]:
                bad.append("%s fds %d, baseline %d: %r" % (
                    kind, snap[kind], self.base[kind], lrtest.proc_fd_links(self.stack.agent_pid())))
        if any(rp == client_port for _, _, rp in snap["tcp"]):
            bad.append("still connected to the client (port %d)" % client_port)
        if snap["to_mock"] > self.base["to_mock"]:
            bad.append("provider connections %d, baseline %d" % (snap["to_mock"],
                                                                 self.base["to_mock"]))
        return bad

    def gauge_wrong(self):
        """The gauge against the engine sockets the agent holds (any state but LISTEN: a
        connection it is still closing, e.g. lingering after `Connection: close`, is open
        for the gauge too), or None when they agree."""
        engine_port = self.stack.ports["engine"]
        gauge = self.engine_gauge()
        held = [st for st, lp, _ in lrtest.proc_fds(self.stack.agent_pid())[0]
                if st != "LISTEN" and lp == engine_port]
        if gauge != len(held):
            return "active engine connections gauge %d, really open %d %r" % (
                gauge, len(held), held)
        return None

    @staticmethod
    def settled(check, timeout, interval):
        """Polls check() (a falsy result means settled) and returns its last result. The
        sample that settled is the one judged: sampling again afterwards would race with
        connections that come and go on their own (HAProxy's health checks, the previous
        /metrics connection being closed on another loop thread). A real leak stays."""
        last = [None]

        def ok():
            last[0] = check()
            return not last[0]
        lrtest.wait_until(ok, timeout, interval)
        return last[0]

    def assert_no_leak(self, client_port):
        self.assertFalse(self.settled(lambda: self.fd_leaks(client_port), 5.0, 0.1))
        self.assertIsNone(self.settled(self.gauge_wrong, 5.0, 0.2))
        self.assertTrue(self.stack.agent.alive(), "the agent died")
        self.assertEqual(self.stack.engine_http("GET", "/healthz").status, 200)

    # -- the phases -------------------------------------------------------------------------
    def ports(self):
        return (("engine", self.stack.ports["engine"]), ("haproxy", self.stack.port))

    def connect(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s, s.getsockname()[1]

    def abort_partial(self, data):
        """Sends `data` (an incomplete request), then closes: nothing reaches the provider."""
        for via, port in self.ports():
            with self.subTest(via=via):
                s, cport = self.connect(port)
                s.sendall(data(port))
                time.sleep(0.3)  # let it be read and parsed
                s.close()
                self.assert_no_leak(cport)
                self.assertNoRequests(self.openai, self.anthropic, settle=0.1)

    def test_1_mid_request_line(self):
        self.abort_partial(lambda port: b"POST /v1/chat/comp")

    def test_2_mid_headers(self):
        self.abort_partial(lambda port: request_bytes(port, b"")[:60])

    def test_3_mid_body(self):
        body = chat_body()
        self.abort_partial(lambda port: request_bytes(port, body[:20], len(body)))

    def abort_in_flight(self, response, wait_started, body=None, read_first=None,
                        vias=("engine", "haproxy")):
        """The whole request sent; the client closes once wait_started(response) is true
        (and, with read_first, once it received those bytes); the provider must see its
        connection closed within CANCEL_WITHIN."""
        for via, port in self.ports():
            if via not in vias:
                continue
            with self.subTest(via=via):
                self.openai.clear()
                r = response()
                self.openai.on(CHAT, r)
                s, cport = self.connect(port)
                s.sendall(request_bytes(port, body or chat_body()))
                self.assertTrue(lrtest.wait_until(lambda: wait_started(r), 5.0),
                                "the provider never got the request")
                if read_first is not None:
                    got = b""
                    s.settimeout(5)
                    while read_first not in got:
                        d = s.recv(65536)
                        self.assertTrue(d, "closed before %r arrived: %r" % (read_first, got))
                        got += d
                t_close = time.monotonic()
                s.close()
                self.assertTrue(r.finished.wait(CANCEL_WITHIN + 5), "provider still sending")
                self.assertIsNotNone(r.closed_at, "the provider's connection was not closed")
                lag = r.closed_at - t_close
                lrtest.log("%s %s: upstream closed %.0f ms after the client" % (
                    self._testMethodName, via, lag * 1000))
                self.assertLess(lag, CANCEL_WITHIN)
                self.assertEqual(self.openai.count(), 1, "retried after the client left")
                self.assert_no_leak(cport)

    def test_4_while_provider_thinks(self):
        self.abort_in_flight(lambda: MockHang(30), lambda h: h.started_at is not None,
                             vias=("engine",))

    def test_4b_while_provider_thinks_via_haproxy(self):
        """HAProxy 2.6 does not read from a client whose request is complete, so it notices
        neither a FIN nor a RST until the answer starts: the engine's transfer runs until the
        provider answers (a limit of the front, in the README), and then everything is
        released — nothing retried, nothing leaked."""
        self.openai.on(CHAT, lrtest.MockResponse.json({"id": "late"}, delay=1.5))
        s, cport = self.connect(self.stack.port)
        s.sendall(request_bytes(self.stack.port, chat_body()))
        self.assertTrue(self.openai.wait_for(1), "the provider never got the request")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        time.sleep(1.5)
        self.assert_no_leak(cport)
        self.assertEqual(self.openai.count(), 1, "retried after the client left")

    def test_5_mid_non_streamed_response(self):
        # 40 pieces of 4 KiB, 0.25 s apart, content-length framing: a slow plain answer
        piece = b" " * 4096

        def resp():
            return MockStream([b"{\"id\":\"x\"" + piece[9:]] + [piece] * 38 + [b"}"], delay=0.25,
                              headers=[("Content-Type", "application/json")], framing="length")
        self.abort_in_flight(resp, lambda m: len(m.sent_at) >= 2)

    def test_6_mid_stream(self):
        ev = 'data: {"choices":[{"delta":{"content":"tok"}}]}\n\n'

        def resp():
            return MockStream([ev], delay=0.2, endless=True)
        self.abort_in_flight(resp, lambda m: len(m.sent_at) >= 1, body=chat_body(stream=True),
                             read_first=b"tok")


if __name__ == "__main__":
    lrtest.main()
