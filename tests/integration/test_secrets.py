"""Secrets never touch disk or logs (DESIGN §6, issue 4).

The stack runs under `lunaroute-control up` at log level debug with distinctive fake keys in
the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, and GROQ_API_KEY through ${GROQ_API_KEY})
and one key written literally in the YAML. Requests go through bypass with key injection
(the mocks see the keys: proof they were in use). Then every file in the run directory, every
captured log (control, agent and HAProxy all write to the control's stdout/stderr under
`up`), the output of `status` and `switch-provider`, and the output and files of `validate`
and `render` (standalone and boltin) are searched for the key values: none may appear.
"""

import os
import shutil
import stat
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

KEYS = {
    "OPENAI_API_KEY": "sk-SECRETTEST-openai-5f1d9a7c",
    "ANTHROPIC_API_KEY": "sk-ant-SECRETTEST-anthropic-8b2e4c",
    "GROQ_API_KEY": "gsk-SECRETTEST-groq-31c7d0",
}
LITERAL = "lit-SECRETTEST-mistral-77aa01"
ALL = list(KEYS.values()) + [LITERAL]


def files_under(root):
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                mode = os.lstat(p).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode):
                yield p


class Secrets(lrtest.LRTestCase):
    def assert_clean(self, where, data):
        if isinstance(data, str):
            data = data.encode()
        for k in ALL:
            self.assertNotIn(k.encode(), data, "%s contains a key value (%s...)" % (where, k[:12]))
            # Not even a large part of one (a truncated or redacted-badly echo).
            self.assertNotIn(k[-12:].encode(), data, "%s contains the tail of a key" % where)

    def test_no_key_anywhere(self):
        openai, anthropic, groq, mistral = (self.mock(n) for n in ("openai", "anthropic",
                                                                   "groq", "mistral"))
        s = self.new_stack(
            mocks={"openai": openai, "anthropic": anthropic},
            config={"providers": {
                "anthropic": {"api_key": lrtest.Raw('"${ANTHROPIC_API_KEY}"')},
                "groq": {"provider_type": "openai", "base_url": groq.url,
                         "api_key": lrtest.Raw('"${GROQ_API_KEY}"')},
                "mistral": {"provider_type": "openai", "base_url": mistral.url,
                            "api_key": LITERAL}},
                "bypass": {"provider": "auto"},
                "logging": {"level": "debug"}},
            env=KEYS)
        s.start(mode="up")

        # Bypass with injection: the client sends no credentials, HAProxy adds the key.
        r = s.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")
        self.assertEqual(r.status, 200, r)
        self.assertHeader(openai.wait_for(1)[0], "Authorization", "Bearer " + KEYS["OPENAI_API_KEY"])
        r = s.http("POST", "/v1/messages/count_tokens", [("Content-Type", "application/json")],
                   b"{}")
        self.assertEqual(r.status, 200, r)
        self.assertHeader(anthropic.wait_for(1)[0], "x-api-key", KEYS["ANTHROPIC_API_KEY"])
        # Intercepted and unknown paths too (engine logs), and a client key to be replaced.
        s.http("POST", "/v1/chat/completions", [("Authorization", "Bearer client-key")], b"{}")
        s.http("GET", "/healthz")

        # The literal key goes to its children as LUNAROUTE_MISTRAL_API_KEY, named on disk.
        with open(s.path("haproxy.cfg")) as f:
            cfg = f.read()
        self.assertIn("%[env(LUNAROUTE_MISTRAL_API_KEY)]", cfg)
        self.assertIn("%[env(GROQ_API_KEY)]", cfg)

        # validate and render (both modes) on the same file, same environment
        for args in (("validate", "--config", s.config_path),):
            r = s.control(*args)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assert_clean("output of %s" % args[0], r.stdout + r.stderr)
        out = tempfile.mkdtemp(prefix="lrtest-secrets-render-")
        self.addCleanup(shutil.rmtree, out, True)
        for mode in ("standalone", "boltin"):
            r = s.control("render", "--mode", mode, "--config", s.config_path, "--out",
                          os.path.join(out, mode))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assert_clean("output of render --mode %s" % mode, r.stdout + r.stderr)
        # a failing validate must not echo them either
        bad = os.path.join(out, "bad.yaml")
        with open(bad, "w") as f:
            f.write("providers:\n  openai: {api_key: %s, base_url: nope}\n  x: {api_key: %s}\n"
                    % (LITERAL, LITERAL))
        r = s.control("validate", "--config", bad)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assert_clean("output of a failing validate", r.stdout + r.stderr)

        # status (agent admin API + HAProxy runtime API) and switch-provider: no key either
        r = s.control("switch-provider", "groq", "--run-dir", s.run_dir)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assert_clean("output of switch-provider", r.stdout + r.stderr)
        r = s.control("status", "--run-dir", s.run_dir)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn('"provider": "groq"', r.stdout)  # a real status document
        self.assertIn("lr_provider_mistral", r.stdout)
        self.assert_clean("output of status", r.stdout + r.stderr)

        # HUP reload: re-render and agent re-read, logged at debug level
        s.procs["control"].send_signal(1)
        lrtest.wait_until(lambda: "reload" in s.all_logs().lower(), 5.0)
        s.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")

        problems = s.stop()
        self.assertEqual(problems, [])
        checked = 0
        for root in (s.run_dir, out):
            for p in files_under(root):
                if p in (s.config_path, bad):  # the inputs, written by this test
                    continue
                with open(p, "rb") as f:
                    self.assert_clean(p, f.read())
                checked += 1
        self.assertGreaterEqual(checked, 10)
        logs = s.all_logs()
        self.assertIn("debug", logs.lower())  # the logs were verbose, and still clean
        self.assert_clean("logs", logs)


if __name__ == "__main__":
    lrtest.main()
