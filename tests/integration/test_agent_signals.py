"""lunaroute-agent signals (DESIGN §7): SIGHUP re-reads agent.json without dropping HAProxy's
SPOP connections; SIGTERM drains and exits 0 within 5 s.
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402


class AgentSignals(lrtest.LRTestCase):
    def setUp(self):
        self.openai = self.mock("openai")
        self.anthropic = self.mock("anthropic")
        self.stack = self.start_stack(mocks={"openai": self.openai,
                                             "anthropic": self.anthropic})

    def embeddings_goes_to(self, n=5):
        """Sends n bypassed /v1/embeddings; returns the mock names that answered."""
        names = []
        for i in range(n):
            r = self.stack.http("POST", "/v1/embeddings", body=b'{"input":"%d"}' % i)
            self.assertEqual(r.status, 200, r)
            names.append(r.json()["mock"])
        return names

    def test_sighup_keeps_connections_and_applies_new_settings(self):
        agent = self.stack.agent
        spoa = self.stack.ports["spoa"]
        self.assertEqual(self.embeddings_goes_to(), ["openai"] * 5)
        before = lrtest.established_peers(spoa)
        self.assertTrue(before, "no established SPOP connection to the agent after requests")

        # SIGHUP with an unchanged file: nothing changes, connections stay.
        agent.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        self.assertTrue(agent.alive(), "agent died on SIGHUP\n" + self.stack.log_tails())
        self.assertEqual(self.embeddings_goes_to(), ["openai"] * 5)
        after = lrtest.established_peers(spoa)
        self.assertTrue(before & after,
                        "SPOP connections were dropped across SIGHUP: before %r after %r"
                        % (sorted(before), sorted(after)))
        self.assertTrue(self.stack.spoa_up(), self.stack.spoa_state())

        # A changed bypass.provider takes effect after SIGHUP (the static fallback would
        # still say openai, so an anthropic answer proves the agent decided).
        path = self.stack.path("agent.json")
        with open(path) as f:
            settings = json.load(f)
        settings["bypass"]["provider"] = "anthropic"
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(settings, f, indent=2)
        os.rename(tmp, path)
        agent.send_signal(signal.SIGHUP)

        def switched():
            r = self.stack.http("POST", "/v1/embeddings", body=b'{"input":"probe"}')
            return r.status == 200 and r.json()["mock"] == "anthropic"
        self.assertTrue(lrtest.wait_until(switched, 5, 0.1),
                        "bypass.provider=anthropic not in force 5s after SIGHUP\n"
                        + self.stack.log_tails())
        self.anthropic.clear()
        self.openai.clear()
        self.assertEqual(self.embeddings_goes_to(), ["anthropic"] * 5)
        self.assertEqual([r.path for r in self.anthropic.wait_for(5)], ["/v1/embeddings"] * 5)
        self.assertNoRequests(self.openai, settle=0.05)
        self.assertTrue(agent.alive())

        # SIGTERM: exit status 0 within 5 s (the harness also checks sanitizer output).
        t0 = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(5)
        self.assertIsNotNone(rc, "agent still running 5s after SIGTERM")
        self.assertEqual(rc, 0, "agent exit status after SIGTERM\n" + self.stack.log_tails())
        lrtest.log("agent exited %.2fs after SIGTERM" % (time.monotonic() - t0))
        self.assertEqual(lrtest.sanitizer_findings(agent.stderr_text()), [])

    def test_sighup_with_broken_settings_keeps_running(self):
        agent = self.stack.agent
        self.assertEqual(self.embeddings_goes_to(2), ["openai"] * 2)
        path = self.stack.path("agent.json")
        with open(path) as f:
            good = f.read()
        with open(path, "w") as f:
            f.write('{"version": 1, "bypass": ')  # truncated JSON
        agent.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertTrue(agent.alive(), "agent died on SIGHUP with a broken agent.json\n"
                        + self.stack.log_tails())
        # The settings in force are the old ones.
        self.assertEqual(self.embeddings_goes_to(3), ["openai"] * 3)
        r = self.stack.http("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        with open(path, "w") as f:
            f.write(good)


if __name__ == "__main__":
    lrtest.main()
