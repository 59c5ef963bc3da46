"""Routing engine ingress errors (DESIGN §8, issue #3): body over max_request_body_bytes -> 413,
malformed requests -> 400, invalid JSON / missing model -> 400 in the client's dialect, unknown
paths -> 404; every error is JSON with content-type application/json and never reaches a
provider. Checked straight on the engine port and through HAProxy where HAProxy lets the
request through. The slow-loris (408) case is in test_engine_slowloris.py.
"""

import http.client
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

JSON = ("Content-Type", "application/json")
AV = ("anthropic-version", "2023-06-01")
CHAT = "/v1/chat/completions"
MSGS = "/v1/messages"
MAX_BODY = 4096


class Ingress(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(
            mocks={"openai": cls.openai, "anthropic": cls.anthropic},
            config={"http_server": {"max_request_body_bytes": MAX_BODY}})

    def setUp(self):
        self.openai.clear()
        self.anthropic.clear()

    def both(self):
        """(label, send) for the engine port and the HAProxy frontend."""
        return (("engine", self.stack.engine_http), ("haproxy", self.stack.http))

    def big_chat(self, n):
        pad = "x" * n
        return json.dumps({"model": "gpt-4o", "messages": [{"role": "user",
                                                            "content": pad}]}).encode()

    # -- 413 ----------------------------------------------------------------------------
    def test_body_too_large_413_openai(self):
        body = self.big_chat(MAX_BODY + 100)
        for label, send in self.both():
            with self.subTest(via=label):
                r = send("POST", CHAT, [JSON], body)
                self.assertOpenAIError(r, 413)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_body_too_large_413_anthropic(self):
        body = json.dumps({"model": "claude-3", "max_tokens": 5,
                           "messages": [{"role": "user", "content": "y" * (MAX_BODY + 1)}]})
        for label, send in self.both():
            with self.subTest(via=label):
                r = send("POST", MSGS, [JSON, AV], body)
                self.assertAnthropicError(r, 413)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_chunked_body_too_large_413(self):
        body = self.big_chat(MAX_BODY * 2)
        pieces = [body[i:i + 1000] for i in range(0, len(body), 1000)]
        for label, port in (("engine", self.stack.ports["engine"]), ("haproxy", self.stack.port)):
            with self.subTest(via=label):
                r = lrtest.http(port, "POST", CHAT, [JSON], pieces, chunked=True)
                self.assertOpenAIError(r, 413)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_body_at_limit_passes(self):
        body = self.big_chat(10)
        body = body[:-2] + b" " * (MAX_BODY - len(body)) + body[-2:]
        self.assertEqual(len(body), MAX_BODY)
        r = self.stack.http("POST", CHAT, [JSON], body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.openai.wait_for(1)[0].body, body)

    # -- 400 ----------------------------------------------------------------------------
    def test_malformed_request_line_400(self):
        data, closed = lrtest.raw_exchange(self.stack.ports["engine"],
                                           b"THIS IS NOT HTTP\r\n\r\n", timeout=5)
        r = lrtest.parse_raw_response(data)
        self.assertIsNotNone(r, "no HTTP response to garbage: %r" % data)
        self.assertOpenAIError(r, 400)
        self.assertIsNotNone(closed, "the connection should be closed after a 400")

    def test_bad_content_length_400(self):
        data, _ = lrtest.raw_exchange(
            self.stack.ports["engine"],
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n{}",
            timeout=5)
        r = lrtest.parse_raw_response(data)
        self.assertIsNotNone(r, data)
        self.assertOpenAIError(r, 400)

    def test_invalid_json_400_openai(self):
        for label, send in self.both():
            with self.subTest(via=label):
                r = send("POST", CHAT, [JSON], b'{"model":"gpt-4o","messages":[')
                self.assertOpenAIError(r, 400)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_invalid_json_400_anthropic(self):
        for label, send in self.both():
            with self.subTest(via=label):
                r = send("POST", MSGS, [JSON, AV], b"not json at all")
                self.assertAnthropicError(r, 400)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_missing_model_400(self):
        for label, send in self.both():
            with self.subTest(via=label):
                self.assertOpenAIError(send("POST", CHAT, [JSON], b'{"messages":[]}'), 400)
                self.assertAnthropicError(send("POST", MSGS, [JSON, AV],
                                               b'{"max_tokens":5,"messages":[]}'), 400)
                self.assertOpenAIError(send("POST", CHAT, [JSON], b'{"model":42}'), 400)
                self.assertOpenAIError(send("POST", CHAT, [JSON], b'[1,2]'), 400)
        self.assertNoRequests(self.openai, self.anthropic)

    # -- what the engine reads from a body (body_peek.c; jansson for what it cannot judge) --
    def test_body_model_read(self):
        """The top-level "model" (the last of duplicates, escapes decoded, nested ones
        ignored) is what routing and the metrics see; the body reaches the provider as sent."""
        msgs = '[{"role":"user","content":"hi"}]'
        cases = [  # (body, the model the engine must read)
            ('{"metadata":{"model":"peek-nested"},"messages":%s,"model":"peek-last"}' % msgs,
             "peek-last"),
            ('{"model":"peek-dup-a","messages":%s,"model":"peek-dup-b"}' % msgs, "peek-dup-b"),
            ('{"model":"\\u0070eek-\\u00e9sc","messages":%s}' % msgs, "peek-\u00e9sc"),
            # a surrogate pair: left to jansson, same answer
            ('{"model":"peek-emoji","messages":[{"role":"user","content":"\\ud83d\\ude00"}]}',
             "peek-emoji"),
        ]
        m0 = self.stack.metrics()
        for body, model in cases:
            with self.subTest(body=body):
                self.openai.clear()
                raw = body.encode()
                r = self.stack.http("POST", CHAT, [JSON], raw)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(self.openai.wait_for(1)[0].body, raw)
        m1 = self.stack.metrics()
        for _, model in cases:
            self.assertEqual(lrtest.metric(m1, "lunaroute_requests_total", model=model) -
                             lrtest.metric(m0, "lunaroute_requests_total", model=model), 1, model)
        for nested in ("peek-nested", "peek-dup-a"):
            self.assertEqual(lrtest.metric(m1, "lunaroute_requests_total", model=nested), 0)

    def test_body_rejected_400(self):
        """What jansson refuses, the fast read refuses too, with the same 400."""
        bad = [
            b'{"model":"gpt-4o","messages":[{"role":"user","content":"\xed\xa0\x80"}]}',
            b'{"model":"gpt-4o","messages":[{"role":"user","content":"\\ud800"}]}',
            b'{"model":"gpt-4o","messages":[]}"x',
            b'{"model":"gpt-4o","messages":[],"n":99999999999999999999}',
            b'{"model":"gpt-4o",\x0c"messages":[]}',
            b'{"model":"gpt-4o","model":1,"messages":[]}',
            b'{"messages":[{"role":"user","content":"hi","model":"gpt-4o"}]}',
            b'[{"model":"gpt-4o"}]',
        ]
        for body in bad:
            with self.subTest(body=body):
                self.assertOpenAIError(self.stack.engine_http("POST", CHAT, [JSON], body), 400)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_unknown_path_404(self):
        r = self.stack.engine_http("GET", "/v1/nope")
        self.assertOpenAIError(r, 404)

    # -- keep-alive ---------------------------------------------------------------------
    def test_keepalive_several_requests_one_connection(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.stack.ports["engine"], timeout=5)
        try:
            for i in range(3):
                body = json.dumps({"model": "gpt-4o", "messages": [], "n": i}).encode()
                conn.request("POST", CHAT, body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                self.assertNotEqual((r.getheader("connection") or "").lower(), "close")
            # An error response keeps the connection usable too (400 is not a framing error).
            conn.request("POST", CHAT, b"{bad", {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 400)
        finally:
            conn.close()
        self.assertEqual(self.openai.count(), 3)


if __name__ == "__main__":
    lrtest.main()
