"""Bypassed responses are streamed as the provider sends them, never buffered (DESIGN §5).

The openai mock answers POST /v1/responses (bypassed by default) with 5 SSE chunks 300 ms
apart; the client records when each event arrives.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockStream  # noqa: E402

N_CHUNKS = 5
DELAY = 0.3


def sse_chunks(tag):
    return ['event: response.output_text.delta\ndata: {"seq":%d,"tag":"%s","delta":"tok%d"}\n\n'
            % (i, tag, i) for i in range(N_CHUNKS)]


class Streaming(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(mocks={"openai": cls.openai,
                                                 "anthropic": cls.anthropic})

    def check_streamed(self, mock, path, headers, body, tag):
        s = MockStream(sse_chunks(tag), delay=DELAY)
        mock.on(path, s)
        try:
            resp, reads, t_sent = self.stack.stream("POST", path, headers, body)
        finally:
            mock.on(path, None)
        self.assertEqual(resp.status, 200, resp)
        self.assertTrue(resp.header("content-type", "").startswith("text/event-stream"), resp)
        expected = "".join(sse_chunks(tag)).encode()
        self.assertEqual(resp.body, expected)
        self.assertEqual(len(s.sent_at), N_CHUNKS)

        # When did each event's last byte reach the client?
        arrival = []
        got = b""
        for t, piece in reads:
            got += piece
            while len(arrival) < N_CHUNKS and \
                    len(got) >= len("".join(sse_chunks(tag)[:len(arrival) + 1]).encode()):
                arrival.append(t)
        self.assertEqual(len(arrival), N_CHUNKS)
        rel = [round(t - t_sent, 3) for t in arrival]
        lag = [round(a - b, 3) for a, b in zip(arrival, s.sent_at)]
        detail = "arrival after request (s): %s; relay lag per chunk (s): %s" % (rel, lag)

        self.assertLess(rel[0], 0.25, "first event too late: " + detail)
        self.assertGreaterEqual(arrival[-1] - t_sent, (N_CHUNKS - 1) * DELAY - 0.05,
                                "stream ended too early: " + detail)
        # Each event is relayed as soon as the provider flushed it. ~200 ms here means
        # HAProxy held small chunks back (no `option http-no-delay`).
        self.assertLess(max(lag), 0.15, "events relayed late: " + detail)
        for i in range(1, N_CHUNKS):
            self.assertGreaterEqual(arrival[i] - arrival[0], i * DELAY - 0.1,
                                    "events bunched up (buffered): " + detail)
        return mock.wait_for(1)[0]

    def test_openai_responses_sse_is_streamed(self):
        self.openai.clear()
        self.anthropic.clear()
        req = self.check_streamed(self.openai, "/v1/responses",
                                  [("Content-Type", "application/json"),
                                   ("Accept", "text/event-stream")],
                                  b'{"model":"gpt-4.1","input":"hi","stream":true}', "oa")
        self.assertEqual(req.path, "/v1/responses")
        self.assertNoRequests(self.anthropic, settle=0.05)

    def test_anthropic_bypass_sse_is_streamed(self):
        # Anthropic namespace, bypassed: the same guarantee through the other backend.
        self.openai.clear()
        self.anthropic.clear()
        req = self.check_streamed(self.anthropic, "/v1/messages/batches/stream",
                                  [("anthropic-version", "2023-06-01")], b"{}", "an")
        self.assertEqual(req.path, "/v1/messages/batches/stream")
        self.assertNoRequests(self.openai, settle=0.05)

    def test_large_streamed_body(self):
        # 2 MB in 64 KiB chunks with no delay: nothing lost or reordered.
        chunks = [bytes([65 + i % 26]) * 65536 for i in range(32)]
        self.openai.on("/v1/files/big/content",
                       MockStream(chunks, delay=0.0,
                                  headers=[("Content-Type", "application/octet-stream")]))
        t0 = time.monotonic()
        resp, _reads, _ = self.stack.stream("GET", "/v1/files/big/content")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.body, b"".join(chunks))
        self.assertLess(time.monotonic() - t0, 10)


if __name__ == "__main__":
    lrtest.main()
