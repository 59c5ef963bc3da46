"""The systemd units of packaging/systemd/ (issue 4, README "Operations").

`systemd-analyze verify` (no running systemd needed) on copies of both units whose
/usr/bin/lunaroute-* paths point at the binaries of --bin-dir (verify checks that ExecStart
programs exist): it must exit 0 and say nothing about the units (it reports unknown keys and
bad values as warnings, with status 0). And the units keep what the README promises: keys
from EnvironmentFile=, reload by SIGHUP, the commands and run directories documented.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = os.path.join(REPO, "packaging", "systemd")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def unit_keys(text):
    """{(section, key): [values]} of a unit file."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^\[(\w+)\]$", line)
        if m:
            section = m.group(1)
            continue
        k, _, v = line.partition("=")
        out.setdefault((section, k), []).append(v)
    return out


class SystemdUnits(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lrtest-systemd-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def read(self, name):
        with open(os.path.join(UNITS, name)) as f:
            return f.read()

    def test_verify(self):
        if not SYSTEMD_ANALYZE:
            self.skipTest("systemd-analyze is not installed")
        copies = []
        for name in ("lunaroute-control.service", "lunaroute-agent.service"):
            text = self.read(name).replace("/usr/bin/lunaroute-", lrtest.BIN_DIR + "/lunaroute-")
            path = os.path.join(self.tmp, name)
            with open(path, "w") as f:
                f.write(text)
            copies.append(path)
        p = subprocess.run([SYSTEMD_ANALYZE, "verify"] + copies, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        about_units = [line for line in (p.stdout + p.stderr).splitlines()
                       if any(os.path.basename(c) in line for c in copies)]
        self.assertEqual(about_units, [], p.stdout + p.stderr)

    def test_promises(self):
        c = unit_keys(self.read("lunaroute-control.service"))
        a = unit_keys(self.read("lunaroute-agent.service"))
        for u in (c, a):
            self.assertEqual(u[("Service", "EnvironmentFile")], ["-/etc/lunaroute/keys.env"])
            self.assertEqual(u[("Service", "ExecReload")], ["/bin/kill -HUP $MAINPID"])
            self.assertEqual(u[("Service", "User")], ["lunaroute"])
            self.assertEqual(u[("Service", "NoNewPrivileges")], ["yes"])
            for (sect, key), vals in u.items():
                self.assertNotRegex(key + "=" + " ".join(vals), r"(?i)sk-|api_key=\S",
                                    "a key in a unit file")
        self.assertEqual(c[("Service", "ExecStart")],
                         ["/usr/bin/lunaroute-control up --config /etc/lunaroute/lunaroute.yaml "
                          "--run-dir /run/lunaroute"])
        self.assertIn("validate", c[("Service", "ExecStartPre")][0])
        self.assertEqual(c[("Service", "RuntimeDirectory")], ["lunaroute"])
        self.assertEqual(a[("Service", "ExecStart")],
                         ["/usr/bin/lunaroute-agent --settings /etc/lunaroute/agent.json"])
        self.assertIn("--check", a[("Service", "ExecStartPre")][0])


if __name__ == "__main__":
    lrtest.main()
