#!/usr/bin/env python3
"""docker-compose.yml without a Docker engine (DESIGN §9, issue #6).

CI has no Docker engine, so the compose stack is checked three ways:
  1. `docker-compose config` (Debian's docker-compose 1.29) accepts the file with a sample
     .env (a temporary copy of .env.example), with and without `--profile demo`, and the
     resolved file keeps its promises: a health check on every service, published ports on
     127.0.0.1 only, no key in any image.
  2. Every file the compose file and the Dockerfiles reference exists in the repository
     (build contexts, dockerfiles, COPY sources, bind-mounted files, entrypoint scripts) and
     is not excluded from the build context by .dockerignore.
  3. The exact commands the services run -- entrypoint + command as resolved by
     `docker-compose config`, falling back to the image's ENTRYPOINT/CMD parsed from its
     Dockerfile -- run here as native processes with the same flags, the same rendered files
     and the same socket paths, using the haproxy on PATH (2.6 here; 3.2 in the compose file)
     and the binaries of --bin-dir. Their own health-check commands decide when each one is
     ready, in depends_on order. Then a bypassed request and an engine request (/healthz) go
     through the native "haproxy service". Then the config file is changed, as a user edits
     it on the host: control (`up --external`) must notice it (inotify), reload the agent
     through its admin socket only for an agent-side change, reload HAProxy through the
     master CLI only for a HAProxy-side change (new worker, same master), refuse a bad file,
     and re-render on SIGHUP, while bypassed requests keep flowing without a failure.

Rewrites between the compose world and this machine, and nothing else:
  * the shared volume's mount point /run/lunaroute      -> <tmp>/run
  * the bind-mounted directory /etc/lunaroute           -> <tmp>/etc-lunaroute, holding a copy
    of docker/config/lunaroute.yaml with the addresses below rewritten
  * container addresses -> 127.0.0.1 and a free port, in every argument, health check,
    environment value and the config copy: each `host:port` (and bash `/dev/tcp/host/port`)
    of docker/config/lunaroute.yaml -- agent:12345, agent:8081, and HAProxy's 0.0.0.0:8080 /
    0.0.0.0:8404 (plus their in-container loopback form 127.0.0.1:<port>, used by the
    haproxy health check) -- and mock-provider:9000 (the demo provider, which the sample
    .env points both providers at) -> a lrtest MockProvider
  * image executables -> native ones: files COPY'd from the repository (the control
    entrypoint script) run from the repository, binaries built in the image's build stage
    from --bin-dir (also first on PATH, as /usr/local/bin is in the image), `haproxy` is the
    native haproxy
  * environment: the harness's scrubbed environment plus the service's resolved
    `environment:`, nothing else (as in a container); control's PATH finds no haproxy, as
    in its image (so its `haproxy -c` check is skipped there too)
"""

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

try:
    import yaml  # python3-yaml: a dependency of Debian's docker-compose
except ImportError:  # pragma: no cover
    yaml = None


class _DebianYaml:
    """When this interpreter (e.g. a pyenv one) has no PyYAML, parse with the Debian python3
    that docker-compose itself runs on, which is guaranteed to have it."""

    @staticmethod
    def safe_load(stream):
        text = stream.read() if hasattr(stream, "read") else stream
        out = subprocess.run(
            ["/usr/bin/python3", "-c",
             "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
            input=text, capture_output=True, text=True, check=True).stdout
        return json.loads(out)


if yaml is None and os.path.exists("/usr/bin/python3") and subprocess.run(
        ["/usr/bin/python3", "-c", "import yaml"], capture_output=True).returncode == 0:
    yaml = _DebianYaml()

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
COMPOSE_FILE = os.path.join(REPO, "docker-compose.yml")
DOCKER_COMPOSE = shutil.which("docker-compose")
VOLUME_MOUNT = "/run/lunaroute"          # the shared volume, as mounted in every service
CONFIG_MOUNT = "/etc/lunaroute/lunaroute.yaml"
CONFIG_DIR_MOUNT = os.path.dirname(CONFIG_MOUNT)  # control mounts the directory
NATIVE_SERVICES = ("control", "agent", "haproxy")  # depends_on order
TEST_KEY = "sk-compose-test-0123456789"
READY_TIMEOUT = 30.0


def require_compose():
    if not DOCKER_COMPOSE:
        raise unittest.SkipTest("docker-compose is not installed (Debian package docker-compose; "
                                "scripts/install-deps.sh test installs it)")
    if yaml is None:
        raise unittest.SkipTest("python3-yaml is not installed (docker-compose depends on it)")


def sample_env(path, extra=None):
    """.env.example with `extra` values set: what a user's .env would look like."""
    lines = []
    seen = set()
    with open(os.path.join(REPO, ".env.example")) as f:
        for line in f:
            line = line.rstrip("\n")
            m = re.match(r"^([A-Z0-9_]+)=", line)
            if m and extra and m.group(1) in extra:
                line = "%s=%s" % (m.group(1), extra[m.group(1)])
                seen.add(m.group(1))
            lines.append(line)
    for k, v in (extra or {}).items():
        if k not in seen:
            lines.append("%s=%s" % (k, v))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def compose_config(env_file, *extra, config_args=()):
    """`docker-compose [extra] config [config_args]` on the repository's file; returns
    (rc, stdout, stderr)."""
    argv = [DOCKER_COMPOSE, "-f", COMPOSE_FILE, "--env-file", env_file] + list(extra) + \
        ["config"] + list(config_args)
    env = lrtest.child_env()  # no LUNAROUTE_*/keys from the developer's shell
    p = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


# ---------------------------------------------------------------------------------------------
# Dockerfile parsing (enough for ours: FROM/COPY/ENTRYPOINT/CMD, JSON or shell form).

def dockerfile_instructions(path):
    out, cur = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not cur and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                cur += line[:-1] + " "
                continue
            cur += line
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def exec_form(rest):
    rest = rest.strip()
    if rest.startswith("["):
        import json
        return json.loads(rest)
    return ["/bin/sh", "-c", rest]


def parse_dockerfile(path):
    """{'stages': [...], 'copies': [(from_stage, [srcs], dest)], 'entrypoint', 'cmd'} of the
    final stage (COPY lines of every stage)."""
    info = {"copies": [], "entrypoint": None, "cmd": None, "froms": []}
    for word, rest in dockerfile_instructions(path):
        if word == "FROM":
            info["froms"].append(rest.split()[0])
            info["entrypoint"] = info["cmd"] = None
        elif word in ("COPY", "ADD"):
            args = shlex.split(rest)
            frm = None
            while args and args[0].startswith("--"):
                if args[0].startswith("--from="):
                    frm = args[0].split("=", 1)[1]
                args = args[1:]
            info["copies"].append((frm, args[:-1], args[-1], len(info["froms"]) - 1))
        elif word == "ENTRYPOINT":
            info["entrypoint"] = exec_form(rest)
        elif word == "CMD":
            info["cmd"] = exec_form(rest)
    return info


def dockerignore_patterns():
    pats = []
    p = os.path.join(REPO, ".dockerignore")
    if os.path.exists(p):
        with open(p) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    pats.append(line)
    return pats


def ignored(relpath, pats):
    """Docker's rule, simplified: last matching pattern wins; '!' re-includes; a pattern
    matching a parent directory excludes what is below it."""
    parts = relpath.strip("/").split("/")
    result = False
    for pat in pats:
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        pat = pat.strip("/")
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:i]), pat) or \
                    (pat.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pat[3:])):
                result = not neg
                break
    return result


# ---------------------------------------------------------------------------------------------

class ComposeFile(unittest.TestCase):
    """Static checks: docker-compose config, referenced files, promises of the file."""

    @classmethod
    def setUpClass(cls):
        require_compose()
        cls.tmp = tempfile.mkdtemp(prefix="lr-compose-")
        cls.env_file = os.path.join(cls.tmp, ".env")
        sample_env(cls.env_file)
        rc, out, err = compose_config(cls.env_file)
        if rc != 0:
            raise AssertionError("docker-compose config failed (%d):\n%s" % (rc, err))
        cls.resolved = yaml.safe_load(out)
        with open(COMPOSE_FILE) as f:
            cls.raw = yaml.safe_load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(getattr(cls, "tmp", ""), ignore_errors=True)

    def test_config_default_and_demo_profile(self):
        rc, out, err = compose_config(self.env_file, "--profile", "demo")
        self.assertEqual(rc, 0, err)
        services = set(yaml.safe_load(out)["services"])
        self.assertEqual(services, {"control", "agent", "haproxy", "mock-provider"})
        rc, out, err = compose_config(self.env_file, "--profile", "demo",
                                     config_args=["--services"])
        self.assertEqual(rc, 0, err)
        self.assertIn("mock-provider", out.split())
        # the demo provider is only in the demo profile
        self.assertEqual(self.raw["services"]["mock-provider"].get("profiles"), ["demo"])
        for name in NATIVE_SERVICES:
            self.assertNotIn("profiles", self.raw["services"][name], name)

    def test_config_without_env_file(self):
        # .env is optional for `config`: every ${VAR} has a default
        empty = os.path.join(self.tmp, "empty.env")
        open(empty, "w").close()
        rc, _, err = compose_config(empty)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("is not set", err)

    def test_promises(self):
        svcs = self.resolved["services"]
        for name, svc in svcs.items():
            self.assertIn("healthcheck", svc, "%s has no health check" % name)
            self.assertTrue(svc["healthcheck"].get("test"), name)
            for port in svc.get("ports", []):
                spec = port if isinstance(port, str) else "%s:%s:%s" % (
                    port.get("host_ip"), port.get("published"), port.get("target"))
                self.assertTrue(spec.startswith("127.0.0.1:"),
                                "%s publishes %s beyond loopback by default" % (name, spec))
            for k, v in (svc.get("environment") or {}).items():
                if k.endswith("_API_KEY"):
                    self.assertIn(v, ("", None), "%s: a key with a default value" % name)
        self.assertEqual(
            {p if isinstance(p, str) else "" for p in svcs["haproxy"]["ports"]},
            {"127.0.0.1:8080:8080/tcp", "127.0.0.1:8404:8404/tcp"})
        # the official image of an LTS line
        self.assertRegex(svcs["haproxy"]["image"], r"^haproxy:3\.(0|2)(\.\d+)?$")
        # keys reach the three services that need them, from the environment only
        for name in NATIVE_SERVICES:
            env = svcs[name].get("environment") or {}
            self.assertIn("OPENAI_API_KEY", env, name)
            self.assertIn("ANTHROPIC_API_KEY", env, name)
        # HAProxy's master CLI socket lives in the shared volume (control reloads through it)
        self.assertIn(VOLUME_MOUNT + "/haproxy-master.sock,mode,600", svcs["haproxy"]["command"])
        for name in NATIVE_SERVICES:
            self.assertIn("lunaroute-run:" + VOLUME_MOUNT + ":rw", svcs[name]["volumes"], name)

    def test_no_key_in_images(self):
        for name in ("Dockerfile.agent", "Dockerfile.control"):
            path = os.path.join(REPO, "docker", name)
            for word, rest in dockerfile_instructions(path):
                if word in ("ENV", "ARG", "LABEL"):
                    self.assertNotRegex(rest.upper(), r"KEY|SECRET|TOKEN",
                                        "%s: %s %s" % (name, word, rest))
            info = parse_dockerfile(path)
            self.assertEqual(info["froms"][0].split(" ")[0], "debian:bookworm-slim")
            self.assertEqual(info["froms"][-1], "debian:bookworm-slim")
            users = [rest for word, rest in dockerfile_instructions(path) if word == "USER"]
            self.assertEqual(users, ["lunaroute:lunaroute"], name)
        pats = dockerignore_patterns()
        self.assertTrue(ignored(".env", pats), ".dockerignore must exclude .env")
        self.assertFalse(ignored(".env.example", pats))

    def test_referenced_files_exist(self):
        pats = dockerignore_patterns()
        missing = []
        for name, svc in self.raw["services"].items():
            build = svc.get("build")
            if build:
                ctx = os.path.join(REPO, build["context"] if isinstance(build, dict) else build)
                if not os.path.isdir(ctx):
                    missing.append("%s: build context %s" % (name, ctx))
                    continue
                df = os.path.join(ctx, build.get("dockerfile", "Dockerfile"))
                if not os.path.isfile(df):
                    missing.append("%s: dockerfile %s" % (name, df))
                    continue
                info = parse_dockerfile(df)
                for frm, srcs, dest, stage in info["copies"]:
                    if frm is not None:
                        continue  # from another stage
                    for src in srcs:
                        p = os.path.join(ctx, src)
                        if not os.path.exists(p):
                            missing.append("%s: COPY source %s" % (df, src))
                        elif ignored(os.path.relpath(p, ctx), pats):
                            missing.append("%s: COPY source %s is in .dockerignore" % (df, src))
                        if src.endswith(".sh") and not os.access(p, os.X_OK):
                            missing.append("%s: %s is not executable" % (df, src))
                # the entrypoint's program is in the image
                ep = info["entrypoint"] or []
                if ep:
                    prog = ep[0]
                    provided = {d.rstrip("/") + "/" + os.path.basename(s) if d.endswith("/")
                                else d for _, ss, d, st in info["copies"] for s in ss
                                if st == len(info["froms"]) - 1}
                    if not (prog in provided or "/usr/local/bin/" + prog in provided):
                        missing.append("%s: ENTRYPOINT %s is not copied into the final stage"
                                       % (df, prog))
            for vol in svc.get("volumes", []):
                src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source")
                if src.startswith(".") or src.startswith("/"):
                    if not os.path.exists(os.path.join(REPO, src)):
                        missing.append("%s: bind mount source %s" % (name, src))
            for ef in ([svc["env_file"]] if isinstance(svc.get("env_file"), str)
                       else svc.get("env_file", [])):
                if not os.path.exists(os.path.join(REPO, ef)) and ef != ".env":
                    missing.append("%s: env_file %s" % (name, ef))
        for f in (".env.example", ".dockerignore", "docker/config/lunaroute.yaml",
                  "docker/mock-provider/mock_provider.py"):
            if not os.path.exists(os.path.join(REPO, f)):
                missing.append(f)
        self.assertEqual(missing, [])

    def test_compose_config_renders(self):
        # docker/config/lunaroute.yaml, as control renders it in compose: the addresses are service
        # names, which HAProxy resolves through libc when it starts (Docker's DNS); `haproxy
        # -c` cannot resolve `agent` here, so HAProxy checks the rewritten copy instead, in
        # ComposeNative (it must start on it).
        out = os.path.join(self.tmp, "rendered")
        env = lrtest.child_env({"OPENAI_API_KEY": TEST_KEY})
        p = subprocess.run([lrtest.bin_path("lunaroute-control"), "render", "--config",
                            os.path.join(REPO, "docker", "config", "lunaroute.yaml"), "--out",
                            out],
                           env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        cfg = lrtest.read_text(os.path.join(out, "haproxy.cfg"))
        self.assertIn("    bind 0.0.0.0:8080\n", cfg)
        self.assertIn("    bind 0.0.0.0:8404\n", cfg)
        # HAProxy reaches the agent through its unix sockets in the shared volume
        # (agent.local_sockets, the default); the TCP listeners (agent:12345, agent:8081) stay
        # for the agent's health check and other HAProxies.
        self.assertIn("\n    server agent unix@%s/spoa.sock " % out, cfg)
        self.assertIn("\n    server engine unix@%s/engine.sock " % out, cfg)
        self.assertNotIn(TEST_KEY, cfg)
        self.assertIn("%[env(OPENAI_API_KEY)]", cfg)


# ---------------------------------------------------------------------------------------------

class Rewriter:
    """The documented rewrites, applied to strings."""

    def __init__(self, run_dir, config_copy):
        self.pairs = [(VOLUME_MOUNT, run_dir), (CONFIG_MOUNT, config_copy)]
        self.addr = []  # (regex, replacement host:port)

    def add_addr(self, host, port, new_port, loopback_too=False):
        hosts = [host] + (["127.0.0.1", "localhost"] if loopback_too else [])
        for h in hosts:
            self.addr.append((re.compile(r"(?<![\w.-])%s:%d(?!\d)" % (re.escape(h), port)),
                              "127.0.0.1:%d" % new_port))
            self.addr.append((re.compile(r"/dev/tcp/%s/%d(?!\d)" % (re.escape(h), port)),
                              "/dev/tcp/127.0.0.1/%d" % new_port))

    def __call__(self, s):
        if not isinstance(s, str):
            return s
        for a, b in self.pairs:
            s = s.replace(a, b)
        for rx, b in self.addr:
            s = rx.sub(b, s)
        return s


def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


class ComposeNative(lrtest.LRTestCase):
    """The services' exact commands, run natively (see the module docstring)."""

    def setUp(self):
        require_compose()
        self.tmp = tempfile.mkdtemp(prefix="lr-compose-native-")
        self.procs = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        failed = False
        for p in reversed(self.procs):
            rc, forced = p.stop()
            if forced:
                failed = True
                lrtest.log("%s did not stop on SIGTERM" % p.name)
        text = "".join(p.stderr_text() for p in self.procs)
        if lrtest.sanitizer_findings(text):
            failed = True
        if failed or lrtest.KEEP:
            lrtest.log("kept %s" % self.tmp)
            for p in self.procs:
                lrtest.log("%s stderr:\n%s" % (p.name, lrtest.tail(p.stderr_text())))
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if failed:
            raise AssertionError("a native service did not stop cleanly (see above)")

    # -- the compose world, resolved -----------------------------------------------------

    def resolve(self, env_extra):
        env_file = os.path.join(self.tmp, ".env")
        sample_env(env_file, env_extra)
        rc, out, err = compose_config(env_file)
        self.assertEqual(rc, 0, err)
        return yaml.safe_load(out)["services"]

    def argv_of(self, name, svc):
        """entrypoint + command, compose first, else the image's (its Dockerfile)."""
        info = None
        if svc.get("build"):
            b = svc["build"]
            info = parse_dockerfile(os.path.join(b["context"], b.get("dockerfile", "Dockerfile")))
        entry = svc.get("entrypoint")
        cmd = svc.get("command")
        if entry is None and info:
            entry = info["entrypoint"]
            if cmd is None:
                cmd = info["cmd"]
        if isinstance(entry, str):
            entry = shlex.split(entry)
        if isinstance(cmd, str):
            cmd = shlex.split(cmd)
        argv = list(entry or []) + list(cmd or [])
        self.assertTrue(argv, "%s: no command" % name)
        return argv, info

    def native_program(self, prog, info):
        """Image executable -> native: a repository file COPY'd to that path, a binary of the
        build stage (--bin-dir), or the native haproxy."""
        base = os.path.basename(prog)
        if info:
            for frm, srcs, dest, _ in info["copies"]:
                if frm is None and (dest == prog or dest == "/usr/local/bin/" + prog):
                    return os.path.join(REPO, srcs[0])
        if os.path.exists(lrtest.bin_path(base)):
            return lrtest.bin_path(base)
        if base == "haproxy":
            return lrtest.HAPROXY
        return shutil.which(base) or prog

    def start(self, name, svc, rw, env):
        argv, info = self.argv_of(name, svc)
        argv = [self.native_program(argv[0], info)] + [rw(a) for a in argv[1:]]
        lrtest.log("%s: %s" % (name, " ".join(shlex.quote(a) for a in argv)))
        p = lrtest.Proc(name, argv, os.path.join(self.tmp, "logs"), env, cwd=self.tmp)
        self.procs.append(p)
        return p

    def healthy(self, name, svc, rw, env, proc):
        test = svc["healthcheck"]["test"]
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        kind, args = test[0], [rw(a) for a in test[1:]]
        argv = ["/bin/sh", "-c", args[0]] if kind == "CMD-SHELL" else args
        lrtest.log("%s health check: %s" % (name, " ".join(shlex.quote(a) for a in argv)))

        def ok():
            if not proc.alive():
                raise AssertionError("%s exited (%r) before it was healthy:\n%s"
                                     % (name, proc.returncode, lrtest.tail(proc.stderr_text())))
            return subprocess.run(argv, env=env, cwd=self.tmp, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=10).returncode == 0
        self.assertTrue(lrtest.wait_until(ok, READY_TIMEOUT, 0.2),
                        "%s never became healthy:\n%s" % (name, lrtest.tail(proc.stderr_text())))

    # -- the test ------------------------------------------------------------------------

    def test_services_run_natively(self):
        provider = self.mock("provider")
        # The sample .env of a demo: a key (HAProxy must inject it) and both providers on the
        # mock provider service; the rewrite below maps mock-provider:9000 to `provider`.
        svcs = self.resolve({"OPENAI_API_KEY": TEST_KEY,
                             "LUNAROUTE_OPENAI_BASE_URL": "http://mock-provider:9000",
                             "LUNAROUTE_ANTHROPIC_BASE_URL": "http://mock-provider:9000"})
        run_dir = os.path.join(self.tmp, "run")
        os.makedirs(os.path.join(self.tmp, "logs"))
        os.mkdir(run_dir, 0o700)  # the volume, as the image creates it

        # the bind-mounted config file, with its addresses rewritten
        src = None
        for vol in svcs["control"]["volumes"]:
            if isinstance(vol, str) and vol.split(":")[1] == CONFIG_DIR_MOUNT:
                src = os.path.join(vol.split(":")[0], os.path.basename(CONFIG_MOUNT))
        self.assertIsNotNone(src, "control does not mount the directory %s" % CONFIG_DIR_MOUNT)
        os.mkdir(os.path.join(self.tmp, "etc-lunaroute"))
        config_copy = os.path.join(self.tmp, "etc-lunaroute", os.path.basename(CONFIG_MOUNT))
        rw = Rewriter(run_dir, config_copy)
        with open(src) as f:
            text = f.read()
        doc = yaml.safe_load(text)
        ports = {}
        for key, loopback in (("haproxy.bind", True), ("haproxy.stats_bind", True),
                              ("agent.spoa_bind", False), ("agent.engine_bind", False)):
            sect, k = key.split(".")
            host, port = hostport(doc[sect][k])
            ports[key] = lrtest.free_port()
            rw.add_addr(host, port, ports[key], loopback_too=loopback)
        mock_cmd = svcs["mock-provider"]["command"]
        mock_port = int(mock_cmd[mock_cmd.index("--port") + 1])
        rw.add_addr("mock-provider", mock_port, provider.port)
        with open(config_copy, "w") as f:
            f.write(rw(text))

        path = lrtest.BIN_DIR + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
        no_haproxy_path = os.pathsep.join(
            d for d in path.split(os.pathsep)
            if d and not os.access(os.path.join(d, "haproxy"), os.X_OK))
        procs = {}
        for name in NATIVE_SERVICES:
            svc = svcs[name]
            for dep in (svc.get("depends_on") or {}):
                self.assertIn(dep, procs, "%s depends on %s, started later" % (name, dep))
            env = lrtest.child_env({"PATH": path if name != "control" else no_haproxy_path})
            env.update({k: rw(v if v is not None else "")
                        for k, v in (svc.get("environment") or {}).items()})
            procs[name] = self.start(name, svc, rw, env)
            self.healthy(name, svc, rw, env, procs[name])

        # the files control rendered, where the other two services read them
        for f in ("haproxy.cfg", "spoe-lunaroute.conf", "routes.map", "agent.json"):
            self.assertTrue(os.path.isfile(os.path.join(run_dir, f)), f)
        cfg = lrtest.read_text(os.path.join(run_dir, "haproxy.cfg"))
        self.assertIn("server agent unix@%s/spoa.sock " % run_dir, cfg)
        self.assertTrue(lrtest.stat_is_socket(os.path.join(run_dir, "spoa.sock")))
        self.assertTrue(lrtest.stat_is_socket(os.path.join(run_dir, "engine.sock")))
        self.assertNotIn(TEST_KEY, cfg)  # names only, never the value
        self.assertTrue(lrtest.stat_is_socket(os.path.join(run_dir, "haproxy-master.sock")))

        front = ports["haproxy.bind"]
        stats_sock = os.path.join(run_dir, "haproxy.sock")
        # the agent is UP for HAProxy (spop-check) before we count on its answers
        self.assertTrue(lrtest.wait_until(
            lambda: "UP" in lrtest.haproxy_cmd(stats_sock, "show servers state lr_spoa")
            or ",UP," in lrtest.haproxy_cmd(stats_sock, "show stat"), 15),
            lrtest.haproxy_cmd(stats_sock, "show stat"))

        # a bypassed request: straight to the provider, key injected by HAProxy
        r = lrtest.http(front, "POST", "/v1/embeddings?x=1",
                        headers=[("content-type", "application/json")],
                        body='{"model":"text-embedding-3-small","input":"hi"}')
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json().get("mock"), "provider", r)
        req = provider.last()
        self.assertEqual(req.target, "/v1/embeddings?x=1")
        self.assertHeader(req, "authorization", "Bearer " + TEST_KEY)

        # an engine request: the agent's routing-engine listener
        r = lrtest.http(front, "GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(provider.count(), 1, "the engine request reached the provider")

        # the agent answered both (no SPOE error counted: the static fallback was not used)
        table = lrtest.haproxy_cmd(stats_sock, "show table lr_spoe_errors")
        self.assertNotRegex(table, r"gpc0=[1-9]", table)

        # the master CLI socket in the shared volume works (what control's reload will use)
        out = lrtest.haproxy_cmd(os.path.join(run_dir, "haproxy-master.sock"), "show proc;quit")
        self.assertIn("worker", out)

        # the stats/Prometheus endpoint the README points at
        r = lrtest.http(ports["haproxy.stats_bind"], "GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertIn(b"haproxy_frontend_", r.body)

        self.config_changes(procs, run_dir, config_copy, front, stats_sock, provider)

    def config_changes(self, procs, run_dir, config_copy, front, stats_sock, provider):
        """`up --external` applies config file changes to the agent and HAProxy it did not
        start, through their sockets in the shared volume, under continuous traffic."""
        control = procs["control"]

        def log():
            return control.stderr_text()
        self.assertIn("external HAProxy and agent", log())
        self.assertIn("watching %s with inotify" % config_copy, log())
        self.assertIn("haproxy is not installed here", log())  # as in the control image
        msock = os.path.join(run_dir, "haproxy-master.sock")

        def master():
            """(master pid, reloads, newest worker pid) from the master CLI's `show proc`."""
            out = lrtest.haproxy_cmd(msock, "show proc;quit")
            m = re.search(r"^(\d+)\s+master\s+(\d+)", out, re.M)
            workers = out.split("# workers", 1)[1] if "# workers" in out else ""
            w = re.search(r"^(\d+)\s+worker", workers, re.M)
            self.assertTrue(m and w, out)
            return int(m.group(1)), int(m.group(2)), int(w.group(1))

        def reloads():
            """The master's reload count, None while it re-executes itself (socket closed)."""
            try:
                return master()[1]
            except OSError:
                return None

        def agent_digest():
            r = subprocess.run([lrtest.bin_path("lunaroute-control"), "status", "--run-dir",
                                run_dir], capture_output=True, text=True, timeout=30,
                               env=lrtest.child_env())
            try:
                return json.loads(r.stdout)["agent"]["settings"]["digest"]
            except (ValueError, KeyError, TypeError):
                return None

        def agent_json():
            return lrtest.read_text(os.path.join(run_dir, "agent.json"))

        # traffic through the whole test: bypassed requests on new connections
        counts = {"ok": 0, "failed": []}
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    r = lrtest.http(front, "POST", "/v1/embeddings",
                                    headers=[("content-type", "application/json")],
                                    body='{"input":"hi"}', timeout=10)
                    if r.status == 200 and r.json().get("mock") == "provider":
                        counts["ok"] += 1
                    else:
                        counts["failed"].append(r.status)
                except OSError as e:
                    counts["failed"].append(repr(e))
                stop.wait(0.02)
        t = threading.Thread(target=load, daemon=True)
        t.start()
        try:
            text0 = lrtest.read_text(config_copy)
            m0, reloads0, w0 = master()
            aj0 = agent_json()
            self.assertEqual(agent_digest(), lrtest.sha256(aj0.encode()))

            # 1. Agent-side only, written in place: POST /v1/reload, HAProxy untouched.
            text1 = text0 + "routing:\n  circuit_breaker:\n    failure_threshold: 9\n"
            with open(config_copy, "w") as f:
                f.write(text1)
            self.assertTrue(lrtest.wait_until(lambda: agent_json() != aj0, 15, 0.05),
                            "agent.json not re-rendered\n" + lrtest.tail(log()))
            aj1 = agent_json()
            self.assertTrue(lrtest.wait_until(
                lambda: agent_digest() == lrtest.sha256(aj1.encode()), 15, 0.1),
                "the agent does not run the new agent.json\n" + lrtest.tail(log()))
            self.assertTrue(lrtest.wait_until(
                lambda: "applied the new settings through its admin API (changed" in log(),
                10, 0.05), lrtest.tail(log()))
            self.assertTrue(lrtest.wait_until(
                lambda: "haproxy configuration unchanged: no haproxy reload" in log(), 10, 0.05),
                lrtest.tail(log()))
            self.assertIn("POST /v1/reload", procs["agent"].stderr_text())
            self.assertEqual(master(), (m0, reloads0, w0), "HAProxy was reloaded")

            # 2. HAProxy-side only, by rename: `reload` on the master CLI, new worker.
            text2 = text1.replace("\nhaproxy:\n", "\nhaproxy:\n  maxconn: 777\n", 1)
            self.assertNotEqual(text2, text1)
            tmp = config_copy + ".tmp"
            with open(tmp, "w") as f:
                f.write(text2)
            os.replace(tmp, config_copy)
            self.assertTrue(lrtest.wait_until(lambda: (reloads() or 0) > reloads0, 20, 0.1),
                            "HAProxy's master reports no reload\n" + lrtest.tail(log()))
            self.assertTrue(lrtest.wait_until(
                lambda: "haproxy reloaded: worker pid" in log(), 20, 0.1), lrtest.tail(log()))
            m2, reloads2, w2 = master()
            self.assertEqual((m2, reloads2), (m0, reloads0 + 1))
            self.assertNotEqual(w2, w0, "no new worker")
            self.assertIn("Maxconn: 777", lrtest.haproxy_cmd(stats_sock, "show info"))
            self.assertIn("agent settings unchanged: no agent reload", log())
            self.assertEqual(agent_digest(), lrtest.sha256(aj1.encode()))

            # 3. A bad file: refused with its position; nothing reloaded.
            with open(tmp, "w") as f:
                f.write(text2 + "bypass: {enabled: maybe}\n")
            os.replace(tmp, config_copy)
            self.assertTrue(lrtest.wait_until(
                lambda: "reload aborted; still running the previous configuration" in log(),
                15, 0.05), lrtest.tail(log()))
            self.assertRegex(log(), re.escape(config_copy) + r":\d+:\d+: ")
            self.assertEqual(master(), (m2, reloads2, w2))
            self.assertEqual(agent_json(), aj1)

            # 4. The good file back (one more reload, nothing to apply), then SIGHUP
            # re-renders: a lost file comes back, and HAProxy reloads for it.
            with open(config_copy, "w") as f:
                f.write(text2)
            self.assertTrue(lrtest.wait_until(
                lambda: log().count("reloading configuration (config file changed)") == 4,
                15, 0.05), lrtest.tail(log()))
            self.assertTrue(lrtest.wait_until(
                lambda: log().count("haproxy configuration unchanged") == 2, 15, 0.05),
                lrtest.tail(log()))
            os.unlink(os.path.join(run_dir, "routes.map"))
            control.send_signal(signal.SIGHUP)
            self.assertTrue(lrtest.wait_until(
                lambda: os.path.exists(os.path.join(run_dir, "routes.map")), 15))
            self.assertTrue(lrtest.wait_until(lambda: (reloads() or 0) > reloads2, 20, 0.1),
                            lrtest.tail(log()))
            self.assertTrue(control.alive())
            time.sleep(0.5)  # a little traffic on the last worker
        finally:
            stop.set()
            t.join(15)
        lrtest.log("traffic during the config changes: %d ok, %d failed"
                   % (counts["ok"], len(counts["failed"])))
        self.assertEqual(counts["failed"], [])
        self.assertGreater(counts["ok"], 10)

        # control stops cleanly and leaves HAProxy's sockets alone (they are not its own)
        rc, forced = control.stop()
        self.assertEqual((rc, forced), (0, False), control.stderr_text())
        self.assertTrue(lrtest.stat_is_socket(msock))
        self.assertFalse(os.path.exists(os.path.join(run_dir, "control.pid")))
        r = lrtest.http(front, "POST", "/v1/embeddings", body="{}")
        self.assertEqual(r.status, 200, r)
        rc, forced = procs["agent"].stop()
        self.assertEqual((rc, forced), (0, False), procs["agent"].stderr_text())

    def test_mock_provider_service(self):
        """The demo provider's exact command, natively, on a free port."""
        svcs = self.resolve({})
        svc = svcs["mock-provider"]
        port = lrtest.free_port()
        rw = Rewriter(os.path.join(self.tmp, "run"), os.path.join(self.tmp, "unused"))
        cmd = svc["command"]
        rw.add_addr("0.0.0.0", int(cmd[cmd.index("--port") + 1]), port, loopback_too=True)
        os.makedirs(os.path.join(self.tmp, "logs"))
        mount = [v for v in svc["volumes"] if v.split(":")[1] == "/opt/mock-provider"][0]
        rw.pairs.append(("/opt/mock-provider", mount.split(":")[0]))
        argv = [sys.executable] + [rw(a) for a in cmd[1:]]
        # --port is a separate argument: rewrite it too
        argv[argv.index("--port") + 1] = str(port)
        env = lrtest.child_env()
        p = lrtest.Proc("mock-provider", argv, os.path.join(self.tmp, "logs"), env, cwd=self.tmp)
        self.procs.append(p)
        hc = [rw(a).replace(":%s/" % cmd[cmd.index("--port") + 1], ":%d/" % port)
              for a in svc["healthcheck"]["test"][1:]]
        hc[0] = sys.executable
        self.assertTrue(lrtest.wait_until(
            lambda: subprocess.run(hc, capture_output=True).returncode == 0, 10),
            p.stderr_text())
        r = lrtest.http(port, "POST", "/v1/chat/completions", body='{"model":"m"}')
        self.assertEqual(r.json()["object"], "chat.completion")
        r = lrtest.http(port, "POST", "/v1/messages", body='{"model":"m","stream":true}')
        self.assertIn(b"event: message_stop", r.body)
        r = lrtest.http(port, "POST", "/v1/chat/completions", body='{"model":"m","stream":true}')
        self.assertTrue(r.body.rstrip().endswith(b"data: [DONE]"), r.body[-200:])
        r = lrtest.http(port, "POST", "/v1/embeddings", body='{}')
        self.assertEqual(r.json()["path"], "/v1/embeddings")
        rc, forced = p.stop()
        self.assertEqual((rc, forced), (0, False), p.stderr_text())


if __name__ == "__main__":
    lrtest.main()
