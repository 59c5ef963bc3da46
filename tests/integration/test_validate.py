"""`lunaroute-control validate` (issue 4): every kind of mistake a user makes before a deploy is
reported with its file:line:col, all of them in one run, in file order, and the exit status
is 2. Needs no HAProxy (the config never gets that far)."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

BAD = """\
providers:
  openai: {base_url: "api.openai.com"}
  anthropic: {base_url: "https://"}
  groq: {provider_type: openai, base_url: https://api.groq.com, http_client: {max_retries: 11}}
routing:
  rules:
    - {name: bad-re, model_pattern: "gpt-(4", primary: openai}
    - {name: ghost, model_pattern: "^x", primary: nobody, fallbacks: [openai, phantom]}
haproxy: {bind: "127.0.0.1:9000", stats_bind: "127.0.0.1:9000", maxconn: 0}
agent: {threads: "${THREADS}"}
logging: {levle: info}
boltin: {hosts: ["llm.example.com:443"], path_prefixes: ["v1/"]}
"""

# Exactly what validate prints, in this order.
WANT = [
    "bad.yaml:2:22: providers.openai.base_url: must start with http:// or https://",
    "bad.yaml:3:25: providers.anthropic.base_url: has no host",
    "bad.yaml:4:92: providers.groq.http_client.max_retries: must be between 0 and 10",
    "bad.yaml:7:37: routing.rules[0].model_pattern: invalid regular expression: "
    "Unmatched ( or \\(",
    "bad.yaml:8:51: rule 'ghost': unknown provider 'nobody'",
    "bad.yaml:8:79: rule 'ghost': unknown provider 'phantom'",
    "bad.yaml:9:47: haproxy.stats_bind 127.0.0.1:9000 clashes with haproxy.bind 127.0.0.1:9000",
    "bad.yaml:9:74: haproxy.maxconn: must be between 1 and 1000000",
    "bad.yaml:10:18: agent.threads: expected an integer (from ${THREADS})",
    "bad.yaml:11:11: unknown key 'levle' (did you mean 'level'?)",
    "bad.yaml:12:18: boltin.hosts[0]: must be a host name (letters, digits, '.', '-', '_'; "
    "no port) (got 'llm.example.com:443')",
    "bad.yaml:12:58: boltin.path_prefixes[0]: must start with '/' and contain no '?', '#', "
    "quotes or spaces (got 'v1/')",
    "LUNAROUTE_BYPASS_ENABLED: expected true/1/yes/on or false/0/no/off (got 'maybe')",
]


class Validate(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lrtest-validate-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        with open(os.path.join(self.tmp, "bad.yaml"), "w") as f:
            f.write(BAD)

    def validate(self, env):
        return subprocess.run([lrtest.bin_path("lunaroute-control"), "validate", "--config",
                               "bad.yaml"], cwd=self.tmp, capture_output=True, text=True,
                              timeout=30, env=lrtest.child_env(env), stdin=subprocess.DEVNULL)

    def test_every_error_with_position(self):
        r = self.validate({"THREADS": "many", "LUNAROUTE_BYPASS_ENABLED": "maybe"})
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertEqual(r.stderr.splitlines(), WANT)

    def test_env_error_alone_still_exit_2(self):
        with open(os.path.join(self.tmp, "bad.yaml"), "w") as f:
            f.write("bypass: {enabled: true}\n")
        r = self.validate({"LUNAROUTE_PORT": "99999"})
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertEqual(r.stderr.strip(),
                         "LUNAROUTE_PORT: must be a port number between 1 and 65535")


if __name__ == "__main__":
    lrtest.main()
