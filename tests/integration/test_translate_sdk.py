"""Dialect translation through the official SDKs (DESIGN §8, issue #5).

The npm `openai` and `@anthropic-ai/sdk` packages (pinned in sdk/package-lock.json, installed
by tests/integration/sdk/install.sh) call HAProxy -> SPOE agent -> routing engine -> a
provider of the OTHER dialect (llm_mock.LLMMock, which answers like the real APIs and
records every request), and must get correct, fully parsed results: text, streams (the
SDKs' own stream helpers), tool calls with their arguments, multi-turn conversations with
tool results, usage, finish/stop reasons, errors, and a fallback across dialects. The same
SDK calls against a provider of their own dialect are the baseline.

Rules of the stack (every class has its own):
  ^claude-  -> anthropic      (the OpenAI SDK is translated, the Anthropic SDK passes through)
  ^gpt-     -> openai         (the Anthropic SDK is translated)
  ^fbo-     -> oafail (OpenAI type, answers 500) then anthropic
  ^fba-     -> anfail (Anthropic type, answers 500/529) then openai
Each provider has a key (environment only); each mock insists on its own key in its own
dialect's header, so a key sent in the wrong header fails the request.
translation.default_max_tokens is 1234 (what an OpenAI request without one gets).
Several SDK calls of one test may share one node process ("calls" jobs: one start-up).

Node.js >= 18 and the SDKs are required: without them the test FAILS (run
tests/integration/sdk/install.sh); only a missing HAProxy skips (harness rule).
"""

import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
from llm_mock import CHAT, MSGS, LLMMock  # noqa: E402
from lrtest import MockResponse, seq  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SDK_DIR = os.path.join(HERE, "sdk")
NODE = os.environ.get("LRTEST_NODE") or shutil.which("node")
NODE_TIMEOUT = 30

KEYS = {"openai": "sk-lrtest-openai-upstream-7f3a", "anthropic": "sk-ant-lrtest-upstream-91c2",
        "oafail": "sk-lrtest-oafail-5d1e", "anfail": "sk-ant-lrtest-anfail-28b4"}
KEY_ENV = {n: "LRTEST_SDK_KEY_%s" % n.upper() for n in KEYS}
CLIENT_KEY = "client-key-that-must-not-reach-upstream"  # what the SDKs send
DEFAULT_MAX_TOKENS = 1234  # translation.default_max_tokens of the stacks

SYSTEM = "You are terse. Answer in English."
WEATHER_SCHEMA = {"type": "object",
                  "properties": {"city": {"type": "string", "description": "City name"},
                                 "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                 "days": {"type": "integer"}},
                  "required": ["city"]}
TIME_SCHEMA = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
WEATHER_INPUT = {"city": "Saint-\u00c9tienne \"Loire\"", "unit": "celsius", "days": 3,
                 "nested": {"list": [1, 2.5, None, True, {"k": "v\n\u2713"}]}}
TIME_INPUT = {"tz": "Europe/Paris"}
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
           "AAAABJRU5ErkJggg==")  # a 1x1 PNG


def openai_tools(n=1):
    t = [{"type": "function", "function": {"name": "get_weather",
                                           "description": "Weather forecast for a city",
                                           "parameters": WEATHER_SCHEMA}},
         {"type": "function", "function": {"name": "get_time",
                                           "description": "Local time in a time zone",
                                           "parameters": TIME_SCHEMA}}]
    return t[:n]


def anthropic_tools(n=1):
    t = [{"name": "get_weather", "description": "Weather forecast for a city",
          "input_schema": WEATHER_SCHEMA},
         {"name": "get_time", "description": "Local time in a time zone",
          "input_schema": TIME_SCHEMA}]
    return t[:n]


def sdk_missing_reason():
    """Why the SDK clients cannot run here, or None."""
    fix = "run tests/integration/sdk/install.sh (needs node >= 18 and npm: Debian 12 " \
          "`apt-get install nodejs npm`)"
    if not NODE:
        return "node is not installed; " + fix
    try:
        v = subprocess.run([NODE, "-p", "process.versions.node"], capture_output=True,
                           text=True, timeout=20).stdout.strip()
        major = int(v.split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return "cannot run %s (%s); %s" % (NODE, e, fix)
    if major < 18:
        return "node %s is too old (>= 18 needed); %s" % (v, fix)
    for pkg in ("openai", os.path.join("@anthropic-ai", "sdk")):
        if not os.path.exists(os.path.join(SDK_DIR, "node_modules", pkg, "package.json")):
            return "npm package %s is not installed in %s; %s" % (
                pkg.replace(os.sep, "/"), os.path.join(SDK_DIR, "node_modules"), fix)
    return None


def node_env():
    env = lrtest.child_env()
    for k in list(env):
        ku = k.upper()
        # nothing from the developer's shell may redirect the SDKs (base URLs, keys, proxies)
        if ku.startswith(("OPENAI_", "ANTHROPIC_", "NODE_OPTIONS")) or ku.endswith("_PROXY"):
            del env[k]
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


class Base(lrtest.LRTestCase):
    """One stack per subclass; helpers to run an SDK job and check its result."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()  # skips when HAProxy is missing
        why = sdk_missing_reason()
        if why:
            raise AssertionError("the SDK integration test cannot run: " + why)
        cls.m = {n: LLMMock(n, expect_key=KEYS[n]) for n in KEYS}
        cls._class_mocks.extend(cls.m.values())
        providers = {
            "openai": {"api_key": "${%s}" % KEY_ENV["openai"],
                       "http_client": {"max_retries": 0}},
            "anthropic": {"api_key": "${%s}" % KEY_ENV["anthropic"],
                          "http_client": {"max_retries": 0}},
            "oafail": {"provider_type": "openai", "api_key": "${%s}" % KEY_ENV["oafail"],
                       "http_client": {"max_retries": 0}},
            "anfail": {"provider_type": "anthropic", "api_key": "${%s}" % KEY_ENV["anfail"],
                       "http_client": {"max_retries": 0}},
        }
        rules = [
            {"name": "claude", "model_pattern": "^claude-", "primary": "anthropic",
             "priority": 10},
            {"name": "gpt", "model_pattern": "^gpt-", "primary": "openai", "priority": 10},
            {"name": "fbo", "model_pattern": "^fbo-", "primary": "oafail",
             "fallbacks": ["anthropic"], "priority": 20},
            {"name": "fba", "model_pattern": "^fba-", "primary": "anfail",
             "fallbacks": ["openai"], "priority": 20},
        ]
        cls.stack = cls.start_class_stack(
            mocks=cls.m,
            config={"providers": providers,
                    "translation": {"default_max_tokens": DEFAULT_MAX_TOKENS},
                    "routing": {"rules": rules,
                                "circuit_breaker": {"failure_threshold": 1000,
                                                    "success_threshold": 1,
                                                    "open_secs": 60}}},
            env={KEY_ENV[n]: k for n, k in KEYS.items()})
        cls.oa_url = "http://127.0.0.1:%d/v1" % cls.stack.port
        cls.an_url = "http://127.0.0.1:%d" % cls.stack.port

    def setUp(self):
        for mk in self.m.values():
            mk.reset()
        self.m["oafail"].on(CHAT, MockResponse.json(
            {"error": {"message": "oafail is down", "type": "server_error", "param": None,
                       "code": None}}, 500))
        self.m["anfail"].on(MSGS, MockResponse.json(
            {"type": "error", "error": {"type": "api_error", "message": "anfail is down"}},
            500))

    # -- running the SDKs -------------------------------------------------------------------
    def _node(self, script, job):
        limit = NODE_TIMEOUT * max(1, len(job.get("calls") or ()))
        try:
            p = subprocess.run([NODE, os.path.join(SDK_DIR, script)], input=json.dumps(job),
                               capture_output=True, text=True, timeout=limit,
                               cwd=SDK_DIR, env=node_env())
        except subprocess.TimeoutExpired as e:
            self.fail("%s did not finish in %d s (job %s)\n%s" % (script, limit, job,
                                                                  e.stderr))
        try:
            out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else None
        except ValueError:
            out = None
        return p, out

    def _context(self):
        parts = []
        for n, mk in self.m.items():
            if mk.rejections:
                parts.append("mock %s REJECTED: %s" % (n, mk.rejections))
            for r in mk.requests[-3:]:
                parts.append("mock %s got %s %s %s" % (n, r.method, r.path, r.body[:1500]))
        return "\n".join(parts)

    def sdk(self, script, mode, request, base_url):
        """Runs one SDK call; fails the test (with the SDK error, what each mock received and
        rejected) unless it succeeded."""
        p, out = self._node(script, {"base_url": base_url, "mode": mode, "request": request,
                                     "api_key": CLIENT_KEY,
                                     "timeout_ms": 15000})
        if p.returncode != 0 or not out or not out.get("ok"):
            self.fail("%s %s failed (exit %d)\nstdout: %s\nstderr: %s\n%s"
                      % (script, mode, p.returncode, p.stdout[-3000:], p.stderr[-3000:],
                         self._context()))
        return out

    def sdk_many(self, script, calls, base_url):
        """Several SDK calls [(mode, request)] one after the other in one node process (one
        start-up); returns their results in order. Fails like sdk()."""
        p, out = self._node(script, {"base_url": base_url, "api_key": CLIENT_KEY,
                                     "timeout_ms": 15000,
                                     "calls": [{"mode": m, "request": r} for m, r in calls]})
        if p.returncode != 0 or not out or not out.get("ok"):
            self.fail("%s calls %s failed (exit %d)\nstdout: %s\nstderr: %s\n%s"
                      % (script, [m for m, _ in calls], p.returncode, p.stdout[-3000:],
                         p.stderr[-3000:], self._context()))
        self.assertEqual(len(out["results"]), len(calls))
        return out["results"]

    def sdk_error(self, script, mode, request, base_url):
        """Runs one SDK call that must fail with an API error; returns the error JSON."""
        p, out = self._node(script, {"base_url": base_url, "mode": mode, "request": request,
                                     "timeout_ms": 15000})
        self.assertEqual(p.returncode, 1, "expected an SDK error, got exit %d\n%s\n%s"
                         % (p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
        self.assertFalse(out["ok"], out)
        return out["error"]

    def openai(self, mode, request):
        return self.sdk("openai_client.mjs", mode, request, self.oa_url)

    def anthropic(self, mode, request):
        return self.sdk("anthropic_client.mjs", mode, request, self.an_url)

    def openai_many(self, calls):
        return self.sdk_many("openai_client.mjs", calls, self.oa_url)

    def anthropic_many(self, calls):
        return self.sdk_many("anthropic_client.mjs", calls, self.an_url)

    def bodies(self, name, path):
        mk = self.m[name]
        self.assertEqual(mk.rejections, [], "provider %s rejected a request" % name)
        return [r.json() for r in mk.requests_to(path)]

    # -- what the providers received --------------------------------------------------------
    def only_request(self, name, path):
        mk = self.m[name]
        self.assertEqual(mk.rejections, [], "provider %s rejected a request" % name)
        reqs = mk.requests_to(path)
        self.assertEqual(len(reqs), 1, "provider %s: want one request to %s, got %r (all: %r)"
                         % (name, path, reqs, mk.requests))
        return reqs[0], reqs[0].json()

    def assertUntouched(self, *names):
        for n in names:
            self.assertEqual(self.m[n].requests, [], "provider %s must not be used" % n)

    def assertNoClientKey(self, req):
        for k, v in req.headers:
            self.assertNotIn(CLIENT_KEY, v, "the client's key reached the provider in %s" % k)

    def assertAnthropicUpstreamHeaders(self, req, name="anthropic"):
        self.assertNoClientKey(req)
        self.assertEqual(req.header_all("x-api-key"), [KEYS[name]], req.headers)
        self.assertIsNone(req.header("authorization"),
                          "no Authorization header to an Anthropic provider: %r" % req.headers)
        self.assertTrue(req.header("anthropic-version"), req.headers)
        self.assertTrue((req.header("content-type") or "").startswith("application/json"))

    def assertOpenAIUpstreamHeaders(self, req, name="openai"):
        self.assertNoClientKey(req)
        self.assertEqual(req.header_all("authorization"), ["Bearer " + KEYS[name]],
                         req.headers)
        self.assertIsNone(req.header("x-api-key"),
                          "no x-api-key header to an OpenAI provider: %r" % req.headers)
        self.assertTrue((req.header("content-type") or "").startswith("application/json"))

    # -- checks on what the SDKs parsed -----------------------------------------------------
    def assertOpenAIUsage(self, usage, reply, what=""):
        """OpenAI usage as the SDK parsed it vs the provider's: prompt_tokens count every
        input token, cached ones included (Anthropic: input + cache read + cache creation)."""
        u = reply["usage"]
        self.assertIsNotNone(usage, what + "usage missing")
        prompt = u["input"] + u["cache_read"] + u["cache_creation"]
        self.assertEqual(usage["prompt_tokens"], prompt, "%s%r" % (what, usage))
        self.assertEqual(usage["completion_tokens"], u["output"], "%s%r" % (what, usage))
        self.assertEqual(usage["total_tokens"], prompt + u["output"], "%s%r" % (what, usage))
        if u["cache_read"]:
            self.assertEqual((usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
                             u["cache_read"], "%s%r" % (what, usage))

    def assertAnthropicUsage(self, usage, reply, what=""):
        """Anthropic usage vs the provider's: input_tokens exclude cached tokens (OpenAI:
        prompt_tokens - cached_tokens), which are cache_read_input_tokens."""
        u = reply["usage"]
        self.assertIsNotNone(usage, what + "usage missing")
        self.assertEqual(usage["input_tokens"], u["input"], "%s%r" % (what, usage))
        self.assertEqual(usage["output_tokens"], u["output"], "%s%r" % (what, usage))
        if u["cache_read"]:
            self.assertEqual(usage.get("cache_read_input_tokens"), u["cache_read"],
                             "%s%r" % (what, usage))

    def assertSameId(self, got, upstream_id):
        # The upstream's id is reused (an "msg_" id may gain an OpenAI-style prefix).
        self.assertIsInstance(got, str)
        self.assertIn(upstream_id, got, "the response id must carry the upstream's id")

    def assertOpenAIToolCalls(self, completion, reply):
        tcs = completion["tool_calls"]
        self.assertEqual(len(tcs), len(reply["tool_calls"]), completion)
        for got, sent in zip(tcs, reply["tool_calls"]):
            self.assertEqual(got["type"], "function")
            self.assertEqual(got["id"], sent["id"], "tool call ids must survive translation")
            self.assertEqual(got["name"], sent["name"])
            self.assertEqual(got["parsed_arguments"], sent["input"],
                             "arguments parsed by the SDK differ from what the provider sent")

    def assertAnthropicToolUses(self, message, reply):
        tus = message["tool_uses"]
        self.assertEqual(len(tus), len(reply["tool_calls"]), message)
        for got, sent in zip(tus, reply["tool_calls"]):
            self.assertEqual(got["id"], sent["id"], "tool ids must survive translation")
            self.assertEqual(got["name"], sent["name"])
            self.assertEqual(got["input"], json.loads(sent["arguments"]),
                             "input parsed by the SDK differs from what the provider sent")

    def assertAnthropicEventGrammar(self, events):
        """Raw Anthropic stream events (dicts) in a valid order."""
        types = [e["type"] for e in events if e["type"] != "ping"]
        self.assertEqual(types[0], "message_start", types)
        self.assertEqual(types[-1], "message_stop", types)
        self.assertEqual(types.count("message_delta"), 1, types)
        self.assertEqual(types[-2], "message_delta", types)
        open_idx = None
        seen = []
        for e in events:
            t = e["type"]
            if t == "content_block_start":
                self.assertIsNone(open_idx, "block %s started inside block %s" % (e["index"],
                                                                                  open_idx))
                self.assertEqual(e["index"], len(seen), "block indexes count from 0: %r" % e)
                open_idx = e["index"]
                seen.append(e["content_block"]["type"])
            elif t == "content_block_delta":
                self.assertEqual(e["index"], open_idx, "delta outside its block: %r" % e)
                want = "text_delta" if seen[-1] == "text" else "input_json_delta"
                self.assertEqual(e["delta"]["type"], want, e)
            elif t == "content_block_stop":
                self.assertEqual(e["index"], open_idx, e)
                open_idx = None
            elif t == "message_delta":
                self.assertIsNone(open_idx, "message_delta inside an open block")
        return seen


# =============================================================================================
class OpenAISDKToAnthropic(Base):
    """The openai SDK (POST /v1/chat/completions) served by an Anthropic provider."""

    def ask(self, **kw):
        req = {"model": "claude-3-5-haiku-20241022",
               "messages": [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": "Hello there \u00e9\U0001f642"}]}
        req.update(kw)
        return req

    def test_text(self):
        out = self.openai("create", self.ask(max_completion_tokens=321, temperature=1.6,
                                             stop=["END"], user="user-42"))
        c = out["completion"]
        req, body = self.only_request("anthropic", MSGS)
        reply = self.m["anthropic"].last_reply()
        # what the provider got: Anthropic's shape
        self.assertAnthropicUpstreamHeaders(req)
        self.assertEqual(body["model"], "claude-3-5-haiku-20241022")
        self.assertEqual(body["system"] if isinstance(body["system"], str)
                         else "".join(b["text"] for b in body["system"]), SYSTEM)
        self.assertEqual(len(body["messages"]), 1, body)
        self.assertEqual(body["messages"][0]["role"], "user")
        self.assertEqual(body["messages"][0]["content"] if isinstance(
            body["messages"][0]["content"], str) else body["messages"][0]["content"][0]["text"],
            "Hello there \u00e9\U0001f642")
        self.assertEqual(body["max_tokens"], 321)
        self.assertEqual(body["temperature"], 1, "temperature clamped to [0, 1]")
        self.assertEqual(body["stop_sequences"], ["END"])
        self.assertEqual(body.get("metadata"), {"user_id": "user-42"})
        self.assertFalse(body.get("stream", False))
        # what the SDK parsed: OpenAI's shape with the provider's answer
        self.assertEqual(c["object"], "chat.completion")
        self.assertSameId(c["id"], reply["id"])
        self.assertEqual(c["model"], "claude-3-5-haiku-20241022")
        self.assertEqual(c["n_choices"], 1)
        self.assertEqual(c["role"], "assistant")
        self.assertEqual(c["content"], reply["text"])
        self.assertEqual(c["finish_reason"], "stop")
        self.assertEqual(c["tool_calls"], [])
        self.assertIsInstance(c["created"], int)
        self.assertLess(abs(c["created"] - time.time()), 120)
        self.assertOpenAIUsage(c["usage"], reply)

    def test_default_max_tokens(self):
        self.openai("create", self.ask())
        _, body = self.only_request("anthropic", MSGS)
        self.assertEqual(body.get("max_tokens"), DEFAULT_MAX_TOKENS,
                         "Anthropic requires max_tokens: translation.default_max_tokens")

    def test_stream_text(self):
        out = self.openai("stream", self.ask(stream_options={"include_usage": True}))
        c = out["completion"]
        _, body = self.only_request("anthropic", MSGS)
        reply = self.m["anthropic"].last_reply()
        self.assertIs(body.get("stream"), True)
        self.assertNotIn("stream_options", body)
        self.assertEqual(out["problems"], [], "OpenAI chunk protocol")
        self.assertEqual(c["content"], reply["text"])
        self.assertEqual(out["content_deltas"], reply["pieces"],
                         "each text_delta becomes one content delta, in order")
        self.assertEqual(c["role"], "assistant")
        self.assertEqual(c["finish_reason"], "stop")
        self.assertSameId(c["id"], reply["id"])
        self.assertEqual(c["model"], "claude-3-5-haiku-20241022")
        self.assertOpenAIUsage(c["usage"], reply)
        chunks = out["chunks"]
        self.assertEqual(chunks[-1]["choices"], [], "the usage chunk comes last, no choices")
        self.assertIsNotNone(chunks[-1].get("usage"))
        for ch in chunks[:-1]:
            self.assertEqual(len(ch["choices"]), 1, ch)

    def test_stream_without_include_usage(self):
        out = self.openai("stream", self.ask())
        self.assertEqual(out["problems"], [])
        self.assertEqual(out["completion"]["content"], self.m["anthropic"].last_reply()["text"])
        self.assertIsNone(out["completion"]["usage"],
                          "no usage chunk unless stream_options.include_usage")
        for ch in out["chunks"]:
            self.assertEqual(len(ch["choices"]), 1, "no usage chunk expected: %r" % ch)

    def test_stream_helper_text(self):
        out = self.openai("stream_helper", self.ask(stream_options={"include_usage": True}))
        reply = self.m["anthropic"].last_reply()
        c = out["completion"]
        self.assertEqual(c["content"], reply["text"])
        self.assertEqual("".join(out["content_deltas"]), reply["text"])
        self.assertEqual(c["finish_reason"], "stop")
        self.assertOpenAIUsage(c["usage"], reply)

    def test_tool_calls(self):
        self.m["anthropic"].tool_inputs = {"get_weather": WEATHER_INPUT,
                                           "get_time": TIME_INPUT}
        out = self.openai("create", self.ask(tools=openai_tools(2), tool_choice="auto"))
        c = out["completion"]
        _, body = self.only_request("anthropic", MSGS)
        reply = self.m["anthropic"].last_reply()
        self.assertEqual(body["tools"], anthropic_tools(2),
                         "tools -> {name, description, input_schema}")
        self.assertEqual(body.get("tool_choice"), {"type": "auto"})
        self.assertEqual(c["finish_reason"], "tool_calls")
        self.assertEqual(c["content"], reply["lead_text"],
                         "the text block before tool_use is the message content")
        self.assertOpenAIToolCalls(c, reply)
        self.assertOpenAIUsage(c["usage"], reply)

    def test_tool_choice_required_and_named(self):
        self.openai_many([
            ("create", self.ask(tools=openai_tools(2), tool_choice="required")),
            ("create", self.ask(tools=openai_tools(2), parallel_tool_calls=False,
                                tool_choice={"type": "function",
                                             "function": {"name": "get_time"}})),
            ("create", self.ask(tools=openai_tools(2), tool_choice="none"))])
        got = [b.get("tool_choice") for b in self.bodies("anthropic", MSGS)]
        self.assertEqual(got, [{"type": "any"},
                               {"type": "tool", "name": "get_time",
                                "disable_parallel_tool_use": True},
                               {"type": "none"}])

    def test_stream_tool_calls(self):
        self.m["anthropic"].tool_inputs = {"get_weather": WEATHER_INPUT,
                                           "get_time": TIME_INPUT}
        out = self.openai("stream", self.ask(tools=openai_tools(2),
                                             stream_options={"include_usage": True}))
        c = out["completion"]
        reply = self.m["anthropic"].last_reply()
        self.assertEqual(out["problems"], [], "OpenAI chunk protocol")
        self.assertEqual(c["finish_reason"], "tool_calls")
        self.assertEqual(c["content"], reply["lead_text"])
        self.assertOpenAIToolCalls(c, reply)
        self.assertOpenAIUsage(c["usage"], reply)
        # the arguments arrive in pieces, not in one chunk at the end
        arg_chunks = [ch for ch in out["chunks"] for chc in ch["choices"]
                      for tc in (chc["delta"].get("tool_calls") or [])
                      if tc.get("function", {}).get("arguments")]
        self.assertGreaterEqual(len(arg_chunks), len(reply["tool_calls"]) * 2,
                                "input_json_delta pieces relayed as they come")

    def test_stream_helper_tool_calls(self):
        self.m["anthropic"].tool_inputs = {"get_weather": WEATHER_INPUT,
                                           "get_time": TIME_INPUT}
        out = self.openai("stream_helper", self.ask(tools=openai_tools(2)))
        reply = self.m["anthropic"].last_reply()
        c = out["completion"]
        self.assertEqual(c["finish_reason"], "tool_calls")
        self.assertOpenAIToolCalls(c, reply)
        self.assertEqual([(d["index"], d["name"], json.loads(d["arguments"]))
                          for d in out["arguments_done"]],
                         [(i, tc["name"], tc["input"])
                          for i, tc in enumerate(reply["tool_calls"])])

    def test_multi_turn_with_tool_results(self):
        self.m["anthropic"].tool_inputs = {"get_weather": WEATHER_INPUT,
                                           "get_time": TIME_INPUT}
        first = self.ask(tools=openai_tools(2))
        c1 = self.openai("create", first)["completion"]
        self.assertEqual(len(c1["tool_calls"]), 2, c1)
        self.m["anthropic"].clear()
        msgs = first["messages"] + [
            {"role": "assistant", "content": c1["content"],
             "tool_calls": [{"id": tc["id"], "type": "function",
                             "function": {"name": tc["name"], "arguments": tc["arguments"]}}
                            for tc in c1["tool_calls"]]},
            {"role": "tool", "tool_call_id": c1["tool_calls"][0]["id"],
             "content": "18C and sunny"},
            {"role": "tool", "tool_call_id": c1["tool_calls"][1]["id"], "content": "09:30"}]
        out = self.openai("stream", dict(first, messages=msgs,
                                         stream_options={"include_usage": True}))
        _, body = self.only_request("anthropic", MSGS)
        reply = self.m["anthropic"].last_reply()
        self.assertEqual(out["problems"], [])
        self.assertEqual(out["completion"]["content"],
                         "anthropic got tool result: 18C and sunny | 09:30")
        self.assertEqual(out["completion"]["content"], reply["text"])
        self.assertEqual(out["completion"]["finish_reason"], "stop")
        # the conversation as Anthropic wants it: user, assistant(text + tool_use), user(results)
        roles = [m["role"] for m in body["messages"]]
        self.assertEqual(roles, ["user", "assistant", "user"], body["messages"])
        asst = body["messages"][1]["content"]
        uses = [b for b in asst if b["type"] == "tool_use"]
        self.assertEqual([(u["id"], u["name"], u["input"]) for u in uses],
                         [(tc["id"], tc["name"], tc["parsed_arguments"])
                          for tc in c1["tool_calls"]])
        texts = [b["text"] for b in asst if b["type"] == "text"]
        self.assertEqual(texts, [c1["content"]])
        results = body["messages"][2]["content"]
        self.assertEqual([(b["type"], b["tool_use_id"]) for b in results],
                         [("tool_result", tc["id"]) for tc in c1["tool_calls"]])
        got = [b["content"] if isinstance(b["content"], str) else
               "".join(x["text"] for x in b["content"]) for b in results]
        self.assertEqual(got, ["18C and sunny", "09:30"])

    def test_finish_length(self):
        outs = self.openai_many([("create", self.ask(max_tokens=4)),
                                 ("stream", self.ask(max_tokens=4))])
        for out, reply in zip(outs, self.m["anthropic"].replies):
            self.assertEqual(reply["finish"], "max_tokens")
            self.assertEqual(out["completion"]["finish_reason"], "length", out["mode"])
            self.assertEqual(out["completion"]["content"], reply["text"])

    def test_fallback_openai_500_to_anthropic(self):
        out = self.openai("create", self.ask(model="fbo-model", max_tokens=100))
        self.assertEqual(self.m["oafail"].count_path(CHAT), 1, "the primary was tried")
        oareq = self.m["oafail"].requests_to(CHAT)[0]
        self.assertOpenAIUpstreamHeaders(oareq, "oafail")
        self.assertEqual(oareq.json()["messages"][0], {"role": "system", "content": SYSTEM},
                         "same dialect: the primary gets the client's body")
        req, body = self.only_request("anthropic", MSGS)
        self.assertAnthropicUpstreamHeaders(req)
        self.assertEqual(body["model"], "fbo-model")
        self.assertEqual(body["max_tokens"], 100)
        reply = self.m["anthropic"].last_reply()
        self.assertEqual(out["completion"]["content"], reply["text"])
        self.assertEqual(out["completion"]["finish_reason"], "stop")
        self.assertOpenAIUsage(out["completion"]["usage"], reply)

    def test_fallback_stream_openai_500_to_anthropic(self):
        out = self.openai("stream_helper", self.ask(model="fbo-model",
                                                    tools=openai_tools(1),
                                                    stream_options={"include_usage": True}))
        self.assertEqual(self.m["oafail"].count_path(CHAT), 1)
        reply = self.m["anthropic"].last_reply()
        self.assertOpenAIToolCalls(out["completion"], reply)
        self.assertEqual(out["completion"]["finish_reason"], "tool_calls")
        self.assertOpenAIUsage(out["completion"]["usage"], reply)

    def test_stop_sequence_stream(self):
        out = self.openai("stream", self.ask(stop="END"))
        _, body = self.only_request("anthropic", MSGS)
        self.assertEqual(body["stop_sequences"], ["END"])
        self.assertEqual(self.m["anthropic"].last_reply()["finish"], "stop_sequence")
        self.assertEqual(out["problems"], [])
        self.assertEqual(out["completion"]["finish_reason"], "stop")

    def test_large_responses(self):
        big = "".join("line %05d: caf\u00e9 \u2713 \U0001f642 lorem ipsum dolor sit amet\n" % i
                      for i in range(4000))  # ~220 KB of text
        self.m["anthropic"].text_override = big
        self.m["anthropic"].n_pieces = 400
        self.m["anthropic"].chunk_delay = 0
        self.m["anthropic"].tool_inputs = {"get_weather": {"blob": big[:100000],
                                                           "n": list(range(500))}}
        create, stream, tools = self.openai_many([
            ("create", self.ask()), ("stream", self.ask()),
            ("stream", self.ask(tools=openai_tools(1)))])
        self.assertEqual(create["completion"]["content"], big)
        self.assertEqual(stream["problems"], [])
        self.assertEqual(stream["completion"]["content"], big)
        self.assertEqual(len(stream["content_deltas"]), 400)
        self.assertEqual(tools["problems"], [])
        self.assertOpenAIToolCalls(tools["completion"], self.m["anthropic"].last_reply())

    def test_usage_with_cached_tokens(self):
        self.m["anthropic"].cache_tokens = (100, 20)
        outs = self.openai_many([("create", self.ask()),
                                 ("stream", self.ask(stream_options={"include_usage": True}))])
        for out, reply in zip(outs, self.m["anthropic"].replies):
            self.assertOpenAIUsage(out["completion"]["usage"], reply, out["mode"] + ": ")

    def test_unsupported_fields_dropped_and_counted(self):
        before = self.stack.metrics()
        self.openai("create", self.ask(frequency_penalty=0.5, presence_penalty=0.1, seed=7,
                                       logit_bias={"50256": -100}))
        _, body = self.only_request("anthropic", MSGS)
        for k in ("frequency_penalty", "presence_penalty", "seed", "logit_bias"):
            self.assertNotIn(k, body)
        after = self.stack.metrics()
        name = "lunaroute_translation_dropped_fields_total"
        self.assertGreaterEqual(lrtest.metric(after, name) - lrtest.metric(before, name), 4,
                                "every dropped field is counted in %s" % name)

    def test_images_and_developer_message(self):
        req = self.ask(messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "developer", "content": "Be precise."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG_B64}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
        out = self.openai("create", req)
        _, body = self.only_request("anthropic", MSGS)
        self.assertEqual(body["system"] if isinstance(body["system"], str)
                         else "".join(b["text"] for b in body["system"]),
                         SYSTEM + "\n\nBe precise.")
        self.assertEqual(body["messages"], [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG_B64}},
            {"type": "image", "source": {"type": "url",
                                         "url": "https://example.com/cat.jpg"}}]}])
        self.assertEqual(out["completion"]["content"], self.m["anthropic"].last_reply()["text"])

    def test_stream_upstream_error_event(self):
        self.m["anthropic"].stream_error_after = 4  # start, block start, ping, one delta
        for mode in ("stream", "stream_helper"):
            err = self.sdk_error("openai_client.mjs", mode, self.ask(), self.oa_url)
            self.assertIn("Overloaded (mock anthropic)", err["message"],
                          "%s: the upstream's error reaches the SDK as an error: %r"
                          % (mode, err))

    def test_stream_upstream_dies(self):
        self.m["anthropic"].stream_die_after = 4
        err = self.sdk_error("openai_client.mjs", "stream", self.ask(), self.oa_url)
        self.assertEqual(err["kind"], "sdk", err)
        self.assertEqual(self.m["anthropic"].count_path(MSGS), 1)

    def test_error_400_in_openai_shape(self):
        self.m["anthropic"].on(MSGS, MockResponse.json(
            {"type": "error", "error": {"type": "invalid_request_error",
                                        "message": "messages: text content blocks must be "
                                                   "non-empty"}}, 400))
        err = self.sdk_error("openai_client.mjs", "create", self.ask(), self.oa_url)
        self.assertEqual(err["status"], 400, err)
        self.assertEqual(err["name"], "BadRequestError", err)
        self.assertIn("text content blocks must be non-empty", err["message"])
        self.assertIsInstance(err["body"], dict, err)
        self.assertIn("text content blocks must be non-empty", err["body"].get("message", ""),
                      "OpenAI error body {error: {message, type}}: %r" % err)

    def test_error_529_overloaded_is_503(self):
        self.m["anthropic"].on(MSGS, MockResponse.json(
            {"type": "error", "error": {"type": "overloaded_error",
                                        "message": "Overloaded"}}, 529))
        err = self.sdk_error("openai_client.mjs", "create", self.ask(), self.oa_url)
        self.assertEqual(err["status"], 503, err)
        self.assertIn("Overloaded", err["message"])


# =============================================================================================
class AnthropicSDKToOpenAI(Base):
    """The @anthropic-ai/sdk (POST /v1/messages) served by an OpenAI provider."""

    def ask(self, **kw):
        req = {"model": "gpt-4o-mini", "max_tokens": 300, "system": SYSTEM,
               "messages": [{"role": "user", "content": "Hello there \u00e9\U0001f642"}]}
        req.update(kw)
        return req

    def test_text(self):
        out = self.anthropic("create", self.ask(temperature=0.5, stop_sequences=["END"],
                                                metadata={"user_id": "user-42"}))
        msg = out["message"]
        req, body = self.only_request("openai", CHAT)
        reply = self.m["openai"].last_reply()
        self.assertOpenAIUpstreamHeaders(req)
        self.assertEqual(body["model"], "gpt-4o-mini")
        self.assertEqual(body["messages"][0], {"role": "system", "content": SYSTEM})
        self.assertEqual(len(body["messages"]), 2, body)
        self.assertEqual(body["messages"][1]["role"], "user")
        u = body["messages"][1]["content"]
        self.assertEqual(u if isinstance(u, str) else "".join(p["text"] for p in u),
                         "Hello there \u00e9\U0001f642")
        self.assertEqual(body.get("max_tokens", body.get("max_completion_tokens")), 300)
        self.assertEqual(body["temperature"], 0.5)
        self.assertIn(body["stop"], (["END"], "END"))
        self.assertEqual(body.get("user"), "user-42")
        self.assertFalse(body.get("stream", False))
        self.assertEqual(msg["type"], "message")
        self.assertEqual(msg["role"], "assistant")
        self.assertSameId(msg["id"], reply["id"])
        self.assertEqual(msg["model"], "gpt-4o-mini")
        self.assertEqual(msg["block_types"], ["text"])
        self.assertEqual(msg["text"], reply["text"])
        self.assertEqual(msg["stop_reason"], "end_turn")
        self.assertAnthropicUsage(msg["usage"], reply)

    def test_stream_text(self):
        out = self.anthropic("stream", self.ask())
        msg = out["message"]
        _, body = self.only_request("openai", CHAT)
        reply = self.m["openai"].last_reply()
        self.assertIs(body.get("stream"), True)
        self.assertEqual(body.get("stream_options"), {"include_usage": True},
                         "usage is asked for so it can be reported")
        self.assertEqual(msg["text"], reply["text"])
        self.assertEqual([d for d in out["text_deltas"] if d], reply["pieces"],
                         "each content delta becomes one text_delta, in order")
        self.assertEqual(msg["stop_reason"], "end_turn")
        self.assertEqual(msg["model"], "gpt-4o-mini")
        self.assertSameId(msg["id"], reply["id"])
        self.assertAnthropicUsage(msg["usage"], reply)
        self.assertEqual(out["events"][0], "message_start")
        self.assertEqual(out["events"][-2:], ["message_delta", "message_stop"])

    def test_stream_raw_event_grammar(self):
        self.m["openai"].tool_inputs = {"get_weather": WEATHER_INPUT, "get_time": TIME_INPUT}
        self.m["openai"].openai_tool_text = "Checking both."
        out = self.sdk("anthropic_client.mjs", "stream_raw", self.ask(tools=anthropic_tools(2)),
                       self.an_url)
        blocks = self.assertAnthropicEventGrammar(out["events"])
        self.assertEqual(blocks, ["text", "tool_use", "tool_use"])
        reply = self.m["openai"].last_reply()
        md = [e for e in out["events"] if e["type"] == "message_delta"][0]
        self.assertEqual(md["delta"]["stop_reason"], "tool_use")
        self.assertEqual(md["usage"]["output_tokens"], reply["usage"]["output"],
                         "message_delta carries the output tokens of the usage chunk")

    def test_tool_calls(self):
        self.m["openai"].tool_inputs = {"get_weather": WEATHER_INPUT, "get_time": TIME_INPUT}
        out = self.anthropic("create", self.ask(tools=anthropic_tools(2),
                                                tool_choice={"type": "any"}))
        msg = out["message"]
        _, body = self.only_request("openai", CHAT)
        reply = self.m["openai"].last_reply()
        self.assertEqual(body["tools"], openai_tools(2),
                         "tools -> {type: function, function: {name, description, parameters}}")
        self.assertEqual(body.get("tool_choice"), "required")
        self.assertEqual(msg["stop_reason"], "tool_use")
        self.assertEqual(msg["block_types"], ["tool_use", "tool_use"])
        self.assertAnthropicToolUses(msg, reply)
        self.assertAnthropicUsage(msg["usage"], reply)

    def test_stream_tool_calls(self):
        self.m["openai"].tool_inputs = {"get_weather": WEATHER_INPUT, "get_time": TIME_INPUT}
        self.m["openai"].openai_tool_text = "Checking both."
        out = self.anthropic("stream", self.ask(tools=anthropic_tools(2)))
        msg = out["message"]
        reply = self.m["openai"].last_reply()
        self.assertEqual(msg["stop_reason"], "tool_use")
        self.assertEqual(msg["block_types"], ["text", "tool_use", "tool_use"])
        self.assertEqual(msg["text"], "Checking both.")
        self.assertAnthropicToolUses(msg, reply)
        self.assertAnthropicUsage(msg["usage"], reply)
        self.assertEqual("".join(out["json_deltas"]),
                         "".join(tc["arguments"] for tc in reply["tool_calls"]),
                         "input_json_delta pieces carry the arguments as sent")

    def test_multi_turn_with_tool_results(self):
        self.m["openai"].tool_inputs = {"get_weather": WEATHER_INPUT, "get_time": TIME_INPUT}
        first = self.ask(tools=anthropic_tools(2))
        m1 = self.anthropic("create", first)["message"]
        self.assertEqual(len(m1["tool_uses"]), 2, m1)
        self.m["openai"].clear()
        msgs = first["messages"] + [
            {"role": "assistant", "content": m1["content"]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": m1["tool_uses"][0]["id"],
                 "content": "18C and sunny"},
                {"type": "tool_result", "tool_use_id": m1["tool_uses"][1]["id"],
                 "content": [{"type": "text", "text": "09:30"}]}]}]
        out = self.anthropic("stream", dict(first, messages=msgs))
        _, body = self.only_request("openai", CHAT)
        reply = self.m["openai"].last_reply()
        self.assertEqual(out["message"]["text"],
                         "openai got tool result: 18C and sunny | 09:30")
        self.assertEqual(out["message"]["text"], reply["text"])
        self.assertEqual(out["message"]["stop_reason"], "end_turn")
        roles = [m["role"] for m in body["messages"]]
        self.assertEqual(roles, ["system", "user", "assistant", "tool", "tool"],
                         body["messages"])
        asst = body["messages"][2]
        self.assertEqual([(tc["id"], tc["type"], tc["function"]["name"],
                           json.loads(tc["function"]["arguments"]))
                          for tc in asst["tool_calls"]],
                         [(u["id"], "function", u["name"], u["input"])
                          for u in m1["tool_uses"]])
        tools_msgs = body["messages"][3:]
        self.assertEqual([t["tool_call_id"] for t in tools_msgs],
                         [u["id"] for u in m1["tool_uses"]])
        got = [t["content"] if isinstance(t["content"], str) else
               "".join(p["text"] for p in t["content"]) for t in tools_msgs]
        self.assertEqual(got, ["18C and sunny", "09:30"])

    def test_stop_max_tokens(self):
        outs = self.anthropic_many([("create", self.ask(max_tokens=4)),
                                    ("stream", self.ask(max_tokens=4))])
        for out, reply in zip(outs, self.m["openai"].replies):
            self.assertEqual(reply["finish_openai"], "length")
            self.assertEqual(out["message"]["stop_reason"], "max_tokens", out["mode"])
            self.assertEqual(out["message"]["text"], reply["text"])

    def test_fallback_anthropic_500_to_openai(self):
        out = self.anthropic("stream", self.ask(model="fba-model"))
        self.assertEqual(self.m["anfail"].count_path(MSGS), 1, "the primary was tried")
        self.assertAnthropicUpstreamHeaders(self.m["anfail"].requests_to(MSGS)[0], "anfail")
        req, body = self.only_request("openai", CHAT)
        self.assertOpenAIUpstreamHeaders(req)
        self.assertEqual(body["messages"][0], {"role": "system", "content": SYSTEM})
        reply = self.m["openai"].last_reply()
        self.assertEqual(out["message"]["text"], reply["text"])
        self.assertAnthropicUsage(out["message"]["usage"], reply)

    def test_fallback_anthropic_529_to_openai(self):
        self.m["anfail"].on(MSGS, seq(MockResponse.json(
            {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, 529),
            None))
        req = {"model": "fba-same", "max_tokens": 50,
               "messages": [{"role": "user", "content": "Hi"}]}
        # fba: anfail (Anthropic) -> openai; a 529 from anfail fails over.
        out = self.anthropic("create", req)
        self.assertEqual(self.m["anfail"].count_path(MSGS), 1)
        self.assertEqual(out["message"]["text"], self.m["openai"].last_reply()["text"])

    def test_tool_choice_mapping(self):
        cases = [({"type": "auto"}, "auto"), ({"type": "none"}, "none"),
                 ({"type": "any"}, "required"),
                 ({"type": "tool", "name": "get_time"},
                  {"type": "function", "function": {"name": "get_time"}}),
                 ({"type": "auto", "disable_parallel_tool_use": True}, "auto")]
        self.anthropic_many([("create", self.ask(tools=anthropic_tools(2), tool_choice=c))
                             for c, _ in cases])
        bodies = self.bodies("openai", CHAT)
        self.assertEqual([b.get("tool_choice") for b in bodies], [w for _, w in cases])
        self.assertIs(bodies[-1].get("parallel_tool_calls"), False,
                      "disable_parallel_tool_use -> parallel_tool_calls: false")

    def test_large_responses(self):
        big = "".join("line %05d: caf\u00e9 \u2713 \U0001f642 lorem ipsum dolor sit amet\n" % i
                      for i in range(4000))
        self.m["openai"].text_override = big
        self.m["openai"].n_pieces = 400
        self.m["openai"].chunk_delay = 0
        self.m["openai"].tool_inputs = {"get_weather": {"blob": big[:100000],
                                                        "n": list(range(500))}}
        create, stream, tools = self.anthropic_many([
            ("create", self.ask()), ("stream", self.ask()),
            ("stream", self.ask(tools=anthropic_tools(1)))])
        self.assertEqual(create["message"]["text"], big)
        self.assertEqual(stream["message"]["text"], big)
        self.assertEqual(len([d for d in stream["text_deltas"] if d]), 400)
        self.assertAnthropicToolUses(tools["message"], self.m["openai"].last_reply())

    def test_usage_with_cached_tokens(self):
        self.m["openai"].cache_tokens = (40, 0)
        outs = self.anthropic_many([("create", self.ask()), ("stream", self.ask())])
        for out, reply in zip(outs, self.m["openai"].replies):
            self.assertAnthropicUsage(out["message"]["usage"], reply, out["mode"] + ": ")

    def test_unsupported_fields_dropped(self):
        self.anthropic("create", self.ask(top_k=5))
        _, body = self.only_request("openai", CHAT)
        self.assertNotIn("top_k", body)

    def test_images(self):
        req = self.ask(messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG_B64}}]}])
        out = self.anthropic("create", req)
        _, body = self.only_request("openai", CHAT)
        self.assertEqual(body["messages"][1], {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG_B64}}]})
        self.assertEqual(out["message"]["text"], self.m["openai"].last_reply()["text"])

    def test_stream_upstream_error_event(self):
        self.m["openai"].stream_error_after = 3  # role chunk and two content chunks
        err = self.sdk_error("anthropic_client.mjs", "stream", self.ask(), self.an_url)
        self.assertIn("Overloaded (mock openai)", err["message"],
                      "the upstream's error reaches the SDK as an error: %r" % err)

    def test_stream_upstream_dies(self):
        self.m["openai"].stream_die_after = 3
        for mode in ("stream", "stream_raw"):
            err = self.sdk_error("anthropic_client.mjs", mode, self.ask(), self.an_url)
            self.assertEqual(err["kind"], "sdk", err)

    def test_error_400_in_anthropic_shape(self):
        self.m["openai"].on(CHAT, MockResponse.json(
            {"error": {"message": "Invalid 'messages[1].content': string too long",
                       "type": "invalid_request_error", "param": "messages", "code": None}},
            400))
        err = self.sdk_error("anthropic_client.mjs", "create", self.ask(), self.an_url)
        self.assertEqual(err["status"], 400, err)
        self.assertEqual(err["name"], "BadRequestError", err)
        self.assertIsInstance(err["body"], dict, err)
        self.assertEqual(err["body"].get("type"), "error", err)
        self.assertEqual(err["body"]["error"]["type"], "invalid_request_error", err)
        self.assertIn("string too long", err["body"]["error"]["message"])


# =============================================================================================
class SameDialectBaseline(Base):
    """Each SDK against a provider of its own dialect (passthrough): the same checks hold."""

    def test_openai_sdk_to_openai(self):
        self.m["openai"].tool_inputs = {"get_weather": WEATHER_INPUT}
        req = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": SYSTEM},
                                                    {"role": "user", "content": "Hi"}]}
        create, stream, helper = self.openai_many([
            ("create", req),
            ("stream", dict(req, tools=openai_tools(1), stream_options={"include_usage": True})),
            ("stream_helper", req)])
        replies = self.m["openai"].replies
        reqs = self.m["openai"].requests_to(CHAT)
        self.assertEqual(len(reqs), 3)
        self.assertOpenAIUpstreamHeaders(reqs[0])
        self.assertEqual(reqs[0].json()["messages"], req["messages"])
        self.assertEqual(create["completion"]["id"], replies[0]["id"])
        self.assertEqual(create["completion"]["content"], replies[0]["text"])
        self.assertEqual(create["completion"]["finish_reason"], "stop")
        self.assertOpenAIUsage(create["completion"]["usage"], replies[0])
        self.assertEqual(stream["problems"], [])
        self.assertEqual(stream["completion"]["finish_reason"], "tool_calls")
        self.assertOpenAIToolCalls(stream["completion"], replies[1])
        self.assertOpenAIUsage(stream["completion"]["usage"], replies[1])
        self.assertEqual(helper["completion"]["content"], replies[2]["text"])
        self.assertUntouched("anthropic", "oafail", "anfail")

    def test_anthropic_sdk_to_anthropic(self):
        self.m["anthropic"].tool_inputs = {"get_weather": WEATHER_INPUT}
        req = {"model": "claude-3-5-haiku-20241022", "max_tokens": 200, "system": SYSTEM,
               "messages": [{"role": "user", "content": "Hi"}]}
        create, stream, raw = self.anthropic_many([
            ("create", req), ("stream", dict(req, tools=anthropic_tools(1))),
            ("stream_raw", req)])
        replies = self.m["anthropic"].replies
        reqs = self.m["anthropic"].requests_to(MSGS)
        self.assertEqual(len(reqs), 3)
        self.assertAnthropicUpstreamHeaders(reqs[0])
        self.assertEqual(reqs[0].json()["system"], SYSTEM)
        self.assertEqual(reqs[0].json()["messages"], req["messages"])
        self.assertEqual(create["message"]["id"], replies[0]["id"])
        self.assertEqual(create["message"]["text"], replies[0]["text"])
        self.assertEqual(create["message"]["stop_reason"], "end_turn")
        self.assertAnthropicUsage(create["message"]["usage"], replies[0])
        self.assertEqual(stream["message"]["stop_reason"], "tool_use")
        self.assertEqual(stream["message"]["block_types"], ["text", "tool_use"])
        self.assertAnthropicToolUses(stream["message"], replies[1])
        self.assertAnthropicUsage(stream["message"]["usage"], replies[1])
        self.assertEqual(self.assertAnthropicEventGrammar(raw["events"]), ["text"])
        self.assertUntouched("openai", "oafail", "anfail")

# =============================================================================================
class Concurrent(Base):
    """Translated streams of both directions at the same time through one agent thread: each
    client gets its own conversation, nothing crosses over."""

    def test_parallel_translated_streams(self):
        import threading
        for n in ("anthropic", "openai"):
            self.m[n].n_pieces = 20
            self.m[n].chunk_delay = 0.05  # a stream lasts ~1 s: they overlap
        jobs = []
        for i in range(3):
            mode = "stream" if i else "create"
            oa = {"model": "claude-3-5-haiku-20241022",
                  "messages": [{"role": "user", "content": "oa client %d" % i}]}
            if i:
                oa["stream_options"] = {"include_usage": True}
            jobs.append(("openai_client.mjs", mode, self.oa_url, oa))
            jobs.append(("anthropic_client.mjs", mode, self.an_url,
                         {"model": "gpt-4o-mini", "max_tokens": 100,
                          "messages": [{"role": "user", "content": "an client %d" % i}]}))
        results = [None] * len(jobs)

        def run(k):
            script, mode, url, req = jobs[k]
            results[k] = self._node(script, {"base_url": url, "mode": mode, "request": req,
                                             "timeout_ms": 20000})

        threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(NODE_TIMEOUT + 5)
        replies = {r["text"]: r for n in ("anthropic", "openai") for r in self.m[n].replies}
        for (script, mode, _, req), (p, out) in zip(jobs, results):
            self.assertEqual(p.returncode, 0, "%s %s: %s %s\n%s" % (script, mode, p.stdout,
                                                                   p.stderr, self._context()))
            said = req["messages"][0]["content"]
            if script == "openai_client.mjs":
                c = out["completion"]
                self.assertIn("you said: " + said + " ", c["content"])
                reply = replies[c["content"]]
                self.assertSameId(c["id"], reply["id"])
                self.assertOpenAIUsage(c["usage"], reply)
                if mode == "stream":
                    self.assertEqual(out["problems"], [])
            else:
                msg = out["message"]
                self.assertIn("you said: " + said + " ", msg["text"])
                reply = replies[msg["text"]]
                self.assertSameId(msg["id"], reply["id"])
                self.assertAnthropicUsage(msg["usage"], reply)
        self.assertEqual(self.m["anthropic"].count_path(MSGS), 3)
        self.assertEqual(self.m["openai"].count_path(CHAT), 3)
        spans = [(r["mock_stream"].sent_at[0], r["mock_stream"].sent_at[-1])
                 for r in replies.values() if r.get("mock_stream")]
        self.assertEqual(len(spans), 4)
        overlap = max(sum(1 for a, b in spans if a <= t <= b) for t, _ in spans)
        self.assertGreaterEqual(overlap, 2, "the streams were meant to run at the same time: "
                                            "%r" % spans)


if __name__ == "__main__":
    lrtest.main()
