"""Integration-test harness for LunaRoute for HAProxy (Python 3 standard library only).

What it gives a test:
  * free_port()                     a loopback port that was free a moment ago
  * MockProvider                    an HTTP/1.1 provider stand-in that records every request
  * Stack                           a YAML config in a fresh run dir, started either through
                                    `lunaroute-control up` or "manually" (render, then the agent
                                    and HAProxy started here, so a test can SIGKILL the agent
                                    without a supervisor bringing it back)
  * http() / stream()               raw-enough HTTP client helpers (http.client)
  * LRTestCase                      unittest base: skips without haproxy, stops every process
                                    and checks the agent's exit status and sanitizer output,
                                    keeps the run dir of a failed test (or with LRTEST_KEEP=1)
  * main()                          `python3 test_x.py --bin-dir build/bin [unittest args]`

Environment knobs: LRTEST_BIN_DIR, LRTEST_KEEP=1, LRTEST_HAPROXY, LRTEST_READY_TIMEOUT,
LRTEST_VERBOSE=1 (see README.md).
"""

import atexit
import ctypes
import errno
import http.client as _httpclient
import http.server as _httpserver
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BIN_DIR = os.environ.get("LRTEST_BIN_DIR", os.path.join(os.getcwd(), "build", "bin"))
HAPROXY = os.environ.get("LRTEST_HAPROXY") or shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
KEEP = os.environ.get("LRTEST_KEEP", "") not in ("", "0", "false", "no")
VERBOSE = os.environ.get("LRTEST_VERBOSE", "") not in ("", "0", "false", "no")
READY_TIMEOUT = float(os.environ.get("LRTEST_READY_TIMEOUT", "20"))
STOP_TIMEOUT = 5.0

SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "LeakSanitizer", "runtime error:")
ADDR_IN_USE_PATTERNS = ("address already in use", "cannot bind", "eaddrinuse",
                        "address in use")

# Variables that would change what the stack does if inherited from the developer's shell:
# the children get them only when a test sets them explicitly.
_SCRUBBED_ENV_PREFIXES = ("LUNAROUTE_",)
_SCRUBBED_ENV = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY"}


def log(msg):
    sys.stderr.write("[lrtest] %s\n" % msg)
    sys.stderr.flush()


def bin_path(name):
    return os.path.join(BIN_DIR, name)


def require_haproxy():
    if not HAPROXY or not os.access(HAPROXY, os.X_OK):
        raise unittest.SkipTest("haproxy is not installed (set LRTEST_HAPROXY to its path)")


def free_port():
    """A TCP port on 127.0.0.1 that was free when we looked (the caller retries on EADDRINUSE)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_accepts(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def child_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in _SCRUBBED_ENV and not k.startswith(_SCRUBBED_ENV_PREFIXES)}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


# ---------------------------------------------------------------------------------------------
# Child processes: own session, SIGTERM when the test process dies (PR_SET_PDEATHSIG).

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None
_PR_SET_PDEATHSIG = 1


def _preexec_pdeathsig():
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class Proc:
    """A process we started, with its output in files of the run dir."""

    def __init__(self, name, argv, run_dir, env, cwd=None):
        self.name = name
        self.argv = argv
        self.stdout_path = os.path.join(run_dir, name + ".stdout")
        self.stderr_path = os.path.join(run_dir, name + ".stderr")
        self.killed_by_test = False
        self.returncode = None
        out = open(self.stdout_path, "ab")
        err = open(self.stderr_path, "ab")
        try:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          env=env, cwd=cwd or run_dir, start_new_session=True,
                                          preexec_fn=_preexec_pdeathsig)
        finally:
            out.close()
            err.close()
        self.pid = self.popen.pid
        _LIVE_PROCS.add(self)

    def poll(self):
        rc = self.popen.poll()
        if rc is not None:
            self.returncode = rc
            _LIVE_PROCS.discard(self)
        return rc

    def alive(self):
        return self.poll() is None

    def send_signal(self, sig, group=False):
        if self.poll() is not None:
            return
        try:
            if group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout):
        try:
            self.returncode = self.popen.wait(timeout=timeout)
            _LIVE_PROCS.discard(self)
            return self.returncode
        except subprocess.TimeoutExpired:
            return None

    def kill9(self):
        """SIGKILL on purpose (a test's doing): not a failure at teardown."""
        self.killed_by_test = True
        self.send_signal(signal.SIGKILL)
        self.wait(5)

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """SIGTERM, wait, then SIGKILL the whole group. Returns (rc, was_force_killed)."""
        if self.poll() is not None:
            self._kill_group_leftovers()
            return self.returncode, False
        self.send_signal(sig)
        rc = self.wait(timeout)
        forced = False
        if rc is None:
            forced = True
            self.send_signal(signal.SIGKILL, group=True)
            rc = self.wait(5)
        self._kill_group_leftovers()
        return rc, forced

    def _kill_group_leftovers(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stderr_text(self):
        return read_text(self.stderr_path)

    def stdout_text(self):
        return read_text(self.stdout_path)


_LIVE_PROCS = set()


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def tail(text, n=40):
    lines = text.splitlines()
    return "\n".join(lines[-n:])


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    state = st[st.rfind(")") + 2:].split()[0] if ")" in st else "?"
    return state not in ("Z", "X")


def pids_mentioning(text):
    """Live processes whose command line contains `text` (e.g. a run dir)."""
    out = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmd and pid_alive(int(d)):
            out.append((int(d), cmd.strip()))
    return out


def read_pidfile(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split() if x.strip().isdigit()]
    except OSError:
        return []


def sanitizer_findings(text):
    return [line for line in text.splitlines() if any(p in line for p in SANITIZER_PATTERNS)]


# ---------------------------------------------------------------------------------------------
# Minimal YAML emitter (block style) for the configs the tests write.

_YAML_PLAIN = re.compile(r"^[A-Za-z0-9_./:${}@+-][A-Za-z0-9_./:${}@+ -]*$")
_YAML_RESERVED = re.compile(r"^(true|false|yes|no|on|off|null|~|y|n|[-+]?[0-9][0-9._]*(e[0-9]+)?)$",
                            re.I)


class Raw(str):
    """A scalar emitted verbatim (e.g. `maybe`, or a deliberately malformed value)."""


def _yaml_scalar(v):
    if isinstance(v, Raw):
        return str(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if s and _YAML_PLAIN.match(s) and not _YAML_RESERVED.match(s) and not s.endswith(" ") \
            and ": " not in s and " #" not in s:
        return s
    return json.dumps(s)


def to_yaml(obj, indent=0):
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                lines.append("%s%s:\n%s" % (pad, k, to_yaml(v, indent + 1)))
            elif isinstance(v, list) and v:
                lines.append("%s%s:\n%s" % (pad, k, to_yaml(v, indent + 1)))
            elif isinstance(v, (dict, list)):
                lines.append("%s%s: %s\n" % (pad, k, "{}" if isinstance(v, dict) else "[]"))
            else:
                lines.append("%s%s: %s\n" % (pad, k, _yaml_scalar(v)))
        return "".join(lines)
    if isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 1)
                lines.append("%s- %s" % (pad, inner.lstrip()))
            else:
                lines.append("%s- %s\n" % (pad, _yaml_scalar(v)))
        return "".join(lines)
    return pad + _yaml_scalar(obj) + "\n"


def deep_merge(base, over):
    """Recursively merges `over` into a copy of `base`; a None value in `over` deletes a key."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------------
# Mock provider.

class MockRequest:
    def __init__(self, method, target, version, headers, body, chunked, peer):
        self.method = method
        self.target = target  # raw request target: path + "?" + query
        self.path, _, self.query = target.partition("?")
        self.version = version
        self.headers = headers  # [(name, value)] in arrival order, original case
        self.body = body
        self.chunked = chunked  # request body came with transfer-encoding: chunked
        self.peer = peer
        self.time = time.monotonic()

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<MockRequest %s %s %d bytes>" % (self.method, self.target, len(self.body))


class MockResponse:
    """A canned response. headers: list of (name, value). chunked: send the body in one
    chunk with transfer-encoding: chunked instead of content-length."""

    def __init__(self, status=200, body=b"", headers=None, reason=None, chunked=False,
                 delay=0.0):
        self.status = status
        self.reason = reason
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = list(headers or [])
        self.chunked = chunked
        self.delay = delay  # seconds to wait before answering

    @classmethod
    def json(cls, obj, status=200, headers=None, delay=0.0):
        return cls(status, json.dumps(obj).encode(),
                   [("Content-Type", "application/json")] + list(headers or []), delay=delay)


class MockStream:
    """A chunked response: each element of `chunks` is written and flushed as one chunk, with
    `delay` seconds between chunks (a list of delays: delays[i] before chunk i+1).
    `sent_at` records when each chunk left (monotonic).

    first_delay: seconds between the response headers and the first chunk.
    close_after: after that many chunks, close the socket abruptly (no last chunk): the
                 provider "dies" mid-stream (FIN; with rst=True a TCP RST instead).
    endless:     after the listed chunks, keep sending `filler` every `delay` seconds until
                 the peer goes away or `max_secs` passed (for client-disconnect tests).
    While waiting between chunks the mock watches its socket: when the peer closed it (EOF)
    or a write fails, `closed_at` is set (monotonic) and the stream stops. `finished` is an
    Event set when the handler is done with the stream, however it ended.
    framing="length": a plain (non-chunked) body with content-length = the chunks' total,
                 still written piece by piece (a slow non-streamed answer; no `endless`)."""

    def __init__(self, chunks, delay=0.3, status=200, headers=None, first_delay=0.0,
                 close_after=None, endless=False, filler=None, max_secs=30.0, rst=False,
                 framing="chunked"):
        self.chunks = [c.encode() if isinstance(c, str) else c for c in chunks]
        self.delay = delay
        self.status = status
        self.headers = list(headers or [("Content-Type", "text/event-stream"),
                                        ("Cache-Control", "no-cache")])
        self.first_delay = first_delay
        self.close_after = close_after
        self.rst = rst
        self.endless = endless
        self.filler = filler.encode() if isinstance(filler, str) else filler
        self.max_secs = max_secs
        self.framing = framing
        self.sent_at = []
        self.headers_at = None
        self.closed_at = None
        self.finished = threading.Event()

    def delay_before(self, i):
        """Seconds to wait before chunk i (i >= 1)."""
        if isinstance(self.delay, (list, tuple)):
            return self.delay[min(i - 1, len(self.delay) - 1)] if self.delay else 0.0
        return self.delay


class MockHang:
    """Reads the request and never answers: waits until the peer closes (closed_at is set)
    or `secs` passed, then closes the connection without a response."""

    def __init__(self, secs=30.0):
        self.secs = secs
        self.closed_at = None
        self.started_at = None
        self.finished = threading.Event()


class MockReset:
    """Closes the connection with a TCP RST instead of answering."""


def seq(*responses):
    """A per-request script for mock.on(): the n-th request to the path gets responses[n]
    (the last one repeats). Each element: MockResponse, MockStream, MockHang, MockReset or a
    callable(req). The returned callable has .calls (how many requests it answered)."""
    lock = threading.Lock()
    state = {"n": 0}

    def pick(req):
        with lock:
            i = state["n"]
            state["n"] += 1
        r = responses[min(i, len(responses) - 1)]
        return r(req) if callable(r) and not isinstance(r, type) else r

    pick.calls = lambda: state["n"]
    return pick


def _peer_gone(sock, timeout):
    """Waits up to `timeout` seconds; True if the peer closed (EOF/reset) meanwhile."""
    import select
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            r, _, _ = select.select([sock], [], [], left)
        except (OSError, ValueError):
            return True
        if not r:
            return False
        try:
            d = sock.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        except OSError:
            return True
        if not d:
            return True
        # Data from the peer (a pipelined request?): consume it so select does not spin.
        try:
            sock.recv(len(d))
        except OSError:
            return True


class _MockHandler(_httpserver.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lrtest-mock/1"
    timeout = 60
    # Real providers' front ends (nginx, envoy, Cloudflare) set TCP_NODELAY. Without it, the
    # response body (a second write after the header block) waits for the ACK of the
    # headers, which a client reusing the connection delays by ~40 ms (delayed ACK).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # quiet
        pass

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunk size")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers until the empty line
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                data = self.rfile.read(size)
                if len(data) != size:
                    raise ConnectionError("eof in chunk data")
                parts.append(data)
                self.rfile.readline(3)  # CRLF after the chunk
            return b"".join(parts), True
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            raise ConnectionError("eof in body")
        return data, False

    def _handle(self):
        mock = self.server.mock
        try:
            body, chunked = self._read_body()
        except (ConnectionError, ValueError):
            self.close_connection = True
            return
        req = MockRequest(self.command, self.path, self.request_version,
                          list(self.headers.raw_items()), body, chunked, self.client_address)
        mock._record(req)
        resp = mock._response_for(req)
        if callable(resp) and not isinstance(resp, type):
            resp = resp(req)
        if resp is None:  # a script's None: the default answer
            resp = mock._default_response(req)
        if isinstance(resp, MockStream):
            self._send_stream(resp)
        elif isinstance(resp, MockHang):
            self._hang(resp)
        elif isinstance(resp, MockReset) or resp is MockReset:
            self._reset()
        else:
            if getattr(resp, "delay", 0):
                time.sleep(resp.delay)
            self._send(resp)

    def _hang(self, h):
        h.started_at = time.monotonic()
        try:
            if _peer_gone(self.connection, h.secs):
                h.closed_at = time.monotonic()
        finally:
            self.close_connection = True
            h.finished.set()

    def _reset(self):
        import struct
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True

    def _send(self, r):
        self.send_response(r.status, r.reason)
        names = {k.lower() for k, _ in r.headers}
        for k, v in r.headers:
            self.send_header(k, v)
        if self.command == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200:
            if "content-length" not in names and r.status not in (204, 304):
                self.send_header("Content-Length", str(len(r.body)))
            self.end_headers()
            return
        if r.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if r.body:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(r.body), r.body))
            self.wfile.write(b"0\r\n\r\n")
        else:
            if "content-length" not in names:
                self.send_header("Content-Length", str(len(r.body)))
            self.end_headers()
            self.wfile.write(r.body)
        self.wfile.flush()

    def _send_stream(self, s):
        try:
            self._send_stream_inner(s)
        except (BrokenPipeError, ConnectionResetError, OSError):
            if s.closed_at is None:
                s.closed_at = time.monotonic()
            self.close_connection = True
        finally:
            s.finished.set()

    def _stream_wait(self, s, secs):
        """Sleeps `secs` watching the socket; True if the peer went away."""
        if _peer_gone(self.connection, secs):
            s.closed_at = time.monotonic()
            self.close_connection = True
            return True
        return False

    def _die(self, s):
        if s.rst:
            self._reset()
            return
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_stream_inner(self, s):
        self.send_response(s.status)
        for k, v in s.headers:
            self.send_header(k, v)
        plain = s.framing == "length"
        if plain:
            self.send_header("Content-Length", str(sum(len(c) for c in s.chunks)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        s.headers_at = time.monotonic()
        if s.first_delay and self._stream_wait(s, s.first_delay):
            return
        t0 = time.monotonic()
        i = 0
        while True:
            if i < len(s.chunks):
                c = s.chunks[i]
            elif s.endless and time.monotonic() - t0 < s.max_secs:
                c = s.filler if s.filler is not None else s.chunks[-1]
            else:
                break
            if s.close_after is not None and i >= s.close_after:
                # The provider dies: no terminating chunk, just a closed socket.
                self._die(s)
                return
            if i and self._stream_wait(s, s.delay_before(i)):
                return
            self.wfile.write(c if plain else b"%x\r\n%s\r\n" % (len(c), c))
            self.wfile.flush()
            s.sent_at.append(time.monotonic())
            i += 1
        if s.close_after is not None and i >= s.close_after:
            self._die(s)
            return
        if not plain:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class _MockServer(_httpserver.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # HAProxy keeps idle server connections open
    allow_reuse_address = True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.conns = set()  # open client connections (refuse() closes them)
        self.conns_lock = threading.Lock()

    def process_request_thread(self, request, client_address):
        with self.conns_lock:
            self.conns.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.conns_lock:
                self.conns.discard(request)

    def drop_connections(self):
        with self.conns_lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        # HAProxy's TCP health checks connect and reset: not worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class MockProvider:
    """An HTTP/1.1 provider stand-in on 127.0.0.1:<free port>. Records every request; answers
    200 JSON {"mock": name, "path": ..., "method": ...} unless a path has its own response:
    mock.on("/v1/x", MockResponse(...) | MockStream(...) | callable(req) -> either)."""

    def __init__(self, name):
        self.name = name
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.requests = []
        self._routes = {}
        self._holder = None  # while refusing: a bound, non-listening socket on our port
        self._serve_on(0)
        self.port = self._server.server_address[1]
        self.host_port = "127.0.0.1:%d" % self.port
        self.url = "http://" + self.host_port
        _LIVE_MOCKS.add(self)

    def _serve_on(self, port):
        # bind(port 0) with SO_REUSEADDR may hand out a port some connection of a test
        # running in parallel still uses (test_badinput opens thousands): listen() then fails
        # with EADDRINUSE. Another port is as good (not so when serving again on our own).
        for attempt in range(10):
            try:
                self._server = _MockServer(("127.0.0.1", port), _MockHandler)
                break
            except OSError as e:
                if port or e.errno != errno.EADDRINUSE or attempt == 9:
                    raise
        self._server.mock = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="mock-" + self.name, daemon=True)
        self._thread.start()

    def refuse(self):
        """From now on connections are refused (RST to the SYN): the listening socket is
        closed and the port stays held by a bound socket that does not listen, so nothing
        else can take it. Connections already open are closed. serve() undoes it."""
        if self._holder is not None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        h = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        h.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        h.bind(("127.0.0.1", self.port))
        self._holder = h

    def serve(self):
        """Accepts connections again on the same port (after refuse())."""
        if self._holder is None:
            return
        self._holder.close()
        self._holder = None
        self._serve_on(self.port)

    def on(self, path, response):
        with self._lock:
            self._routes[path] = response

    def _response_for(self, req):
        with self._lock:
            r = self._routes.get(req.path)
        if r is not None:
            return r
        return self._default_response(req)

    def _default_response(self, req):
        return MockResponse.json({"mock": self.name, "path": req.path, "method": req.method})

    def _record(self, req):
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()

    def clear(self):
        with self._lock:
            self.requests = []

    def count(self):
        with self._lock:
            return len(self.requests)

    def wait_for(self, n=1, timeout=5.0):
        """Waits until at least n requests were recorded; returns the list (may be shorter)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.requests)

    def last(self):
        with self._lock:
            return self.requests[-1] if self.requests else None

    def count_path(self, path):
        """Requests recorded for `path` (without query string)."""
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    def requests_to(self, path):
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def close(self):
        if self._holder is not None:
            self._holder.close()
            self._holder = None
            self._server = None
        if self._server is None:
            _LIVE_MOCKS.discard(self)
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        _LIVE_MOCKS.discard(self)


_LIVE_MOCKS = set()


# ---------------------------------------------------------------------------------------------
# HTTP client helpers.

class Response:
    def __init__(self, status, reason, headers, body, version):
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)]
        self.body = body
        self.version = version

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r %s>" % (self.status, self.headers, self.body[:300])


def _send_request(port, method, path, headers, body, timeout, chunked, host):
    conn = _httpclient.HTTPConnection(host, port, timeout=timeout)
    headers = list(headers or [])
    names = {k.lower() for k, _ in headers}
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    if "host" not in names:
        conn.putheader("Host", "%s:%d" % (host, port))
    if body is not None and not chunked and "content-length" not in names \
            and "transfer-encoding" not in names:
        conn.putheader("Content-Length", str(len(body)))
    if chunked and "transfer-encoding" not in names:
        conn.putheader("Transfer-Encoding", "chunked")
    for k, v in headers:
        conn.putheader(k, v)
    if chunked:
        conn.endheaders()
        for piece in (body if isinstance(body, (list, tuple)) else [body]):
            if piece:
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
    else:
        conn.endheaders(body)
    return conn


def http(port, method, path, headers=None, body=None, timeout=10.0, chunked=False,
         host="127.0.0.1"):
    """One request on a fresh connection; returns Response (status, headers list, body)."""
    if isinstance(body, str):
        body = body.encode()
    conn = _send_request(port, method, path, headers, body, timeout, chunked, host)
    try:
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.reason, list(r.getheaders()), data, r.version)
    finally:
        conn.close()


def stream(port, method, path, headers=None, body=None, timeout=15.0, host="127.0.0.1"):
    """Sends a request and reads the response incrementally. Returns (Response, reads, t_sent)
    where reads is [(monotonic time, bytes)] in arrival order and Response.body is the whole
    body; t_sent is the time the request was written."""
    if isinstance(body, str):
        body = body.encode()
    t_sent = time.monotonic()
    conn = _send_request(port, method, path, headers, body, timeout, False, host)
    try:
        r = conn.getresponse()
        reads = []
        while True:
            piece = r.read1(65536)
            if not piece:
                break
            reads.append((time.monotonic(), piece))
        body = b"".join(p for _, p in reads)
        return Response(r.status, r.reason, list(r.getheaders()), body, r.version), reads, t_sent
    finally:
        conn.close()


def raw_exchange(port, data, timeout=5.0, host="127.0.0.1", shut_wr=False):
    """Writes raw bytes on a fresh connection and reads until the peer closes or `timeout`
    passed. Returns (bytes received, seconds until the peer closed or None if it did not)."""
    s = socket.create_connection((host, port), timeout=timeout)
    t0 = time.monotonic()
    out = []
    closed_after = None
    try:
        if data:
            s.sendall(data)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        deadline = t0 + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed_after = time.monotonic() - t0
                break
            if not d:
                closed_after = time.monotonic() - t0
                break
            out.append(d)
    finally:
        s.close()
    return b"".join(out), closed_after


def parse_raw_response(data):
    """Parses the first HTTP/1.x response of `data` (content-length, chunked, or up to the
    end). Returns Response or None when there is no complete header block."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head, rest = bytes(data[:end]), bytes(data[end + 4:])
    lines = head.decode("latin-1").split("\r\n")
    version, _, st = lines[0].partition(" ")
    code, _, reason = st.partition(" ")
    headers = []
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers.append((k.strip(), v.strip()))
    r = Response(int(code), reason, headers, b"", version)
    te = (r.header("transfer-encoding") or "").lower()
    if "chunked" in te:
        body = []
        pos = 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                break
            try:
                n = int(rest[pos:eol].split(b";")[0], 16)
            except ValueError:
                break
            if n == 0:
                break
            body.append(rest[eol + 2:eol + 2 + n])
            pos = eol + 2 + n + 2
        r.body = b"".join(body)
    elif r.header("content-length") is not None:
        r.body = rest[:int(r.header("content-length"))]
    else:
        r.body = rest
    return r


class RawStream:
    """A streaming request on a raw socket, read incrementally, that the test can abandon
    mid-stream (close() really closes the TCP connection, unlike http.client whose response
    object keeps the socket open). `data` accumulates everything received (headers and
    chunk framing included; a bytearray: endswith/count/`in` work on it); `reads` is
    [(monotonic time, bytes)]."""

    def __init__(self, port, method, path, headers=None, body=b"", host="127.0.0.1",
                 timeout=10.0):
        if isinstance(body, str):
            body = body.encode()
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hdrs = list(headers or [])
        names = {k.lower() for k, _ in hdrs}
        req = ["%s %s HTTP/1.1" % (method, path)]
        if "host" not in names:
            req.append("Host: %s:%d" % (host, port))
        if "content-length" not in names:
            req.append("Content-Length: %d" % len(body or b""))
        req += ["%s: %s" % (k, v) for k, v in hdrs]
        self.t_sent = time.monotonic()
        self.sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode("latin-1") + (body or b""))
        self.data = bytearray()
        self.reads = []
        self.eof = False

    def read_until(self, pred, timeout=5.0):
        """Reads until pred(self.data) is true, EOF or timeout; returns pred's last value."""
        deadline = time.monotonic() + timeout
        while not pred(self.data) and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                self.eof = True
                break
            if not d:
                self.eof = True
                break
            self.reads.append((time.monotonic(), d))
            self.data += d  # bytearray: amortised O(1)
        return pred(self.data)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class LoadClient:
    """A bounded load client: `threads` threads, each sending `method path` through `port`
    again and again (a new connection every `per_conn` requests) until stop(). Every
    response is checked with check(Response) -> None or a failure text; failures (errors,
    timeouts, bad answers) are kept, never retried."""

    def __init__(self, port, path="/v1/embeddings", method="POST", body=b'{"input":"x"}',
                 headers=None, threads=2, per_conn=5, check=None, timeout=10.0):
        self.port, self.path, self.method, self.body = port, path, method, body
        self.headers = list(headers or [("Content-Type", "application/json")])
        self.nthreads, self.per_conn, self.timeout = threads, per_conn, timeout
        self.check = check or (lambda r: None if r.status == 200 else "status %d" % r.status)
        self.ok = 0
        self.failures = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def _run(self):
        conn = None
        n = 0
        while not self._stop.is_set():
            try:
                if conn is None or n >= self.per_conn:
                    if conn is not None:
                        conn.close()
                    conn = _httpclient.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                    n = 0
                conn.request(self.method, self.path, body=self.body, headers=dict(self.headers))
                r = conn.getresponse()
                resp = Response(r.status, r.reason, list(r.getheaders()), r.read(), r.version)
                n += 1
                bad = self.check(resp)
                if (resp.header("connection") or "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, _httpclient.HTTPException) as e:
                bad = "%s: %s" % (type(e).__name__, e)
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                if bad:
                    self.failures.append(bad)
                else:
                    self.ok += 1
        if conn is not None:
            conn.close()

    def start(self):
        for i in range(self.nthreads):
            t = threading.Thread(target=self._run, name="load-%d" % i, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        return self.ok, list(self.failures)

    def total(self):
        with self._lock:
            return self.ok + len(self.failures)


def sse_events(body):
    """Splits an SSE body (bytes or str) into events: a list of dicts with "event", "data"
    (the data lines joined by \\n, or None) and "comments" (the comment lines' text)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    body = body.replace("\r\n", "\n")
    events = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        ev = {"event": None, "data": None, "comments": []}
        data = []
        for line in block.split("\n"):
            if line.startswith(":"):
                ev["comments"].append(line[1:].strip())
            elif line.startswith("event:"):
                ev["event"] = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:][1:] if line[5:].startswith(" ") else line[5:])
        if data:
            ev["data"] = "\n".join(data)
        events.append(ev)
    return events


_METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_METRIC_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\]|\\\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> {(name, ((label, value), ...sorted)): float}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            raise ValueError("not a Prometheus sample line: %r" % line)
        labels = tuple(sorted(_METRIC_LABEL.findall(m.group(3) or "")))
        v = m.group(4)
        out[(m.group(1), labels)] = float("inf") if v == "+Inf" else float(v)
    return out


def metric(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (0.0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def sha256(b):
    import hashlib
    return hashlib.sha256(b).hexdigest()


def multipart(fields, boundary=None):
    """Builds a multipart/form-data body. fields: [(name, value bytes, filename or None,
    content-type or None)]. Returns (content_type, body)."""
    boundary = boundary or "----lrtestBoundary7MA4YWxkTrZu0gW"
    out = []
    for name, value, filename, ctype in fields:
        out.append(b"--" + boundary.encode() + b"\r\n")
        disp = 'form-data; name="%s"' % name
        if filename:
            disp += '; filename="%s"' % filename
        out.append(b"Content-Disposition: " + disp.encode() + b"\r\n")
        if ctype:
            out.append(b"Content-Type: " + ctype.encode() + b"\r\n")
        out.append(b"\r\n")
        out.append(value if isinstance(value, bytes) else value.encode())
        out.append(b"\r\n")
    out.append(b"--" + boundary.encode() + b"--\r\n")
    return "multipart/form-data; boundary=" + boundary, b"".join(out)


# ---------------------------------------------------------------------------------------------
# HAProxy stats socket.

def haproxy_cmd(sock_path, cmd, timeout=2.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(cmd.encode() + b"\n")
        chunks = []
        while True:
            d = s.recv(65536)
            if not d:
                break
            chunks.append(d)
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        s.close()


def parse_show_stat(text):
    lines = [l for l in text.splitlines() if l.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    cols = lines[0][2:].split(",")
    rows = []
    for l in lines[1:]:
        vals = l.split(",")
        rows.append(dict(zip(cols, vals)))
    return rows


# ---------------------------------------------------------------------------------------------
# SPOP, as a (possibly rogue) peer of the agent's SPOP listener sees it (SPOE.txt, HAProxy 2.6).

SPOP_HAPROXY_HELLO, SPOP_HAPROXY_DISCON, SPOP_NOTIFY = 1, 2, 3
SPOP_AGENT_HELLO, SPOP_AGENT_DISCON, SPOP_ACK = 101, 102, 103
# DISCONNECT status codes
SPOP_ST = {"none": 0, "io": 1, "timeout": 2, "too_big": 3, "invalid": 4, "no_vsn": 5,
           "no_frame_size": 6, "no_cap": 7, "bad_vsn": 8, "bad_frame_size": 9,
           "frag_not_supported": 10, "interlaced": 11, "frameid_not_found": 12, "res": 13}


def spop_varint(v):
    if v < 240:
        return bytes([v])
    out = [(v & 0xFF) | 0xF0]
    v = (v - 240) >> 4
    while v >= 128:
        out.append((v & 0xFF) | 0x80)
        v = (v - 128) >> 7
    out.append(v)
    return bytes(out)


def spop_varint_decode(b, i):
    """(value, next index)."""
    v = b[i]
    i += 1
    if v < 240:
        return v, i
    shift = 4
    while True:
        c = b[i]
        i += 1
        v += c << shift
        shift += 7
        if c < 128:
            return v, i


def spop_str(s):
    b = s.encode() if isinstance(s, str) else s
    return spop_varint(len(b)) + b


def spop_kv_str(k, v):
    return spop_str(k) + b"\x08" + spop_str(v)


def spop_kv_uint(k, v):
    return spop_str(k) + b"\x03" + spop_varint(v)


def spop_frame(ftype, payload, sid=0, fid=0, flags=1):
    """One frame: 4-byte length, type, flags (1 = FIN), stream-id, frame-id, payload."""
    import struct
    body = bytes([ftype]) + struct.pack(">I", flags) + spop_varint(sid) + spop_varint(fid) + payload
    return struct.pack(">I", len(body)) + body


def spop_hello(versions="2.0", max_frame=16380, caps="pipelining", healthcheck=False,
               flags=1):
    """HAPROXY-HELLO; versions / max_frame / caps = None leaves that item out."""
    p = b""
    if versions is not None:
        p += spop_kv_str("supported-versions", versions)
    if max_frame is not None:
        p += spop_kv_uint("max-frame-size", max_frame)
    if caps is not None:
        p += spop_kv_str("capabilities", caps)
    p += spop_kv_str("engine-id", "lrtest-rogue")
    if healthcheck:
        p += spop_str("healthcheck") + b"\x11"
    return spop_frame(SPOP_HAPROXY_HELLO, p, flags=flags)


def spop_notify(sid, fid, method="GET", path="/v1/embeddings", flags=1):
    """A lunaroute-classify NOTIFY like HAProxy's."""
    p = spop_str("lunaroute-classify") + bytes([5])
    p += spop_kv_str("method", method) + spop_kv_str("path", path)
    p += spop_str("av") + b"\x02" + spop_varint(0)
    p += spop_str("xk") + b"\x02" + spop_varint(0)
    p += spop_str("auth") + b"\x00"
    return spop_frame(SPOP_NOTIFY, p, sid, fid, flags)


def spop_haproxy_disconnect(status=0, message="bye"):
    return spop_frame(SPOP_HAPROXY_DISCON, spop_kv_uint("status-code", status)
                      + spop_kv_str("message", message))


def spop_kv_decode(payload):
    """KV-LIST -> {name: value} (ints, strings, bools; other types as raw bytes)."""
    out = {}
    i = 0
    while i < len(payload):
        n, i = spop_varint_decode(payload, i)
        name = payload[i:i + n].decode("utf-8", "replace")
        i += n
        t = payload[i]
        i += 1
        typ = t & 0x0F
        if typ == 0:
            v = None
        elif typ == 1:
            v = bool(t & 0x10)
        elif typ in (2, 3, 4, 5):
            v, i = spop_varint_decode(payload, i)
        elif typ == 6:
            v, i = payload[i:i + 4], i + 4
        elif typ == 7:
            v, i = payload[i:i + 16], i + 16
        else:
            n, i = spop_varint_decode(payload, i)
            v = payload[i:i + n]
            i += n
            if typ == 8:
                v = v.decode("utf-8", "replace")
        out[name] = v
    return out


class SpopFrame:
    def __init__(self, ftype, flags, sid, fid, payload):
        self.type, self.flags, self.sid, self.fid, self.payload = ftype, flags, sid, fid, payload

    def kv(self):
        return spop_kv_decode(self.payload)

    def __repr__(self):
        return "<SpopFrame type=%d sid=%d fid=%d %r>" % (self.type, self.sid, self.fid,
                                                         self.payload[:80])


class SpopPeer:
    """A raw SPOP connection to the agent: send bytes, read whole frames, see the close."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no frame in time")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
        self.buf += d

    def read_frame(self, timeout=5.0):
        """The next frame, or None when the agent closed first. Raises socket.timeout."""
        import struct
        deadline = time.monotonic() + timeout
        while len(self.buf) < 4 and not self.eof:
            self._fill(deadline)
        if len(self.buf) < 4:
            return None
        n = struct.unpack(">I", self.buf[:4])[0]
        while len(self.buf) < 4 + n and not self.eof:
            self._fill(deadline)
        if len(self.buf) < 4 + n:
            return None
        f, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        flags = struct.unpack(">I", f[1:5])[0]
        sid, i = spop_varint_decode(f, 5)
        fid, i = spop_varint_decode(f, i)
        return SpopFrame(f[0], flags, sid, fid, f[i:])

    def handshake(self, **hello_kw):
        self.send(spop_hello(**hello_kw))
        f = self.read_frame()
        if f is None or f.type != SPOP_AGENT_HELLO:
            raise AssertionError("no AGENT-HELLO: %r" % f)
        return f

    def wait_closed(self, timeout=5.0):
        """True if the agent closes (EOF/RST) within timeout; data meanwhile is kept."""
        deadline = time.monotonic() + timeout
        try:
            while not self.eof:
                self._fill(deadline)
        except socket.timeout:
            return False
        return True

    def close(self, rst=False):
        import struct
        try:
            if rst:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def proc_fds(pid):
    """(tcp, other): the TCP sockets among pid's fds as [(state, local_port, remote_port)], and
    the count of its other fds (files, pipes, eventfds, unix sockets, ...)."""
    try:
        fd_dir = "/proc/%d/fd" % pid
        links = []
        for fd in os.listdir(fd_dir):
            try:
                links.append(os.readlink(os.path.join(fd_dir, fd)))
            except OSError:
                pass
    except OSError:
        return [], 0
    inodes = {l[8:-1] for l in links if l.startswith("socket:[")}
    tcp = []
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[9] in inodes:
                        inodes.discard(p[9])
                        tcp.append((TCP_STATES.get(p[3], p[3]), int(p[1].rsplit(":", 1)[1], 16),
                                    int(p[2].rsplit(":", 1)[1], 16)))
        except OSError:
            pass
    return tcp, len(links) - len(tcp)


def proc_fd_kinds(pid):
    """{"tcp": [(state, local_port, remote_port)], "unix": n, "unhashed": [fd], "other": n}:
    pid's fds by kind ("unhashed": sockets in no table — a TCP socket in state CLOSE, i.e.
    reset or finished but not closed by its owner; "other": files, pipes, eventfds...)."""
    tcp, _ = proc_fds(pid)
    links = proc_fd_links(pid)
    unhashed = proc_unhashed_sockets(pid)
    unix_inodes = set()
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                p = line.split()
                if len(p) > 6:
                    unix_inodes.add(p[6])
    except OSError:
        pass
    socks = [l[8:-1] for l in links.values() if l.startswith("socket:[")]
    return {"tcp": tcp, "unix": sum(1 for i in socks if i in unix_inodes),
            "unhashed": unhashed, "other": len(links) - len(socks)}


def proc_unhashed_sockets(pid):
    """Socket fds of pid that are neither in /proc/net/tcp{,6} nor /proc/net/unix: TCP
    sockets in state CLOSE (e.g. reset by the peer and not closed by us), UDP, netlink..."""
    links = proc_fd_links(pid)
    inodes = {l[8:-1]: fd for fd, l in links.items() if l.startswith("socket:[")}
    for fn, col in (("/proc/net/tcp", 9), ("/proc/net/tcp6", 9), ("/proc/net/unix", 6)):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if len(p) > col:
                        inodes.pop(p[col], None)
        except OSError:
            pass
    return sorted(inodes.values())


def proc_fd_links(pid):
    """{fd: what it points to} (for messages)."""
    fd_dir = "/proc/%d/fd" % pid
    out = {}
    try:
        for fd in os.listdir(fd_dir):
            try:
                out[int(fd)] = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                pass
    except OSError:
        pass
    return out


def proc_fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def proc_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------------------------
# /proc/net/tcp: established connections to a local port (for "connections survive SIGHUP").

def established_peers(local_port):
    """Remote (ip, port) of ESTABLISHED TCP sockets whose local port is local_port."""
    peers = set()
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    p = line.split()
                    local, remote, st = p[1], p[2], p[3]
                    if st != "01":
                        continue
                    if int(local.rsplit(":", 1)[1], 16) != local_port:
                        continue
                    rip, rport = remote.rsplit(":", 1)
                    peers.add((rip, int(rport, 16)))
        except OSError:
            pass
    return peers


# ---------------------------------------------------------------------------------------------
# The stack: config + run dir + processes.

class StackError(AssertionError):
    pass


class Stack:
    """One LunaRoute stack in its own temp run dir on its own ports.

    config: dict merged over the base config (providers pointing at the mocks, binds on free
            ports, run_dir); a None value deletes a key. Or a callable(ports) -> dict used as is.
    mocks:  {"openai": MockProvider, "anthropic": MockProvider, ...} -> providers.<name>.base_url
    env:    extra environment for the started processes (e.g. API keys), never written to disk.
    """

    def __init__(self, mocks=None, config=None, env=None, name="stack"):
        self.mocks = dict(mocks or {})
        self.config_over = config or {}
        self.env_extra = dict(env or {})
        self.name = name
        self.run_dir = tempfile.mkdtemp(prefix="lrtest-%s-" % name)
        os.chmod(self.run_dir, 0o700)
        self.config_path = os.path.join(self.run_dir, "lunaroute.yaml")
        self.mode = None
        self.procs = {}
        self.ports = {}
        self.config = None
        self.failed = False
        self.keep = KEEP
        # A healthy agent answers every NOTIFY: at stop, HAProxy's count of requests the
        # agent did not answer must be 0. Turned off by kill_agent() and by tests that break
        # the agent on purpose (stack.expect_agent_answers = False).
        self.expect_agent_answers = True
        self._stopped = False
        self._removed = False
        _LIVE_STACKS.add(self)

    # -- paths and ports --------------------------------------------------------------------
    def path(self, *p):
        return os.path.join(self.run_dir, *p)

    @property
    def port(self):
        return self.ports["frontend"]

    @property
    def stats_sock(self):
        return self.path("haproxy.sock")

    @property
    def env(self):
        return child_env(self.env_extra)

    def _pick_ports(self):
        ports = set()
        while len(ports) < 4:
            ports.add(free_port())
        ports = sorted(ports)
        self.ports = {"frontend": ports[0], "stats": ports[1], "spoa": ports[2],
                      "engine": ports[3]}

    def base_config(self):
        providers = {}
        for name, m in self.mocks.items():
            providers[name] = {"base_url": m.url}
        return {
            "providers": providers,
            "bypass": {"enabled": True, "provider": "auto"},
            "haproxy": {"bind": "127.0.0.1:%d" % self.ports["frontend"],
                        "stats_bind": "127.0.0.1:%d" % self.ports["stats"],
                        "maxconn": 1000, "failure_mode": "static"},
            # HAProxy reaches the agent over TCP here, not through the unix sockets of the
            # default (agent.local_sockets): the leak and connection accounting of this
            # harness (fault_baseline, check_after_fault, established_peers) counts the agent's
            # connections per TCP port. test_local_sockets.py runs the default.
            "agent": {"spoa_bind": "127.0.0.1:%d" % self.ports["spoa"],
                      "engine_bind": "127.0.0.1:%d" % self.ports["engine"], "threads": 1,
                      "local_sockets": False},
            "run_dir": self.run_dir,
        }

    def write_config(self):
        if callable(self.config_over):
            self.config = self.config_over(self)
        else:
            self.config = deep_merge(self.base_config(), self.config_over)
        with open(self.config_path, "w") as f:
            f.write(to_yaml(self.config))

    # -- commands ---------------------------------------------------------------------------
    def control(self, *args, timeout=30, env_extra=None):
        """Runs lunaroute-control with args; returns CompletedProcess (text)."""
        env = child_env(dict(self.env_extra, **(env_extra or {})))
        return subprocess.run([bin_path("lunaroute-control")] + list(args), env=env,
                              cwd=self.run_dir, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def render(self):
        r = self.control("render", "--config", self.config_path, "--out", self.run_dir)
        if r.returncode != 0:
            raise StackError("lunaroute-control render --config %s --out %s exited %d\n"
                             "stdout:\n%s\nstderr:\n%s" % (self.config_path, self.run_dir,
                                                          r.returncode, r.stdout, r.stderr))
        missing = [f for f in ("haproxy.cfg", "spoe-lunaroute.conf", "routes.map", "agent.json")
                   if not os.path.exists(self.path(f))]
        if missing:
            raise StackError("render did not write %s in %s" % (missing, self.run_dir))

    def start_agent(self):
        p = Proc("agent", [bin_path("lunaroute-agent"), "--settings", self.path("agent.json")],
                 self.run_dir, self.env)
        self.procs["agent"] = p
        return p

    def start_haproxy(self):
        p = Proc("haproxy", [HAPROXY, "-W", "-S", self.path("haproxy-master.sock"),
                             "-f", self.path("haproxy.cfg"), "-p", self.path("haproxy.pid")],
                 self.run_dir, self.env)
        self.procs["haproxy"] = p
        return p

    def start(self, mode="manual", wait=True, require_spop_check=True, attempts=3, up_args=()):
        """mode "manual": render, then start the agent and HAProxy here. mode "up": run
        `lunaroute-control up` (which supervises both) with up_args added. Retries with new
        ports when a bind failed because a port was taken in the meantime."""
        self.mode = mode
        for attempt in range(attempts):
            self._pick_ports()
            self.write_config()
            try:
                if mode == "manual":
                    self.render()
                    self.start_agent()
                    self.start_haproxy()
                elif mode == "up":
                    self.procs["control"] = Proc(
                        "control", [bin_path("lunaroute-control"), "up", "--config",
                                    self.config_path, "--run-dir", self.run_dir]
                        + list(up_args),
                        self.run_dir, self.env)
                else:
                    raise ValueError(mode)
                if wait:
                    self.wait_ready(require_spop_check=require_spop_check)
                return self
            except StackError as e:
                logs = self.all_logs().lower()
                if attempt + 1 < attempts and any(p in logs for p in ADDR_IN_USE_PATTERNS):
                    log("%s: a port was taken, retrying with new ports (%s)" % (self.name, e))
                    self._stop_procs()
                    for f in os.listdir(self.run_dir):
                        fp = self.path(f)
                        if os.path.isfile(fp) or os.path.islink(fp) or \
                                stat_is_socket(fp):
                            os.unlink(fp)
                    self.procs = {}
                    continue
                self.failed = True
                raise

    # -- readiness --------------------------------------------------------------------------
    def show_stat(self):
        return parse_show_stat(haproxy_cmd(self.stats_sock, "show stat"))

    def server_row(self, backend, server):
        try:
            for row in self.show_stat():
                if row.get("pxname") == backend and row.get("svname") == server:
                    return row
        except OSError:
            return None
        return None

    def spoa_state(self):
        """(status, check_status) of lr_spoa/agent, or (None, None)."""
        row = self.server_row("lr_spoa", "agent")
        if not row:
            return None, None
        return row.get("status", ""), row.get("check_status", "")

    def spoa_up(self):
        status, check = self.spoa_state()
        return bool(status) and status.startswith("UP") and "L7OK" in (check or "")

    def spoe_errors(self):
        """Requests the agent did not answer, as HAProxy counted them (the rendered
        lr_spoe_errors table, gpc0), or None when that table is not there."""
        try:
            out = haproxy_cmd(self.stats_sock, "show table lr_spoe_errors")
        except OSError:
            return None
        if not out.startswith("# table"):
            return None
        return sum(int(m) for m in re.findall(r"gpc0=(\d+)", out))

    def wait_spoa(self, want_up=True, timeout=15.0):
        def ok():
            status, check = self.spoa_state()
            if status is None:
                return False
            if want_up:
                return status.startswith("UP") and "L7OK" in (check or "")
            return status.startswith("DOWN")
        return wait_until(ok, timeout, 0.1)

    def _died(self):
        for name, p in self.procs.items():
            if not p.killed_by_test and p.poll() is not None:
                return name, p.returncode
        return None

    def wait_ready(self, require_spop_check=True, timeout=None):
        timeout = READY_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        stage = "frontend port %d accepting" % self.ports["frontend"]
        while True:
            died = self._died()
            if died:
                raise StackError("%s exited with status %s during startup (%s)\n%s"
                                 % (died[0], died[1], self.run_dir, self.log_tails()))
            if port_accepts(self.ports["frontend"], timeout=0.2):
                stage = "engine port %d accepting" % self.ports["engine"]
                if port_accepts(self.ports["engine"], timeout=0.2):
                    stage = "stats socket %s answering show stat" % self.stats_sock
                    status, check = self.spoa_state()
                    if status is not None:
                        stage = ("lr_spoa/agent UP with spop-check L7OK (now: status=%r "
                                 "check_status=%r)" % (status, check))
                        if (not require_spop_check and status.startswith("UP")) or \
                                (status.startswith("UP") and "L7OK" in (check or "")):
                            return
            if time.monotonic() >= deadline:
                raise StackError("stack not ready after %.0fs: waiting for %s (run dir %s)\n%s"
                                 % (timeout, stage, self.run_dir, self.log_tails()))
            time.sleep(0.1)

    # -- requests ---------------------------------------------------------------------------
    def http(self, method, path, headers=None, body=None, **kw):
        return http(self.port, method, path, headers, body, **kw)

    def stream(self, method, path, headers=None, body=None, **kw):
        return stream(self.port, method, path, headers, body, **kw)

    def engine_http(self, method, path, headers=None, body=None, **kw):
        """A request straight to the agent's engine listener (no HAProxy)."""
        return http(self.ports["engine"], method, path, headers, body, **kw)

    def metrics(self):
        """GET /metrics through HAProxy, parsed (see parse_metrics)."""
        r = self.http("GET", "/metrics")
        if r.status != 200:
            raise AssertionError("GET /metrics: %r" % r)
        return parse_metrics(r.body.decode("utf-8", "replace"))

    # -- logs -------------------------------------------------------------------------------
    def log_files(self):
        out = []
        try:
            names = sorted(os.listdir(self.run_dir))
        except OSError:
            return out
        for f in names:
            if f.endswith((".stdout", ".stderr", ".log")):
                out.append(self.path(f))
        return out

    def all_logs(self):
        return "\n".join(read_text(f) for f in self.log_files())

    def log_tails(self, n=40):
        parts = []
        for f in self.log_files():
            t = read_text(f)
            if t.strip():
                parts.append("---- %s (last %d lines) ----\n%s" % (os.path.basename(f), n,
                                                                    tail(t, n)))
        return "\n".join(parts) or "(all logs empty)"

    # -- agent helpers (manual mode) --------------------------------------------------------
    @property
    def agent(self):
        return self.procs.get("agent")

    def agent_pid(self):
        if "agent" in self.procs:
            return self.procs["agent"].pid
        pids = read_pidfile(self.path("agent.pid"))
        return pids[0] if pids else None

    def agent_fds(self):
        """Open file descriptors of the agent (from /proc), or None."""
        pid = self.agent_pid()
        return proc_fd_count(pid) if pid else None

    def agent_rss_kib(self):
        pid = self.agent_pid()
        return proc_rss_kib(pid) if pid else None

    def kill_agent(self):
        a = self.procs.get("agent")
        if a is None:
            raise StackError("kill_agent: the agent was not started by the harness")
        self.expect_agent_answers = False
        a.kill9()

    # -- the agent's admin API and health after a fault -------------------------------------
    def admin(self, method, path, body=None, timeout=3.0):
        """A request on the agent's admin socket (<run_dir>/agent.sock); (status, JSON)."""
        class _UnixConn(_httpclient.HTTPConnection):
            def connect(conn):
                conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.sock.settimeout(timeout)
                conn.sock.connect(self.path("agent.sock"))
        c = _UnixConn("localhost", timeout=timeout)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            data = r.read()
            return r.status, (json.loads(data) if data else None)
        finally:
            c.close()

    def agent_status(self):
        """GET /v1/status on the admin socket, or None when the agent does not answer."""
        try:
            st, doc = self.admin("GET", "/v1/status")
        except (OSError, ValueError, _httpclient.HTTPException):
            return None
        return doc if st == 200 else None

    def fault_baseline(self):
        """What check_after_fault() compares with: the agent's descriptors while idle."""
        pid = self.agent_pid()
        prof = fd_profile(pid) if pid else None
        if prof is None:
            raise StackError("fault_baseline: no agent process")
        return {"pid": pid, "fds": prof}

    def check_after_fault(self, baseline, what, settle=5.0):
        """After a fault scenario, once the load has stopped: the agent is healthy (/healthz
        200 through HAProxy and on its own port, admin API answers), no sanitizer report in
        any log, no upstream attempt in flight (lunaroute_upstream_active 0 for every
        provider), and its descriptors back to the baseline: the same count of non-socket
        descriptors, unix and listening sockets, and every TCP connection it still holds is
        ESTABLISHED and accounted for -- a pooled connection that HAProxy holds idle
        (engine, SPOP: as many as the agent's own connections_open gauges say) or an idle
        upstream connection in libcurl's bounded cache. Waits up to `settle` s for
        connections to close. Returns the description of what was seen; raises
        AssertionError naming what is wrong."""
        pid = self.agent_pid()
        problems = []
        deadline = time.monotonic() + settle
        while True:
            problems = []
            state = self._fault_state(pid, baseline, problems)
            if not problems or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        found = []
        for f in self.log_files():
            found += sanitizer_findings(read_text(f))
        if found:
            problems.append("sanitizer report: %s" % found[:5])
        if problems:
            raise AssertionError("%s: the agent did not come back to its baseline:\n  %s\n"
                                 "state: %s\nlogs:\n%s" % (what, "\n  ".join(problems),
                                                            state, self.log_tails(20)))
        log("%s: agent healthy; %s" % (what, state["summary"]))
        return state

    def _fault_state(self, pid, baseline, problems):
        state = {"summary": ""}
        if not pid or not pid_alive(pid):
            problems.append("agent pid %s is not running" % pid)
            return state
        try:
            if self.http("GET", "/healthz", timeout=3).status != 200:
                problems.append("/healthz through HAProxy is not 200")
            if self.engine_http("GET", "/healthz", timeout=3).status != 200:
                problems.append("/healthz on the engine port is not 200")
            m = parse_metrics(self.engine_http("GET", "/metrics", timeout=3).body.decode())
        except (OSError, _httpclient.HTTPException, ValueError) as e:
            problems.append("the agent does not answer: %s" % e)
            return state
        active = {dict(ls).get("provider"): v for (n, ls), v in m.items()
                  if n == "lunaroute_upstream_active" and v}
        if active:
            problems.append("upstream attempts still in flight: %r" % active)
        st = self.agent_status()
        if st is None:
            problems.append("the admin API does not answer")
            return state
        prof = fd_profile(pid)
        base = baseline["fds"]
        for k in ("other", "unix", "listen"):
            if prof[k] != base[k]:
                problems.append("%s descriptors: %d, baseline %d" % (k, prof[k], base[k]))
        tcp = _tcp_inodes()
        peers = {(lp, rp): stt for lp, rp, stt in tcp.values()}
        eng, spop = self.ports["engine"], self.ports["spoa"]
        n_eng = n_spop = n_up = 0
        for lport, rport, stt in prof["conns"]:
            if stt != "ESTABLISHED":
                problems.append("connection %d->%d in state %s" % (lport, rport, stt))
                continue
            if lport in (eng, spop):
                if peers.get((rport, lport)) != "ESTABLISHED":
                    problems.append("connection on port %d whose peer (port %d) is gone"
                                    % (lport, rport))
                if lport == eng:
                    n_eng += 1
                else:
                    n_spop += 1
            else:
                n_up += 1
        # The engine gauge counts the connection of the /metrics request above only while
        # it is open: it is closed by now.
        if n_eng != st["engine"]["connections_open"]:
            problems.append("engine connections: %d open, the agent counts %d"
                            % (n_eng, st["engine"]["connections_open"]))
        if n_spop != st["spop"]["connections_open"]:
            problems.append("SPOP connections: %d open, the agent counts %d"
                            % (n_spop, st["spop"]["connections_open"]))
        if n_up > 64 * max(1, int(self.config.get("agent", {}).get("threads", 1))):
            problems.append("%d upstream connections, more than libcurl's cache holds" % n_up)
        if prof["total"] != base["total"] - len(base["conns"]) + n_eng + n_spop + n_up:
            problems.append("descriptors: %d, baseline %d" % (prof["total"], base["total"]))
        state["summary"] = ("descriptors %d (baseline %d: %d non-socket, %d unix, %d listening, "
                            "%d connections) = baseline + %d idle HAProxy->engine + %d SPOP + "
                            "%d idle upstream; upstream in flight 0"
                            % (prof["total"], base["total"], base["other"], base["unix"],
                               base["listen"], len(base["conns"]), n_eng, n_spop, n_up))
        state["fds"] = prof
        return state

    # -- teardown ---------------------------------------------------------------------------
    def _stop_procs(self):
        problems = []
        # Agent first (its exit status is checked), then HAProxy, then the supervisor.
        order = [n for n in ("agent", "haproxy", "control") if n in self.procs]
        order += [n for n in self.procs if n not in order]
        for name in order:
            p = self.procs[name]
            was_dead = p.poll() is not None
            rc, forced = p.stop()
            if p.killed_by_test:
                continue
            if name in ("agent", "control"):
                if forced:
                    problems.append("%s did not exit within %.0fs of SIGTERM" % (name,
                                                                                 STOP_TIMEOUT))
                elif rc != 0:
                    problems.append("%s exited with status %s%s" % (
                        name, rc, " (before teardown)" if was_dead else " after SIGTERM"))
            elif name == "haproxy" and forced:
                problems.append("haproxy did not exit within %.0fs of SIGTERM" % STOP_TIMEOUT)
        # Whatever the pid files name (daemonized HAProxy, up's children) must be gone.
        for pf in ("haproxy.pid", "agent.pid", "control.pid"):
            for pid in read_pidfile(self.path(pf)):
                if pid_alive(pid) and _is_ours(pid, self.run_dir):
                    problems.append("pid %d from %s still running after stop" % (pid, pf))
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        leftovers = wait_until(lambda: not pids_mentioning(self.run_dir), 3.0) or \
            pids_mentioning(self.run_dir)
        if leftovers is not True and leftovers:
            problems.append("processes still running after stop: %s" % leftovers)
            for pid, _ in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        return problems

    def stop(self):
        """Stops everything; returns a list of problems (non-zero exit, sanitizer reports)."""
        if self._stopped:
            return []
        self._stopped = True
        problems = []
        if self.expect_agent_answers and self.procs:
            n = self.spoe_errors()
            if n:
                problems.append("HAProxy counted %d request(s) the agent did not answer "
                                "(SPOE error/timeout: the static fallback routed them)" % n)
        problems += self._stop_procs()
        for f in self.log_files():
            found = sanitizer_findings(read_text(f))
            if found:
                problems.append("sanitizer report in %s:\n  %s" % (
                    os.path.basename(f), "\n  ".join(found[:10])))
        if problems:
            self.failed = True
            problems.append("logs:\n" + self.log_tails())
        return problems

    def finish(self):
        """Removes the run dir, or keeps it (failed test, LRTEST_KEEP=1) and says where."""
        if self._removed:
            return
        self._removed = True
        _LIVE_STACKS.discard(self)
        if self.failed or self.keep:
            log("kept run dir of %s: %s" % (self.name, self.run_dir))
            return
        shutil.rmtree(self.run_dir, ignore_errors=True)


def stat_is_socket(path):
    import stat as _stat
    try:
        return _stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_ours(pid, run_dir):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().decode("utf-8", "replace")
    except OSError:
        return False
    return any(n in cmd for n in ("haproxy", "lunaroute")) or run_dir in cmd


_LIVE_STACKS = set()


def _atexit_cleanup():
    for s in list(_LIVE_STACKS):
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log("cleanup of %s: %s" % (s.name, e))
        s.finish()
    for p in list(_LIVE_PROCS):
        p.stop(timeout=2)
    for m in list(_LIVE_MOCKS):
        try:
            m.close()
        except Exception:  # noqa: BLE001
            pass


atexit.register(_atexit_cleanup)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------------------
# Bounded load: client threads, each repeating one kind of request; every result is kept.

class LoadKind:
    """One kind of request of a Load.
    request(rid) -> (method, path, headers [(k, v)], body bytes)
    check(rid, status, headers, payload) -> "" when the answer is right, else why it is not
    keepalive: one connection reused like a pooling client (a connection the server already
               closed is replaced before it is reused); else a new connection per request
    threads:   client threads of this kind"""

    def __init__(self, name, request, check, keepalive=False, threads=1):
        self.name = name
        self.request = request
        self.check = check
        self.keepalive = keepalive
        self.threads = threads


class Load:
    """Client threads against 127.0.0.1:port, bounded: each thread pauses `pause` s between
    requests and stops at stop(), after `duration` s or after `max_requests` in all.
    results: dicts {kind, rid, t0, t1, ok, status, why, headers, body (first 64 KiB)}; a
    transport error (reset, EOF, timeout) is a failure with status None."""

    def __init__(self, port, kinds, pause=0.02, duration=None, max_requests=None,
                 timeout=20.0):
        self.port = port
        self.kinds = list(kinds)
        self.pause = pause
        self.duration = duration
        self.max_requests = max_requests
        self.timeout = timeout
        self.results = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.seq = 0
        self.t_start = None
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True,
                                         name="%s-%d" % (k.name, i))
                        for k in self.kinds for i in range(k.threads)]

    def _rid(self, kind):
        with self.lock:
            if self.max_requests is not None and self.seq >= self.max_requests:
                return None
            self.seq += 1
            return "%s-%d" % (kind.name, self.seq)

    def _conn(self):
        return _httpclient.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    @staticmethod
    def _stale(conn):
        """Readable while idle means the server closed it (EOF): do not send on it."""
        import select
        if conn.sock is None:
            return False
        r, _, _ = select.select([conn.sock], [], [], 0)
        return bool(r)

    def _one(self, kind, conn, rid):
        method, path, headers, body = kind.request(rid)
        t0 = time.monotonic()
        res = {"kind": kind.name, "rid": rid, "t0": t0, "t1": None, "ok": False,
               "status": None, "why": "", "headers": [], "body": b""}
        try:
            conn.request(method, path, body=body, headers=dict(headers or []))
            r = conn.getresponse()
            payload = r.read()
            res["status"] = r.status
            res["headers"] = list(r.getheaders())
            res["body"] = payload[:65536]
            res["why"] = kind.check(rid, r.status, res["headers"], payload)
            res["ok"] = not res["why"]
            if r.will_close:
                conn.close()
        except (OSError, _httpclient.HTTPException) as e:
            res["why"] = "%s: %s" % (type(e).__name__, e)
            conn.close()
        res["t1"] = time.monotonic()
        with self.lock:
            self.results.append(res)

    def _run(self, kind):
        conn = self._conn()
        try:
            while not self.stop_ev.is_set():
                if self.duration is not None and \
                        time.monotonic() - self.t_start >= self.duration:
                    break
                rid = self._rid(kind)
                if rid is None:
                    break
                if not kind.keepalive or self._stale(conn):
                    conn.close()
                    conn = self._conn()
                self._one(kind, conn, rid)
                self.stop_ev.wait(self.pause)
        finally:
            conn.close()

    def start(self):
        self.t_start = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def wait(self, timeout=120):
        """Until every thread ended by itself (duration / max_requests); the results."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return self.stop()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        with self.lock:
            return sorted(self.results, key=lambda r: r["t0"])

    def count(self, kind=None):
        with self.lock:
            return sum(1 for r in self.results if kind is None or r["kind"] == kind)

    def snapshot(self):
        with self.lock:
            return list(self.results)


def load_summary(name, results, t_event=None, kinds=None):
    """Per kind: requests, average latency, failures (the first ten printed)."""
    kinds = kinds or sorted({r["kind"] for r in results})
    lines = ["%s: %d requests" % (name, len(results))]
    t_ref = t_event if t_event is not None else (results[0]["t0"] if results else 0.0)
    for k in kinds:
        rs = [r for r in results if r["kind"] == k]
        bad = [r for r in rs if not r["ok"]]
        avg = sum(r["t1"] - r["t0"] for r in rs) / len(rs) if rs else 0.0
        mx = max((r["t1"] - r["t0"] for r in rs), default=0.0)
        extra = ""
        if t_event is not None:
            extra = ", %d in flight at the event" % len(
                [r for r in rs if r["t0"] <= t_event <= r["t1"]])
        lines.append("  %-14s %4d requests (avg %.3fs, max %.3fs), %d failed%s"
                     % (k, len(rs), avg, mx, len(bad), extra))
        for r in bad[:10]:
            lines.append("      FAILED %s at %+.2fs..%+.2fs: %s"
                         % (r["rid"], r["t0"] - t_ref, r["t1"] - t_ref, r["why"][:160]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# A process's descriptors and the agent's health after a fault.

_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
               "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
               "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def _tcp_inodes():
    """socket inode -> (local port, remote port, state name) from /proc/net/tcp{,6}."""
    out = {}
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    p = line.split()
                    lport = int(p[1].rsplit(":", 1)[1], 16)
                    rport = int(p[2].rsplit(":", 1)[1], 16)
                    out[p[9]] = (lport, rport, _TCP_STATES.get(p[3], p[3]))
        except OSError:
            pass
    return out


def fd_profile(pid):
    """The descriptors of pid, classified: {"total", "other" (files, pipes, epoll, eventfd,
    timers: everything but sockets), "unix", "listen", "tcp": {state: n}, "conns":
    [(local port, remote port, state)]}. None when the process is gone."""
    d = "/proc/%d/fd" % pid
    try:
        names = os.listdir(d)
    except OSError:
        return None
    tcp = _tcp_inodes()
    prof = {"total": 0, "other": 0, "unix": 0, "listen": 0, "tcp": {}, "conns": []}
    for n in names:
        try:
            target = os.readlink(os.path.join(d, n))
        except OSError:
            continue
        prof["total"] += 1
        m = re.match(r"socket:\[(\d+)\]", target)
        if not m:
            prof["other"] += 1
            continue
        t = tcp.get(m.group(1))
        if t is None:
            prof["unix"] += 1
        elif t[2] == "LISTEN":
            prof["listen"] += 1
        else:
            prof["tcp"][t[2]] = prof["tcp"].get(t[2], 0) + 1
            prof["conns"].append(t)
    return prof


# ---------------------------------------------------------------------------------------------
# unittest glue.

class LRTestCase(unittest.TestCase):
    """Base class. Class-scoped stacks (start_class_stack in setUpClass) are shared by the
    tests of the class and stopped in tearDownClass; test-scoped stacks (self.start_stack)
    are stopped after the test. Either way, a stack whose agent did not exit 0 on SIGTERM or
    that printed a sanitizer report fails, and a failed test keeps its run dirs."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        require_haproxy()
        cls._class_stacks = []
        cls._class_mocks = []

    @classmethod
    def tearDownClass(cls):
        problems = []
        for s in getattr(cls, "_class_stacks", []):
            for p in s.stop():
                problems.append("[%s] %s" % (s.name, p))
            s.finish()
        for m in getattr(cls, "_class_mocks", []):
            m.close()
        if problems:
            raise AssertionError("teardown of %s:\n%s" % (cls.__name__, "\n".join(problems)))

    @classmethod
    def class_mock(cls, name):
        m = MockProvider(name)
        cls._class_mocks.append(m)
        return m

    @classmethod
    def start_class_stack(cls, mode="manual", **kw):
        s = Stack(name=kw.pop("name", cls.__name__), **kw)
        try:
            s.start(mode=mode)
        except BaseException:
            # unittest skips tearDownClass when setUpClass fails: stop it here.
            s.failed = True
            for p in s.stop():
                log("[%s] %s" % (s.name, p))
            s.finish()
            raise
        cls._class_stacks.append(s)
        return s

    def mock(self, name):
        m = MockProvider(name)
        self.addCleanup(m.close)
        return m

    def new_stack(self, **kw):
        """A test-scoped stack, not started (call .start(mode=...))."""
        s = Stack(name=kw.pop("name", self._testMethodName), **kw)
        self._test_stacks.append(s)
        self.addCleanup(self._stop_stack, s)
        return s

    def start_stack(self, mode="manual", **kw):
        s = self.new_stack(**kw)
        s.start(mode=mode)
        return s

    def _stop_stack(self, s):
        problems = s.stop()
        if problems:
            self.fail("teardown of %s:\n%s" % (s.name, "\n".join(problems)))

    def run(self, result=None):
        self._test_stacks = []
        if result is None:
            return super().run(result)
        before = _bad_count(result)
        try:
            return super().run(result)
        finally:
            failed = _bad_count(result) != before
            for s in self._test_stacks:
                s.failed = s.failed or failed
                s.finish()
            if failed:
                for s in getattr(type(self), "_class_stacks", []):
                    s.failed = True

    # assertion helpers
    def assertNoRequests(self, *mocks, settle=0.2):
        time.sleep(settle)
        for m in mocks:
            self.assertEqual(m.requests, [], "mock %s got requests it should not have: %r"
                             % (m.name, m.requests))

    def assertHeader(self, req, name, value):
        got = req.header_all(name)
        self.assertIn(value, got, "header %s: want %r, got %r (all headers: %r)"
                      % (name, value, got, req.headers))

    def assertOpenAIError(self, resp, status=404):
        self.assertEqual(resp.status, status, resp)
        self.assertTrue((resp.header("content-type") or "").startswith("application/json"),
                        "content-type of %r" % resp)
        doc = resp.json()
        self.assertIsInstance(doc.get("error"), dict, "OpenAI error shape expected: %r" % doc)
        self.assertIsInstance(doc["error"].get("message"), str, doc)
        self.assertNotEqual(doc.get("type"), "error", "OpenAI shape expected, got %r" % doc)
        return doc

    def assertAnthropicError(self, resp, status=404):
        self.assertEqual(resp.status, status, resp)
        self.assertTrue((resp.header("content-type") or "").startswith("application/json"),
                        "content-type of %r" % resp)
        doc = resp.json()
        self.assertEqual(doc.get("type"), "error", "Anthropic error shape expected: %r" % doc)
        self.assertIsInstance(doc.get("error"), dict, doc)
        self.assertIsInstance(doc["error"].get("type"), str, doc)
        self.assertIsInstance(doc["error"].get("message"), str, doc)
        return doc


def _bad_count(result):
    return (len(getattr(result, "failures", [])) + len(getattr(result, "errors", []))
            + len(getattr(result, "unexpectedSuccesses", [])))


def main():
    """Entry point of a test file: strips --bin-dir DIR, then unittest.main()."""
    global BIN_DIR
    argv = [sys.argv[0]]
    args = sys.argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--bin-dir" and i + 1 < len(args):
            BIN_DIR = args[i + 1]
            i += 2
            continue
        if a.startswith("--bin-dir="):
            BIN_DIR = a.split("=", 1)[1]
            i += 1
            continue
        argv.append(a)
        i += 1
    BIN_DIR = os.path.abspath(BIN_DIR)
    signal.signal(signal.SIGTERM, _on_sigterm)
    unittest.main(argv=argv, verbosity=2)
