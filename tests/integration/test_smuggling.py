"""HTTP request smuggling attempts (issue #7) against the engine listener directly and through
HAProxy: conflicting content-length + transfer-encoding, two different content-lengths,
stacked or obfuscated transfer-encodings (`chunked, identity`, `identity, chunked`,
`Transfer-Encoding : chunked`, `xchunked`, two TE headers), an obs-fold line hiding a
content-length, bad chunk sizes, chunk data not followed by CRLF, bare CR / bare LF line ends.

Each attempt carries a second, valid request right behind the first one's framing
(POST /v1/chat/completions?smuggled=1): a parser that got the framing wrong would answer it
and forward it to the provider. Asserted exactly:
  * engine port: one response, 400, JSON in the client's dialect (content-type
    application/json), `connection: close`, the connection closed — the smuggled request is
    never answered and the provider sees nothing;
  * through HAProxy: one response with the status and the answering side (HAProxy's own page,
    or the engine's JSON) of HAProxy 2.6, the connection closed, and never a smuggled request
    at the provider;
  * a request that merely *contains* a request in its body (content-length covering it) is
    one request: answered once, its body forwarded byte for byte.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
SMUGGLED = (b"POST /v1/chat/completions?smuggled=1 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY
HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
HEAD_ANTHROPIC = (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"anthropic-version: 2023-06-01\r\n")
CHUNK0 = b"0\r\n\r\n"


def chunked(body):
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


# name -> (request bytes (the smuggled request follows), dialect, via HAProxy: (status, who) or
# None when HAProxy's own handling makes the case meaningless there)
CASES = {
    "cl_then_te": (HEAD + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
                   % (len(CHUNK0) + len(SMUGGLED)) + CHUNK0, "openai", (400, "engine")),
    "te_then_cl": (HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + CHUNK0,
                   "openai", (400, "engine")),
    "cl_te_anthropic": (HEAD_ANTHROPIC + b"Content-Length: 5\r\nTransfer-Encoding: chunked"
                        b"\r\n\r\n" + CHUNK0, "anthropic", (400, "engine")),
    "two_content_lengths": (HEAD + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
                            % (len(BODY), len(BODY) + len(SMUGGLED)) + BODY, "openai",
                            (400, "haproxy")),
    "te_chunked_identity": (HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n"
                            + chunked(BODY), "openai", (400, "haproxy")),
    "te_identity_chunked": (HEAD + b"Transfer-Encoding: identity, chunked\r\n\r\n"
                            + chunked(BODY), "openai", (422, "haproxy")),
    "te_two_headers": (HEAD + b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + chunked(BODY), "openai", (422, "haproxy")),
    "te_space_before_colon": (HEAD + b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n\r\n"
                              % len(chunked(BODY)) + chunked(BODY), "openai", (400, "haproxy")),
    "te_xchunked": (HEAD + b"Transfer-Encoding: xchunked\r\n\r\n" + chunked(BODY), "openai",
                    (400, "haproxy")),
    "te_xchunked_anthropic": (HEAD_ANTHROPIC + b"Transfer-Encoding: xchunked\r\n\r\n"
                              + chunked(BODY), "anthropic", (400, "haproxy")),
    # HAProxy unfolds obs-fold (RFC 9112 5.2) and so agrees with itself on the framing: only
    # the engine port can be tricked with it.
    "obs_fold_hides_cl": (HEAD + b"X-Pad: a\r\n Content-Length: %d\r\n\r\n" % len(SMUGGLED),
                          "openai", None),
    "bare_cr_in_header": (HEAD + b"X-A: a\rContent-Length: 0\r\nContent-Length: %d\r\n\r\n"
                          % len(BODY) + BODY, "openai", (400, "haproxy")),
    # HAProxy takes bare-LF line ends as line ends and forwards CRLF: it agrees with itself.
    "lf_only_line_ends": (b"POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Length: %d\n\n"
                          % len(BODY) + BODY, "openai", None),
    "chunk_size_not_hex": (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + BODY
                           + b"\r\n" + CHUNK0, "openai", (400, "haproxy")),
    "chunk_size_negative": (HEAD + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n" + BODY
                            + b"\r\n" + CHUNK0, "openai", (400, "haproxy")),
    "chunk_size_overflow": (HEAD + b"Transfer-Encoding: chunked\r\n\r\n1fffffffffffffffff\r\n"
                            + BODY + b"\r\n" + CHUNK0, "openai", (400, "haproxy")),
    "chunk_size_0x": (HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x%x\r\n" % len(BODY) + BODY
                      + b"\r\n" + CHUNK0, "openai", (400, "haproxy")),
    "chunk_data_without_crlf": (HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(BODY)
                                + BODY + b"XX" + CHUNK0, "openai", (400, "haproxy")),
}


class Smuggling(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(mocks={"openai": cls.openai,
                                                 "anthropic": cls.anthropic})

    def setUp(self):
        self.openai.clear()
        self.anthropic.clear()

    def exchange(self, port, data, timeout=5.0):
        out, closed_after = lrtest.raw_exchange(port, data, timeout=timeout)
        return out, closed_after

    def assert_no_smuggled(self):
        for m in (self.openai, self.anthropic):
            bad = [r for r in m.wait_for(2, timeout=0.3) if "smuggled" in r.target]
            self.assertEqual(bad, [], "a smuggled request reached %s" % m.name)

    def test_engine_rejects_ambiguous_framing(self):
        port = self.stack.ports["engine"]
        for name, (req, dialect, _) in CASES.items():
            with self.subTest(case=name):
                self.openai.clear()
                self.anthropic.clear()
                out, closed = self.exchange(port, req + SMUGGLED)
                self.assertEqual(out.count(b"HTTP/1.1 "), 1, "%s: %r" % (name, out[:600]))
                r = lrtest.parse_raw_response(out)
                if dialect == "anthropic":
                    self.assertAnthropicError(r, 400)
                else:
                    self.assertOpenAIError(r, 400)
                self.assertEqual(r.header("content-type"), "application/json")
                self.assertEqual(r.header("connection"), "close")
                self.assertIsNotNone(closed, "%s: the engine kept the connection open" % name)
                self.assertNoRequests(self.openai, self.anthropic, settle=0.05)

    def test_haproxy_front_never_lets_a_smuggled_request_through(self):
        for name, (req, dialect, via) in CASES.items():
            if via is None:
                continue
            with self.subTest(case=name):
                self.openai.clear()
                self.anthropic.clear()
                out, closed = self.exchange(self.stack.port, req + SMUGGLED)
                self.assertEqual(out.count(b"HTTP/1.1 "), 1, "%s: %r" % (name, out[:600]))
                r = lrtest.parse_raw_response(out)
                status, who = via
                self.assertEqual(r.status, status, "%s: %r" % (name, r))
                is_json = (r.header("content-type") or "") == "application/json"
                self.assertEqual("engine" if is_json else "haproxy", who, "%s: %r" % (name, r))
                if who == "engine":
                    (self.assertAnthropicError if dialect == "anthropic"
                     else self.assertOpenAIError)(r, status)
                self.assertIsNotNone(closed, "%s: connection left open" % name)
                self.assertNoRequests(self.openai, self.anthropic, settle=0.05)

    def test_request_inside_a_body_is_just_body(self):
        """Content-length covering bytes that look like a request: one request, not two."""
        # JSON whose string value is a whole HTTP request: forwarded byte for byte.
        body = json.dumps({"model": "gpt-4o", "messages": [
            {"role": "user", "content": SMUGGLED.decode()}]}).encode()
        req = HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
        for label, port in (("engine", self.stack.ports["engine"]), ("haproxy", self.stack.port)):
            with self.subTest(via=label):
                self.openai.clear()
                out, closed = self.exchange(port, req, timeout=1.0)
                self.assertEqual(out.count(b"HTTP/1.1 "), 1, out[:600])
                self.assertEqual(lrtest.parse_raw_response(out).status, 200)
                got = self.openai.wait_for(1)
                self.assertEqual(len(got), 1, got)
                self.assertEqual(got[0].body, body)
                self.assertEqual(got[0].target, "/v1/chat/completions")
                self.assert_no_smuggled()
        # A GET whose content-length covers a request: /healthz answered once, the "request"
        # in its body never.
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
        for label, port in (("engine", self.stack.ports["engine"]), ("haproxy", self.stack.port)):
            with self.subTest(via=label, what="GET with a body"):
                self.openai.clear()
                out, _ = self.exchange(port, req + SMUGGLED, timeout=1.0)
                self.assertEqual(out.count(b"HTTP/1.1 "), 1, out[:600])
                r = lrtest.parse_raw_response(out)
                self.assertEqual((r.status, r.json()), (200, {"status": "ok"}))
                self.assertNoRequests(self.openai, self.anthropic)


if __name__ == "__main__":
    lrtest.main()
