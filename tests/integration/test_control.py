"""lunaroute-control as a command (DESIGN §6, §7): validate, --help/--version, exit codes,
and `up` supervising the agent and HAProxy and leaving nothing behind on SIGTERM.

Reloads under `up` (issue 4): a config file change that touches only the agent's settings is
applied through the agent's admin API (POST /v1/reload) and leaves HAProxy's master and worker
alone; a change of HAProxy's rendered files reloads HAProxy through the master CLI (new worker,
same master); when the admin socket cannot be reached the agent gets a SIGHUP instead; a bad
file is refused with its file:line:col and the stack keeps serving. ControlWatch: the file is
watched with inotify (in-place write, rename, configmap symlink swap, debounce, --watch poll).
`validate` runs `haproxy -c` on both renderings (standalone and bolt-on).
"""

import glob
import json
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
        if lrtest.HAPROXY:
            # Both renderings went through `haproxy -c`.
            self.assertIn("haproxy -c: standalone rendering OK", r.stdout, fmt(r))
            self.assertRegex(r.stdout, r"haproxy -c: boltin .*frontend-snippet\.cfg.*"
                                       r"lunaroute-backends\.cfg.* rendering OK", fmt(r))
            self.assertIn("configuration is valid", r.stdout)
            # haproxy named by LUNAROUTE_HAPROXY_BIN that is not executable: a runtime error.
            r = run("lunaroute-control", "validate", "--config", p, cwd=self.tmp,
                    env={"LUNAROUTE_HAPROXY_BIN": os.path.join(self.tmp, "nope")})
            self.assertEqual(r.returncode, 1, fmt(r))

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


def haproxy_worker(stack):
    """The HAProxy worker's pid (`show info` on the runtime API), or None."""
    try:
        out = lrtest.haproxy_cmd(stack.stats_sock, "show info")
    except OSError:
        return None
    for line in out.splitlines():
        if line.startswith("Pid:"):
            return int(line.split(":", 1)[1])
    return None


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

    def test_up_sigint_removes_pid_files_and_sockets(self):
        stack = self.new_stack(mocks={"openai": self.mock("openai")})
        stack.start(mode="up")
        self.assertTrue(lrtest.wait_until(
            lambda: lrtest.stat_is_socket(stack.path("agent.sock")), 5), stack.log_tails())
        run_files = ("control.pid", "agent.pid", "haproxy.pid", "haproxy.sock",
                     "haproxy-master.sock", "agent.sock")
        for f in run_files:
            self.assertTrue(os.path.exists(stack.path(f)), f)
        pids = set(lrtest.read_pidfile(stack.path("agent.pid")) +
                   lrtest.read_pidfile(stack.path("haproxy.pid")))
        pids |= {pid for pid, _ in lrtest.pids_mentioning(stack.run_dir)}
        control = stack.procs["control"]
        pids.discard(control.pid)
        control.send_signal(signal.SIGINT)
        self.assertEqual(control.wait(15), 0, stack.log_tails())
        self.assertIn("received SIGINT: stopping", lrtest.read_text(stack.path("control.stderr")))
        self.assertTrue(lrtest.wait_until(
            lambda: not [p for p in pids if lrtest.pid_alive(p)], 5),
            "still running after up exited: %r" % [p for p in pids if lrtest.pid_alive(p)])
        self.assertEqual([f for f in run_files if os.path.exists(stack.path(f))], [])
        self.assertFalse(lrtest.port_accepts(stack.port, timeout=0.3))

    def test_up_reloads_agent_api_then_master_cli(self):
        openai = self.mock("openai")
        anthropic = self.mock("anthropic")
        stack = self.new_stack(mocks={"openai": openai, "anthropic": anthropic},
                               config={"bypass": {"enabled": True, "provider": "openai"}})
        stack.start(mode="up")
        if not lrtest.wait_until(lambda: lrtest.stat_is_socket(stack.path("agent.sock")), 5):
            self.fail("the agent serves no admin socket")
        master = lrtest.read_pidfile(stack.path("haproxy.pid"))
        agent = lrtest.read_pidfile(stack.path("agent.pid"))
        worker = haproxy_worker(stack)
        self.assertTrue(master and agent and worker)

        def control_log():
            return lrtest.read_text(stack.path("control.stderr"))

        def agent_runs(text):
            """The agent runs agent.json with exactly this text (digest from its status)."""
            r = stack.control("status", "--run-dir", stack.run_dir)
            try:
                dg = json.loads(r.stdout)["agent"]["settings"]["digest"]
            except (ValueError, KeyError, TypeError):
                return False
            return dg == lrtest.sha256(text.encode())

        def rewrite(change):
            stack.config = lrtest.deep_merge(stack.config, change)
            tmp = stack.config_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(lrtest.to_yaml(stack.config))
            os.rename(tmp, stack.config_path)

        hafiles = ("haproxy.cfg", "spoe-lunaroute.conf", "routes.map")
        ha_before = {f: lrtest.read_text(stack.path(f)) for f in hafiles}
        aj_before = lrtest.read_text(stack.path("agent.json"))

        # 1. Agent-side only (a routing setting): admin API, no HAProxy reload.
        rewrite({"routing": {"circuit_breaker": {"failure_threshold": 9}}})
        self.assertTrue(lrtest.wait_until(
            lambda: lrtest.read_text(stack.path("agent.json")) != aj_before, 10, 0.1),
            "agent.json was not re-rendered\n" + stack.log_tails())
        aj = lrtest.read_text(stack.path("agent.json"))
        self.assertIn('"failure_threshold": 9', aj.replace('":9', '": 9'))
        self.assertTrue(lrtest.wait_until(lambda: agent_runs(aj), 10, 0.2),
                        "the agent does not run the new agent.json\n" + stack.log_tails())
        self.assertEqual({f: lrtest.read_text(stack.path(f)) for f in hafiles}, ha_before,
                         "an agent-only change rendered different HAProxy files")
        log = control_log()
        self.assertIn("applied the new settings through its admin API (changed", log)
        self.assertIn("haproxy configuration unchanged: no haproxy reload", log)
        self.assertIn("POST /v1/reload", log)  # the agent's own log line (same stderr)
        self.assertNotIn("SIGHUP: reloading settings", log)
        self.assertEqual(lrtest.read_pidfile(stack.path("haproxy.pid")), master)
        self.assertEqual(haproxy_worker(stack), worker, "HAProxy was reloaded")
        self.assertEqual(lrtest.read_pidfile(stack.path("agent.pid")), agent)
        r = stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")
        self.assertEqual((r.status, r.json().get("mock")), (200, "openai"), r)

        # 2. HAProxy-side: maxconn changes haproxy.cfg only: reload through the master CLI.
        rewrite({"haproxy": {"maxconn": 777}})
        self.assertTrue(lrtest.wait_until(
            lambda: haproxy_worker(stack) not in (None, worker), 15, 0.1),
            "HAProxy was not reloaded\n" + stack.log_tails())
        self.assertTrue(lrtest.wait_until(
            lambda: "haproxy reloaded: worker pid" in control_log(), 10, 0.1), control_log())
        self.assertIn("`reload` on the master CLI", control_log())
        self.assertIn("agent settings unchanged: no agent reload", control_log())
        self.assertIn("maxconn 777", lrtest.read_text(stack.path("haproxy.cfg")))
        self.assertEqual(lrtest.read_pidfile(stack.path("haproxy.pid")), master)
        self.assertEqual(lrtest.read_pidfile(stack.path("agent.pid")), agent)
        info = lrtest.haproxy_cmd(stack.stats_sock, "show info")
        self.assertIn("Maxconn: 777", info)
        self.assertTrue(stack.wait_spoa(True, 15))
        r = stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")
        self.assertEqual((r.status, r.json().get("mock")), (200, "openai"), r)
        worker = haproxy_worker(stack)

        # 3. A bad file: refused with its position; nothing reloaded, traffic unchanged.
        with open(stack.config_path, "a") as f:
            f.write("bypass: {enabled: maybe}\n")
        self.assertTrue(lrtest.wait_until(
            lambda: "reload aborted; still running the previous configuration" in control_log(),
            10, 0.1), control_log())
        self.assertRegex(control_log(), re.escape(stack.config_path) + r":\d+:\d+: ")
        self.assertEqual(haproxy_worker(stack), worker)
        self.assertTrue(agent_runs(aj))
        r = stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")
        self.assertEqual((r.status, r.json().get("mock")), (200, "openai"), r)

        # 4. The admin socket is gone: control falls back to SIGHUP and says why.
        os.unlink(stack.path("agent.sock"))
        rewrite({"routing": {"circuit_breaker": {"failure_threshold": 4}}})  # drops the bad line
        self.assertTrue(lrtest.wait_until(
            lambda: "SIGHUP: reloading settings" in control_log(), 10, 0.1),
            "no SIGHUP fallback\n" + control_log()[-3000:])
        self.assertRegex(control_log(), r"agent admin API unreachable \(.*agent\.sock.*\): "
                                        r"sending SIGHUP to agent pid %d" % agent[0])
        aj4 = lrtest.read_text(stack.path("agent.json"))
        self.assertTrue(lrtest.wait_until(
            lambda: "(changed, sha256 %s)" % lrtest.sha256(aj4.encode())[:12] in control_log(),
            10, 0.1), "the agent did not reload on SIGHUP\n" + control_log()[-3000:])
        self.assertEqual(lrtest.read_pidfile(stack.path("agent.pid")), agent)
        self.assertEqual(haproxy_worker(stack), worker)

    def test_up_reload_refused_by_haproxy_check(self):
        # HAProxy is the real one behind a wrapper that refuses `haproxy -c` while a marker
        # file exists: a new configuration HAProxy rejects must change nothing.
        tmp = tempfile.mkdtemp(prefix="lrtest-hxwrap-")
        self.addCleanup(shutil.rmtree, tmp, True)
        marker = os.path.join(tmp, "refuse")
        wrapper = os.path.join(tmp, "haproxy")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nfor a in \"$@\"; do\n"
                    "  if [ \"$a\" = -c ] && [ -e %s ]; then\n"
                    "    echo '[ALERT] lrtest wrapper: configuration refused' >&2; exit 1\n"
                    "  fi\ndone\nexec %s \"$@\"\n" % (marker, lrtest.HAPROXY))
        os.chmod(wrapper, 0o755)
        openai = self.mock("openai")
        stack = self.new_stack(mocks={"openai": openai},
                               env={"LUNAROUTE_HAPROXY_BIN": wrapper})
        stack.start(mode="up")
        worker = haproxy_worker(stack)
        cfg_before = lrtest.read_text(stack.path("haproxy.cfg"))
        aj_before = lrtest.read_text(stack.path("agent.json"))

        def log():
            return lrtest.read_text(stack.path("control.stderr"))

        def rewrite(change):
            stack.config = lrtest.deep_merge(stack.config, change)
            tmpf = stack.config_path + ".tmp"
            with open(tmpf, "w") as f:
                f.write(lrtest.to_yaml(stack.config))
            os.rename(tmpf, stack.config_path)

        open(marker, "w").close()
        rewrite({"haproxy": {"maxconn": 555}, "routing": {"circuit_breaker": {"open_secs": 9}}})
        self.assertTrue(lrtest.wait_until(lambda: "reload aborted" in log(), 10, 0.1), log())
        self.assertIn("`haproxy -c` rejected the new configuration", log())
        self.assertIn("lrtest wrapper: configuration refused", log())
        self.assertEqual(lrtest.read_text(stack.path("haproxy.cfg")), cfg_before)
        self.assertEqual(lrtest.read_text(stack.path("agent.json")), aj_before)
        self.assertEqual(haproxy_worker(stack), worker)
        self.assertNotIn("POST /v1/reload", log())
        self.assertEqual([d for d in os.listdir(stack.run_dir) if d.startswith(".reload-")], [],
                         "the staging directory was left behind")
        r = stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")
        self.assertEqual(r.status, 200, r)

        # Accepted again: the same change goes through.
        os.unlink(marker)
        rewrite({"haproxy": {"maxconn": 556}})
        self.assertTrue(lrtest.wait_until(
            lambda: haproxy_worker(stack) not in (None, worker), 15, 0.1), log()[-3000:])
        self.assertIn("maxconn 556", lrtest.read_text(stack.path("haproxy.cfg")))
        self.assertTrue(lrtest.wait_until(lambda: "POST /v1/reload" in log(), 10, 0.1))

    def test_up_reload_refused_by_haproxy_itself_restores_files(self):
        # A bind to a port another process holds: `haproxy -c` accepts it (it binds nothing),
        # the master's reload fails. The old worker keeps serving, and control puts back the
        # files HAProxy runs.
        import socket
        busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        openai = self.mock("openai")
        stack = self.new_stack(mocks={"openai": openai})
        stack.start(mode="up")
        worker = haproxy_worker(stack)
        cfg_before = lrtest.read_text(stack.path("haproxy.cfg"))

        def log():
            return lrtest.read_text(stack.path("control.stderr"))
        stack.config = lrtest.deep_merge(
            stack.config, {"haproxy": {"bind": "127.0.0.1:%d" % busy.getsockname()[1]}})
        tmp = stack.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(lrtest.to_yaml(stack.config))
        os.replace(tmp, stack.config_path)
        self.assertTrue(lrtest.wait_until(
            lambda: "restored the previous haproxy.cfg" in log(), 30, 0.1), log()[-3000:])
        self.assertIn("haproxy rejected the new configuration", log())
        self.assertNotIn("reload aborted", log())  # haproxy -c had accepted it
        self.assertEqual(lrtest.read_text(stack.path("haproxy.cfg")), cfg_before)
        self.assertEqual(haproxy_worker(stack), worker)
        r = stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")
        self.assertEqual((r.status, r.json().get("mock")), (200, "openai"), r)

    def test_up_bad_config_exits_2(self):
        stack = self.new_stack(config={"bypass": {"enabled": lrtest.Raw("maybe")}})
        stack._pick_ports()
        stack.write_config()
        r = stack.control("up", "--config", stack.config_path, "--run-dir", stack.run_dir,
                          timeout=20)
        self.assertEqual(r.returncode, 2, fmt(r))
        self.assertRegex(r.stderr, re.escape(stack.config_path) + r":\d+:\d+: ")
        self.assertFalse(lrtest.pids_mentioning(stack.run_dir))


class ControlWatch(lrtest.LRTestCase):
    """`up` notices config file changes with inotify (issue 4): an in-place write, an atomic
    rename and a configmap-style symlink swap are each applied once (agent digest, rendered
    files, traffic); a bad file written by rename is refused with file:line:col while the old
    stack keeps serving; a burst of writes is debounced; `--watch poll` still works."""

    def setUp(self):
        self.openai = self.mock("openai")
        self.anthropic = self.mock("anthropic")

    def new_up(self, config_path=None, up_args=()):
        stack = self.new_stack(mocks={"openai": self.openai, "anthropic": self.anthropic},
                               config={"bypass": {"enabled": True, "provider": "openai"}})
        if config_path:
            stack.config_path = config_path
        stack.start(mode="up", up_args=up_args)
        self.assertTrue(lrtest.wait_until(
            lambda: lrtest.stat_is_socket(stack.path("agent.sock")), 5), stack.log_tails())
        return stack

    @staticmethod
    def log(stack):
        return lrtest.read_text(stack.path("control.stderr"))

    @staticmethod
    def reloads(stack):
        return ControlWatch.log(stack).count("reloading configuration (config file changed)")

    @staticmethod
    def haproxy_outcomes(stack):
        """How many reloads reached their HAProxy step's end (one line each)."""
        log = ControlWatch.log(stack)
        return sum(log.count(m) for m in (
            "haproxy configuration unchanged: no haproxy reload", "haproxy reloaded: worker pid",
            "haproxy rejected the new configuration", "did not report the reload"))

    @staticmethod
    def agent_digest(stack):
        r = stack.control("status", "--run-dir", stack.run_dir)
        try:
            return json.loads(r.stdout)["agent"]["settings"]["digest"]
        except (ValueError, KeyError, TypeError):
            return None

    def bypass_goes_to(self, stack, name, timeout=15):
        """Waits until a bypassed request lands on mock `name`; returns whether it did."""
        def ok():
            r = stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")],
                           b"{}")
            return r.status == 200 and r.json().get("mock") == name
        return lrtest.wait_until(ok, timeout, 0.2)

    def mark(self, stack):
        """Counts to compare with after a change: (reloads, HAProxy step outcomes)."""
        return self.reloads(stack), self.haproxy_outcomes(stack)

    def wait_applied(self, stack, aj_before, mark):
        """agent.json re-rendered, the agent runs it, exactly one more reload happened since
        mark, and it is over (its HAProxy step ended too)."""
        n_reloads, n_outcomes = mark
        self.assertTrue(lrtest.wait_until(
            lambda: lrtest.read_text(stack.path("agent.json")) != aj_before, 10, 0.05),
            "agent.json was not re-rendered\n" + self.log(stack)[-3000:])
        aj = lrtest.read_text(stack.path("agent.json"))
        self.assertTrue(lrtest.wait_until(
            lambda: self.agent_digest(stack) == lrtest.sha256(aj.encode()), 10, 0.1),
            "the agent does not run the new agent.json\n" + self.log(stack)[-3000:])
        self.assertTrue(lrtest.wait_until(
            lambda: self.haproxy_outcomes(stack) == n_outcomes + 1, 20, 0.05),
            self.log(stack)[-3000:])
        self.assertEqual(self.reloads(stack), n_reloads + 1, self.log(stack)[-3000:])
        return aj

    def test_inplace_write_rename_bad_rename_and_burst(self):
        stack = self.new_up()
        self.assertIn("watching %s with inotify" % stack.config_path, self.log(stack))
        self.assertTrue(self.bypass_goes_to(stack, "openai"))
        worker = haproxy_worker(stack)

        # 1. In place (same inode: truncate + write, as `>` or many editors do).
        aj0 = lrtest.read_text(stack.path("agent.json"))
        ino = os.stat(stack.config_path).st_ino
        n = self.mark(stack)
        stack.config = lrtest.deep_merge(stack.config, {"bypass": {"provider": "anthropic"}})
        with open(stack.config_path, "w") as f:
            f.write(lrtest.to_yaml(stack.config))
        self.assertEqual(os.stat(stack.config_path).st_ino, ino)
        aj1 = self.wait_applied(stack, aj0, n)
        self.assertIn('"anthropic"', aj1)
        self.assertTrue(self.bypass_goes_to(stack, "anthropic"),
                        "traffic did not follow the in-place change\n" + stack.log_tails())

        # 2. Atomic rename (write a temporary file, os.replace it over the config).
        n = self.mark(stack)
        stack.config = lrtest.deep_merge(stack.config, {"bypass": {"provider": "openai"}})
        tmp = os.path.join(os.path.dirname(stack.config_path), ".lunaroute.yaml.swp")
        with open(tmp, "w") as f:
            f.write(lrtest.to_yaml(stack.config))
        os.replace(tmp, stack.config_path)
        self.assertNotEqual(os.stat(stack.config_path).st_ino, ino)
        aj2 = self.wait_applied(stack, aj1, n)
        self.assertTrue(self.bypass_goes_to(stack, "openai"),
                        "traffic did not follow the renamed file\n" + stack.log_tails())
        worker = haproxy_worker(stack)

        # 3. A bad file by rename: refused with its position, nothing changes.
        n = self.reloads(stack)
        with open(tmp, "w") as f:
            f.write(lrtest.to_yaml(stack.config) + "bypass: {enabled: maybe}\n")
        os.replace(tmp, stack.config_path)
        self.assertTrue(lrtest.wait_until(
            lambda: "reload aborted; still running the previous configuration"
            in self.log(stack), 10, 0.05), self.log(stack)[-3000:])
        self.assertEqual(self.reloads(stack), n + 1)
        self.assertRegex(self.log(stack), re.escape(stack.config_path) + r":\d+:\d+: ")
        self.assertEqual(lrtest.read_text(stack.path("agent.json")), aj2)
        self.assertEqual(self.agent_digest(stack), lrtest.sha256(aj2.encode()))
        self.assertEqual(haproxy_worker(stack), worker)
        self.assertTrue(self.bypass_goes_to(stack, "openai", timeout=2))

        # 4. A burst of ten in-place writes is debounced into fewer reloads; the last wins.
        n = self.reloads(stack)
        for i in range(10):
            stack.config = lrtest.deep_merge(stack.config, {"haproxy": {"maxconn": 901 + i}})
            with open(stack.config_path, "w") as f:
                f.write(lrtest.to_yaml(stack.config))
        self.assertTrue(lrtest.wait_until(
            lambda: "Maxconn: 910" in lrtest.haproxy_cmd(stack.stats_sock, "show info"),
            30, 0.1), self.log(stack)[-3000:])
        self.assertIn("maxconn 910", lrtest.read_text(stack.path("haproxy.cfg")))
        burst = self.reloads(stack) - n
        self.assertGreaterEqual(burst, 1)
        self.assertLess(burst, 10, "ten writes, ten reloads: no debounce")
        lrtest.log("burst of 10 writes -> %d reload(s)" % burst)
        self.assertTrue(self.bypass_goes_to(stack, "openai", timeout=5))

        # SIGHUP still reloads (the file did not change: nothing is applied).
        stack.procs["control"].send_signal(signal.SIGHUP)
        self.assertTrue(lrtest.wait_until(
            lambda: "reloading configuration (SIGHUP)" in self.log(stack), 10, 0.05))

    def test_configmap_symlink_swap(self):
        """Kubernetes' atomic writer: <dir>/lunaroute.yaml -> ..data/lunaroute.yaml,
        ..data -> ..v1; an update writes ..v2, renames a new ..data symlink over the old one,
        then removes ..v1."""
        tmp = tempfile.mkdtemp(prefix="lrtest-cm-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.mkdir(os.path.join(tmp, "..v1"))
        open(os.path.join(tmp, "..v1", "lunaroute.yaml"), "w").close()
        os.symlink("..v1", os.path.join(tmp, "..data"))
        path = os.path.join(tmp, "lunaroute.yaml")
        os.symlink(os.path.join("..data", "lunaroute.yaml"), path)
        stack = self.new_up(config_path=path)  # writes the config through the symlinks
        self.assertIn("watching %s with inotify" % path, self.log(stack))
        self.assertTrue(self.bypass_goes_to(stack, "openai"))

        for version, provider in (("..v2", "anthropic"), ("..v3", "openai")):
            aj = lrtest.read_text(stack.path("agent.json"))
            n = self.mark(stack)
            old = os.readlink(os.path.join(tmp, "..data"))
            os.mkdir(os.path.join(tmp, version))
            stack.config = lrtest.deep_merge(stack.config, {"bypass": {"provider": provider}})
            with open(os.path.join(tmp, version, "lunaroute.yaml"), "w") as f:
                f.write(lrtest.to_yaml(stack.config))
            os.symlink(version, os.path.join(tmp, "..data_tmp"))
            os.replace(os.path.join(tmp, "..data_tmp"), os.path.join(tmp, "..data"))
            shutil.rmtree(os.path.join(tmp, old))
            self.wait_applied(stack, aj, n)
            self.assertTrue(self.bypass_goes_to(stack, provider),
                            "traffic did not follow the swap to %s\n" % version
                            + stack.log_tails())

    def test_watch_poll(self):
        stack = self.new_up(up_args=["--watch", "poll"])
        self.assertIn("watching %s by polling it every 1s" % stack.config_path, self.log(stack))
        self.assertNotIn("with inotify", self.log(stack))
        aj = lrtest.read_text(stack.path("agent.json"))
        n = self.mark(stack)
        stack.config = lrtest.deep_merge(stack.config, {"bypass": {"provider": "anthropic"}})
        tmp = stack.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(lrtest.to_yaml(stack.config))
        os.replace(tmp, stack.config_path)
        self.wait_applied(stack, aj, n)
        self.assertTrue(self.bypass_goes_to(stack, "anthropic"))
        r = stack.control("up", "--watch", "sometimes", "--run-dir", stack.run_dir)
        self.assertEqual(r.returncode, 2, fmt(r))


class ControlExternal(lrtest.LRTestCase):
    """`up --external` (issue 6): HAProxy and the agent are started by someone else (here the
    harness, "manual" mode); control spawns nothing and drives them through the run
    directory's sockets, from its first rendering on."""

    def test_external_start_apply_missing_and_unreachable_agent(self):
        openai = self.mock("openai")
        stack = self.new_stack(mocks={"openai": openai})
        stack.start(mode="manual")
        self.assertTrue(lrtest.wait_until(
            lambda: lrtest.stat_is_socket(stack.path("agent.sock")), 5), stack.log_tails())
        msock = stack.path("haproxy-master.sock")

        def show_proc():
            try:
                return lrtest.haproxy_cmd(msock, "show proc;quit")
            except OSError:
                return None  # the master is not listening (yet, or while it re-executes)
        master0 = lrtest.wait_until(show_proc, 10, 0.1)
        self.assertTrue(master0, stack.log_tails())
        worker0 = haproxy_worker(stack)
        agent = stack.procs["agent"]

        def log():
            return lrtest.read_text(stack.path("control.stderr"))

        def agent_digest():
            r = stack.control("status", "--run-dir", stack.run_dir)
            try:
                return json.loads(r.stdout)["agent"]["settings"]["digest"]
            except (ValueError, KeyError, TypeError):
                return None

        def write(change):
            stack.config = lrtest.deep_merge(stack.config, change)
            tmp = stack.config_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(lrtest.to_yaml(stack.config))
            os.replace(tmp, stack.config_path)

        # Changed while control was not running: its first rendering applies it.
        write({"haproxy": {"maxconn": 777}, "routing": {"circuit_breaker": {"open_secs": 7}}})
        stack.procs["control"] = lrtest.Proc(
            "control", [lrtest.bin_path("lunaroute-control"), "up", "--external", "--config",
                        stack.config_path, "--run-dir", stack.run_dir], stack.run_dir, stack.env)
        self.assertTrue(lrtest.wait_until(
            lambda: haproxy_worker(stack) not in (None, worker0), 20, 0.1),
            "HAProxy was not reloaded at start\n" + stack.log_tails())
        self.assertTrue(lrtest.wait_until(lambda: "haproxy reloaded: worker pid" in log(),
                                          20, 0.1), log())
        aj = lrtest.read_text(stack.path("agent.json"))
        self.assertIn('"open_secs": 7', aj.replace('":7', '": 7'))
        self.assertTrue(lrtest.wait_until(
            lambda: agent_digest() == lrtest.sha256(aj.encode()), 10, 0.1), log())
        self.assertIn("Maxconn: 777", lrtest.haproxy_cmd(stack.stats_sock, "show info"))
        self.assertIn("external HAProxy and agent", log())
        self.assertNotIn("started agent", log())
        self.assertNotIn("started haproxy", log())
        # the same HAProxy master and the same agent process: control spawned nothing
        self.assertEqual(re.search(r"^(\d+)\s+master", master0, re.M).group(1),
                         re.search(r"^(\d+)\s+master",
                                   lrtest.haproxy_cmd(msock, "show proc;quit"), re.M).group(1))
        self.assertTrue(agent.alive())
        self.assertTrue(stack.wait_spoa(True, 15))
        r = stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")
        self.assertEqual((r.status, r.json().get("mock")), (200, "openai"), r)

        # The agent stopped (its socket gone): a change is rendered; the agent reads it when
        # it starts again.
        stack.expect_agent_answers = False
        rc, forced = agent.stop()
        self.assertEqual((rc, forced), (0, False))
        self.assertFalse(os.path.exists(stack.path("agent.sock")))
        write({"routing": {"circuit_breaker": {"open_secs": 8}}})
        self.assertTrue(lrtest.wait_until(
            lambda: "agent not running (no %s)" % stack.path("agent.sock") in log(), 10, 0.05),
            log())

        # A stale socket nobody listens on: refused connections, retried every 5 s until the
        # agent is back.
        import socket
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(stack.path("agent.sock"))
        stale.close()
        write({"routing": {"circuit_breaker": {"open_secs": 9}}})
        self.assertTrue(lrtest.wait_until(
            lambda: "agent admin API unreachable" in log(), 10, 0.05), log())
        self.assertIn("retrying every 5s", log())
        n_applied = log().count("applied the new settings through its admin API")
        # The agent replaces the stale socket itself. (Removing it here first would open a
        # window in which a retry finds no socket at all and rightly stops retrying: "agent
        # not running, it reads the new settings when it starts".)
        stack.start_agent()
        aj = lrtest.read_text(stack.path("agent.json"))
        self.assertIn('"open_secs": 9', aj.replace('":9', '": 9'))
        self.assertTrue(lrtest.wait_until(
            lambda: log().count("applied the new settings through its admin API") > n_applied,
            20, 0.2), "no retry reached the restarted agent\n" + log()[-3000:])
        self.assertEqual(agent_digest(), lrtest.sha256(aj.encode()))

        # SIGTERM: control exits 0, HAProxy (not its own) keeps running with its sockets.
        control = stack.procs["control"]
        control.send_signal(signal.SIGTERM)
        self.assertEqual(control.wait(10), 0, log())
        self.assertTrue(lrtest.stat_is_socket(msock))
        self.assertTrue(lrtest.stat_is_socket(stack.stats_sock))
        self.assertFalse(os.path.exists(stack.path("control.pid")))
        self.assertTrue(stack.wait_spoa(True, 15))
        r = stack.http("POST", "/v1/embeddings", [("Content-Type", "application/json")], b"{}")
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    lrtest.main()
