"""Intercepted paths go to the agent's engine listener; with bypass disabled, everything does
(DESIGN §5). Until the routing engine lands, the engine answers 404 JSON for what it does not
serve, so "went to the engine" = the mocks got nothing and the answer is the engine's JSON.
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
        # NOTE: when the routing engine lands (next issue) it will forward this to a provider
        # itself; this test then changes to asserting the engine's behaviour.
        r = self.stack.http("POST", "/v1/chat/completions",
                            [("Content-Type", "application/json")],
                            b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}')
        self.assertOpenAIError(r, 404)
        self.assertNoRequests(self.openai, self.anthropic)

    def test_messages_with_anthropic_version_is_anthropic_shaped(self):
        r = self.stack.http("POST", "/v1/messages",
                            [("Content-Type", "application/json"),
                             ("anthropic-version", "2023-06-01")],
                            b'{"model":"claude-3-haiku-20240307","max_tokens":5,"messages":[]}')
        self.assertAnthropicError(r, 404)
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
