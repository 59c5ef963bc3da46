"""Routing engine: rules, strategies, retries, fallbacks, 429 + Retry-After, final errors
(DESIGN §8, issue #3). Everything goes through the real HAProxy frontend.

Providers (mocks answer {"mock": name, ...} so the response names who served it):
  openai, anthropic      the two dialect defaults
  oa1..oa4               extra OpenAI-type providers (max_retries 1)
  dead1, dead2           OpenAI-type providers on ports where nothing listens
  deadant                Anthropic-type, nothing listens
  slow                   OpenAI-type with timeout_secs 1 (its mock hangs)
The circuit breaker threshold is high here so it never interferes (see test_engine_circuit.py).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockHang, MockResponse, seq  # noqa: E402

JSON = ("Content-Type", "application/json")
AV = ("anthropic-version", "2023-06-01")
CHAT = "/v1/chat/completions"
MSGS = "/v1/messages"


def chat(model):
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


def rule(name, pattern, priority=10, **kw):
    r = {"name": name, "model_pattern": pattern, "priority": priority}
    r.update(kw)
    return r


class Routing(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        names = ("openai", "anthropic", "oa1", "oa2", "oa3", "oa4", "slow")
        cls.m = {n: cls.class_mock(n) for n in names}
        dead = {n: "http://127.0.0.1:%d" % lrtest.free_port() for n in
                ("dead1", "dead2", "deadant")}
        providers = {n: {"provider_type": "openai", "http_client": {"max_retries": 1}}
                     for n in ("oa1", "oa2", "oa3", "oa4")}
        providers["openai"] = {"http_client": {"max_retries": 1}}
        providers["slow"] = {"provider_type": "openai",
                             "http_client": {"timeout_secs": 1, "max_retries": 0}}
        for n, url in dead.items():
            providers[n] = {"provider_type": "anthropic" if n == "deadant" else "openai",
                            "base_url": url,
                            "http_client": {"max_retries": 1, "connect_timeout_secs": 1}}
        rules = [
            # priority: both match ^prio-; the higher priority wins
            rule("prio-low", "^prio-", priority=1, primary="oa2"),
            rule("prio-high", "^prio-x", priority=50, primary="oa1"),
            rule("rr", "^rr-", strategy="round-robin", targets=["oa1", "oa2"]),
            # LunaRoute's nested form, weights 80/20
            rule("wrr", "^wrr-", strategy={"type": "weighted-round-robin",
                                           "providers": [{"id": "oa3", "weight": 80},
                                                         {"id": "oa4", "weight": 20}]}),
            rule("la", "^la-", strategy="limits-alternative", primary_providers=["oa3"],
                 alternative_providers=["oa4"]),
            rule("fb500", "^fb500-", primary="oa1", fallbacks=["oa2"]),
            rule("fbconn", "^fbconn-", primary="dead1", fallbacks=["oa2"]),
            rule("rl", "^rl-", primary="oa3", fallbacks=["oa4"]),
            rule("rlonly", "^rlonly-", primary="oa1"),
            rule("last", "^last-", primary="oa1", fallbacks=["oa2"]),
            rule("alldead", "^alldead-", primary="dead1", fallbacks=["dead2"]),
            rule("antdead", "^claude-dead", primary="deadant"),
            rule("slow", "^slow-", primary="slow"),
        ]
        cls.stack = cls.start_class_stack(
            mocks=cls.m,
            config={"providers": providers,
                    "routing": {"rules": rules,
                                "circuit_breaker": {"failure_threshold": 1000,
                                                    "success_threshold": 1,
                                                    "open_secs": 60}}})

    def setUp(self):
        for mk in self.m.values():
            mk.clear()
            mk.on(CHAT, None)
            mk.on(MSGS, None)

    def post(self, model, path=CHAT, headers=None, timeout=10):
        return self.stack.http("POST", path, [JSON] + list(headers or []), chat(model),
                               timeout=timeout)

    def served_by(self, r):
        self.assertEqual(r.status, 200, r)
        return r.json()["mock"]

    def test_no_rule_goes_to_own_dialect(self):
        self.assertEqual(self.served_by(self.post("gpt-4o")), "openai")
        self.assertEqual(self.served_by(self.post("claude-3-haiku", MSGS, [AV])), "anthropic")

    def test_priority_highest_first(self):
        self.assertEqual(self.served_by(self.post("prio-x1")), "oa1")  # both rules match
        self.assertEqual(self.served_by(self.post("prio-y1")), "oa2")  # only the low one

    def test_round_robin_alternates(self):
        got = [self.served_by(self.post("rr-model")) for _ in range(6)]
        self.assertEqual(sorted(set(got)), ["oa1", "oa2"], got)
        for a, b in zip(got, got[1:]):
            self.assertNotEqual(a, b, "round-robin must alternate: %r" % got)

    def test_weighted_round_robin_is_smooth(self):
        got = [self.served_by(self.post("wrr-model")) for _ in range(20)]
        self.assertEqual(got.count("oa4"), 4, "80/20 over 20 requests: %r" % got)
        self.assertEqual(got.count("oa3"), 16, got)
        run = longest = 0
        for g in got:
            run = run + 1 if g == "oa3" else 0
            longest = max(longest, run)
        self.assertLessEqual(longest, 4, "smooth WRR interleaves (80/20 -> at most 4 in a "
                                         "row): %r" % got)
        for a, b in zip(got, got[1:]):
            self.assertFalse(a == b == "oa4", "oa4 twice in a row: %r" % got)

    def test_limits_alternative(self):
        ra = [("Retry-After", "1")]
        self.m["oa3"].on(CHAT, seq(MockResponse.json({"ok": 1}),
                                   MockResponse.json({"error": {"message": "rate"}}, 429,
                                                     headers=ra),
                                   None))
        # 1: the primary serves; 2: primary 429 -> alternative at once; 3: primary avoided;
        # 4: after Retry-After the primary again.
        self.assertEqual(self.post("la-m").json(), {"ok": 1})
        self.assertEqual(self.served_by(self.post("la-m")), "oa4")
        self.assertEqual(self.m["oa3"].count(), 2)
        self.assertEqual(self.served_by(self.post("la-m")), "oa4")
        self.assertEqual(self.m["oa3"].count(), 2, "rate-limited primary must be avoided")
        time.sleep(1.3)
        self.m["oa3"].on(CHAT, None)
        self.assertEqual(self.served_by(self.post("la-m")), "oa3")

    def test_fallback_on_500_after_retries(self):
        self.m["oa1"].on(CHAT, MockResponse.json({"error": {"message": "boom"}}, 500))
        body = chat("fb500-m")
        t0 = time.monotonic()
        r = self.stack.http("POST", CHAT, [JSON], body)
        took = time.monotonic() - t0
        self.assertEqual(self.served_by(r), "oa2")
        # max_retries 1: the first try and one retry, then the fallback.
        self.assertEqual(self.m["oa1"].count(), 2, self.m["oa1"].requests)
        self.assertEqual(self.m["oa2"].count(), 1)
        self.assertEqual(self.m["oa2"].last().body, body, "fallback gets the same bytes")
        # router_backoff: 0.1 s +-20% jitter before the retry, i.e. at least 0.08 s between
        # the two attempts' arrivals.
        gap = self.m["oa1"].requests[1].time - self.m["oa1"].requests[0].time
        self.assertGreaterEqual(gap, 0.079, "retry back-off (0.1 s +-20%%) expected, the retry "
                                            "came %.3f s after the first try (whole request "
                                            "%.3f s)" % (gap, took))

    def test_fallback_on_connect_refused(self):
        r = self.post("fbconn-m")
        self.assertEqual(self.served_by(r), "oa2")
        self.assertEqual(self.m["oa2"].count(), 1)

    def test_429_fails_over_and_provider_avoided_until_retry_after(self):
        self.m["oa3"].on(CHAT, seq(MockResponse.json({"error": {"message": "slow down"}},
                                                     429, headers=[("Retry-After", "2")]),
                                   None))
        t0 = time.monotonic()
        self.assertEqual(self.served_by(self.post("rl-m")), "oa4")
        self.assertEqual(self.m["oa3"].count(), 1, "429 is not retried on the same provider")
        self.assertLess(time.monotonic() - t0, 0.5, "429 fails over at once, no back-off")
        for _ in range(3):
            self.assertEqual(self.served_by(self.post("rl-m")), "oa4")
        self.assertEqual(self.m["oa3"].count(), 1, "the limited provider must be skipped "
                                                   "during the Retry-After window")
        time.sleep(max(0.0, 2.3 - (time.monotonic() - t0)))
        self.assertEqual(self.served_by(self.post("rl-m")), "oa3",
                         "after Retry-After the provider is used again")
        self.assertEqual(self.m["oa3"].count(), 2)

    def test_429_without_fallback_relayed_as_is(self):
        err = {"error": {"message": "Rate limit reached for gpt-4o", "type": "requests",
                         "code": "rate_limit_exceeded"}}
        self.m["oa1"].on(CHAT, MockResponse.json(err, 429, headers=[("Retry-After", "1"),
                                                                    ("x-ratelimit-limit-requests",
                                                                     "500")]))
        r = self.post("rlonly-m")
        self.assertEqual(r.status, 429, "a provider 429 must stay a 429 (not 502): %r" % r)
        self.assertEqual(r.json(), err)
        self.assertEqual(r.header("x-ratelimit-limit-requests"), "500", r)
        time.sleep(1.1)  # let the window pass so later tests can use oa1

    def test_last_upstream_response_relayed_when_no_fallback_left(self):
        self.m["oa1"].on(CHAT, MockResponse.json({"p": "first"}, 500))
        self.m["oa2"].on(CHAT, MockResponse.json({"p": "second"}, 503))
        r = self.post("last-m")
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json(), {"p": "second"})
        self.assertEqual(self.m["oa1"].count(), 2)
        self.assertEqual(self.m["oa2"].count(), 2)

    def test_nothing_answered_502_openai(self):
        r = self.post("alldead-m")
        self.assertOpenAIError(r, 502)

    def test_nothing_answered_502_anthropic(self):
        r = self.stack.http("POST", MSGS, [JSON, AV],
                            b'{"model":"claude-dead-1","max_tokens":5,"messages":[]}')
        self.assertAnthropicError(r, 502)

    def test_timeout_504(self):
        h = MockHang(10)
        self.m["slow"].on(CHAT, h)
        t0 = time.monotonic()
        r = self.post("slow-m")
        took = time.monotonic() - t0
        self.assertOpenAIError(r, 504)
        self.assertLess(took, 4.0, "timeout_secs 1 should give up in about 1 s (%.2f)" % took)
        self.assertTrue(h.finished.wait(3), "the agent should drop the timed-out connection")


if __name__ == "__main__":
    lrtest.main()
