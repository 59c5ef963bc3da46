"""Credential injection on bypassed paths, and "secrets never touch disk" (DESIGN §5, §6).

The stacks run under `lunaroute-control up`, so the key values travel the real way: in the
control daemon's environment only, handed to HAProxy and the agent through theirs.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

OPENAI_KEY = "sk-lrtest-OPENAI-9f1c2e7d4b-secret"
ANTHROPIC_KEY = "sk-ant-lrtest-ANTHROPIC-5a8e3c0f61-secret"


class KeysInjected(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(
            mode="up",
            mocks={"openai": cls.openai, "anthropic": cls.anthropic},
            config={"providers": {
                "openai": {"base_url": cls.openai.url, "api_key": "${OPENAI_API_KEY}"},
                "anthropic": {"base_url": cls.anthropic.url,
                              "api_key": "${ANTHROPIC_API_KEY}"}}},
            env={"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY})

    def setUp(self):
        self.openai.clear()
        self.anthropic.clear()

    def test_openai_key_replaces_client_authorization(self):
        r = self.stack.http("POST", "/v1/embeddings",
                            [("Authorization", "Bearer sk-client-should-not-pass"),
                             ("Content-Type", "application/json")], b'{"input":"x"}')
        self.assertEqual(r.status, 200, r)
        req = self.openai.wait_for(1)[0]
        self.assertEqual(req.header_all("authorization"), ["Bearer " + OPENAI_KEY])
        self.assertNoRequests(self.anthropic, settle=0.05)

    def test_openai_key_added_when_client_sent_none(self):
        r = self.stack.http("GET", "/v1/files?limit=1")
        self.assertEqual(r.status, 200, r)
        req = self.openai.wait_for(1)[0]
        self.assertEqual(req.header_all("authorization"), ["Bearer " + OPENAI_KEY])
        self.assertEqual(req.header_all("x-api-key"), [])

    def test_anthropic_key_and_default_version(self):
        r = self.stack.http("POST", "/v1/messages/count_tokens",
                            [("Content-Type", "application/json"),
                             ("Authorization", "Bearer client-token-should-not-pass")],
                            b'{"model":"claude-3-haiku-20240307","messages":[]}')
        self.assertEqual(r.status, 200, r)
        req = self.anthropic.wait_for(1)[0]
        self.assertEqual(req.header_all("x-api-key"), [ANTHROPIC_KEY])
        self.assertEqual(req.header_all("anthropic-version"), ["2023-06-01"])
        self.assertEqual(req.header_all("authorization"), [],
                         "Authorization must be removed for an anthropic-type provider")
        self.assertNoRequests(self.openai, settle=0.05)

    def test_anthropic_key_replaces_client_key_and_keeps_client_version(self):
        r = self.stack.http("POST", "/v1/messages/count_tokens",
                            [("x-api-key", "client-key-should-not-pass"),
                             ("anthropic-version", "2024-10-22"),
                             ("anthropic-beta", "token-counting-2024-11-01")],
                            b'{"messages":[]}')
        self.assertEqual(r.status, 200, r)
        req = self.anthropic.wait_for(1)[0]
        self.assertEqual(req.header_all("x-api-key"), [ANTHROPIC_KEY])
        self.assertEqual(req.header_all("anthropic-version"), ["2024-10-22"])
        self.assertEqual(req.header_all("anthropic-beta"), ["token-counting-2024-11-01"])

    def test_no_secret_in_run_dir_or_command_lines(self):
        # Exercise both providers first so that anything that logs requests has logged.
        self.stack.http("GET", "/v1/files")
        self.stack.http("GET", "/v1/messages/batches")
        leaks = []
        for root, _dirs, files in os.walk(self.stack.run_dir):
            for f in files:
                p = os.path.join(root, f)
                try:
                    with open(p, "rb") as fh:
                        data = fh.read()
                except OSError:  # sockets
                    continue
                for key in (OPENAI_KEY, ANTHROPIC_KEY):
                    if key.encode() in data:
                        leaks.append("%s contains %s..." % (p, key[:12]))
        for pid, cmd in lrtest.pids_mentioning(self.stack.run_dir):
            for key in (OPENAI_KEY, ANTHROPIC_KEY):
                if key in cmd:
                    leaks.append("command line of pid %d contains %s..." % (pid, key[:12]))
        self.assertEqual(leaks, [], "secrets leaked")
        # The rendered files must name the variables instead.
        with open(self.stack.path("haproxy.cfg")) as f:
            cfg = f.read()
        self.assertIn("OPENAI_API_KEY", cfg)
        self.assertIn("ANTHROPIC_API_KEY", cfg)


class KeysPassthrough(lrtest.LRTestCase):
    """No key configured: the client's own credentials reach the provider unchanged."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(
            mode="up", mocks={"openai": cls.openai, "anthropic": cls.anthropic})

    def setUp(self):
        self.openai.clear()
        self.anthropic.clear()

    def test_client_authorization_passes(self):
        r = self.stack.http("POST", "/v1/embeddings",
                            [("Authorization", "Bearer sk-client-own-7788")], b'{"input":"x"}')
        self.assertEqual(r.status, 200, r)
        req = self.openai.wait_for(1)[0]
        self.assertEqual(req.header_all("authorization"), ["Bearer sk-client-own-7788"])

    def test_no_credentials_added(self):
        r = self.stack.http("GET", "/v1/files")
        self.assertEqual(r.status, 200, r)
        req = self.openai.wait_for(1)[0]
        self.assertEqual(req.header_all("authorization"), [])
        self.assertEqual(req.header_all("x-api-key"), [])

    def test_client_x_api_key_passes(self):
        r = self.stack.http("POST", "/v1/messages/count_tokens",
                            [("x-api-key", "sk-ant-client-own-9911"),
                             ("anthropic-version", "2023-01-01")], b'{"messages":[]}')
        self.assertEqual(r.status, 200, r)
        req = self.anthropic.wait_for(1)[0]
        self.assertEqual(req.header_all("x-api-key"), ["sk-ant-client-own-9911"])
        self.assertEqual(req.header_all("anthropic-version"), ["2023-01-01"])
        self.assertNoRequests(self.openai, settle=0.05)


if __name__ == "__main__":
    lrtest.main()
