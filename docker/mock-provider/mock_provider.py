#!/usr/bin/env python3
"""A tiny offline LLM provider for the compose demo (profile `demo`), Python stdlib only.

Serves OpenAI- and Anthropic-shaped answers, as JSON or as SSE when the request body has
"stream": true:
  POST /v1/chat/completions   OpenAI chat completion (SSE: chat.completion.chunk events, [DONE])
  POST /v1/messages           Anthropic message (SSE: message_start ... message_stop)
  GET  /v1/models             a model list
  GET  /healthz               {"status": "ok"} (the compose health check)
  anything else               200 JSON echo {"mock": true, "method", "path", "bytes"}: enough to
                              watch a bypassed request (embeddings, files, ...) arrive
It never checks credentials. Usage: mock_provider.py [--host 0.0.0.0] [--port 9000]
"""
import argparse
import json
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ["Hello", " from", " the", " LunaRoute", " mock", " provider", "."]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lunaroute-mock-provider/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("mock-provider: %s %s\n" % (self.address_string(), fmt % args))

    def _body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _json(self, obj, status=200):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        for ev in events:
            self.wfile.write(ev.encode())
            self.wfile.flush()
            time.sleep(0.05)
        self.close_connection = True

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            return self._json({"status": "ok"})
        if path == "/v1/models":
            return self._json({"object": "list", "data": [
                {"id": "mock-gpt", "object": "model", "owned_by": "mock"},
                {"id": "mock-claude", "object": "model", "owned_by": "mock"}]})
        return self._echo(b"")

    def do_POST(self):
        body = self._body()
        path = self.path.split("?", 1)[0]
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            req = {}
        if not isinstance(req, dict):
            req = {}
        model = req.get("model") or "mock"
        stream = req.get("stream") is True
        if path == "/v1/chat/completions":
            return self._openai(model, stream)
        if path == "/v1/messages":
            return self._anthropic(model, stream)
        return self._echo(body)

    def _echo(self, body):
        self._json({"mock": True, "method": self.command, "path": self.path,
                    "bytes": len(body)})

    def _openai(self, model, stream):
        cid, now = "chatcmpl-mock", int(time.time())
        if not stream:
            return self._json({
                "id": cid, "object": "chat.completion", "created": now, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(WORDS)}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": len(WORDS),
                          "total_tokens": 1 + len(WORDS)}})
        events = []
        for i, w in enumerate(WORDS):
            delta = {"content": w} if i else {"role": "assistant", "content": w}
            events.append("data: %s\n\n" % json.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": now, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
        events.append("data: %s\n\n" % json.dumps({
            "id": cid, "object": "chat.completion.chunk", "created": now, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        events.append("data: [DONE]\n\n")
        self._sse(events)

    def _anthropic(self, model, stream):
        mid = "msg_mock"
        usage = {"input_tokens": 1, "output_tokens": len(WORDS)}
        if not stream:
            return self._json({
                "id": mid, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "".join(WORDS)}],
                "stop_reason": "end_turn", "stop_sequence": None, "usage": usage})

        def ev(name, obj):
            return "event: %s\ndata: %s\n\n" % (name, json.dumps(obj))
        events = [ev("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 0}}}),
            ev("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})]
        for w in WORDS:
            events.append(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": w}}))
        events += [ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ev("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": "end_turn",
                                                  "stop_sequence": None},
                                        "usage": {"output_tokens": len(WORDS)}}),
                   ev("message_stop", {"type": "message_stop"})]
        self._sse(events)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=9000)
    a = ap.parse_args()
    srv = ThreadingHTTPServer((a.host, a.port), Handler)
    srv.daemon_threads = True
    # PID 1 in its container: SIGTERM has no default action there, so exit on it explicitly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write("mock-provider: listening on %s:%d\n" % (a.host, a.port))
    try:
        srv.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
