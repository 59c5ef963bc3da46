"""Circuit breaker per provider and /readyz (DESIGN §8, issue #3).

routing.circuit_breaker {failure_threshold: 3, success_threshold: 2, open_secs: 1}; providers
have max_retries 0 so one failing request = one failure.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockResponse  # noqa: E402

JSON = ("Content-Type", "application/json")
CHAT = "/v1/chat/completions"
OPEN_SECS = 1
FAILS = 3


def chat(model):
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


def circuit_config(extra_rules=()):
    noretry = {"http_client": {"max_retries": 0}}
    return {"providers": {"openai": noretry, "anthropic": noretry,
                          "oa1": dict(noretry, provider_type="openai"),
                          "oa2": dict(noretry, provider_type="openai")},
            "routing": {"rules": [{"name": "cb", "model_pattern": "^cb-", "primary": "oa1",
                                   "fallbacks": ["oa2"]}] + list(extra_rules),
                        "circuit_breaker": {"failure_threshold": FAILS,
                                            "success_threshold": 2,
                                            "open_secs": OPEN_SECS}}}


class CircuitBreaker(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = {n: cls.class_mock(n) for n in ("openai", "anthropic", "oa1", "oa2")}
        cls.stack = cls.start_class_stack(mocks=cls.m, config=circuit_config(
            [{"name": "solo", "model_pattern": "^solo-", "primary": "openai"}]))

    def setUp(self):
        for m in self.m.values():
            m.clear()
            m.on(CHAT, None)

    def post(self, model):
        return self.stack.http("POST", CHAT, [JSON], chat(model))

    def circuit(self, provider):
        return lrtest.metric(self.stack.metrics(), "lunaroute_circuit_state", provider=provider)

    def test_opens_after_threshold_and_recovers(self):
        oa1, oa2 = self.m["oa1"], self.m["oa2"]
        oa1.on(CHAT, MockResponse.json({"error": {"message": "down"}}, 500))
        for i in range(FAILS):
            r = self.post("cb-m")
            self.assertEqual(r.json()["mock"], "oa2", "request %d falls back: %r" % (i, r))
        self.assertEqual(oa1.count(), FAILS)
        self.assertNotEqual(self.circuit("oa1"), 0, "lunaroute_circuit_state of oa1 should "
                                                    "not be closed (0) after %d failures" % FAILS)

        # Open: requests go to the fallback without touching oa1.
        for _ in range(5):
            self.assertEqual(self.post("cb-m").json()["mock"], "oa2")
        self.assertEqual(oa1.count(), FAILS, "an open circuit must not reach the provider")

        # After open_secs: half-open, one probe. oa1 is healthy again.
        oa1.on(CHAT, None)
        time.sleep(OPEN_SECS + 0.2)
        self.assertEqual(self.post("cb-m").json()["mock"], "oa1", "half-open probe")
        self.assertEqual(oa1.count(), FAILS + 1)
        # success_threshold 2: one more success closes it; from then on oa1 serves.
        for _ in range(3):
            self.assertEqual(self.post("cb-m").json()["mock"], "oa1")
        self.assertEqual(self.circuit("oa1"), 0, "circuit closed again")
        m = self.stack.metrics()
        self.assertGreaterEqual(lrtest.metric(m, "lunaroute_circuit_transitions_total",
                                              provider="oa1"), 3,
                                "closed->open->half_open->closed transitions counted")

    def test_failed_probe_reopens(self):
        # The openai provider (a rule with no fallback) driven open, then a failing probe.
        op = self.m["openai"]
        op.on(CHAT, MockResponse.json({"error": {"message": "down"}}, 503))
        try:
            for _ in range(FAILS):
                self.assertEqual(self.post("solo-m").status, 503)
            n = op.count()
            r = self.post("solo-m")
            self.assertGreaterEqual(r.status, 500, r)  # no provider left: a JSON error
            self.assertOpenAIError(r, r.status)
            self.assertEqual(op.count(), n, "open: not touched")
            time.sleep(OPEN_SECS + 0.2)
            self.post("solo-m")  # the probe fails
            self.assertEqual(op.count(), n + 1, "exactly one half-open probe")
            self.post("solo-m")
            self.assertEqual(op.count(), n + 1, "a failed probe re-opens the circuit")
        finally:
            op.on(CHAT, None)
            time.sleep(OPEN_SECS + 0.2)
            for _ in range(2):
                self.post("solo-m")


class ReadyzAllOpen(lrtest.LRTestCase):
    """/readyz: 200 while some provider's circuit is not open; 503 JSON when all are."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = {n: cls.class_mock(n) for n in ("openai", "anthropic")}
        cfg = {"providers": {"openai": {"http_client": {"max_retries": 0}},
                             "anthropic": {"http_client": {"max_retries": 0}}},
               "routing": {"circuit_breaker": {"failure_threshold": 2, "success_threshold": 1,
                                               "open_secs": 2}}}
        cls.stack = cls.start_class_stack(mocks=cls.m, config=cfg)

    def test_readyz_503_when_every_circuit_open(self):
        st = self.stack
        self.assertEqual(st.http("GET", "/readyz").status, 200)
        self.assertEqual(st.engine_http("GET", "/readyz").status, 200)
        for m in self.m.values():
            m.on(CHAT, MockResponse.json({"error": {}}, 500))
            m.on("/v1/messages", MockResponse.json({"error": {}}, 500))
        for _ in range(2):
            st.http("POST", CHAT, [JSON], chat("gpt-4o"))
        self.assertEqual(st.http("GET", "/readyz").status, 200, "anthropic still closed")
        for _ in range(2):
            st.http("POST", "/v1/messages", [JSON, ("anthropic-version", "2023-06-01")],
                    b'{"model":"claude-3","max_tokens":1,"messages":[]}')
        r = st.http("GET", "/readyz")
        self.assertEqual(r.status, 503, r)
        self.assertTrue((r.header("content-type") or "").startswith("application/json"), r)
        self.assertIsInstance(r.json(), dict)
        self.assertEqual(st.http("GET", "/healthz").status, 200, "liveness is unaffected")
        for m in self.m.values():
            m.on(CHAT, None)
            m.on("/v1/messages", None)
        # After open_secs the circuits are half-open: ready again.
        time.sleep(2.2)
        self.assertEqual(st.http("GET", "/readyz").status, 200)


if __name__ == "__main__":
    lrtest.main()
