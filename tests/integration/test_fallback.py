"""When the agent is gone, HAProxy still routes (DESIGN §4): failure_mode static classifies
with the rendered ACLs, failure_mode reject answers 503 JSON.

Manual mode: the harness starts the agent itself, so SIGKILL leaves it dead (no supervisor).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402


def spoe_log(stack):
    """HAProxy's stderr (the standalone config logs there)."""
    return lrtest.read_text(stack.path("haproxy.stderr"))


class StaticFallback(lrtest.LRTestCase):
    def test_agent_killed_bypass_still_routes(self):
        openai = self.mock("openai")
        anthropic = self.mock("anthropic")
        stack = self.start_stack(mocks={"openai": openai, "anthropic": anthropic},
                                 config={"haproxy": {"failure_mode": "static"}})
        # start() waited for lr_spoa/agent UP with an L7OK spop-check.
        status, check = stack.spoa_state()
        self.assertTrue(status.startswith("UP") and "L7OK" in check, (status, check))

        # Sanity with the agent alive.
        r = stack.http("POST", "/v1/embeddings", body=b'{"input":"alive"}')
        self.assertEqual(r.json()["mock"], "openai", r)
        openai.clear()
        # SPOE logs only failures (warning): an answered request leaves no line.
        self.assertNotIn("SPOE: [", spoe_log(stack))

        stack.kill_agent()
        self.assertFalse(lrtest.port_accepts(stack.ports["spoa"]), "agent still listening")

        def round_trip(label):
            openai.clear()
            anthropic.clear()
            t0 = time.monotonic()
            r = stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")],
                           b'{"input":"%s"}' % label.encode())
            self.assertEqual(r.status, 200, "%s: %r" % (label, r))
            self.assertEqual(r.json()["mock"], "openai", label)
            req = openai.wait_for(1)[0]
            self.assertEqual((req.path, req.body),
                             ("/v1/embeddings", b'{"input":"%s"}' % label.encode()))

            r = stack.http("POST", "/v1/messages/count_tokens", body=b'{"messages":[]}')
            self.assertEqual(r.status, 200, "%s: %r" % (label, r))
            self.assertEqual(r.json()["mock"], "anthropic", label)

            r = stack.http("GET", "/v1/files?limit=3", [("anthropic-version", "2023-06-01")])
            self.assertEqual(r.status, 200, "%s: %r" % (label, r))
            self.assertEqual(r.json()["mock"], "anthropic", label)
            self.assertEqual(anthropic.wait_for(2)[-1].target, "/v1/files?limit=3")

            r = stack.http("GET", "/v1/files", [("x-api-key", "k")])
            self.assertEqual(r.json()["mock"], "anthropic", label)

            # Intercepted paths: lr_engine is the agent, which is down -> HAProxy 503, and
            # never a provider.
            openai.clear()
            anthropic.clear()
            for path in ("/v1/chat/completions", "/v1/messages", "/healthz"):
                r = stack.http("POST" if path.startswith("/v1") else "GET", path,
                               body=b"{}" if path.startswith("/v1") else None)
                self.assertEqual(r.status, 503, "%s %s: %r" % (label, path, r))
            self.assertNoRequests(openai, anthropic, settle=0.05)
            return time.monotonic() - t0

        took = round_trip("right after SIGKILL")
        self.assertLess(took, 10, "requests with a dead agent took %.1fs" % took)
        self.assertTrue(lrtest.wait_until(lambda: "SPOE: [lunaroute-agent]" in spoe_log(stack), 5),
                        "HAProxy logged no SPOE failure with the agent dead:\n%s"
                        % spoe_log(stack)[-2000:])

        # Once the health check noticed, same result (and no SPOE timeouts to wait for).
        down = stack.wait_spoa(want_up=False, timeout=8)
        if not down:
            lrtest.log("lr_spoa/agent not marked DOWN within 8s: %r" % (stack.spoa_state(),))
        took = round_trip("after DOWN" if down else "agent dead 8s")
        self.assertLess(took, 10, "requests with a dead agent took %.1fs" % took)


class RejectMode(lrtest.LRTestCase):
    def test_agent_killed_reject_answers_503_json(self):
        openai = self.mock("openai")
        anthropic = self.mock("anthropic")
        stack = self.start_stack(mocks={"openai": openai, "anthropic": anthropic},
                                 config={"haproxy": {"failure_mode": "reject"}})
        r = stack.http("POST", "/v1/embeddings", body=b'{"input":"alive"}')
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["mock"], "openai", r)
        openai.clear()

        stack.kill_agent()
        r = stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")],
                       b'{"input":"x"}')
        self.assertEqual(r.status, 503, r)
        self.assertTrue((r.header("content-type") or "").startswith("application/json"), r)
        doc = r.json()
        self.assertIsInstance(doc, dict, doc)
        self.assertIn("error", doc, doc)
        r = stack.http("POST", "/v1/messages/count_tokens", [("anthropic-version", "2023-06-01")],
                       b"{}")
        self.assertEqual(r.status, 503, r)
        self.assertNoRequests(openai, anthropic)


if __name__ == "__main__":
    lrtest.main()
