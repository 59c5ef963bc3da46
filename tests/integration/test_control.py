"""lunaroute-control as a command (DESIGN §6, §7): validate, --help/--version, exit codes,
and `up` supervising the agent and HAProxy and leaving nothing behind on SIGTERM.
"""

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE_KEYS = {"OPENAI_API_KEY": "sk-lrtest-example-openai",
             "ANTHROPIC_API_KEY": "sk-lrtest-example-anthropic",
             "GROQ_API_KEY": "gsk-lrtest-example"}


def run(binary, *args, env=None, timeout=30, cwd=None):
    return subprocess.run([lrtest.bin_path(binary)] + list(args), capture_output=True,
                          text=True, timeout=timeout, env=lrtest.child_env(env),
                          stdin=subprocess.DEVNULL, cwd=cwd)


def fmt(r):
    return "exit %s\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr)


class ControlCli(lrtest.LRTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lrtest-cli-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, name, text):
        p = os.path.join(self.tmp, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def test_help_and_version(self):
        for binary in ("lunaroute-control", "lunaroute-agent"):
            for flag in ("--help", "--version"):
                with self.subTest(binary=binary, flag=flag):
                    r = run(binary, flag)
                    self.assertEqual(r.returncode, 0, fmt(r))
                    out = r.stdout + r.stderr
                    if flag == "--version":
                        self.assertRegex(out, r"\d+\.\d+\.\d+")
                    else:
                        self.assertGreater(len(out.strip()), 20, fmt(r))
        r = run("lunaroute-control", "--help")
        for cmd in ("render", "validate", "up"):
            self.assertIn(cmd, r.stdout + r.stderr, "--help does not mention %s" % cmd)
        for cmd in ("render", "validate", "up"):
            with self.subTest(cmd=cmd):
                r = run("lunaroute-control", cmd, "--help")
                self.assertEqual(r.returncode, 0, fmt(r))

    def test_unknown_command_is_usage_error(self):
        r = run("lunaroute-control", "frobnicate")
        self.assertEqual(r.returncode, 2, fmt(r))
        r = run("lunaroute-control", "validate", "--no-such-flag")
        self.assertEqual(r.returncode, 2, fmt(r))

    def test_examples_validate(self):
        examples = sorted(glob.glob(os.path.join(REPO, "control", "examples", "*.yaml")) +
                          glob.glob(os.path.join(REPO, "control", "examples", "*.yml")))
        if not examples:
            lrtest.log("NOTE: control/examples has no *.yaml yet: nothing to validate")
            self.skipTest("control/examples/*.yaml: none yet")
        for ex in examples:
            with self.subTest(example=os.path.basename(ex)):
                r = run("lunaroute-control", "validate", "--config", ex, env=FAKE_KEYS,
                        cwd=self.tmp)
                self.assertEqual(r.returncode, 0, fmt(r))
                for v in FAKE_KEYS.values():
                    self.assertNotIn(v, r.stdout + r.stderr, "validate printed a key")

    def test_valid_minimal_config(self):
        p = self.write("ok.yaml", "bypass:\n  enabled: true\n  provider: auto\n")
        r = run("lunaroute-control", "validate", "--config", p, cwd=self.tmp)
        self.assertEqual(r.returncode, 0, fmt(r))

    def assert_config_error(self, r, path, line=None, env_name=None):
        self.assertEqual(r.returncode, 2, fmt(r))
        if env_name:
            self.assertIn(env_name, r.stderr, fmt(r))
            return
        m = re.search(re.escape(path) + r":(\d+):(\d+): \S", r.stderr)
        self.assertIsNotNone(m, "no '%s:line:col: message' in stderr:\n%s" % (path, r.stderr))
        if line is not None:
            lines = [int(x) for x in re.findall(re.escape(path) + r":(\d+):\d+:", r.stderr)]
            self.assertIn(line, lines, "error should point at line %d:\n%s" % (line, r.stderr))

    def test_bad_value_is_config_error_with_position(self):
        p = self.write("bad.yaml", "# a comment\nrun_dir: ./run\nbypass: {enabled: maybe}\n")
        r = run("lunaroute-control", "validate", "--config", p, cwd=self.tmp)
        self.assert_config_error(r, p, line=3)

    def test_yaml_syntax_error(self):
        p = self.write("syntax.yaml", "providers:\n  openai: {base_url: [http://x\nbypass: 1\n")
        r = run("lunaroute-control", "validate", "--config", p, cwd=self.tmp)
        self.assert_config_error(r, p)

    def test_unknown_bypass_provider_is_error(self):
        p = self.write("prov.yaml", "providers:\n  openai: {base_url: http://127.0.0.1:9}\n"
                                    "bypass:\n  provider: nosuch\n")
        r = run("lunaroute-control", "validate", "--config", p, cwd=self.tmp)
        self.assert_config_error(r, p, line=4)

    def test_bad_failure_mode_is_error(self):
        p = self.write("fm.yaml", "haproxy:\n  failure_mode: sometimes\n")
        r = run("lunaroute-control", "validate", "--config", p, cwd=self.tmp)
        self.assert_config_error(r, p, line=2)

    def test_bad_env_value_names_the_variable(self):
        p = self.write("ok.yaml", "bypass:\n  enabled: true\n")
        r = run("lunaroute-control", "validate", "--config", p, cwd=self.tmp,
                env={"LUNAROUTE_BYPASS_ENABLED": "maybe"})
        self.assert_config_error(r, p, env_name="LUNAROUTE_BYPASS_ENABLED")

    def test_render_writes_files_without_secrets(self):
        p = self.write("keys.yaml", "providers:\n"
                                    "  openai:\n"
                                    "    base_url: http://127.0.0.1:9/v1\n"
                                    "    api_key: ${OPENAI_API_KEY}\n"
                                    "  anthropic:\n"
                                    "    base_url: http://127.0.0.1:10\n"
                                    "    api_key: \"${ANTHROPIC_API_KEY}\"\n")
        out = os.path.join(self.tmp, "out")
        r = run("lunaroute-control", "render", "--config", p, "--out", out, env=FAKE_KEYS,
                cwd=self.tmp)
        self.assertEqual(r.returncode, 0, fmt(r))
        for f in ("haproxy.cfg", "spoe-lunaroute.conf", "routes.map", "agent.json"):
            path = os.path.join(out, f)
            self.assertTrue(os.path.isfile(path), "render did not write %s" % f)
            with open(path, "rb") as fh:
                data = fh.read()
            for v in FAKE_KEYS.values():
                self.assertNotIn(v.encode(), data, "%s contains a key value" % f)
        if lrtest.HAPROXY:
            # What was rendered is a valid HAProxy config (needs the key variables set).
            c = subprocess.run([lrtest.HAPROXY, "-c", "-f", os.path.join(out, "haproxy.cfg")],
                               capture_output=True, text=True, env=lrtest.child_env(FAKE_KEYS),
                               cwd=out, timeout=30)
            self.assertEqual(c.returncode, 0, "haproxy -c: %s%s" % (c.stdout, c.stderr))


class ControlUp(lrtest.LRTestCase):
    def test_up_defaults_env_port_restart_and_clean_stop(self):
        # Built-in defaults except the addresses (free ports) and the run dir; the client
        # port comes from LUNAROUTE_PORT, which overrides the file.
        env_port = lrtest.free_port()

        def cfg(stack):
            return {"haproxy": {"bind": "127.0.0.1:%d" % stack.ports["frontend"],
                                "stats_bind": "127.0.0.1:%d" % stack.ports["stats"]},
                    "agent": {"spoa_bind": "127.0.0.1:%d" % stack.ports["spoa"],
                              "engine_bind": "127.0.0.1:%d" % stack.ports["engine"]},
                    "run_dir": stack.run_dir}

        stack = self.new_stack(config=cfg, env={"LUNAROUTE_PORT": str(env_port)})
        orig_pick = stack._pick_ports

        def pick():
            orig_pick()
            stack.ports["file_frontend"] = stack.ports["frontend"]
            stack.ports["frontend"] = env_port
        stack._pick_ports = pick
        stack.start(mode="up")

        control = stack.procs["control"]
        self.assertEqual(lrtest.read_pidfile(stack.path("control.pid")), [control.pid])
        agent_pids = lrtest.read_pidfile(stack.path("agent.pid"))
        self.assertEqual(len(agent_pids), 1, "agent.pid: %r" % agent_pids)
        self.assertTrue(lrtest.pid_alive(agent_pids[0]))
        self.assertFalse(lrtest.port_accepts(stack.ports["file_frontend"], timeout=0.3),
                         "LUNAROUTE_PORT must override haproxy.bind's port")

        r = stack.http("GET", "/healthz")
        self.assertEqual(r.status, 200, r)

        # A dead agent is restarted (with back-off) and HAProxy sees it UP again.
        stack.expect_agent_answers = False
        os.kill(agent_pids[0], signal.SIGKILL)
        new_pid = lrtest.wait_until(
            lambda: [p for p in lrtest.read_pidfile(stack.path("agent.pid"))
                     if p != agent_pids[0] and lrtest.pid_alive(p)], 15, 0.1)
        self.assertTrue(new_pid, "agent not restarted within 15s\n" + stack.log_tails())
        self.assertTrue(lrtest.wait_until(lambda: lrtest.port_accepts(stack.ports["engine"]),
                                          10, 0.1))
        r = lrtest.wait_until(lambda: (lambda x: x if x.status == 200 else None)(
            stack.http("GET", "/healthz")), 10, 0.2)
        self.assertTrue(r, "/healthz not 200 after the agent restart")

        # SIGTERM: exit 0, and every process it started is gone.
        pids = set(lrtest.read_pidfile(stack.path("agent.pid")) +
                   lrtest.read_pidfile(stack.path("haproxy.pid")))
        pids |= {pid for pid, _ in lrtest.pids_mentioning(stack.run_dir)}
        pids.discard(control.pid)
        self.assertTrue(pids)
        control.send_signal(signal.SIGTERM)
        rc = control.wait(10)
        self.assertEqual(rc, 0, "lunaroute-control up exit status after SIGTERM\n"
                         + stack.log_tails())
        left = lrtest.wait_until(lambda: not [p for p in pids if lrtest.pid_alive(p)], 3)
        self.assertTrue(left, "still running after up exited: %r"
                        % [p for p in pids if lrtest.pid_alive(p)])
        self.assertFalse(lrtest.port_accepts(env_port, timeout=0.3))

    def test_up_bad_config_exits_2(self):
        stack = self.new_stack(config={"bypass": {"enabled": lrtest.Raw("maybe")}})
        stack._pick_ports()
        stack.write_config()
        r = stack.control("up", "--config", stack.config_path, "--run-dir", stack.run_dir,
                          timeout=20)
        self.assertEqual(r.returncode, 2, fmt(r))
        self.assertRegex(r.stderr, re.escape(stack.config_path) + r":\d+:\d+: ")
        self.assertFalse(lrtest.pids_mentioning(stack.run_dir))


if __name__ == "__main__":
    lrtest.main()
