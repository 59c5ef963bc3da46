"""Fault suite, provider faults (issue 7): intercepted requests under a bounded load while a
provider refuses connections, hangs, answers slowly, resets mid-stream, or answers bursts of
500 or 429. Providers are llm_mock.LLMMock (real OpenAI/Anthropic wire formats) switched
between behaviours at runtime (mock.on(), refuse()/serve(), stream_die_after).

Every response of the load is checked against the exact expectation of its scenario and
every miss is a failure (lrtest.Load); after each scenario the agent must be back at its
baseline (Stack.check_after_fault: healthy, no sanitizer report, descriptors, nothing in
flight upstream).

Providers have max_retries 0 (one failing request = one failure toward the circuit) and
routing.circuit_breaker failure_threshold FAILS. With THREADS client threads, requests
already sent when the circuit opens still reach the provider: it sees between FAILS and
FAILS + THREADS - 1 of them.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lrtest  # noqa: E402
import llm_mock  # noqa: E402
from lrtest import MockHang, MockResponse  # noqa: E402

CHAT = llm_mock.CHAT
MSGS = llm_mock.MSGS
JSON = ("Content-Type", "application/json")
FAILS = 3
THREADS = 3
TIMEOUT = 1  # timeout_secs of the hanging providers


def provider(ptype="openai", timeout=None):
    hc = {"max_retries": 0}
    if timeout:
        hc["timeout_secs"] = timeout
    return {"provider_type": ptype, "http_client": hc}


def openai_req(model, stream=False):
    def req(rid):
        body = {"model": model, "messages": [{"role": "user", "content": rid}]}
        if stream:
            body["stream"] = True
        return "POST", CHAT, [JSON], json.dumps(body).encode()
    return req


def anthropic_req(model, stream=False):
    def req(rid):
        body = {"model": model, "max_tokens": 64,
                "messages": [{"role": "user", "content": rid}]}
        if stream:
            body["stream"] = True
        return "POST", MSGS, [JSON, ("anthropic-version", "2023-06-01")], json.dumps(body).encode()
    return req


def answered_by(name):
    """A non-streamed OpenAI answer from mock `name` to this very request."""
    def check(rid, status, headers, payload):
        if status != 200:
            return "HTTP %d: %r" % (status, payload[:200])
        try:
            text = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return "not a chat completion: %r" % payload[:200]
        if not text.startswith("[%s] you said: %s " % (name, rid)):
            return "not %s's answer to %s: %r" % (name, rid, text[:120])
        return ""
    return check


def openai_error(statuses, message=None):
    def check(rid, status, headers, payload):
        if status not in statuses:
            return "HTTP %d, want one of %r: %r" % (status, statuses, payload[:200])
        ct = dict((k.lower(), v) for k, v in headers).get("content-type", "")
        if not ct.startswith("application/json"):
            return "content-type %r" % ct
        try:
            doc = json.loads(payload)
        except ValueError:
            return "non-JSON body %r" % payload[:200]
        err = doc.get("error") if isinstance(doc, dict) else None
        if not isinstance(err, dict) or not isinstance(err.get("message"), str) or \
                doc.get("type") == "error":
            return "not an OpenAI error body: %r" % payload[:200]
        if message and message not in err["message"]:
            return "error message %r lacks %r" % (err["message"], message)
        return ""
    return check


def rid_of(req):
    return req.json()["messages"][-1]["content"]


def lat(r):
    return r["t1"] - r["t0"]


class ProviderCase(lrtest.LRTestCase):
    MOCKS = {}      # name -> provider_type
    TIMEOUTS = {}   # name -> timeout_secs
    OPEN_SECS = 30
    RULES = []

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.m = {n: llm_mock.LLMMock(n) for n in cls.MOCKS}
        cls._class_mocks.extend(cls.m.values())
        cfg = {"providers": {n: provider(t, cls.TIMEOUTS.get(n)) for n, t in cls.MOCKS.items()},
               "routing": {"rules": cls.RULES,
                           "circuit_breaker": {"failure_threshold": FAILS,
                                               "success_threshold": 1,
                                               "open_secs": cls.OPEN_SECS}}}
        cls.stack = cls.start_class_stack(mocks=cls.m, config=cfg)
        cls.baseline = cls.stack.fault_baseline()

    def load(self, kinds, duration, pause=0.01):
        load = lrtest.Load(self.stack.port, kinds, pause=pause, duration=duration).start()
        self.addCleanup(load.stop)
        return load

    def metrics(self):
        return self.stack.metrics()

    def m_(self, samples, name, **labels):
        return lrtest.metric(samples, name, **labels)

    def assert_all_ok(self, results, what):
        self.assertTrue(results, "%s: no request ran" % what)
        bad = [r for r in results if not r["ok"]]
        self.assertEqual(bad, [], "%s: %d of %d request(s) failed:\n%s" % (
            what, len(bad), len(results), lrtest.load_summary(what, results)))

    def transitions(self, samples, p):
        return {(f, t): self.m_(samples, "lunaroute_circuit_transitions_total", provider=p,
                                **{"from": f, "to": t})
                for f in ("closed", "open", "half_open") for t in ("closed", "open", "half_open")
                if f != t}


class ProviderFaults(ProviderCase):
    MOCKS = {"hang1": "openai", "hang2": "openai", "hang3": "openai", "slow1": "openai",
             "rst1": "openai", "rsta": "anthropic", "err1": "openai", "err2": "openai",
             "lim1": "openai", "lim2": "openai"}
    TIMEOUTS = {"hang1": TIMEOUT, "hang3": TIMEOUT}
    RULES = [{"name": "hang", "model_pattern": "^hang-", "primary": "hang1",
              "fallbacks": ["hang2"]},
             {"name": "hangsolo", "model_pattern": "^hangsolo-", "primary": "hang3"},
             {"name": "slow", "model_pattern": "^slow-", "primary": "slow1"},
             {"name": "rst", "model_pattern": "^rst-", "primary": "rst1"},
             {"name": "rsta", "model_pattern": "^claude-rst", "primary": "rsta"},
             {"name": "err", "model_pattern": "^err-", "primary": "err1", "fallbacks": ["err2"]},
             {"name": "lim", "model_pattern": "^lim-", "primary": "lim1", "fallbacks": ["lim2"]}]

    def test_hanging_provider(self):
        """timeout_secs honoured: each request the hanging provider got waits TIMEOUT s and is
        answered by the fallback; once the circuit opens the fallback answers at once; with
        no fallback, 504 JSON after TIMEOUT s, then 503 JSON (circuit open)."""
        h1, h3 = self.m["hang1"], self.m["hang3"]
        hangs = []

        def hang(req):
            hangs.append(MockHang(20))
            return hangs[-1]
        h1.on(CHAT, hang)
        h3.on(CHAT, hang)
        m0 = self.metrics()
        hung = lambda m: {rid_of(q) for q in m.requests}  # noqa: E731

        def check_fb(rid, status, headers, payload):
            return answered_by("hang2")(rid, status, headers, payload)

        def check_solo(rid, status, headers, payload):
            if rid in hung(h3):
                return openai_error((504,), "timed out")(rid, status, headers, payload)
            return openai_error((503,), "No provider available")(rid, status, headers, payload)
        results = self.load([lrtest.LoadKind("hang", openai_req("hang-m"), check_fb,
                                             threads=THREADS),
                             lrtest.LoadKind("hangsolo", openai_req("hangsolo-m"), check_solo,
                                             threads=2)], duration=2.5).wait()
        h1.on(CHAT, None)
        h3.on(CHAT, None)
        lrtest.log(lrtest.load_summary("hanging provider", results))
        self.assert_all_ok(results, "hanging provider")
        n1, n3 = len(hung(h1)), len(hung(h3))
        self.assertTrue(FAILS <= n1 <= FAILS + THREADS - 1, "hang1 got %d requests" % n1)
        self.assertTrue(FAILS <= n3 <= FAILS + 1, "hang3 got %d requests" % n3)
        for r in results:
            waited = r["rid"] in hung(h1) or r["rid"] in hung(h3)
            if waited:
                self.assertTrue(TIMEOUT - 0.05 <= lat(r) <= TIMEOUT + 1.0,
                                "%s waited %.2fs for a provider with timeout_secs %d"
                                % (r["rid"], lat(r), TIMEOUT))
            else:
                self.assertLess(lat(r), 0.5, "%s (not sent to the hanging provider) took "
                                             "%.2fs" % (r["rid"], lat(r)))
        # The agent gave up each hanging upstream connection.
        self.assertTrue(lrtest.wait_until(lambda: all(h.closed_at for h in hangs), 3),
                        "hanging upstream connections not closed by the agent")
        m1 = self.metrics()
        self.assertEqual(self.m_(m1, "lunaroute_circuit_state", provider="hang1"), 1)
        self.assertEqual(self.m_(m1, "lunaroute_circuit_state", provider="hang3"), 1)
        fb = lambda m, why: self.m_(m, "lunaroute_fallbacks_total", reason=why)  # noqa: E731
        self.assertEqual(fb(m1, "timeout") - fb(m0, "timeout"), n1,
                         "each timed-out attempt with a fallback counted")
        self.stack.check_after_fault(self.baseline, "after the hanging provider")

    def test_slow_provider(self):
        """Slow answers are no failure; the latency shows in the upstream histogram."""
        s1 = self.m["slow1"]
        delay = 0.4

        def slow(req):
            resp = s1._answer(req, "openai")
            if isinstance(resp, MockResponse):  # streams: chunk_delay between events
                resp.delay = delay
            return resp
        s1.on(CHAT, slow)
        s1.chunk_delay = 0.1
        m0 = self.metrics()

        def check_stream(rid, status, headers, payload):
            if status != 200:
                return "HTTP %d" % status
            evs = lrtest.sse_events(payload)
            text = "".join(
                (json.loads(e["data"])["choices"] or [{}])[0].get("delta", {}).get("content")
                or "" for e in evs if e["data"] and e["data"] != "[DONE]")
            if not evs or evs[-1]["data"] != "[DONE]":
                return "stream did not end with [DONE]: %r" % payload[-200:]
            if not text.startswith("[slow1] you said: %s " % rid):
                return "not slow1's streamed answer: %r" % text[:100]
            return ""
        results = self.load([lrtest.LoadKind("slow", openai_req("slow-m"), answered_by("slow1"),
                                             threads=2),
                             lrtest.LoadKind("slow-stream", openai_req("slow-m", True),
                                             check_stream)], duration=2.0).wait()
        s1.reset()
        lrtest.log(lrtest.load_summary("slow provider", results))
        self.assert_all_ok(results, "slow provider")
        plain = [r for r in results if r["kind"] == "slow"]
        self.assertTrue(all(lat(r) >= delay for r in plain), "an answer faster than the delay")
        m1 = self.metrics()
        n = self.m_(m1, "lunaroute_upstream_duration_seconds_count", provider="slow1") - \
            self.m_(m0, "lunaroute_upstream_duration_seconds_count", provider="slow1")
        total = self.m_(m1, "lunaroute_upstream_duration_seconds_sum", provider="slow1") - \
            self.m_(m0, "lunaroute_upstream_duration_seconds_sum", provider="slow1")
        self.assertEqual(n, len(results), "one upstream attempt per request")
        self.assertGreaterEqual(total / n, delay * len(plain) / len(results),
                                "upstream latency not reflected: mean %.3fs" % (total / n))
        fast = self.m_(m1, "lunaroute_upstream_duration_seconds_bucket", provider="slow1",
                       le="0.25") - self.m_(m0, "lunaroute_upstream_duration_seconds_bucket",
                                            provider="slow1", le="0.25")
        self.assertEqual(fast, 0, "slow attempts counted under 0.25 s")
        self.assertEqual(self.m_(m1, "lunaroute_circuit_state", provider="slow1"), 0)
        self.stack.check_after_fault(self.baseline, "after the slow provider")

    def test_reset_mid_stream(self):
        """The provider sends 3 events, then a TCP RST: the client gets those events and
        an error event in its own dialect, never [DONE] / message_stop."""
        r1, ra = self.m["rst1"], self.m["rsta"]
        for m in (r1, ra):
            m.stream_die_after = 3
            m.stream_die_rst = True
            m.chunk_delay = 0.02

        def check_openai(rid, status, headers, payload):
            if status != 200:
                return "HTTP %d" % status
            evs = [e for e in lrtest.sse_events(payload) if e["data"]]
            if any(e["data"] == "[DONE]" for e in evs):
                return "[DONE] after a broken stream"
            if len(evs) < 2:
                return "want the provider's events, then an error: %r" % payload[-300:]
            first = [json.loads(e["data"]) for e in evs[:-1]]
            if any("choices" not in d for d in first):
                return "not the provider's events before the error: %r" % payload[:300]
            last = json.loads(evs[-1]["data"])
            if not isinstance(last.get("error"), dict) or "message" not in last["error"]:
                return "last event is not an OpenAI error: %r" % evs[-1]
            return ""

        def check_anthropic(rid, status, headers, payload):
            if status != 200:
                return "HTTP %d" % status
            evs = lrtest.sse_events(payload)
            names = [e["event"] for e in evs if e["event"]]
            if "message_stop" in names:
                return "message_stop after a broken stream"
            if not names or names[0] != "message_start" or names[-1] != "error":
                return "want message_start ... error, got %r" % names
            last = json.loads(evs[-1]["data"])
            if last.get("type") != "error" or not isinstance(last.get("error"), dict):
                return "not an Anthropic error event: %r" % evs[-1]
            return ""
        results = self.load([lrtest.LoadKind("rst-openai", openai_req("rst-m", True),
                                             check_openai, threads=2),
                             lrtest.LoadKind("rst-anthropic", anthropic_req("claude-rst", True),
                                             check_anthropic)], duration=2.0).wait()
        counts = (r1.count(), ra.count())
        for m in (r1, ra):
            m.reset()
        lrtest.log(lrtest.load_summary("provider reset mid-stream", results))
        self.assert_all_ok(results, "provider reset mid-stream")
        self.assertEqual(counts, (len([r for r in results if r["kind"] == "rst-openai"]),
                                  len([r for r in results if r["kind"] == "rst-anthropic"])),
                         "one upstream attempt per request, none retried after the break")
        self.stack.check_after_fault(self.baseline, "after the mid-stream resets")

    def test_500_burst(self):
        """err1 answers 500: err2 answers every request; err1's circuit opens after FAILS
        failures (counted in /metrics) and err1 is no longer asked."""
        e1 = self.m["err1"]
        e1.on(CHAT, MockResponse.json({"error": {"message": "boom", "type": "server_error"}},
                                      500))
        m0 = self.metrics()
        results = self.load([lrtest.LoadKind("err", openai_req("err-m"), answered_by("err2"),
                                             threads=THREADS)], duration=1.5).wait()
        e1.on(CHAT, None)
        lrtest.log(lrtest.load_summary("500 burst", results))
        self.assert_all_ok(results, "500 burst")
        n = e1.count()
        self.assertTrue(FAILS <= n <= FAILS + THREADS - 1, "err1 got %d requests" % n)
        m1 = self.metrics()
        fb = lambda m, why: self.m_(m, "lunaroute_fallbacks_total", reason=why)  # noqa: E731
        # Each 500 fell back; once open, err1 is planned after err2: no fallback needed.
        self.assertEqual(fb(m1, "upstream_5xx") - fb(m0, "upstream_5xx"), n)
        self.assertEqual(self.m_(m1, "lunaroute_circuit_state", provider="err1"), 1)
        tr = self.transitions(m1, "err1")
        want = {k: 0 for k in tr}
        want[("closed", "open")] = 1
        self.assertEqual(tr, want)
        self.assertEqual(self.m_(m1, "lunaroute_requests_total", provider="err2", status="200")
                         - self.m_(m0, "lunaroute_requests_total", provider="err2",
                                   status="200"), len(results))
        self.stack.check_after_fault(self.baseline, "after the 500 burst")

    def test_429_burst(self):
        """lim1 answers two 429s with Retry-After: 2: those requests and every request of the
        next 2 s go to lim2; lim1 is not asked again before the window ends, then serves
        again. A 429 is no failure for the circuit breaker."""
        l1 = self.m["lim1"]
        window = 2.0
        limited = MockResponse.json({"error": {"message": "slow down",
                                               "type": "rate_limit_error"}}, 429,
                                    [("Retry-After", "2")])
        l1.on(CHAT, lrtest.seq(limited, limited, None))
        m0 = self.metrics()

        def check(rid, status, headers, payload):
            if answered_by("lim1")(rid, status, headers, payload) == "":
                return ""
            return answered_by("lim2")(rid, status, headers, payload)
        results = self.load([lrtest.LoadKind("lim", openai_req("lim-m"), check,
                                             threads=THREADS)], duration=window + 4.0).wait()
        l1.on(CHAT, None)
        lrtest.log(lrtest.load_summary("429 burst", results))
        self.assert_all_ok(results, "429 burst")
        reqs = l1.requests_to(CHAT)
        self.assertGreaterEqual(len(reqs), 3, "lim1 never asked again after the window")
        t_limited = reqs[1].time  # the second 429 (the window restarts with it)
        later = [q.time - t_limited for q in reqs[2:]]
        lrtest.log("429 burst: lim1 asked %d times; after the second 429 at %r s"
                   % (len(reqs), ["%.2f" % d for d in later]))
        # Requests already planned when the 429 arrived may still reach lim1 at once.
        early = [d for d in later if d < window - 0.1]
        self.assertTrue(all(d < 0.2 for d in early), "lim1 asked inside its Retry-After "
                                                     "window: %r" % later)
        self.assertLessEqual(len(early), THREADS - 1)
        self.assertTrue([d for d in later if d >= window - 0.1],
                        "lim1 not used again after the window")
        by1 = {r["rid"] for r in results if answered_by("lim1")(
            r["rid"], r["status"], r["headers"], r["body"]) == ""}
        self.assertEqual(len(by1), len(reqs) - 2, "every request lim1 answered 200 reached "
                                                  "the client")
        m1 = self.metrics()
        fb = lambda m, why: self.m_(m, "lunaroute_fallbacks_total", reason=why)  # noqa: E731
        self.assertEqual(fb(m1, "rate_limited") - fb(m0, "rate_limited"), 2)
        tr = self.transitions(m1, "lim1")
        self.assertEqual(tr, {k: 0 for k in tr}, "a 429 changed lim1's circuit: %r" % tr)
        self.stack.check_after_fault(self.baseline, "after the 429 burst")


class RefusedProvider(ProviderCase):
    """ref1 (primary) and ref2 (fallback) refuse connections in turn, then come back."""
    MOCKS = {"ref1": "openai", "ref2": "openai"}
    # ref1 opens early in step 1 and must still be open when step 2 checks /readyz, about
    # 2.5 s later (two 1 s loads and the metrics reads): with 2 s, a slow run saw ref1
    # ready to probe again and /readyz 200.
    OPEN_SECS = 4
    RULES = [{"name": "ref", "model_pattern": "^ref-", "primary": "ref1",
              "fallbacks": ["ref2"]}]

    def test_refused_connections(self):
        st = self.stack
        r1, r2 = self.m["ref1"], self.m["ref2"]
        self.addCleanup(r1.serve)
        self.addCleanup(r2.serve)
        kind = lambda check: lrtest.LoadKind("ref", openai_req("ref-m"), check,  # noqa: E731
                                             threads=THREADS)
        fb = lambda m, why: self.m_(m, "lunaroute_fallbacks_total", reason=why)  # noqa: E731

        # 1. ref1 refuses: ref2 answers everything; ref1's circuit opens after FAILS.
        m0 = self.metrics()
        r1.refuse()
        res1 = self.load([kind(answered_by("ref2"))], duration=1.0).wait()
        lrtest.log(lrtest.load_summary("ref1 refusing", res1))
        self.assert_all_ok(res1, "ref1 refusing")
        m1 = self.metrics()
        n = fb(m1, "connect_error") - fb(m0, "connect_error")
        self.assertTrue(FAILS <= n <= FAILS + THREADS - 1, "%d connect errors" % n)
        self.assertEqual(self.m_(m1, "lunaroute_circuit_state", provider="ref1"), 1)
        self.assertEqual(self.transitions(m1, "ref1")[("closed", "open")], 1)
        self.assertEqual(st.http("GET", "/readyz").status, 200, "ref2 still closed")

        # 2. ref2 refuses too: every request is a JSON error, at once; /readyz 503.
        r2.refuse()
        res2 = self.load([kind(openai_error((502, 503)))], duration=1.0).wait()
        lrtest.log(lrtest.load_summary("both refusing", res2))
        self.assert_all_ok(res2, "both refusing")
        self.assertTrue(all(lat(r) < 0.5 for r in res2), "a refused request was slow")
        self.assertIn(503, {r["status"] for r in res2}, "circuits never all open")
        m2 = self.metrics()
        self.assertEqual(self.m_(m2, "lunaroute_circuit_state", provider="ref2"), 1)
        r = st.http("GET", "/readyz")
        self.assertEqual(r.status, 503, r)
        self.assertTrue((r.header("content-type") or "").startswith("application/json"), r)
        self.assertEqual(st.http("GET", "/healthz").status, 200, "liveness unaffected")

        # 3. Both serve again. No request for open_secs: both circuits are then half-open
        # (every opening happened before), /readyz is 200, the first request is ref1's probe,
        # it closes ref1's circuit (success_threshold 1) and ref1 answers everything again.
        r1.serve()
        r2.serve()
        time.sleep(self.OPEN_SECS + 0.2)
        self.assertEqual(st.http("GET", "/readyz").status, 200, "not ready after open_secs")
        r = st.http("POST", CHAT, [JSON], openai_req("ref-m")("probe")[3])
        self.assertEqual(answered_by("ref1")("probe", r.status, r.headers, r.body), "", r)
        res3 = self.load([kind(answered_by("ref1"))], duration=1.0).wait()
        self.assert_all_ok(res3, "after recovery")
        m3 = self.metrics()
        self.assertEqual(self.m_(m3, "lunaroute_circuit_state", provider="ref1"), 0)
        tr = self.transitions(m3, "ref1")
        for k in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
            self.assertGreaterEqual(tr[k], 1, "transition %s->%s not counted: %r" % (k + (tr,)))
        st.check_after_fault(self.baseline, "after refused connections")


if __name__ == "__main__":
    lrtest.main()
