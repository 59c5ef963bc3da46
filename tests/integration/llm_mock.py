"""A two-dialect LLM provider stand-in for the integration tests (Python 3 stdlib only).

LLMMock is an lrtest.MockProvider whose default answer on
  POST /v1/chat/completions   is what the OpenAI Chat Completions API answers, and on
  POST /v1/messages           is what the Anthropic Messages API answers,
non-streaming and streaming, in the real wire formats:

  OpenAI stream:    a role chunk (delta.role "assistant", content ""), content deltas,
                    tool_calls deltas (first: index/id/type/function.name/arguments "", in
                    the role chunk when there is no text; then argument fragments), a
                    finish_reason chunk, a usage chunk ("choices": []) only when
                    stream_options.include_usage, then "data: [DONE]". With include_usage
                    every other chunk carries "usage": null, as OpenAI's do.
  Anthropic stream: message_start (usage.input_tokens), ping, per block content_block_start /
                    content_block_delta (text_delta | input_json_delta, the first one "") /
                    content_block_stop, message_delta (stop_reason + usage.output_tokens),
                    message_stop.

What the reply says is decided from the request (reply_for()):
  * the last message carries tool results   -> text "<name> got tool result: <results>" (the
                                               mock echoes what the tool returned, so the
                                               client sees that the result arrived), end_turn
  * the request has tools (tool_choice not "none") -> one tool call per tool of the request,
    in order, with the input self.tool_inputs[name] (or {"q": name}); the Anthropic reply
    starts with a short text block like the real API; finish tool_calls / stop tool_use
  * otherwise text: "[<name>] you said: <last user text> ✓ é 🙂" (echo + multibyte)
  * max_tokens / max_completion_tokens < 8 -> the text is cut, finish "length" / stop
    "max_tokens"; else with stop sequences in the request -> finish "stop" / stop
    "stop_sequence" with the first one (the model "hit" it)
  * text_override replaces the echo text; n_pieces sets how many deltas a stream has
Token counts are deterministic and recorded in reply["usage"]: input = 7 + 10 * messages
(+3 for a system prompt; not counting cached tokens), output = number of pieces + 5,
cache_read / cache_creation = mock.cache_tokens.

Every request is recorded (mock.requests, inherited) and every reply the mock built is in
mock.replies: {"dialect", "id", "model", "text", "tool_calls": [{"id", "name", "input",
"arguments"}], "finish", "usage", "stream"} so a test compares what the SDK parsed with what
the provider really sent, not with constants.

Like the real APIs the mock is strict: unknown top-level parameters, a missing max_tokens
(Anthropic), a "system" role inside Anthropic messages, tools of the wrong shape, tool
results that answer no preceding tool call (and, for Anthropic, tool_use blocks not answered
right after), a wrong/missing key (when `expect_key` is set) or a missing anthropic-version
are answered 400/401 in the dialect's error shape, and the reason is appended to
mock.rejections. A test asserts `mock.rejections == []` to see a mistranslated request
plainly.

Knobs (attributes; reset() restores all but expect_key): expect_key, tool_inputs, openai_tool_text,
chunk_delay, stream_error_after, stream_die_after, stream_die_rst, stream_error_message,
cache_tokens, text_override, n_pieces (see __init__).

mock.on(path, X) still overrides a path (e.g. a 500 to force a fallback); seq(..., None)
falls back to this default answer.
"""

import itertools
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockResponse, MockStream  # noqa: E402

CHAT = "/v1/chat/completions"
MSGS = "/v1/messages"

OPENAI_PARAMS = {
    "model", "messages", "stream", "stream_options", "tools", "tool_choice",
    "parallel_tool_calls", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "n", "user", "seed", "response_format", "frequency_penalty", "presence_penalty",
    "logit_bias", "logprobs", "top_logprobs", "metadata", "store", "service_tier",
    "reasoning_effort", "modalities", "audio", "prediction", "web_search_options",
    "functions", "function_call", "safety_identifier", "prompt_cache_key", "verbosity",
}
ANTHROPIC_PARAMS = {
    "model", "messages", "max_tokens", "system", "stream", "stop_sequences", "temperature",
    "top_p", "top_k", "tools", "tool_choice", "metadata", "thinking", "service_tier",
    "container", "mcp_servers",
}
OPENAI_ROLES = {"system", "developer", "user", "assistant", "tool"}
SHORT_MAX_TOKENS = 8


class Rejected(Exception):
    def __init__(self, status, etype, message):
        super().__init__(message)
        self.status = status
        self.etype = etype
        self.message = message


def _compact(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))  # as the APIs send it


def _sse_openai(obj):
    return "data: %s\n\n" % _compact(obj)


def _sse_anthropic(obj):
    return "event: %s\ndata: %s\n\n" % (obj["type"], _compact(obj))


def split_pieces(s, n):
    """s cut into n (or fewer) non-empty pieces at character positions."""
    if not s:
        return []
    n = max(1, min(n, len(s)))
    step = -(-len(s) // n)
    return [s[i:i + step] for i in range(0, len(s), step)]


def _text_of(content):
    """Text of an OpenAI or Anthropic message content (string or list of parts/blocks)."""
    if isinstance(content, str):
        return content
    out = []
    for p in content or []:
        if isinstance(p, dict) and p.get("type") == "text":
            out.append(p.get("text", ""))
    return "".join(out)


class LLMMock(lrtest.MockProvider):
    def __init__(self, name, expect_key=None):
        super().__init__(name)
        self.expect_key = expect_key  # when set: the key the proxy must have injected
        self.tool_inputs = {}         # tool name -> the input the mock's tool call carries
        self.openai_tool_text = None  # optional text the OpenAI reply carries with tool calls
        self.chunk_delay = 0.002      # seconds between stream chunks
        # Mid-stream failures (streams only; None: off). stream_error_after=N: after N events
        # the provider sends its dialect's error event (OpenAI: a data object with "error";
        # Anthropic: event: error, overloaded_error) and ends the body. stream_die_after=N:
        # after N events the connection is closed with no end of body.
        self.stream_error_after = None
        self.stream_die_after = None
        self.stream_die_rst = False   # with stream_die_after: a TCP RST instead of a FIN
        self.stream_error_message = "Overloaded (mock %s)" % name
        # Prompt-cache token counts the usage reports: (read, creation). OpenAI's
        # prompt_tokens include the read ones (prompt_tokens_details.cached_tokens); OpenAI
        # has no creation count. Anthropic's input_tokens exclude both.
        self.cache_tokens = (0, 0)
        # Text replies: text_override replaces the echo; n_pieces = stream deltas (and
        # argument fragments = max(3, n_pieces // 2) per tool call).
        self.text_override = None
        self.n_pieces = 4
        self.replies = []
        self.rejections = []
        self._ids = itertools.count(1)
        self._rlock = threading.Lock()

    # -- bookkeeping -----------------------------------------------------------------------
    def clear(self):
        super().clear()
        with self._rlock:
            self.replies = []
            self.rejections = []

    def reset(self):
        """clear() + default behaviour on both paths and every knob back to its default."""
        self.clear()
        self.on(CHAT, None)
        self.on(MSGS, None)
        self.tool_inputs = {}
        self.openai_tool_text = None
        self.stream_error_after = None
        self.stream_die_after = None
        self.stream_die_rst = False
        self.cache_tokens = (0, 0)
        self.text_override = None
        self.n_pieces = 4
        self.chunk_delay = 0.002

    def last_reply(self):
        with self._rlock:
            return self.replies[-1] if self.replies else None

    def last_json(self, path):
        reqs = self.requests_to(path)
        return reqs[-1].json() if reqs else None

    def _next_id(self):
        return next(self._ids)

    # -- dispatch --------------------------------------------------------------------------
    def _default_response(self, req):
        if req.method == "POST" and req.path == CHAT:
            return self._answer(req, "openai")
        if req.method == "POST" and req.path == MSGS:
            return self._answer(req, "anthropic")
        return super()._default_response(req)

    def _answer(self, req, dialect):
        try:
            self._check_headers(req, dialect)
            try:
                body = json.loads(req.body)
            except ValueError as e:
                raise Rejected(400, "invalid_request_error",
                               "body is not valid JSON: %s" % e)
            if not isinstance(body, dict):
                raise Rejected(400, "invalid_request_error", "body must be a JSON object")
            if dialect == "openai":
                self._validate_openai(body)
            else:
                self._validate_anthropic(body)
        except Rejected as r:
            with self._rlock:
                self.rejections.append("%s %s: %s" % (req.path, r.status, r.message))
            return self._error(dialect, r.status, r.etype, r.message)
        reply = self.reply_for(body, dialect)
        with self._rlock:
            self.replies.append(reply)
        if dialect == "openai":
            return self._openai_stream(reply, body) if reply["stream"] \
                else MockResponse.json(self._openai_body(reply), headers=self._rid())
        return self._anthropic_stream(reply) if reply["stream"] \
            else MockResponse.json(self._anthropic_body(reply), headers=self._rid())

    def _rid(self):
        return [("x-request-id", "req_%s_%d" % (self.name, self._next_id()))]

    @staticmethod
    def _error(dialect, status, etype, message):
        if dialect == "openai":
            return MockResponse.json({"error": {"message": message, "type": etype,
                                                "param": None, "code": None}}, status)
        return MockResponse.json({"type": "error", "error": {"type": etype,
                                                             "message": message}}, status)

    # -- validation (what the real APIs refuse) ---------------------------------------------
    def _check_headers(self, req, dialect):
        ctype = (req.header("content-type") or "").lower()
        if not ctype.startswith("application/json"):
            raise Rejected(400, "invalid_request_error",
                           "content-type must be application/json, got %r" % ctype)
        if dialect == "anthropic":
            if not req.header("anthropic-version"):
                raise Rejected(400, "invalid_request_error",
                               "anthropic-version: header is required")
            got = req.header("x-api-key")
        else:
            auth = req.header("authorization") or ""
            got = auth[7:] if auth.lower().startswith("bearer ") else None
        if self.expect_key is not None and got != self.expect_key:
            raise Rejected(401, "authentication_error",
                           "invalid or missing API key (%s)" %
                           ("x-api-key" if dialect == "anthropic" else "Authorization"))

    @staticmethod
    def _validate_openai(b):
        bad = sorted(set(b) - OPENAI_PARAMS)
        if bad:
            raise Rejected(400, "invalid_request_error",
                           "Unrecognized request argument supplied: %s" % ", ".join(bad))
        if not isinstance(b.get("model"), str) or not b["model"]:
            raise Rejected(400, "invalid_request_error", "model: a string is required")
        msgs = b.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise Rejected(400, "invalid_request_error", "messages: a non-empty array")
        open_calls = set()
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in OPENAI_ROLES:
                raise Rejected(400, "invalid_request_error",
                               "messages[%d]: bad role %r" % (i, m.get("role") if
                                                              isinstance(m, dict) else m))
            role = m["role"]
            if role == "assistant":
                for tc in m.get("tool_calls") or []:
                    fn = tc.get("function") or {}
                    if tc.get("type") != "function" or not tc.get("id") or \
                            not isinstance(fn.get("name"), str) or \
                            not isinstance(fn.get("arguments"), str):
                        raise Rejected(400, "invalid_request_error",
                                       "messages[%d].tool_calls: bad tool call %r" % (i, tc))
                    try:
                        json.loads(fn["arguments"])
                    except ValueError:
                        raise Rejected(400, "invalid_request_error",
                                       "messages[%d].tool_calls: arguments is not JSON" % i)
                    open_calls.add(tc["id"])
                if m.get("content") is None and not m.get("tool_calls"):
                    raise Rejected(400, "invalid_request_error",
                                   "messages[%d]: assistant needs content or tool_calls" % i)
            elif role == "tool":
                if m.get("tool_call_id") not in open_calls:
                    raise Rejected(400, "invalid_request_error",
                                   "messages[%d]: messages with role 'tool' must be a "
                                   "response to a preceding message with 'tool_calls' "
                                   "(tool_call_id %r)" % (i, m.get("tool_call_id")))
                if not isinstance(m.get("content"), (str, list)):
                    raise Rejected(400, "invalid_request_error",
                                   "messages[%d]: tool content must be a string" % i)
            elif "content" not in m:
                raise Rejected(400, "invalid_request_error", "messages[%d]: content" % i)
        for t in b.get("tools") or []:
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(t, dict) or t.get("type") != "function" or \
                    not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise Rejected(400, "invalid_request_error",
                               "tools: each tool must be {type: function, function: {name, "
                               "description, parameters}}, got %r" % (t,))
            if "parameters" in fn and not isinstance(fn["parameters"], dict):
                raise Rejected(400, "invalid_request_error", "tools: parameters not object")
        so = b.get("stream_options")
        if so is not None and not b.get("stream"):
            raise Rejected(400, "invalid_request_error",
                           "stream_options is only allowed when stream is true")

    @staticmethod
    def _validate_anthropic(b):
        bad = sorted(set(b) - ANTHROPIC_PARAMS)
        if bad:
            raise Rejected(400, "invalid_request_error",
                           "%s: Extra inputs are not permitted" % ", ".join(bad))
        if not isinstance(b.get("model"), str) or not b["model"]:
            raise Rejected(400, "invalid_request_error", "model: Field required")
        if not isinstance(b.get("max_tokens"), int) or isinstance(b.get("max_tokens"), bool) \
                or b["max_tokens"] < 1:
            raise Rejected(400, "invalid_request_error", "max_tokens: Field required")
        if "system" in b and not isinstance(b["system"], (str, list)):
            raise Rejected(400, "invalid_request_error", "system: string or text blocks")
        t = b.get("temperature")
        if t is not None and not (0 <= t <= 1):
            raise Rejected(400, "invalid_request_error", "temperature: must be in [0, 1]")
        msgs = b.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise Rejected(400, "invalid_request_error", "messages: at least one message")
        pending = set()  # tool_use ids of the previous assistant turn
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise Rejected(400, "invalid_request_error",
                               "messages.%d.role: Input should be 'user' or 'assistant' "
                               "(system prompts go in the top-level system parameter)" % i)
            c = m.get("content")
            if not isinstance(c, (str, list)):
                raise Rejected(400, "invalid_request_error", "messages.%d.content" % i)
            blocks = c if isinstance(c, list) else []
            for blk in blocks:
                if not isinstance(blk, dict) or not isinstance(blk.get("type"), str):
                    raise Rejected(400, "invalid_request_error",
                                   "messages.%d.content: bad block %r" % (i, blk))
            if m["role"] == "user":
                results = {blk.get("tool_use_id") for blk in blocks
                           if blk["type"] == "tool_result"}
                if pending - results:
                    raise Rejected(400, "invalid_request_error",
                                   "messages.%d: tool_use ids were found without "
                                   "tool_result blocks immediately after: %s"
                                   % (i, ", ".join(sorted(pending - results))))
                if results - pending:
                    raise Rejected(400, "invalid_request_error",
                                   "messages.%d.content: unexpected tool_use_id found in "
                                   "tool_result blocks: %s" % (i, ", ".join(
                                       sorted(str(x) for x in results - pending))))
                pending = set()
            else:
                if pending:
                    raise Rejected(400, "invalid_request_error",
                                   "messages.%d: tool_use without tool_result" % i)
                for blk in blocks:
                    if blk["type"] == "tool_use":
                        if not blk.get("id") or not isinstance(blk.get("name"), str) or \
                                not isinstance(blk.get("input"), dict):
                            raise Rejected(400, "invalid_request_error",
                                           "messages.%d: tool_use needs id, name and an "
                                           "object input, got %r" % (i, blk))
                        pending.add(blk["id"])
        for tl in b.get("tools") or []:
            if not isinstance(tl, dict) or not isinstance(tl.get("name"), str) or \
                    not isinstance(tl.get("input_schema"), dict) or "type" in tl and \
                    tl["type"] not in ("custom",):
                raise Rejected(400, "invalid_request_error",
                               "tools: each tool must be {name, description, input_schema}, "
                               "got %r" % (tl,))
            if set(tl) - {"name", "description", "input_schema", "type", "cache_control"}:
                raise Rejected(400, "invalid_request_error",
                               "tools.%s: Extra inputs are not permitted: %s"
                               % (tl["name"], sorted(set(tl) - {"name", "description",
                                                                "input_schema", "type",
                                                                "cache_control"})))
        tc = b.get("tool_choice")
        if tc is not None and (not isinstance(tc, dict) or
                               tc.get("type") not in ("auto", "any", "tool", "none")):
            raise Rejected(400, "invalid_request_error", "tool_choice: %r" % (tc,))

    # -- what to answer ----------------------------------------------------------------------
    def reply_for(self, b, dialect):
        msgs = b["messages"]
        n = self._next_id()
        stream = bool(b.get("stream"))
        has_system = bool(b.get("system")) or any(m.get("role") in ("system", "developer")
                                                  for m in msgs)
        usage_in = 7 + 10 * len(msgs) + (3 if has_system else 0)
        if dialect == "openai":
            rid = "chatcmpl-%s%06d" % (self.name, n)
        else:
            rid = "msg_01%s%06d" % (self.name, n)
        reply = {"dialect": dialect, "id": rid, "model": b["model"], "stream": stream,
                 "text": None, "tool_calls": [], "finish": None, "lead_text": None}
        last = msgs[-1]
        results = self._tool_results(last, msgs, dialect)
        tools = b.get("tools") or []
        choice = b.get("tool_choice")
        choice_none = choice == "none" or (isinstance(choice, dict) and
                                           choice.get("type") == "none")
        if results is not None:
            reply["text"] = "%s got tool result: %s" % (self.name, " | ".join(results))
            reply["finish"] = "end_turn"
        elif tools and not choice_none:
            for i, t in enumerate(tools):
                name = t["function"]["name"] if dialect == "openai" else t["name"]
                inp = self.tool_inputs.get(name, {"q": name})
                cid = ("call_%s%d_%d" % (self.name, n, i) if dialect == "openai"
                       else "toolu_01%s%d_%d" % (self.name, n, i))
                reply["tool_calls"].append({"id": cid, "name": name, "input": inp,
                                            "arguments": json.dumps(inp, ensure_ascii=False)})
            if dialect == "anthropic":
                reply["lead_text"] = "Let me use %s." % reply["tool_calls"][0]["name"]
            elif self.openai_tool_text:
                reply["lead_text"] = self.openai_tool_text
            reply["finish"] = "tool_use"
        else:
            said = _text_of(last.get("content")) if last.get("role") == "user" else ""
            reply["text"] = "[%s] you said: %s \u2713 \u00e9 \U0001f642" % (self.name, said)
            if self.text_override is not None:
                reply["text"] = self.text_override
            reply["finish"] = "end_turn"
            stops = b.get("stop_sequences") if dialect == "anthropic" else b.get("stop")
            stops = [stops] if isinstance(stops, str) else (stops or [])
            limit = b.get("max_completion_tokens", b.get("max_tokens"))
            if isinstance(limit, int) and limit < SHORT_MAX_TOKENS:
                reply["text"] = reply["text"][:limit * 2]
                reply["finish"] = "max_tokens"
            elif stops:
                # the model "produced" the first stop sequence: the text ends before it
                reply["finish"] = "stop_sequence"
                reply["stop_sequence"] = stops[0]
        text = reply["lead_text"] if reply["tool_calls"] else reply["text"]
        pieces = split_pieces(text or "", self.n_pieces)
        reply["pieces"] = pieces
        arg_pieces = [split_pieces(tc["arguments"], max(3, self.n_pieces // 2))
                      for tc in reply["tool_calls"]]
        reply["arg_pieces"] = arg_pieces
        out = len(pieces) + sum(len(a) for a in arg_pieces) + 5
        reply["usage"] = {"input": usage_in, "output": out,
                          "cache_read": self.cache_tokens[0],
                          "cache_creation": self.cache_tokens[1] if dialect == "anthropic"
                          else 0}
        reply["finish_openai"] = {"end_turn": "stop", "tool_use": "tool_calls",
                                  "max_tokens": "length",
                                  "stop_sequence": "stop"}[reply["finish"]]
        reply["include_usage"] = bool((b.get("stream_options") or {}).get("include_usage"))
        return reply

    @staticmethod
    def _tool_results(last, msgs, dialect):
        """Contents of the tool results the request ends with, or None."""
        if dialect == "openai":
            if last.get("role") != "tool":
                return None
            out = []
            for m in reversed(msgs):
                if m.get("role") != "tool":
                    break
                out.insert(0, _text_of(m.get("content")))
            return out
        c = last.get("content")
        if last.get("role") != "user" or not isinstance(c, list):
            return None
        out = [_text_of(blk.get("content")) for blk in c if blk.get("type") == "tool_result"]
        return out or None

    # -- OpenAI shapes ---------------------------------------------------------------------
    @staticmethod
    def _openai_usage(reply):
        u = reply["usage"]
        prompt = u["input"] + u["cache_read"]
        return {"prompt_tokens": prompt, "completion_tokens": u["output"],
                "total_tokens": prompt + u["output"],
                "prompt_tokens_details": {"cached_tokens": u["cache_read"], "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}

    def _openai_body(self, reply):
        msg = {"role": "assistant",
               "content": reply["lead_text"] if reply["tool_calls"] else reply["text"],
               "refusal": None, "annotations": []}
        if reply["tool_calls"]:
            msg["tool_calls"] = [{"id": tc["id"], "type": "function",
                                  "function": {"name": tc["name"],
                                               "arguments": tc["arguments"]}}
                                 for tc in reply["tool_calls"]]
        return {"id": reply["id"], "object": "chat.completion", "created": int(time.time()),
                "model": reply["model"],
                "choices": [{"index": 0, "message": msg, "logprobs": None,
                             "finish_reason": reply["finish_openai"]}],
                "usage": self._openai_usage(reply), "service_tier": "default",
                "system_fingerprint": "fp_lrmock"}

    def _openai_stream(self, reply, body):
        created = int(time.time())
        inc = reply["include_usage"]

        def chunk(delta, finish=None, choices=True):
            c = {"id": reply["id"], "object": "chat.completion.chunk", "created": created,
                 "model": reply["model"], "service_tier": "default",
                 "system_fingerprint": "fp_lrmock",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": finish}] if choices else []}
            if inc:
                c["usage"] = None
            return _sse_openai(c)

        # Like OpenAI: a text reply starts with {"role", "content": ""}; a tool-call-only
        # reply carries the role in the chunk that opens the first tool call.
        first = {"role": "assistant", "content": "", "refusal": None}
        ev = []
        if reply["pieces"] or not reply["tool_calls"]:
            ev.append(chunk(first))
            first = None
        ev += [chunk({"content": p}) for p in reply["pieces"]]
        for i, tc in enumerate(reply["tool_calls"]):
            d = {"tool_calls": [{"index": i, "id": tc["id"], "type": "function",
                                 "function": {"name": tc["name"], "arguments": ""}}]}
            if first is not None:
                d = dict(first, content=None, **d)
                first = None
            ev.append(chunk(d))
            ev += [chunk({"tool_calls": [{"index": i, "function": {"arguments": a}}]})
                   for a in reply["arg_pieces"][i]]
        ev.append(chunk({}, reply["finish_openai"]))
        if inc:
            u = dict(id=reply["id"], object="chat.completion.chunk", created=created,
                     model=reply["model"], service_tier="default",
                     system_fingerprint="fp_lrmock", choices=[],
                     usage=self._openai_usage(reply))
            ev.append(_sse_openai(u))
        ev.append("data: [DONE]\n\n")
        if self.stream_error_after is not None:
            ev = ev[:self.stream_error_after] + [_sse_openai({"error": {
                "message": self.stream_error_message, "type": "server_error", "param": None,
                "code": None}})]
        reply["events"] = ev
        reply["mock_stream"] = self._stream(ev)  # its sent_at: when each event left
        return reply["mock_stream"]

    def _stream(self, events):
        return MockStream(events, delay=self.chunk_delay, close_after=self.stream_die_after,
                          rst=self.stream_die_rst,
                          headers=[("Content-Type", "text/event-stream; charset=utf-8"),
                                   ("Cache-Control", "no-cache")] + self._rid())

    # -- Anthropic shapes ------------------------------------------------------------------
    def _anthropic_body(self, reply):
        content = []
        if reply["tool_calls"]:
            if reply["lead_text"]:
                content.append({"type": "text", "text": reply["lead_text"]})
            content += [{"type": "tool_use", "id": tc["id"], "name": tc["name"],
                         "input": tc["input"]} for tc in reply["tool_calls"]]
        else:
            content.append({"type": "text", "text": reply["text"]})
        u = reply["usage"]
        return {"id": reply["id"], "type": "message", "role": "assistant",
                "model": reply["model"], "content": content,
                "stop_reason": reply["finish"], "stop_sequence": reply.get("stop_sequence"),
                "usage": {"input_tokens": u["input"], "output_tokens": u["output"],
                          "cache_creation_input_tokens": u["cache_creation"],
                          "cache_read_input_tokens": u["cache_read"],
                          "service_tier": "standard"}}

    def _anthropic_stream(self, reply):
        u = reply["usage"]
        ev = [_sse_anthropic({"type": "message_start", "message": {
            "id": reply["id"], "type": "message", "role": "assistant",
            "model": reply["model"], "content": [], "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": u["input"], "output_tokens": 1,
                      "cache_creation_input_tokens": u["cache_creation"],
                      "cache_read_input_tokens": u["cache_read"],
                      "service_tier": "standard"}}})]
        idx = 0
        if reply["pieces"]:
            ev.append(_sse_anthropic({"type": "content_block_start", "index": idx,
                                      "content_block": {"type": "text", "text": ""}}))
            ev.append(_sse_anthropic({"type": "ping"}))
            ev += [_sse_anthropic({"type": "content_block_delta", "index": idx,
                                   "delta": {"type": "text_delta", "text": p}})
                   for p in reply["pieces"]]
            ev.append(_sse_anthropic({"type": "content_block_stop", "index": idx}))
            idx += 1
        for i, tc in enumerate(reply["tool_calls"]):
            ev.append(_sse_anthropic({"type": "content_block_start", "index": idx,
                                      "content_block": {"type": "tool_use", "id": tc["id"],
                                                        "name": tc["name"], "input": {}}}))
            ev += [_sse_anthropic({"type": "content_block_delta", "index": idx,
                                   "delta": {"type": "input_json_delta", "partial_json": a}})
                   for a in [""] + reply["arg_pieces"][i]]
            ev.append(_sse_anthropic({"type": "content_block_stop", "index": idx}))
            idx += 1
        ev.append(_sse_anthropic({"type": "message_delta",
                                  "delta": {"stop_reason": reply["finish"],
                                            "stop_sequence": reply.get("stop_sequence")},
                                  "usage": {"output_tokens": u["output"]}}))
        ev.append(_sse_anthropic({"type": "message_stop"}))
        if self.stream_error_after is not None:
            ev = ev[:self.stream_error_after] + [_sse_anthropic({"type": "error", "error": {
                "type": "overloaded_error", "message": self.stream_error_message}})]
        reply["events"] = ev
        reply["mock_stream"] = self._stream(ev)  # its sent_at: when each event left
        return reply["mock_stream"]
