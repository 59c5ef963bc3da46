"""Slow-loris on the routing engine (issue #3): a client that never finishes its header block
is cut off with 408 JSON within the engine's header timeout (10 s, fixed), however slowly it
keeps trickling header bytes. Sent straight to the engine port (HAProxy's own
`timeout http-request` would answer first). In its own file so ctest runs it in parallel with
the rest: it takes about 10 s.
"""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402

HEADER_TIMEOUT = 10.0


class SlowLoris(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.openai = cls.class_mock("openai")
        cls.anthropic = cls.class_mock("anthropic")
        cls.stack = cls.start_class_stack(mocks={"openai": cls.openai,
                                                 "anthropic": cls.anthropic})

    def test_unfinished_headers_get_408(self):
        port = self.stack.ports["engine"]
        s = socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT + 5)
        self.addCleanup(s.close)
        t0 = time.monotonic()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        stop = threading.Event()

        def trickle():  # one header byte per second, never the final empty line
            i = 0
            while not stop.wait(1.0):
                try:
                    s.sendall(b"X-Slow-%d: a\r\n" % i)
                except OSError:
                    return
                i += 1

        th = threading.Thread(target=trickle, daemon=True)
        th.start()
        # Meanwhile the engine keeps serving others.
        time.sleep(0.5)
        self.assertEqual(self.stack.engine_http("GET", "/healthz").status, 200)
        data = b""
        closed_at = None
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    closed_at = time.monotonic() - t0
                    break
                data += d
        except (socket.timeout, ConnectionResetError):
            closed_at = time.monotonic() - t0
        finally:
            stop.set()
            th.join(2)
        r = lrtest.parse_raw_response(data)
        self.assertIsNotNone(r, "no 408 response before the connection ended after %.1f s: %r"
                             % (closed_at or -1, data))
        self.assertOpenAIError(r, 408)
        self.assertIsNotNone(closed_at)
        self.assertGreater(closed_at, HEADER_TIMEOUT - 1.5, "cut off too early (%.1f s)"
                           % closed_at)
        self.assertLess(closed_at, HEADER_TIMEOUT + 2.5, "slow-loris held the connection "
                        "%.1f s (header timeout %.0f s)" % (closed_at, HEADER_TIMEOUT))
        self.assertNoRequests(self.openai, self.anthropic, settle=0)


if __name__ == "__main__":
    lrtest.main()
