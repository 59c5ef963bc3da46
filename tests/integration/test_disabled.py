"""Intercepted paths go to the agent's engine listener; with bypass disabled, everything does
(DESIGN §5). The engine answers 404 JSON for paths it does not serve, so for those "went to
the engine" = the mocks got nothing and the answer is the engine's JSON; a chat completion is
routed by the engine to the openai provider (asserted by the engine's markers and metrics).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402


class BypassDisabled(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(
            mocks={"openai": cls.openai, "anthropic": cls.anthropic},
            config={"bypass": {"enabled": False}})

    def setUp(self):
        self.openai.clear()
        self.anthropic.clear()

    def test_embeddings_goes_to_engine(self):
        r = self.stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")],
                            b'{"input":"x","model":"text-embedding-3-small"}')
        self.assertOpenAIError(r, 404)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_files_goes_to_engine(self):
        r = self.stack.http("GET", "/v1/files?purpose=fine-tune")
        self.assertOpenAIError(r, 404)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_anthropic_namespace_goes_to_engine(self):
        r = self.stack.http("POST", "/v1/messages/count_tokens",
                            [("anthropic-version", "2023-06-01")], b'{"messages":[]}')
        self.assertAnthropicError(r, 404)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_healthz(self):
        r = self.stack.http("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertTrue((r.header("content-type") or "").startswith("application/json"), r)
        self.assertIsInstance(r.json(), dict)
        self.assertNoRequests(self.openai, self.anthropic)


class InterceptedByDefault(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(
            mocks={"openai": cls.openai, "anthropic": cls.anthropic},
            config={"intercept": {"extra_paths": ["/v1/responses"]}})

    def setUp(self):
        self.openai.clear()
        self.anthropic.clear()

    def test_chat_completions_goes_to_engine(self):
        # The engine (not HAProxy's bypass) forwards it to the openai provider: the request
        # arrives with the engine's upstream markers (Accept-Encoding: identity replaces the
        # client's gzip, which HAProxy's bypass would pass through untouched), body unchanged.
        body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
        m0 = self.stack.metrics()
        r = self.stack.http("POST", "/v1/chat/completions",
                            [("Content-Type", "application/json"),
                             ("Accept-Encoding", "gzip")], body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"mock": "openai", "path": "/v1/chat/completions",
                                    "method": "POST"})
        reqs = self.openai.wait_for(1)
        self.assertEqual(len(reqs), 1, reqs)
        self.assertEqual(reqs[0].body, body)
        self.assertEqual([v.lower() for v in reqs[0].header_all("accept-encoding")],
                         ["identity"])
        self.assertNoRequests(self.anthropic, settle=0.05)
        m1 = self.stack.metrics()
        self.assertEqual(lrtest.metric(m1, "lunaroute_requests_total", provider="openai",
                                       model="gpt-4o", status="200")
                         - lrtest.metric(m0, "lunaroute_requests_total", provider="openai",
                                         model="gpt-4o", status="200"), 1,
                         "the engine counted the request it routed")

    def test_messages_goes_to_engine_then_anthropic(self):
        # The engine routes /v1/messages to the Anthropic-type provider, body unchanged.
        body = b'{"model":"claude-3-haiku-20240307","max_tokens":5,"messages":[]}'
        r = self.stack.http("POST", "/v1/messages",
                            [("Content-Type", "application/json"),
                             ("anthropic-version", "2023-06-01"),
                             ("Accept-Encoding", "gzip")], body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"mock": "anthropic", "path": "/v1/messages",
                                    "method": "POST"})
        reqs = self.anthropic.wait_for(1)
        self.assertEqual(len(reqs), 1, reqs)
        self.assertEqual(reqs[0].body, body)
        self.assertEqual([v.lower() for v in reqs[0].header_all("accept-encoding")],
                         ["identity"])
        self.assertNoRequests(self.openai, settle=0.05)

    def test_engine_error_on_messages_is_anthropic_shaped(self):
        # An error the engine itself produces for /v1/messages uses Anthropic's error shape.
        r = self.stack.http("POST", "/v1/messages",
                            [("Content-Type", "application/json"),
                             ("anthropic-version", "2023-06-01")], b'{"model": ')
        self.assertAnthropicError(r, 400)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_extra_path_goes_to_engine(self):
        # /v1/responses is bypassed by default; intercept.extra_paths makes it the engine's.
        r = self.stack.http("POST", "/v1/responses", [("Content-Type", "application/json")],
                            b'{"model":"gpt-4.1","input":"hi"}')
        self.assertOpenAIError(r, 404)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_intercept_is_exact_match_without_query(self):
        # The query string does not change the decision; a longer path is not intercepted.
        r = self.stack.http("GET", "/healthz?verbose=1")
        self.assertEqual(r.status, 200, r)
        self.assertNoRequests(self.openai, self.anthropic, settle=0.05)
        r = self.stack.http("GET", "/v1/models/gpt-4o")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "openai")

    def test_healthz_and_readyz(self):
        r = self.stack.http("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertTrue((r.header("content-type") or "").startswith("application/json"), r)
        r = self.stack.http("GET", "/readyz")
        self.assertEqual(r.status, 200, r)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_bypass_still_on(self):
        r = self.stack.http("POST", "/v1/embeddings", body=b'{"input":"x"}')
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "openai")


if __name__ == "__main__":
    lrtest.main()
