"""Routing engine: dialect translation (DESIGN §8, issue #5), through the real HAProxy
frontend. A rule may send a request to a provider of the other dialect; the engine
translates the request, the response (whole or event by event) and error bodies, and the
client cannot tell. Fallback works across dialects.

Providers (mocks):
  openai      OpenAI dialect, no key configured (the client's key moves across)
  anthropic   Anthropic dialect, key from ANTHROPIC_API_KEY
  oa2         OpenAI dialect, key from OA2_API_KEY (OPENAI_API_KEY would also key "openai")
Rules: ^claude- -> anthropic; ^gpt- -> oa2; ^xfb- -> openai then anthropic (fallback);
^afb- -> anthropic then oa2.
The official-SDK angle (npm openai / @anthropic-ai/sdk parsing these answers) is in
test_translate_sdk.py; the field-by-field mapping is unit-tested in test_translate*.c.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from lrtest import MockResponse, MockStream, seq  # noqa: E402

JSON = ("Content-Type", "application/json")
AV = ("anthropic-version", "2023-06-01")
CHAT = "/v1/chat/completions"
MSGS = "/v1/messages"
ANT_KEY = "sk-ant-test-key-5a1c"
OA_KEY = "sk-oa2-test-key-77d0"


def anthropic_message(text="Hello there", model="claude-3-5-haiku", stop="end_turn",
                      content=None):
    return {"id": "msg_01XYZ", "type": "message", "role": "assistant", "model": model,
            "content": content or [{"type": "text", "text": text}],
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 5}}


def openai_completion(text="Hi from OpenAI", model="gpt-4o", finish="stop", tool_calls=None):
    msg = {"role": "assistant", "content": text}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return {"id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "message": msg, "finish_reason": finish,
                         "logprobs": None}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}


def sse(event, data):
    return "event: %s\ndata: %s\n\n" % (event, json.dumps(data))


def anthropic_stream(words, model="claude-3-5-haiku"):
    ev = [sse("message_start", {"type": "message_start", "message": {
        "id": "msg_S1", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        sse("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "text", "text": ""}}),
        sse("ping", {"type": "ping"})]
    for w in words:
        ev.append(sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": w}}))
    ev += [sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
           sse("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": len(words)}}),
           sse("message_stop", {"type": "message_stop"})]
    return ev


def openai_stream(words, model="gpt-4o", usage=True):
    def chunk(delta, finish=None):
        return "data: %s\n\n" % json.dumps({
            "id": "chatcmpl-S2", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}]})
    ev = [chunk({"role": "assistant", "content": ""})]
    ev += [chunk({"content": w}) for w in words]
    ev.append(chunk({}, "stop"))
    if usage:
        ev.append("data: %s\n\n" % json.dumps({
            "id": "chatcmpl-S2", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "choices": [],
            "usage": {"prompt_tokens": 7, "completion_tokens": len(words),
                      "total_tokens": 7 + len(words)}}))
    ev.append("data: [DONE]\n\n")
    return ev


def events(body):
    """Splits an SSE body into [(event or None, data str)] (comments skipped)."""
    out = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if name or data:
            out.append((name, "\n".join(data)))
    return out


class Translate(lrtest.LRTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = {n: cls.class_mock(n) for n in ("openai", "anthropic", "oa2")}
        providers = {
            "openai": {"http_client": {"max_retries": 0}},
            "anthropic": {"api_key": "${ANTHROPIC_API_KEY}",
                          "http_client": {"max_retries": 0}},
            "oa2": {"provider_type": "openai", "api_key": "${OA2_API_KEY}",
                    "http_client": {"max_retries": 0}},
        }
        rules = [
            {"name": "claude", "model_pattern": "^claude-", "primary": "anthropic",
             "priority": 10},
            {"name": "gpt", "model_pattern": "^gpt-", "primary": "oa2", "priority": 10},
            {"name": "xfb", "model_pattern": "^xfb-", "primary": "openai",
             "fallbacks": ["anthropic"], "priority": 10},
            {"name": "afb", "model_pattern": "^afb-", "primary": "anthropic",
             "fallbacks": ["oa2"], "priority": 10},
        ]
        cls.stack = cls.start_class_stack(
            mocks=cls.m,
            env={"ANTHROPIC_API_KEY": ANT_KEY, "OA2_API_KEY": OA_KEY},
            config={"providers": providers,
                    "translation": {"default_max_tokens": 777},
                    "routing": {"rules": rules,
                                "circuit_breaker": {"failure_threshold": 1000,
                                                    "success_threshold": 1,
                                                    "open_secs": 60}}})

    def setUp(self):
        for mk in self.m.values():
            mk.clear()
            mk.on(CHAT, None)
            mk.on(MSGS, None)

    def post(self, path, body, headers=(), **kw):
        hdrs = [JSON] + list(headers)
        if path == MSGS and not any(h[0].lower() == "anthropic-version" for h in hdrs):
            hdrs.append(AV)
        return self.stack.http("POST", path, hdrs, json.dumps(body).encode(), **kw)

    # ---- OpenAI client -> Anthropic provider ----

    def test_openai_client_to_anthropic(self):
        self.m["anthropic"].on(MSGS, MockResponse.json(anthropic_message("Bonjour")))
        r = self.post(CHAT, {"model": "claude-3-5-haiku", "temperature": 1.5,
                             "stop": "END", "user": "u-42",
                             "messages": [{"role": "system", "content": "Be terse."},
                                          {"role": "user", "content": "Say hi"}]},
                      [("Authorization", "Bearer client-key-ignored")])
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        got = r.json()
        self.assertEqual(got["object"], "chat.completion")
        self.assertEqual(got["choices"][0]["message"]["content"], "Bonjour")
        self.assertEqual(got["choices"][0]["finish_reason"], "stop")
        self.assertEqual(got["usage"], {"prompt_tokens": 12, "completion_tokens": 5,
                                        "total_tokens": 17})
        self.assertEqual(got["model"], "claude-3-5-haiku")
        # what the provider received: the Anthropic dialect, on its own endpoint
        self.assertEqual(self.m["anthropic"].count_path(MSGS), 1)
        self.assertEqual(self.m["anthropic"].count_path(CHAT), 0)
        req = self.m["anthropic"].last()
        body = req.json()
        self.assertEqual(body["system"], "Be terse.")
        self.assertEqual(body["messages"], [{"role": "user", "content": "Say hi"}])
        self.assertEqual(body["max_tokens"], 777)  # translation.default_max_tokens
        self.assertEqual(body["temperature"], 1)   # clamped to Anthropic's range
        self.assertEqual(body["stop_sequences"], ["END"])
        self.assertEqual(body["metadata"], {"user_id": "u-42"})
        self.assertHeader(req, "x-api-key", ANT_KEY)
        self.assertIsNone(req.header("authorization"))
        self.assertHeader(req, "anthropic-version", "2023-06-01")

    def test_openai_client_own_key_moves_to_target_header(self):
        # "openai" has no key configured: an Anthropic client's x-api-key becomes a Bearer
        self.m["openai"].on(CHAT, MockResponse.json(openai_completion("ok")))
        r = self.post(MSGS, {"model": "xfb-1", "max_tokens": 50,
                             "messages": [{"role": "user", "content": "hi"}]},
                      [("x-api-key", "client-own-key"), ("anthropic-beta", "tools-2024")])
        self.assertEqual(r.status, 200, r)
        req = self.m["openai"].last()
        self.assertHeader(req, "authorization", "Bearer client-own-key")
        self.assertIsNone(req.header("x-api-key"))
        self.assertIsNone(req.header("anthropic-version"))
        self.assertIsNone(req.header("anthropic-beta"))

    def test_openai_client_to_anthropic_streaming(self):
        self.m["anthropic"].on(MSGS, MockStream(anthropic_stream(["Hel", "lo", "!"]),
                                                delay=0.02))
        r, reads, _ = self.stack.stream(
            "POST", CHAT, [JSON],
            json.dumps({"model": "claude-3-5-haiku", "stream": True,
                        "stream_options": {"include_usage": True},
                        "messages": [{"role": "user", "content": "hi"}]}).encode())
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type", "").startswith("text/event-stream"), r)
        ev = events(r.body)
        self.assertEqual(ev[-1], (None, "[DONE]"), ev)
        chunks = [json.loads(d) for n, d in ev[:-1]]
        self.assertTrue(all(c["object"] == "chat.completion.chunk" for c in chunks), chunks)
        text = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c["choices"])
        self.assertEqual(text, "Hello!")
        finish = [c["choices"][0]["finish_reason"] for c in chunks
                  if c["choices"] and c["choices"][0].get("finish_reason")]
        self.assertEqual(finish, ["stop"])
        usage = [c["usage"] for c in chunks if c.get("usage")]
        self.assertEqual(usage[-1]["completion_tokens"], 3, chunks)
        self.assertFalse(any(n for n, _ in ev), "OpenAI chunks carry no event: names")
        self.assertNotIn(b"ping", r.body)
        body = self.m["anthropic"].last().json()
        self.assertTrue(body["stream"])
        self.assertNotIn("stream_options", body)
        self.assertGreater(len(reads), 1, "the translated stream must arrive in pieces")

    def test_openai_client_tool_call_via_anthropic(self):
        self.m["anthropic"].on(MSGS, MockResponse.json(anthropic_message(
            stop="tool_use", content=[
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}}])))
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}]
        r = self.post(CHAT, {"model": "claude-3-5-haiku", "tools": tools,
                             "tool_choice": "required", "max_tokens": 100,
                             "messages": [{"role": "user", "content": "Weather in Paris?"}]})
        self.assertEqual(r.status, 200, r)
        choice = r.json()["choices"][0]
        self.assertEqual(choice["finish_reason"], "tool_calls")
        call = choice["message"]["tool_calls"][0]
        self.assertEqual(call["id"], "toolu_1")
        self.assertEqual(call["type"], "function")
        self.assertEqual(call["function"]["name"], "get_weather")
        self.assertEqual(json.loads(call["function"]["arguments"]), {"city": "Paris"})
        sent = self.m["anthropic"].last().json()
        self.assertEqual(sent["max_tokens"], 100)
        self.assertEqual(sent["tool_choice"], {"type": "any"})
        self.assertEqual(sent["tools"][0]["name"], "get_weather")
        self.assertEqual(sent["tools"][0]["input_schema"]["required"], ["city"])

    def test_anthropic_error_reaches_openai_client_in_its_dialect(self):
        self.m["anthropic"].on(MSGS, MockResponse.json(
            {"type": "error", "error": {"type": "invalid_request_error",
                                        "message": "max_tokens: too large"}}, status=400))
        r = self.post(CHAT, {"model": "claude-3-5-haiku",
                             "messages": [{"role": "user", "content": "x"}]})
        self.assertEqual(r.status, 400, r)
        err = r.json()["error"]
        self.assertIn("max_tokens: too large", err["message"])
        self.assertEqual(err["type"], "invalid_request_error")

    def test_overloaded_529_becomes_503_for_openai_client(self):
        self.m["anthropic"].on(MSGS, MockResponse.json(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            status=529))
        r = self.post(CHAT, {"model": "claude-3-5-haiku",
                             "messages": [{"role": "user", "content": "x"}]})
        self.assertEqual(r.status, 503, r)
        self.assertIn("Overloaded", r.json()["error"]["message"])

    # ---- Anthropic client -> OpenAI provider ----

    def test_anthropic_client_to_openai(self):
        self.m["oa2"].on(CHAT, MockResponse.json(openai_completion("Salut", finish="length")))
        r = self.post(MSGS, {"model": "gpt-4o", "max_tokens": 64, "system": "Be kind.",
                             "stop_sequences": ["###"], "top_k": 5,
                             "messages": [{"role": "user", "content": "hello"}]})
        self.assertEqual(r.status, 200, r)
        got = r.json()
        self.assertEqual(got["type"], "message")
        self.assertEqual(got["role"], "assistant")
        self.assertEqual(got["content"], [{"type": "text", "text": "Salut"}])
        self.assertEqual(got["stop_reason"], "max_tokens")
        self.assertEqual(got["usage"]["input_tokens"], 9)
        self.assertEqual(got["usage"]["output_tokens"], 4)
        req = self.m["oa2"].last()
        body = req.json()
        self.assertEqual(body["messages"][0], {"role": "system", "content": "Be kind."})
        self.assertEqual(body["messages"][1]["role"], "user")
        self.assertEqual(body["stop"], ["###"])
        self.assertNotIn("top_k", body)
        self.assertHeader(req, "authorization", "Bearer " + OA_KEY)
        self.assertIsNone(req.header("anthropic-version"))
        m = self.stack.metrics()
        self.assertGreaterEqual(lrtest.metric(m, "lunaroute_translation_dropped_fields_total",
                                              direction="anthropic_to_openai", field="top_k"), 1)

    def test_anthropic_client_to_openai_streaming(self):
        self.m["oa2"].on(CHAT, MockStream(openai_stream(["Bon", "jour"]), delay=0.02))
        r, _, _ = self.stack.stream(
            "POST", MSGS, [JSON, AV],
            json.dumps({"model": "gpt-4o", "max_tokens": 20, "stream": True,
                        "messages": [{"role": "user", "content": "hi"}]}).encode())
        self.assertEqual(r.status, 200, r)
        ev = events(r.body)
        names = [n for n, _ in ev]
        self.assertEqual(names[0], "message_start", names)
        self.assertEqual(names[-1], "message_stop", names)
        self.assertIn("message_delta", names)
        text = "".join(json.loads(d)["delta"]["text"] for n, d in ev
                       if n == "content_block_delta")
        self.assertEqual(text, "Bonjour")
        delta = [json.loads(d) for n, d in ev if n == "message_delta"][0]
        self.assertEqual(delta["delta"]["stop_reason"], "end_turn")
        self.assertEqual(delta["usage"]["output_tokens"], 2)
        self.assertNotIn(b"[DONE]", r.body)
        sent = self.m["oa2"].last().json()
        self.assertTrue(sent["stream"])
        self.assertEqual(sent.get("stream_options"), {"include_usage": True})

    def test_translated_stream_broken_midway_ends_with_error_event(self):
        self.m["oa2"].on(CHAT, MockStream(openai_stream(["a", "b", "c", "d"]), delay=0.02,
                                          close_after=3))
        r, _, _ = self.stack.stream(
            "POST", MSGS, [JSON, AV],
            json.dumps({"model": "gpt-4o", "max_tokens": 20, "stream": True,
                        "messages": [{"role": "user", "content": "hi"}]}).encode())
        self.assertEqual(r.status, 200, r)
        names = [n for n, _ in events(r.body)]
        self.assertEqual(names[-1], "error", names)
        self.assertNotIn("message_stop", names)

    # ---- fallback across dialects ----

    def test_fallback_openai_500_to_anthropic_for_openai_client(self):
        self.m["openai"].on(CHAT, MockResponse.json({"error": {"message": "boom"}}, status=500))
        self.m["anthropic"].on(MSGS, MockResponse.json(anthropic_message("from claude")))
        r = self.post(CHAT, {"model": "xfb-model",
                             "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["choices"][0]["message"]["content"], "from claude")
        self.assertEqual(self.m["openai"].count_path(CHAT), 1)
        self.assertEqual(self.m["anthropic"].count_path(MSGS), 1)

    def test_fallback_exhausted_last_error_translated(self):
        # anthropic 429 (Anthropic body) -> oa2 answers 500 (OpenAI body): the Anthropic
        # client gets the last answer, in its own dialect, status unchanged
        self.m["anthropic"].on(MSGS, MockResponse.json(
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
            status=429, headers=[("Retry-After", "1")]))
        self.m["oa2"].on(CHAT, MockResponse.json(
            {"error": {"message": "upstream exploded", "type": "server_error"}}, status=500))
        r = self.post(MSGS, {"model": "afb-1", "max_tokens": 5,
                             "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(r.status, 500, r)
        body = r.json()
        self.assertEqual(body["type"], "error")
        self.assertIn("upstream exploded", body["error"]["message"])

    def test_untranslatable_request_is_400_in_client_dialect(self):
        r = self.post(CHAT, {"model": "claude-3-5-haiku", "messages": "not-a-list"})
        self.assertOpenAIError(r, 400)
        self.assertEqual(self.m["anthropic"].count(), 0)

    def test_same_dialect_stays_passthrough(self):
        # no rule: the OpenAI provider gets the client's bytes unchanged
        self.m["openai"].on(CHAT, MockResponse.json(openai_completion("plain")))
        raw = b'{"model":"o1-mini" ,  "messages":[{"role":"user","content":"hi"}],"n":2}'
        r = self.stack.http("POST", CHAT, [JSON], raw)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.m["openai"].last().body, raw)

    def test_metrics_count_translations(self):
        before = self.stack.metrics()
        self.m["anthropic"].on(MSGS, MockResponse.json(anthropic_message()))
        for _ in range(2):
            r = self.post(CHAT, {"model": "claude-x", "seed": 7,
                                 "messages": [{"role": "user", "content": "hi"}]})
            self.assertEqual(r.status, 200, r)
        after = self.stack.metrics()

        def delta(name, **labels):
            return lrtest.metric(after, name, **labels) - lrtest.metric(before, name, **labels)
        self.assertEqual(delta("lunaroute_translations_total",
                               direction="openai_to_anthropic"), 2)
        self.assertEqual(delta("lunaroute_translation_dropped_fields_total",
                               direction="openai_to_anthropic", field="seed"), 2)


if __name__ == "__main__":
    lrtest.main()
