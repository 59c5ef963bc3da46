"""Routing engine streaming (DESIGN §8, issue #3), through HAProxy, both dialects:
SSE relayed event by event as it arrives (first-event relay latency measured against the
mock's send time), keep-alive comments while the upstream is silent, an error event (never a
clean end) when the upstream dies mid-stream, fallback when the failure happens before the
first byte, and a client disconnect that closes the upstream connection.

http_server.sse_keepalive_interval_secs is 1 here.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockResponse, MockStream, RawStream, sse_events  # noqa: E402

JSON = ("Content-Type", "application/json")
AV = ("anthropic-version", "2023-06-01")
CHAT = "/v1/chat/completions"
MSGS = "/v1/messages"
FIRST_EVENT_MAX_LAG = 0.05  # mock sent the first event -> the client has it
EVENT_MAX_LAG = 0.10


def openai_events(n, tag="oa"):
    ev = ['data: {"id":"chatcmpl-%s","object":"chat.completion.chunk","choices":[{"index":0,'
          '"delta":{"content":"tok%d \\u00e9"}}]}\n\n' % (tag, i) for i in range(n)]
    return ev + ["data: [DONE]\n\n"]


def anthropic_events(n, tag="an"):
    ev = ['event: message_start\ndata: {"type":"message_start","message":{"id":"msg_%s",'
          '"type":"message","role":"assistant","content":[],"model":"claude-3"}}\n\n' % tag]
    ev += ['event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
           '"delta":{"type":"text_delta","text":"tok%d"}}\n\n' % i for i in range(n)]
    ev += ['event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
           '"end_turn"}}\n\n', 'event: message_stop\ndata: {"type":"message_stop"}\n\n']
    return ev


def chat_body(model, stream=True):
    return json.dumps({"model": model, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()


def msgs_body(model):
    return json.dumps({"model": model, "max_tokens": 16, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()


def real_events(body):
    """SSE events without keep-alive comment blocks."""
    return [e for e in sse_events(body) if e["data"] is not None or e["event"] is not None]


def arrival_times(reads, events):
    """When the last byte of each of `events` (strings, in order) reached the client."""
    out = []
    got = b""
    want = b""
    i = 0
    for t, piece in reads:
        got += piece
        while i < len(events) and (want + events[i].encode()) in got:
            want += events[i].encode()
            out.append(t)
            i += 1
    return out


class Streaming(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = {n: cls.class_mock(n) for n in ("openai", "anthropic", "oa1", "oa2", "an2")}
        noretry = {"http_client": {"max_retries": 0}}
        cls.stack = cls.start_class_stack(
            mocks=cls.m,
            config={"providers": {"oa1": dict(noretry, provider_type="openai"),
                                  "oa2": dict(noretry, provider_type="openai"),
                                  "an2": dict(noretry, provider_type="anthropic"),
                                  "anthropic": noretry},
                    "routing": {"rules": [
                        {"name": "sfb", "model_pattern": "^sfb-", "primary": "oa1",
                         "fallbacks": ["oa2"]},
                        {"name": "afb", "model_pattern": "^claude-fb", "primary": "anthropic",
                         "fallbacks": ["an2"]}],
                        "circuit_breaker": {"failure_threshold": 1000}},
                    "http_server": {"sse_keepalive_interval_secs": 1}})

    def setUp(self):
        for m in self.m.values():
            m.clear()
            m.on(CHAT, None)
            m.on(MSGS, None)

    # -- helpers ------------------------------------------------------------------------
    def check_relayed(self, mock, path, headers, body, events, delay=0.2):
        s = MockStream(events, delay=delay, first_delay=0.2)
        mock.on(path, s)
        resp, reads, t_sent = self.stack.stream("POST", path, headers, body)
        self.assertEqual(resp.status, 200, resp)
        self.assertTrue((resp.header("content-type") or "").startswith("text/event-stream"),
                        resp)
        self.assertEqual(real_events(resp.body), real_events("".join(events)),
                         "events changed on the way")
        # The events' bytes are relayed unchanged (keep-alive comments aside).
        stripped = b"".join(p for _, p in reads).replace(b": keep-alive\n\n", b"")
        self.assertEqual(stripped, "".join(events).encode())
        self.assertEqual(len(s.sent_at), len(events))
        arr = arrival_times(reads, events)
        self.assertEqual(len(arr), len(events))
        lag = [round(a - b, 4) for a, b in zip(arr, s.sent_at)]
        detail = "relay lag per event (s): %s" % lag
        self.assertLess(lag[0], FIRST_EVENT_MAX_LAG, "first event relayed late: " + detail)
        self.assertLess(max(lag), EVENT_MAX_LAG, "events relayed late: " + detail)
        for i in range(1, len(events)):
            self.assertGreaterEqual(arr[i] - arr[0], i * delay - 0.08,
                                    "events bunched up (buffered): " + detail)
        return mock.wait_for(1)[0]

    def open_raw(self, path, headers, body):
        rs = RawStream(self.stack.port, "POST", path, [JSON] + headers, body)
        self.addCleanup(rs.close)
        return rs

    def raw_events(self, rs):
        r = lrtest.parse_raw_response(rs.data)
        self.assertIsNotNone(r, "no response header block: %r" % rs.data[:500])
        return r, sse_events(r.body)

    # -- relay --------------------------------------------------------------------------
    def test_openai_stream_relayed_event_by_event(self):
        body = chat_body("gpt-4o")
        req = self.check_relayed(self.m["openai"], CHAT,
                                 [JSON, ("Accept", "text/event-stream"),
                                  ("Accept-Encoding", "gzip, br")], body, openai_events(4))
        self.assertEqual(req.body, body)
        self.assertEqual([v.lower() for v in req.header_all("accept-encoding")], ["identity"])

    def test_anthropic_stream_relayed_event_by_event(self):
        body = msgs_body("claude-3-5-sonnet")
        req = self.check_relayed(self.m["anthropic"], MSGS,
                                 [JSON, AV, ("Accept-Encoding", "gzip")], body,
                                 anthropic_events(3))
        self.assertEqual(req.body, body)
        self.assertEqual([v.lower() for v in req.header_all("accept-encoding")], ["identity"])

    # -- keep-alive ---------------------------------------------------------------------
    def test_keepalive_comments_while_upstream_silent(self):
        ev = openai_events(2)
        s = MockStream(ev, delay=[2.6, 0.0, 0.0])  # silent 2.6 s after the first event
        self.m["openai"].on(CHAT, s)
        resp, reads, _ = self.stack.stream("POST", CHAT, [JSON], chat_body("gpt-4o"))
        self.assertEqual(resp.status, 200, resp)
        evs = sse_events(resp.body)
        ka = [i for i, e in enumerate(evs) if e["data"] is None and "keep-alive" in e["comments"]]
        self.assertTrue(ka, "no ': keep-alive' comment during 2.6 s of upstream silence "
                            "(interval 1 s): %r" % resp.body)
        first = next(i for i, e in enumerate(evs) if e["data"] is not None)
        second = [i for i, e in enumerate(evs) if e["data"] is not None][1]
        self.assertTrue(any(first < i < second for i in ka),
                        "keep-alive should come between the two events: %r" % evs)
        self.assertEqual(real_events(resp.body), real_events("".join(ev)))
        # Keep-alive timing: the first comment about 1-2 s after the first event.
        t_first = arrival_times(reads, ev[:1])[0]
        t_ka = next(t for t, p in reads if b": keep-alive" in p)
        self.assertGreaterEqual(t_ka - t_first, 0.8, "keep-alive too early")
        self.assertLessEqual(t_ka - t_first, 2.2, "keep-alive too late")

    # -- mid-stream death ---------------------------------------------------------------
    def test_openai_midstream_death_gives_error_event(self):
        s = MockStream(openai_events(5), delay=0.05, close_after=2)
        self.m["openai"].on(CHAT, s)
        rs = self.open_raw(CHAT, [], chat_body("gpt-4o"))
        rs.read_until(lambda d: d.endswith(b"\r\n0\r\n\r\n"), timeout=3.0)  # stream end
        self.assertTrue(rs.eof or rs.data.endswith(b"0\r\n\r\n"),
                        "the stream must end (not hang) after the upstream died: %r"
                        % rs.data[-300:])
        r, evs = self.raw_events(rs)
        self.assertEqual(r.status, 200, r)
        datas = [e["data"] for e in evs if e["data"] is not None]
        self.assertEqual(len(datas), 3, "2 relayed events + 1 error event expected: %r" % evs)
        self.assertIn('"tok1', datas[1])
        self.assertNotIn("[DONE]", datas, "a failed stream must not end with [DONE]")
        err = json.loads(datas[-1])
        self.assertIsInstance(err.get("error"), dict, "OpenAI error event expected: %r" % err)
        self.assertIsInstance(err["error"].get("message"), str, err)

    def test_anthropic_midstream_death_gives_error_event(self):
        s = MockStream(anthropic_events(5), delay=0.05, close_after=2)
        self.m["anthropic"].on(MSGS, s)
        rs = self.open_raw(MSGS, [AV], msgs_body("claude-3"))
        rs.read_until(lambda d: d.endswith(b"\r\n0\r\n\r\n"), timeout=3.0)
        self.assertTrue(rs.eof or rs.data.endswith(b"0\r\n\r\n"),
                        "the stream must end after the upstream died: %r" % rs.data[-300:])
        r, evs = self.raw_events(rs)
        self.assertEqual(r.status, 200, r)
        names = [e["event"] for e in evs if e["event"]]
        self.assertEqual(names[:2], ["message_start", "content_block_delta"], evs)
        self.assertEqual(names[-1], "error", "Anthropic `event: error` expected: %r" % evs)
        self.assertNotIn("message_stop", names, "a failed stream must not end cleanly")
        err = json.loads(evs[-1]["data"])
        self.assertEqual(err.get("type"), "error", err)
        self.assertIsInstance(err.get("error"), dict, err)

    # -- fallback before the first byte --------------------------------------------------
    def test_openai_stream_falls_back_before_first_byte(self):
        self.m["oa1"].on(CHAT, MockResponse.json({"error": {"message": "boom"}}, 500))
        ev = openai_events(3, "fb")
        self.m["oa2"].on(CHAT, MockStream(ev, delay=0.05))
        resp, _reads, _ = self.stack.stream("POST", CHAT, [JSON], chat_body("sfb-m"))
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(real_events(resp.body), real_events("".join(ev)))
        self.assertEqual(self.m["oa1"].count(), 1)
        self.assertEqual(self.m["oa2"].count(), 1)

    def test_anthropic_stream_falls_back_on_529_before_first_byte(self):
        self.m["anthropic"].on(MSGS, MockResponse.json(
            {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}, 529))
        ev = anthropic_events(2, "fb")
        self.m["an2"].on(MSGS, MockStream(ev, delay=0.05))
        resp, _reads, _ = self.stack.stream("POST", MSGS, [JSON, AV], msgs_body("claude-fb-1"))
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(real_events(resp.body), real_events("".join(ev)))
        self.assertEqual(self.m["an2"].count(), 1)

    # -- client disconnect --------------------------------------------------------------
    def check_disconnect(self, mock, path, headers, body, events, filler):
        s = MockStream(events, delay=0.1, endless=True, filler=filler, max_secs=15)
        mock.on(path, s)
        rs = self.open_raw(path, headers, body)
        ok = rs.read_until(lambda d: d.count(b"data:") >= 2, timeout=5)
        self.assertTrue(ok, "did not get 2 events: %r" % rs.data[-300:])
        t_close = time.monotonic()
        rs.close()
        self.assertTrue(s.finished.wait(3.0), "the upstream stream was still being sent 3 s "
                                              "after the client went away")
        self.assertIsNotNone(s.closed_at, "upstream not closed (stream ended by itself?)")
        gone = s.closed_at - t_close
        self.assertLess(gone, 1.0, "the agent closed the upstream %.2f s after the client "
                                   "disconnected (want < 1 s)" % gone)

    def test_openai_client_disconnect_cancels_upstream(self):
        self.check_disconnect(self.m["openai"], CHAT, [], chat_body("gpt-4o"),
                              openai_events(2)[:-1],
                              'data: {"choices":[{"delta":{"content":"more"}}]}\n\n')

    def test_anthropic_client_disconnect_cancels_upstream(self):
        self.check_disconnect(self.m["anthropic"], MSGS, [AV], msgs_body("claude-3"),
                              anthropic_events(1)[:2],
                              'event: content_block_delta\ndata: {"type":"content_block_delta"'
                              ',"index":0,"delta":{"type":"text_delta","text":"more"}}\n\n')

    # -- back-pressure ------------------------------------------------------------------
    def test_slow_reader_backpressure(self):
        # 48 MiB of SSE as fast as the mock can write while the client does not read for
        # 1.5 s: the agent must pause the upstream (CURL_WRITEFUNC_PAUSE), not buffer it all;
        # then everything arrives intact.
        ev = ("data: " + "x" * (64 * 1024 - 8) + "\n\n").encode()
        n = 48 * 16
        done = b"data: [DONE]\n\n"
        s = MockStream([ev] * n + [done], delay=0.0)
        self.m["openai"].on(CHAT, s)
        rss0 = vm_kib(self.stack.agent.pid, "VmRSS")
        rs = self.open_raw(CHAT, [], chat_body("gpt-4o"))
        rs.read_until(lambda d: b"\r\n\r\n" in d, timeout=5)  # headers only, then stall
        time.sleep(1.5)
        stalled = vm_kib(self.stack.agent.pid, "VmRSS")
        sent_while_stalled = len(s.sent_at)
        self.assertTrue(rs.read_until(lambda d: d.endswith(b"\r\n0\r\n\r\n"), timeout=30),
                        "stream did not complete: got %d bytes" % len(rs.data))
        r = lrtest.parse_raw_response(rs.data)
        self.assertEqual(r.status, 200)
        got = r.body.replace(b": keep-alive\n\n", b"")  # the client was silent > 1 s
        want = ev * n + done
        if got != want:
            i = next((k for k in range(0, min(len(got), len(want)), 4096)
                      if got[k:k + 4096] != want[k:k + 4096]), min(len(got), len(want)))
            self.fail("stream bytes differ from byte ~%d (got %d bytes, want %d): got %r ..."
                      % (i, len(got), len(want), got[max(0, i - 40):i + 4096 + 200]
                         .replace(b"x" * 64, b"<x64>")))
        self.assertEqual(lrtest.sha256(got), lrtest.sha256(want))
        self.assertLess(sent_while_stalled, n + 1, "the mock could write all 48 MiB while "
                                                   "the client read nothing: no back-pressure")
        self.assertLess(stalled - rss0, 24 * 1024, "agent RSS grew %d KiB while the client "
                        "was not reading (buffering instead of pausing the upstream?)"
                        % (stalled - rss0))


def vm_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    lrtest.main()
