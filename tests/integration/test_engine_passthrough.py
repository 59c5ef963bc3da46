"""Routing engine passthrough (DESIGN §8, issue #3): /v1/chat/completions and /v1/messages go
through HAProxy to the agent's engine, which forwards them to a provider of the request's
dialect with the body bytes unchanged; credentials, anthropic-* headers, the query string
and upstream statuses are handled as the contract says; /v1/models merges the providers'
lists. Non-streaming; streaming is in test_engine_streaming.py.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockResponse  # noqa: E402

JSON = ("Content-Type", "application/json")
AV = ("anthropic-version", "2023-06-01")

OPENAI_MODELS = {"object": "list", "data": [
    {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
    {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}]}
ANTHROPIC_MODELS = {"data": [
    {"type": "model", "id": "claude-3-5-sonnet-20241022", "display_name": "Claude 3.5 Sonnet",
     "created_at": "2024-10-22T00:00:00Z"}],
    "has_more": False, "first_id": "claude-3-5-sonnet-20241022",
    "last_id": "claude-3-5-sonnet-20241022"}


def mock_models(openai, anthropic):
    openai.on("/v1/models", MockResponse.json(OPENAI_MODELS))
    anthropic.on("/v1/models", MockResponse.json(ANTHROPIC_MODELS))


class _Base(lrtest.LRTestCase):
    def setUp(self):
        self.openai.clear()
        self.anthropic.clear()

    def only(self, mock, other):
        reqs = mock.wait_for(1, timeout=5)
        self.assertEqual(len(reqs), 1, "mock %s: want exactly 1 request, got %r"
                         % (mock.name, reqs))
        self.assertNoRequests(other, settle=0.05)
        return reqs[0]


class PassthroughNoKeys(_Base):
    """No keys configured: the client's credentials pass through."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        mock_models(cls.openai, cls.anthropic)
        cls.stack = cls.start_class_stack(mocks={"openai": cls.openai,
                                                 "anthropic": cls.anthropic})

    def test_chat_completions_body_bytes_and_query_unchanged(self):
        # Odd whitespace, key order, unicode escapes and raw UTF-8: forwarded byte for byte.
        body = ('{ "messages" :[ {"content":"h\\u00e9llo \u4e16\u754c \U0001F600",'
                '"role":"user"}],\n\t"temperature": 0.70,  "model":"gpt-4o" , '
                '"x_extra": {"b":1,"a":[1, 2 ,3]} }\n').encode("utf-8")
        r = self.stack.http("POST", "/v1/chat/completions?api-version=2024-06-01&x=a%20b",
                            [JSON, ("Authorization", "Bearer sk-client-123"),
                             ("X-Trace", "t-1")], body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"mock": "openai", "path": "/v1/chat/completions",
                                    "method": "POST"})
        req = self.only(self.openai, self.anthropic)
        self.assertEqual(req.method, "POST")
        self.assertEqual(req.path, "/v1/chat/completions")
        self.assertEqual(req.query, "api-version=2024-06-01&x=a%20b")
        self.assertTrue(req.body == body, "body changed on the way:\n sent %r\n got  %r"
                        % (body, req.body))
        self.assertEqual(req.header_all("authorization"), ["Bearer sk-client-123"])
        self.assertEqual(req.header_all("x-api-key"), [])
        self.assertEqual([v.lower() for v in req.header_all("accept-encoding")], ["identity"],
                         "upstream must be asked for identity encoding: %r" % req.headers)

    def test_messages_goes_to_anthropic_with_headers(self):
        body = b'{"model":"claude-3-5-sonnet-20241022","max_tokens":16,' \
               b'"messages":[{"role":"user","content":"\xc3\xa9t\xc3\xa9"}]}'
        r = self.stack.http("POST", "/v1/messages?beta=true",
                            [JSON, ("x-api-key", "sk-ant-client"),
                             ("anthropic-version", "2023-01-01"),
                             ("anthropic-beta", "prompt-caching-2024-07-31")], body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "anthropic")
        req = self.only(self.anthropic, self.openai)
        self.assertEqual(req.path, "/v1/messages")
        self.assertEqual(req.query, "beta=true")
        self.assertTrue(req.body == body, "body changed: %r" % req.body)
        self.assertEqual(req.header_all("x-api-key"), ["sk-ant-client"])
        self.assertEqual(req.header_all("anthropic-version"), ["2023-01-01"],
                         "the client's anthropic-version passes through, not replaced")
        self.assertEqual(req.header_all("anthropic-beta"), ["prompt-caching-2024-07-31"])

    def test_upstream_error_status_and_body_relayed(self):
        # A 4xx is the provider's final word: relayed as is (status, body), no retry.
        err = {"error": {"message": "Invalid 'messages': empty array.",
                         "type": "invalid_request_error", "param": "messages",
                         "code": "empty_array"}}
        self.openai.on("/v1/chat/completions", MockResponse.json(err, status=400,
                                                                 headers=[("x-request-id",
                                                                           "req_abc")]))
        try:
            r = self.stack.http("POST", "/v1/chat/completions", [JSON],
                                b'{"model":"gpt-4o","messages":[]}')
        finally:
            self.openai.on("/v1/chat/completions", None)
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.json(), err)
        self.assertEqual(r.header("x-request-id"), "req_abc", r)
        self.assertEqual(self.openai.count(), 1, "a 400 must not be retried")

    def test_response_headers_and_body_relayed(self):
        body = json.dumps({"id": "chatcmpl-1", "object": "chat.completion",
                           "choices": [{"index": 0, "message": {"role": "assistant",
                                                                "content": "h\u00e9"}}]})
        self.openai.on("/v1/chat/completions",
                       MockResponse(200, body, [("Content-Type", "application/json"),
                                                ("openai-processing-ms", "42")]))
        try:
            r = self.stack.http("POST", "/v1/chat/completions", [JSON],
                                b'{"model":"gpt-4o","messages":[]}')
        finally:
            self.openai.on("/v1/chat/completions", None)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, body.encode())
        self.assertEqual(r.header("openai-processing-ms"), "42", r)

    def test_two_mib_body_intact(self):
        filler = "".join(chr(0x20 + (i * 7) % 90) for i in range(4096)).replace('"', "'") \
            .replace("\\", "/")
        msg = (filler * 520)[:2 * 1024 * 1024 - 200]
        body = ('{"model":"gpt-4o","messages":[{"role":"user","content":"%s"}]}' % msg).encode()
        self.assertGreaterEqual(len(body), 2 * 1024 * 1024 - 200)
        r = self.stack.http("POST", "/v1/chat/completions", [JSON], body, timeout=30)
        self.assertEqual(r.status, 200, r)
        req = self.only(self.openai, self.anthropic)
        self.assertEqual(len(req.body), len(body))
        self.assertEqual(lrtest.sha256(req.body), lrtest.sha256(body))

    def test_models_merged_openai_shape(self):
        r = self.stack.http("GET", "/v1/models", [("Authorization", "Bearer sk-client")])
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(doc.get("object"), "list", doc)
        ids = {m.get("id") for m in doc.get("data", [])}
        self.assertTrue({"gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20241022"} <= ids,
                        "merged list should hold both providers' models: %r" % doc)
        for m in doc["data"]:
            self.assertEqual(m.get("object"), "model", m)

    def test_models_anthropic_shape_with_anthropic_version(self):
        r = self.stack.http("GET", "/v1/models", [AV, ("x-api-key", "sk-ant-client")])
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        ids = {m.get("id") for m in doc.get("data", [])}
        self.assertTrue({"gpt-4o", "claude-3-5-sonnet-20241022"} <= ids, doc)
        self.assertIn("has_more", doc, "Anthropic list shape expected: %r" % doc)
        for m in doc["data"]:
            self.assertEqual(m.get("type"), "model", m)


class PassthroughWithKeys(_Base):
    """Keys configured: they replace the client's credentials; the other dialect's auth
    header is removed; anthropic-version is added only when absent."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(
            mocks={"openai": cls.openai, "anthropic": cls.anthropic},
            config={"providers": {"openai": {"api_key": "${OPENAI_API_KEY}"},
                                  "anthropic": {"api_key": "${ANTHROPIC_API_KEY}"}}},
            env={"OPENAI_API_KEY": "sk-test-openai-KEY", "ANTHROPIC_API_KEY": "sk-ant-test-KEY"})

    def test_openai_key_replaces_client_credentials(self):
        body = b'{"model":"gpt-4o","messages":[]}'
        r = self.stack.http("POST", "/v1/chat/completions",
                            [JSON, ("Authorization", "Bearer sk-client"),
                             ("x-api-key", "sk-client-x")], body)
        self.assertEqual(r.status, 200, r)
        req = self.only(self.openai, self.anthropic)
        self.assertEqual(req.header_all("authorization"), ["Bearer sk-test-openai-KEY"])
        self.assertEqual(req.header_all("x-api-key"), [],
                         "the other dialect's auth header must be removed")
        self.assertEqual(req.body, body)

    def test_anthropic_key_replaces_and_version_added(self):
        body = b'{"model":"claude-3-haiku-20240307","max_tokens":5,"messages":[]}'
        r = self.stack.http("POST", "/v1/messages",
                            [JSON, ("x-api-key", "sk-client"),
                             ("Authorization", "Bearer sk-client")], body)
        self.assertEqual(r.status, 200, r)
        req = self.only(self.anthropic, self.openai)
        self.assertEqual(req.header_all("x-api-key"), ["sk-ant-test-KEY"])
        self.assertEqual(req.header_all("authorization"), [])
        self.assertEqual(req.header_all("anthropic-version"), ["2023-06-01"],
                         "anthropic-version added when the client sent none")

    def test_anthropic_version_kept_when_sent(self):
        r = self.stack.http("POST", "/v1/messages",
                            [JSON, ("anthropic-version", "2024-01-01"),
                             ("anthropic-beta", "tools-2024-04-04")],
                            b'{"model":"claude-3-haiku-20240307","max_tokens":5,"messages":[]}')
        self.assertEqual(r.status, 200, r)
        req = self.only(self.anthropic, self.openai)
        self.assertEqual(req.header_all("anthropic-version"), ["2024-01-01"])
        self.assertEqual(req.header_all("anthropic-beta"), ["tools-2024-04-04"])
        self.assertEqual(req.header_all("x-api-key"), ["sk-ant-test-KEY"])

    def test_key_not_in_logs(self):
        r = self.stack.http("POST", "/v1/chat/completions", [JSON],
                            b'{"model":"gpt-4o","messages":[]}')
        self.assertEqual(r.status, 200, r)
        logs = self.stack.all_logs()
        self.assertNotIn("sk-test-openai-KEY", logs)
        self.assertNotIn("sk-ant-test-KEY", logs)


if __name__ == "__main__":
    lrtest.main()
