"""GET /metrics (an intercepted path: through HAProxy to the engine) is Prometheus text whose
lunaroute_* values change as requests flow (issue #3). Deltas, never absolute values.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockResponse, MockStream, RawStream, metric  # noqa: E402

JSON = ("Content-Type", "application/json")
AV = ("anthropic-version", "2023-06-01")
CHAT = "/v1/chat/completions"


def chat(model, stream=False):
    return json.dumps({"model": model, "stream": stream, "messages": []}).encode()


class Metrics(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = {n: cls.class_mock(n) for n in ("openai", "anthropic", "oa1")}
        cls.stack = cls.start_class_stack(
            mocks=cls.m,
            config={"providers": {"oa1": {"provider_type": "openai",
                                          "http_client": {"max_retries": 1}}},
                    "routing": {"rules": [{"name": "mfb", "model_pattern": "^mfb-",
                                           "primary": "oa1", "fallbacks": ["openai"]}],
                                "circuit_breaker": {"failure_threshold": 1000}}})

    def delta(self, before, after, name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    def test_prometheus_text(self):
        r = self.stack.http("GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue((r.header("content-type") or "").startswith("text/plain"), r)
        text = r.body.decode()
        samples = lrtest.parse_metrics(text)  # every sample line parses
        self.assertTrue(samples)
        for name in ("lunaroute_requests_total", "lunaroute_fallbacks_total",
                     "lunaroute_retries_total", "lunaroute_circuit_state",
                     "lunaroute_stream_chunks_total",
                     "lunaroute_time_to_first_token_seconds",
                     "lunaroute_request_duration_seconds",
                     "lunaroute_upstream_duration_seconds",
                     "lunaroute_classifications_total", "lunaroute_active_connections"):
            self.assertIn("# TYPE %s " % name, text)
        self.assertEqual(self.stack.engine_http("GET", "/metrics").status, 200)

    def test_values_change_as_requests_flow(self):
        st = self.stack
        m0 = st.metrics()
        for _ in range(2):
            self.assertEqual(st.http("POST", CHAT, [JSON], chat("gpt-4o")).status, 200)
        r = st.http("POST", "/v1/messages", [JSON, AV],
                    b'{"model":"claude-metrics","max_tokens":1,"messages":[]}')
        self.assertEqual(r.status, 200, r)
        # A 5xx with one retry, then the fallback.
        self.m["oa1"].on(CHAT, MockResponse.json({"error": {"message": "x"}}, 500))
        self.assertEqual(st.http("POST", CHAT, [JSON], chat("mfb-1")).json()["mock"], "openai")
        self.m["oa1"].on(CHAT, None)
        # A stream of 3 events + [DONE].
        ev = ['data: {"choices":[{"delta":{"content":"%d"}}]}\n\n' % i for i in range(3)]
        self.m["openai"].on(CHAT, MockStream(ev + ["data: [DONE]\n\n"], delay=0.02))
        resp, _, _ = st.stream("POST", CHAT, [JSON], chat("gpt-4o-stream", True))
        self.m["openai"].on(CHAT, None)
        self.assertEqual(resp.status, 200)
        # A 4xx relayed as is.
        self.m["openai"].on(CHAT, MockResponse.json({"error": {"message": "bad"}}, 400))
        self.assertEqual(st.http("POST", CHAT, [JSON], chat("gpt-4o")).status, 400)
        self.m["openai"].on(CHAT, None)
        # A bypassed request (classified by the SPOA, not seen by the engine).
        self.assertEqual(st.http("POST", "/v1/embeddings", [JSON], b"{}").status, 200)
        m1 = st.metrics()

        d = lambda name, **kw: self.delta(m0, m1, name, **kw)  # noqa: E731
        self.assertEqual(d("lunaroute_requests_total", provider="openai", model="gpt-4o",
                           status="200"), 2)
        self.assertEqual(d("lunaroute_requests_total", provider="openai", model="gpt-4o",
                           status="400"), 1)
        self.assertEqual(d("lunaroute_requests_total", provider="anthropic",
                           model="claude-metrics", status="200"), 1)
        self.assertEqual(d("lunaroute_requests_total", model="gpt-4o-stream", status="200"), 1)
        self.assertEqual(d("lunaroute_requests_total", model="mfb-1", status="200"), 1)
        self.assertEqual(d("lunaroute_fallbacks_total", reason="upstream_5xx"), 1)
        self.assertEqual(d("lunaroute_retries_total", provider="oa1"), 1)
        self.assertGreaterEqual(d("lunaroute_stream_chunks_total", provider="openai"), 3)
        self.assertEqual(d("lunaroute_time_to_first_token_seconds_count", provider="openai"), 1)
        self.assertGreaterEqual(d("lunaroute_request_duration_seconds_count",
                                  provider="openai"), 4)
        self.assertGreaterEqual(d("lunaroute_upstream_duration_seconds_count"), 6)
        # 6 engine requests + the second /metrics scrape, classified by the SPOA; 1 bypass.
        self.assertEqual(d("lunaroute_classifications_total", route="engine"), 7)
        self.assertEqual(d("lunaroute_classifications_total", route="bypass",
                           provider="openai"), 1)

    def test_active_connections_gauge(self):
        st = self.stack
        s = MockStream(['data: {"n":0}\n\n'], delay=0.1, endless=True,
                       filler='data: {"n":1}\n\n', max_secs=10)
        self.m["anthropic"].on("/v1/messages", s)
        try:
            base = st.metrics()
            rs = RawStream(st.port, "POST", "/v1/messages", [JSON, AV],
                           b'{"model":"claude-active","stream":true,"max_tokens":1,'
                           b'"messages":[]}')
            self.addCleanup(rs.close)
            self.assertTrue(rs.read_until(lambda b: b.count(b"data:") >= 2, timeout=5))
            during = st.metrics()
            self.assertGreaterEqual(metric(during, "lunaroute_upstream_active",
                                           provider="anthropic"), 1)
            self.assertGreaterEqual(metric(during, "lunaroute_active_connections",
                                           listener="engine"),
                                    metric(base, "lunaroute_active_connections",
                                           listener="engine"))
            rs.close()
            self.assertTrue(s.finished.wait(3))
            ok = lrtest.wait_until(lambda: metric(st.metrics(), "lunaroute_upstream_active",
                                                  provider="anthropic") == 0, 3.0)
            self.assertTrue(ok, "lunaroute_upstream_active back to 0 after the disconnect")
        finally:
            self.m["anthropic"].on("/v1/messages", None)
        time.sleep(0.05)


if __name__ == "__main__":
    lrtest.main()
