"""Bad input on the agent's SPOP listener (issue #7), while HAProxy's own SPOP connections keep
being served:

* rogue peers connecting straight to the SPOP port — garbage, frame lengths of 0xFFFFFFFF and
  just over max-frame-size (before and after negotiation), a zero length, NOTIFY before HELLO,
  bad HELLOs, fragmented frames, a valid HELLO then a garbage NOTIFY, half frames then silence
  (DISCONNECT 2 after the agent's 5 s frame timeout), half frames then close — each gets the
  exact AGENT-DISCONNECT status of SPOE.txt and a closed connection; 300 half-frame holders cost
  at most their bounded buffers;
* 10,000 SPOP connections opened and closed in waves (some with a HELLO, some closing with a
  HAPROXY-DISCONNECT, some with a RST, some saying nothing): the agent stays healthy, its fd
  count returns to the baseline and its RSS stays flat.

Throughout, a load client sends bypassed requests through HAProxy and counts every failure
(must be 0); each of its requests must have been classified by the agent (the agent's
lunaroute_classifications_total grows by exactly the number of requests, and HAProxy's
lr_spoe_errors count stays 0 — checked again at teardown), not routed by the static fallback.
"""

import concurrent.futures
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import SPOP_ST, SpopPeer  # noqa: E402

MAX_FRAME = 16380          # agent.json max_frame_size (the default)
FRAME_TIMEOUT = 5.0        # the agent's SPOP frame timeout
# Under ASan freed memory sits in a 256 MiB quarantine: keep it small so RSS tracks what
# the agent really holds.
ASAN = "detect_leaks=1:abort_on_error=1:quarantine_size_mb=4"


def bypass_ok(resp):
    if resp.status != 200:
        return "status %d: %r" % (resp.status, resp.body[:200])
    if resp.json().get("mock") != "openai":
        return "not answered by the openai mock: %r" % resp.body[:200]
    return None


def classified_bypass(stack):
    return lrtest.metric(stack.metrics(), "lunaroute_classifications_total", route="bypass",
                         provider="openai")


def spop_errors(stack):
    """{status text: count} of lunaroute_spop_errors_total."""
    out = {}
    for (name, labels), v in stack.metrics().items():
        if name == "lunaroute_spop_errors_total":
            out[dict(labels)["status"]] = v
    return out


def spop_open(stack):
    return lrtest.metric(stack.metrics(), "lunaroute_active_connections", listener="spop")


# Agent status texts (spop_status_to_str) for the statuses the rogue cases must produce.
ST_TEXT = {2: "a timeout occurred", 3: "frame is too big", 4: "invalid frame received",
           6: "max-frame-size value not found", 7: "capabilities value not found",
           8: "unsupported version", 9: "max-frame-size too big or too small",
           10: "fragmentation not supported"}


class BadSpopInput(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(mocks={"openai": cls.openai,
                                                 "anthropic": cls.anthropic},
                                          env={"ASAN_OPTIONS": ASAN})

    def start_load(self):
        load = lrtest.LoadClient(self.stack.port, "/v1/embeddings", threads=2, per_conn=4,
                                 check=bypass_ok).start()
        self.addCleanup(load.stop)
        return load

    def assert_load_clean(self, load, classified_before, errors_before, min_ok):
        ok, failures = load.stop()
        self.assertEqual(failures, [], "requests through HAProxy failed meanwhile")
        self.assertGreaterEqual(ok, min_ok, "the load client hardly ran")
        # Every one of them was classified by the agent, none by the static fallback.
        self.assertEqual(classified_bypass(self.stack) - classified_before, ok)
        self.assertEqual(self.stack.spoe_errors(), errors_before)
        return ok

    def agent_conns(self):
        """The agent's established sockets on its SPOP and engine ports (HAProxy's, and any
        test peer still connected)."""
        return (lrtest.established_peers(self.stack.ports["spoa"]),
                lrtest.established_peers(self.stack.ports["engine"]))

    def spare_fds(self):
        """Agent fds that are not an established connection: listeners, loop, files — and
        anything leaked (a socket left in CLOSE_WAIT counts here)."""
        spoa, engine = self.agent_conns()
        fds = self.stack.agent_fds()
        return None if fds is None else fds - len(spoa) - len(engine)

    def wait_agent_baseline(self, spare0, peers):
        """Every test peer is gone from the agent, no fd is left behind, and the open SPOP
        gauge counts exactly HAProxy's connections."""
        mine = {("0100007F", p) for p in peers}

        def settled():
            spoa, _ = self.agent_conns()
            return not (spoa & mine) and self.spare_fds() == spare0 and \
                spop_open(self.stack) == len(lrtest.established_peers(self.stack.ports["spoa"]))
        lrtest.wait_until(settled, 10.0, 0.2)
        spoa, _ = self.agent_conns()
        self.assertEqual(spoa & mine, set(), "test peers still connected to the agent")
        self.assertEqual(self.spare_fds(), spare0, "agent fds did not return to baseline")
        self.assertEqual(spop_open(self.stack), len(spoa), "open SPOP connections gauge")
        return self.stack.agent_fds()

    # -- rogue peers ------------------------------------------------------------------------
    def rogue_cases(self):
        """name -> (function(peer) doing the bad thing, expected DISCONNECT status or None for
        'the agent just closes', whether the answer may wait for the frame timeout)."""
        def send(data):
            return lambda p: p.send(data)

        def hello_then(data, **kw):
            def f(p):
                p.handshake(**kw)
                p.send(data)
            return f

        def half_then_close(p):
            p.send(struct.pack(">I", 200) + b"\x03\x00\x00")
            p.close()

        over_300 = lrtest.spop_frame(lrtest.SPOP_NOTIFY, b"\x00" * 300, 1, 1)  # 301+ bytes
        garbage_notify = lrtest.spop_frame(lrtest.SPOP_NOTIFY, b"\x05junk\x07\xff\xff", 1, 1)
        return {
            "http_garbage": (send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), SPOP_ST["too_big"], False),
            "random_frame": (send(struct.pack(">I", 12) + b"\x42" + os.urandom(11)),
                             SPOP_ST["invalid"], False),
            "len_ffffffff": (send(b"\xff\xff\xff\xff" + b"x" * 64), SPOP_ST["too_big"], False),
            "len_max_plus_1": (send(struct.pack(">I", MAX_FRAME + 1) + b"\x01"),
                               SPOP_ST["too_big"], False),
            "len_zero": (send(struct.pack(">I", 0)), SPOP_ST["invalid"], False),
            "notify_before_hello": (send(lrtest.spop_notify(1, 1)), SPOP_ST["invalid"], False),
            "hello_bad_version": (send(lrtest.spop_hello(versions="1.0")), SPOP_ST["bad_vsn"],
                                  False),
            "hello_no_frame_size": (send(lrtest.spop_hello(max_frame=None)),
                                    SPOP_ST["no_frame_size"], False),
            "hello_no_caps": (send(lrtest.spop_hello(caps=None)), SPOP_ST["no_cap"], False),
            "hello_frame_size_100": (send(lrtest.spop_hello(max_frame=100)),
                                     SPOP_ST["bad_frame_size"], False),
            "hello_fragmented": (send(lrtest.spop_hello(flags=0)),
                                 SPOP_ST["frag_not_supported"], False),
            "hello_then_garbage_notify": (hello_then(garbage_notify), SPOP_ST["invalid"], False),
            "hello_then_fragmented_notify": (hello_then(lrtest.spop_notify(1, 1, flags=0)),
                                             SPOP_ST["frag_not_supported"], False),
            # negotiated max-frame-size 300: a 301-byte frame is too big
            "hello_300_then_301": (hello_then(over_300, max_frame=300), SPOP_ST["too_big"],
                                   False),
            "hello_then_len_ffffffff": (hello_then(b"\xff\xff\xff\xff"), SPOP_ST["too_big"],
                                        False),
            "half_frame_silence": (send(struct.pack(">I", 100) + b"\x01\x00\x00"),
                                   SPOP_ST["timeout"], True),
            "nothing_at_all": (send(b""), SPOP_ST["timeout"], True),
            "hello_then_half_notify": (hello_then(lrtest.spop_notify(1, 1)[:20]),
                                       SPOP_ST["timeout"], True),
            "half_frame_close": (half_then_close, None, False),
            "hello_then_close": (lambda p: (p.handshake(), p.close()), None, False),
        }

    def run_rogue(self, name, fn, want, slow):
        p = SpopPeer(self.stack.ports["spoa"])
        self.rogue_ports.append(p.sock.getsockname()[1])
        t0 = time.monotonic()
        try:
            fn(p)
            if want is None:
                return name, "closed-by-us", None, 0.0
            f = p.read_frame(timeout=FRAME_TIMEOUT + 5 if slow else 3.0)
            took = time.monotonic() - t0
            if f is None:
                return name, "closed without DISCONNECT", None, took
            if f.type != lrtest.SPOP_AGENT_DISCON:
                return name, "frame type %d" % f.type, None, took
            status = f.kv().get("status-code")
            closed = p.wait_closed(5.0)
            return name, "disconnect" if closed else "disconnect, left open", status, took
        finally:
            p.close()

    def test_a_rogue_peers_while_haproxy_is_served(self):
        s = self.stack
        s.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")
        spare0 = self.spare_fds()
        rss0 = s.agent_rss_kib()
        errs0 = spop_errors(s)
        classified0 = classified_bypass(s)
        spoe_errors0 = s.spoe_errors()
        load = self.start_load()

        # 300 half-frame holders: each announces a max-size frame and sends 12 KB of it.
        holders = []
        for _ in range(300):
            p = SpopPeer(s.ports["spoa"])
            p.send(struct.pack(">I", MAX_FRAME) + b"\x01" + b"\x00" * 12000)
            holders.append(p)
        peers = [p.sock.getsockname()[1] for p in holders]
        time.sleep(0.5)
        rss_held = s.agent_rss_kib()

        cases = self.rogue_cases()
        self.rogue_ports = []
        with concurrent.futures.ThreadPoolExecutor(len(cases)) as ex:
            results = list(ex.map(lambda kv: self.run_rogue(kv[0], *kv[1]), cases.items()))
        for name, outcome, status, took in results:
            fn, want, slow = cases[name]
            with self.subTest(case=name):
                if want is None:
                    continue
                self.assertEqual((outcome, status), ("disconnect", want),
                                 "%s: got %s status %r after %.2fs" % (name, outcome, status,
                                                                       took))
                if slow:
                    self.assertGreaterEqual(took, FRAME_TIMEOUT - 0.5, name)
                else:
                    self.assertLess(took, 3.0, "%s answered only after %.2fs" % (name, took))

        # The holders time out too, each with DISCONNECT 2.
        statuses = []
        for p in holders:
            f = p.read_frame(timeout=FRAME_TIMEOUT + 5)
            statuses.append(f.kv().get("status-code") if f is not None and
                            f.type == lrtest.SPOP_AGENT_DISCON else repr(f))
            p.close()
        self.assertEqual(statuses, [SPOP_ST["timeout"]] * len(holders))

        # Memory: a holder costs what it may hold — one partial frame, ≤ max frame + 4 — with
        # room for allocator growth and sanitizer shadow (x2); never a buffer per read.
        held_kib = rss_held - rss0
        lrtest.log("rss: %d KiB before, %d KiB with 300 half-frame holders (+%d KiB, %.1f KiB "
                   "each)" % (rss0, rss_held, held_kib, held_kib / 300.0))
        self.assertLess(held_kib, 300 * 2 * (MAX_FRAME + 4) // 1024)

        ok = self.assert_load_clean(load, classified0, spoe_errors0, min_ok=20)
        lrtest.log("load through HAProxy meanwhile: %d requests, 0 failures" % ok)

        # Each error was counted once, by status.
        want = {}
        for name, (_, st, _) in cases.items():
            if st is not None:
                want[ST_TEXT[st]] = want.get(ST_TEXT[st], 0) + 1
        want[ST_TEXT[2]] = want.get(ST_TEXT[2], 0) + len(holders)
        errs = spop_errors(s)
        got = {k: errs.get(k, 0) - errs0.get(k, 0) for k in errs if errs.get(k, 0) != errs0.get(k, 0)}
        self.assertEqual(got, want)
        self.wait_agent_baseline(spare0, peers + self.rogue_ports)
        self.assertEqual(s.http("GET", "/healthz").status, 200)

    # -- 10,000 connections -----------------------------------------------------------------
    def churn_wave(self, port, n, wave):
        """n connections, all open at once, then closed; kinds rotate."""
        peers = []
        for i in range(n):
            p = SpopPeer(port)
            kind = (i + wave) % 4
            if kind == 0:
                p.send(b"\x00\x00")  # half a length prefix
            elif kind == 1:
                p.send(lrtest.spop_hello())
            elif kind == 2:
                # an engine path: the bypass count stays the load client's own
                p.send(lrtest.spop_hello() + lrtest.spop_notify(1, 1, "POST", "/v1/messages"))
            peers.append((kind, p))
            self.churn_ports.append(p.sock.getsockname()[1])
        for kind, p in peers:
            if kind == 1:
                f = p.read_frame()
                if f is None or f.type != lrtest.SPOP_AGENT_HELLO:
                    raise AssertionError("wave %d: no AGENT-HELLO: %r" % (wave, f))
                p.send(lrtest.spop_haproxy_disconnect())
        for kind, p in peers:
            if kind == 1:  # the agent answers the DISCONNECT and closes first
                f = p.read_frame()
                if f is None or f.type != lrtest.SPOP_AGENT_DISCON or \
                        f.kv().get("status-code") != 0 or not p.wait_closed(5.0):
                    raise AssertionError("wave %d: no AGENT-DISCONNECT 0 + close: %r" % (wave, f))
            elif kind == 2:
                for want in (lrtest.SPOP_AGENT_HELLO, lrtest.SPOP_ACK):
                    f = p.read_frame()
                    if f is None or f.type != want:
                        raise AssertionError("wave %d: want frame %d, got %r" % (wave, want, f))
        # 0: half a prefix, then FIN; 1: after the agent's close; 2: RST after an ACK;
        # 3: nothing said, RST. (Few client-side TIME_WAITs: thousands of them would crowd
        # the ephemeral ports tests running in parallel bind.)
        for kind, p in peers:
            p.close(rst=kind in (2, 3))

    def test_b_ten_thousand_connections(self):
        s = self.stack
        port = s.ports["spoa"]
        spare0, fds0 = self.spare_fds(), s.agent_fds()
        classified0 = classified_bypass(s)
        spoe_errors0 = s.spoe_errors()
        load = self.start_load()
        self.churn_ports = []
        rss = []
        total = 0
        t0 = time.monotonic()
        for wave in range(10):
            self.churn_wave(port, 1000, wave)
            total += 1000
            rss.append(s.agent_rss_kib())
        took = time.monotonic() - t0
        self.assertEqual(total, 10000)
        ok = self.assert_load_clean(load, classified0, spoe_errors0, min_ok=20)
        fds = self.wait_agent_baseline(spare0, self.churn_ports)
        lrtest.log("10000 SPOP connections in %.1fs; agent RSS per wave (KiB): %s; fds %s -> %s; "
                   "%d requests through HAProxy meanwhile, 0 failures" % (took, rss, fds0, fds,
                                                                          ok))
        # Flat: after the first waves warmed the allocator, no growth beyond 8 MiB.
        self.assertLess(max(rss[3:]) - rss[2], 8 * 1024, "agent RSS grew: %r" % rss)
        self.assertTrue(s.agent.alive())
        self.assertEqual(s.http("GET", "/healthz").status, 200)


if __name__ == "__main__":
    lrtest.main()
