"""Bypassed paths go straight from HAProxy to the provider, byte for byte (DESIGN §5).

Two mock providers (openai, anthropic), bypass.provider auto, no keys configured.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockResponse, multipart  # noqa: E402


class BypassAuto(lrtest.LRTestCase):
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

    def only(self, mock, other):
        """The single request `mock` got; `other` must have got none."""
        reqs = mock.wait_for(1, timeout=5)
        self.assertEqual(len(reqs), 1, "mock %s: want exactly 1 request, got %r"
                         % (mock.name, reqs))
        self.assertNoRequests(other, settle=0.05)
        return reqs[0]

    def test_embeddings_json_and_headers_intact(self):
        body = json.dumps({"model": "text-embedding-3-small",
                           "input": ["héllo wörld", "second"]}).encode()
        r = self.stack.http("POST", "/v1/embeddings", [
            ("Content-Type", "application/json"),
            ("X-Request-Trace", "trace-7f3a 9c/+=="),
            ("OpenAI-Organization", "org-lrtest"),
            ("X-Multi", "first"),
            ("X-Multi", "second"),
            ("User-Agent", "lrtest-client/1.0"),
        ], body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"mock": "openai", "path": "/v1/embeddings",
                                    "method": "POST"})
        req = self.only(self.openai, self.anthropic)
        self.assertEqual(req.method, "POST")
        self.assertEqual(req.path, "/v1/embeddings")
        self.assertEqual(req.query, "")
        self.assertEqual(req.body, body)
        self.assertHeader(req, "content-type", "application/json")
        self.assertHeader(req, "x-request-trace", "trace-7f3a 9c/+==")
        self.assertHeader(req, "openai-organization", "org-lrtest")
        self.assertHeader(req, "user-agent", "lrtest-client/1.0")
        self.assertEqual(req.header_all("x-multi"), ["first", "second"],
                         "repeated headers keep their order")
        # The provider's Host, not the client's (127.0.0.1:<frontend port>).
        self.assertEqual(req.header_all("host"), [self.openai.host_port])

    def test_multipart_binary_body_byte_identical(self):
        audio = bytes(range(256)) * 8 + b"\x00\x00\r\n\r\n--fake-boundary\r\n\x00\xff" * 50
        ctype, body = multipart([
            ("file", audio, "speech.wav", "audio/wav"),
            ("model", b"whisper-1", None, None),
            ("prompt", "ünïcode\r\nline two".encode(), None, None),
        ], boundary="----lrtestB0undary\x41zz")
        self.assertIn(b"\x00", body)
        r = self.stack.http("POST", "/v1/audio/transcriptions",
                            [("Content-Type", ctype), ("Accept", "application/json")], body)
        self.assertEqual(r.status, 200, r)
        req = self.only(self.openai, self.anthropic)
        self.assertEqual(req.path, "/v1/audio/transcriptions")
        self.assertEqual(len(req.body), len(body))
        self.assertTrue(req.body == body, "multipart body changed on the way")
        self.assertEqual(req.header_all("content-type"), [ctype])

    def test_chunked_request_body_intact(self):
        pieces = [b'{"model":"dall-e-3",', b'"prompt":"a \x00 cat\\r\\n"', b',"n":1}']
        r = self.stack.http("POST", "/v1/images/generations",
                            [("Content-Type", "application/json")], pieces, chunked=True)
        self.assertEqual(r.status, 200, r)
        req = self.only(self.openai, self.anthropic)
        self.assertEqual(req.body, b"".join(pieces))

    def test_images_generations(self):
        body = b'{"model":"dall-e-3","prompt":"a lighthouse","size":"1024x1024"}'
        r = self.stack.http("POST", "/v1/images/generations",
                            [("Content-Type", "application/json")], body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "openai")
        req = self.only(self.openai, self.anthropic)
        self.assertEqual((req.method, req.path, req.body),
                         ("POST", "/v1/images/generations", body))

    def test_query_string_intact(self):
        r = self.stack.http("GET", "/v1/files?purpose=fine-tune&limit=2")
        self.assertEqual(r.status, 200, r)
        req = self.only(self.openai, self.anthropic)
        self.assertEqual(req.method, "GET")
        self.assertEqual(req.target, "/v1/files?purpose=fine-tune&limit=2")
        self.assertEqual(req.body, b"")
        # Odd but legal query bytes and an encoded path survive too.
        self.openai.clear()
        target = "/v1/files/file-abc%2Fdef/content?a=%20b&a=c&empty=&x=y%26z"
        r = self.stack.http("GET", target)
        self.assertEqual(r.status, 200, r)
        req = self.only(self.openai, self.anthropic)
        self.assertEqual(req.target, target)

    def test_count_tokens_goes_to_anthropic(self):
        body = b'{"model":"claude-3-5-sonnet-latest","messages":[{"role":"user","content":"hi"}]}'
        r = self.stack.http("POST", "/v1/messages/count_tokens",
                            [("Content-Type", "application/json")], body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "anthropic")
        req = self.only(self.anthropic, self.openai)
        self.assertEqual((req.method, req.path, req.body),
                         ("POST", "/v1/messages/count_tokens", body))
        self.assertEqual(req.header_all("host"), [self.anthropic.host_port])

    def test_message_batches_go_to_anthropic(self):
        r = self.stack.http("GET", "/v1/messages/batches?limit=5")
        self.assertEqual(r.status, 200, r)
        req = self.only(self.anthropic, self.openai)
        self.assertEqual(req.target, "/v1/messages/batches?limit=5")

    def test_anthropic_version_header_selects_anthropic(self):
        r = self.stack.http("GET", "/v1/files", [("anthropic-version", "2023-06-01")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "anthropic")
        req = self.only(self.anthropic, self.openai)
        self.assertEqual(req.path, "/v1/files")
        self.assertEqual(req.header_all("anthropic-version"), ["2023-06-01"])

    def test_x_api_key_header_selects_anthropic(self):
        r = self.stack.http("GET", "/v1/files", [("x-api-key", "client-side-key")])
        self.assertEqual(r.status, 200, r)
        req = self.only(self.anthropic, self.openai)
        self.assertEqual(req.header_all("x-api-key"), ["client-side-key"])

    def test_bearer_auth_stays_openai(self):
        r = self.stack.http("GET", "/v1/files", [("Authorization", "Bearer sk-client")])
        self.assertEqual(r.status, 200, r)
        req = self.only(self.openai, self.anthropic)
        self.assertEqual(req.header_all("authorization"), ["Bearer sk-client"])

    def test_response_passes_through_unchanged(self):
        body = json.dumps({"id": "file-123", "object": "file", "bytes": 42}).encode()
        self.openai.on("/v1/files", MockResponse(201, body, [
            ("Content-Type", "application/json; charset=utf-8"),
            ("X-Mock-Id", "mock-4711"),
            ("OpenAI-Processing-Ms", "17"),
        ], reason="Created"))
        try:
            r = self.stack.http("POST", "/v1/files", [("Content-Type", "application/json")],
                                b"{}")
        finally:
            self.openai.on("/v1/files", None)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.body, body)
        self.assertEqual(r.header_all("x-mock-id"), ["mock-4711"])
        self.assertEqual(r.header("content-type"), "application/json; charset=utf-8")
        self.assertEqual(r.header("openai-processing-ms"), "17")
        self.assertEqual(r.header("content-length"), str(len(body)))

    def test_error_status_passes_through_unchanged(self):
        err = json.dumps({"error": {"message": "Rate limit reached", "type": "requests",
                                    "code": "rate_limit_exceeded"}}).encode()
        self.openai.on("/v1/embeddings", MockResponse(429, err, [
            ("Content-Type", "application/json"), ("Retry-After", "7"),
            ("X-Mock-Id", "rl-1")]))
        try:
            r = self.stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")],
                                b'{"input":"x"}')
        finally:
            self.openai.on("/v1/embeddings", None)
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.body, err)
        self.assertEqual(r.header("retry-after"), "7")
        self.assertEqual(r.header("x-mock-id"), "rl-1")
        # A provider 404 on a bypassed path stays the provider's 404 (not the engine's).
        nf = b'{"type":"error","error":{"type":"not_found_error","message":"mock says no"}}'
        self.anthropic.on("/v1/messages/batches/msgbatch_x",
                          MockResponse(404, nf, [("Content-Type", "application/json")]))
        r = self.stack.http("GET", "/v1/messages/batches/msgbatch_x")
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.body, nf)

    def test_chunked_response_without_length(self):
        payload = b"x" * 100000 + b"\x00end"
        self.openai.on("/v1/files/file-big/content",
                       MockResponse(200, payload, [("Content-Type", "application/octet-stream")],
                                    chunked=True))
        r = self.stack.http("GET", "/v1/files/file-big/content")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, payload)

    def test_large_upload_intact(self):
        # 3 MB: far beyond HAProxy's buffer, so it must be streamed through untouched.
        blob = os.urandom(3 * 1024 * 1024)
        ctype, body = multipart([("purpose", b"batch", None, None),
                                 ("file", blob, "batch.jsonl", "application/octet-stream")])
        r = self.stack.http("POST", "/v1/files", [("Content-Type", ctype)], body, timeout=30)
        self.assertEqual(r.status, 200, r)
        req = self.only(self.openai, self.anthropic)
        self.assertEqual(len(req.body), len(body))
        self.assertTrue(req.body == body, "3 MB upload changed on the way")

    def test_other_methods_intact(self):
        for method, path in (("DELETE", "/v1/files/file-abc123"),
                             ("PUT", "/v1/vector_stores/vs_1"),
                             ("PATCH", "/v1/organization/projects/proj_1")):
            with self.subTest(method=method):
                self.openai.clear()
                body = None if method == "DELETE" else b'{"name":"x"}'
                r = self.stack.http(method, path, body=body)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json(), {"mock": "openai", "path": path, "method": method})
                req = self.openai.wait_for(1)[0]
                self.assertEqual((req.method, req.path, req.body), (method, path, body or b""))

    def test_hop_by_hop_headers_stripped(self):
        # DESIGN §5: HAProxy strips hop-by-hop headers on the way to the provider.
        r = self.stack.http("POST", "/v1/embeddings", [
            ("Connection", "keep-alive, X-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
            ("TE", "trailers"),
            ("X-End-To-End", "kept"),
        ], b'{"input":"x"}')
        self.assertEqual(r.status, 200, r)
        req = self.only(self.openai, self.anthropic)
        self.assertHeader(req, "x-end-to-end", "kept")
        leaked = [(k, v) for k, v in req.headers
                  if k.lower() in ("keep-alive", "proxy-connection", "proxy-authorization", "te")
                  or (k.lower() == "connection" and "x-hop" in v.lower())]
        self.assertFalse(leaked, "hop-by-hop headers reached the provider: %r" % leaked)

    def test_keepalive_many_requests(self):
        # Several requests in a row, alternating providers: each lands on the right mock.
        for i in range(10):
            if i % 2:
                r = self.stack.http("POST", "/v1/messages/count_tokens", body=b'{"i":%d}' % i)
                self.assertEqual(r.json()["mock"], "anthropic", r)
            else:
                r = self.stack.http("POST", "/v1/moderations", body=b'{"i":%d}' % i)
                self.assertEqual(r.json()["mock"], "openai", r)
        self.assertEqual(len(self.openai.wait_for(5)), 5)
        self.assertEqual(len(self.anthropic.wait_for(5)), 5)


class BypassBaseUrlForms(lrtest.LRTestCase):
    """base_url with a trailing /v1 is the same as without; a path prefix is prepended."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(
            mocks={"openai": cls.openai, "anthropic": cls.anthropic},
            config={"providers": {"openai": {"base_url": cls.openai.url + "/openai"},
                                  "anthropic": {"base_url": cls.anthropic.url + "/v1"}}})

    def setUp(self):
        self.openai.clear()
        self.anthropic.clear()

    def test_path_prefix_is_prepended(self):
        r = self.stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")],
                            b'{"input":"x"}')
        self.assertEqual(r.status, 200, r)
        req = self.openai.wait_for(1)[0]
        self.assertEqual(req.path, "/openai/v1/embeddings")
        self.assertEqual(req.body, b'{"input":"x"}')
        self.assertEqual(req.header_all("host"), [self.openai.host_port])

    def test_path_prefix_keeps_query(self):
        r = self.stack.http("GET", "/v1/files?purpose=batch&limit=2")
        self.assertEqual(r.status, 200, r)
        req = self.openai.wait_for(1)[0]
        self.assertEqual(req.target, "/openai/v1/files?purpose=batch&limit=2")

    def test_trailing_v1_is_stripped(self):
        r = self.stack.http("POST", "/v1/messages/count_tokens", body=b'{"m":1}')
        self.assertEqual(r.status, 200, r)
        req = self.anthropic.wait_for(1)[0]
        self.assertEqual(req.path, "/v1/messages/count_tokens")
        self.assertNoRequests(self.openai, settle=0.05)


class BypassNamedProvider(lrtest.LRTestCase):
    """bypass.provider names a provider (here a third, openai-type one with a path prefix):
    bypassed requests go there whatever their headers. The Anthropic namespace
    (/v1/messages/...) still goes to the Anthropic-type provider when the named one is not
    (agent/classify.h rule 3; the static fallback renders the same)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.groq = cls.class_mock("groq")
        cls.stack = cls.start_class_stack(
            mocks={"openai": cls.openai, "anthropic": cls.anthropic},
            config={"providers": {"groq": {"provider_type": "openai",
                                           "base_url": cls.groq.url + "/openai"}},
                    "bypass": {"provider": "groq"}})

    def setUp(self):
        for m in (self.openai, self.anthropic, self.groq):
            m.clear()

    def test_bypassed_requests_go_to_named_provider(self):
        for method, path, headers in (
                ("POST", "/v1/embeddings", []),
                ("GET", "/v1/files?limit=1", [("anthropic-version", "2023-06-01")]),
                ("GET", "/v1/models/llama3", [("x-api-key", "k")])):
            with self.subTest(path=path):
                r = self.stack.http(method, path, headers, b"{}" if method == "POST" else None)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["mock"], "groq", r)
        self.assertEqual([q.target for q in self.groq.wait_for(3)],
                         ["/openai/v1/embeddings", "/openai/v1/files?limit=1",
                          "/openai/v1/models/llama3"])
        self.assertEqual(self.groq.requests[0].header_all("host"), [self.groq.host_port])
        self.assertNoRequests(self.openai, self.anthropic, settle=0.05)

    def test_anthropic_namespace_stays_anthropic(self):
        r = self.stack.http("POST", "/v1/messages/count_tokens", body=b"{}")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "anthropic", r)
        self.assertNoRequests(self.openai, self.groq, settle=0.05)


class BypassEnvOverride(lrtest.LRTestCase):
    """LUNAROUTE_BYPASS_PROVIDER overrides the file's bypass.provider (DESIGN §5)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(
            mocks={"openai": cls.openai, "anthropic": cls.anthropic},
            config={"bypass": {"provider": "auto"}},
            env={"LUNAROUTE_BYPASS_PROVIDER": "anthropic"})

    def test_env_provider_wins(self):
        r = self.stack.http("POST", "/v1/embeddings", body=b'{"input":"x"}')
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "anthropic", r)
        self.assertEqual(self.anthropic.wait_for(1)[0].path, "/v1/embeddings")
        self.assertNoRequests(self.openai, settle=0.05)


if __name__ == "__main__":
    lrtest.main()
