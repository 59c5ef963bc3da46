#!/usr/bin/env bash
# Routing-engine overhead benchmark (issue #3). In one run, side by side, to the same fast
# local upstream (nginx returning a fixed chat completion, or a fixed SSE body for `?sse=1`):
#   engine: HAProxy (rendered standalone config, SPOE filter on) -> lunaroute-agent's routing
#           engine -> nginx
#   plain : the same rendered HAProxy config with the SPOE filter removed and
#           /v1/chat/completions routed straight to the provider backend (nginx)
# Measures (rounds interleaved so both variants see the same machine noise; medians shown):
#   1. added p50/p99 latency at 1 connection, non-streaming POST /v1/chat/completions (wrk)
#   2. throughput ratio engine/plain at 32 connections (wrk)
#   3. added time to first SSE byte on a stream (Python client, keep-alive, many iterations)
#   4. 512 concurrent slow streams through the engine: no stall, agent VmHWM <= 64 MiB
#   5. added latency of a 256 KiB request body at 1 connection (wrk)
#   6. Portkey's open-source gateway (npm @portkey-ai/gateway, --headless) on the same nginx,
#      throughput at 32 connections (skipped with --no-portkey or when npm/node are missing)
#
# Usage: tests/bench/engine.sh [--bin-dir build/bin] [--secs 5] [--rounds 3]
#                              [--ttfb-iters 2000] [--streams 512] [--no-portkey]
#                              [--threads 1]   (agent.threads)
#                              [--agent-tcp]   (HAProxy -> agent over loopback TCP, not the
#                                               unix sockets of agent.local_sockets)
# Needs: haproxy, nginx, wrk, python3 (and node + npm for Portkey). Not run in CI.
set -euo pipefail
BENCH_NAME=engine
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build/bin secs=5 rounds=3 ttfb_iters=2000 streams=512 portkey=1 threads=1
while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) bin=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --ttfb-iters) ttfb_iters=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --no-portkey) portkey=0; shift ;;
    --threads) threads=$2; shift 2 ;;
    --agent-tcp) agent_tcp=1; shift ;;
    *) echo "usage: $0 [--bin-dir DIR] [--secs N] [--rounds N] [--ttfb-iters N] [--streams N] [--no-portkey] [--threads N] [--agent-tcp]" >&2; exit 2 ;;
  esac
done
. "$root/tests/bench/lib.sh"
need haproxy nginx wrk python3
need_bins "$bin"
if [ $portkey = 1 ] && ! { command -v node >/dev/null && command -v npm >/dev/null; }; then
  note "node/npm missing: Portkey comparison skipped"; portkey=0
fi

CHAT_JSON='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}'
SSE_BODY='data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"}}]}\n\ndata: {"id":"chatcmpl-bench","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" world"}}]}\n\ndata: [DONE]\n\n'

# --- upstream 1: nginx, fixed JSON (or SSE with ?sse=1)
up_port=$(free_port)
nginx_conf "$up_port" "
    location = /v1/chat/completions {
      if (\$arg_sse) { rewrite ^ /__sse last; }
      if (\$arg_big) { rewrite ^ /__big last; }
      default_type application/json;
      return 200 '$CHAT_JSON';
    }
    location = /__sse {
      internal;
      default_type text/event-stream;
      return 200 '$SSE_BODY';
    }
    # \`return\` answers before the request body is read: for the big-body test the
    # upstream must consume the whole body first, so it goes through nginx's proxy module
    # (request buffering on) to an inner location. Both variants pay that extra hop.
    location = /__big {
      internal;
      proxy_pass http://127.0.0.1:$up_port/__inner;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
    location = /__inner { default_type application/json; return 200 '$CHAT_JSON'; }
    location / { default_type application/json; return 200 '{\"object\":\"list\",\"data\":[]}'; }"
start nginx nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
wait_port "$up_port"

# --- upstream 2: a slow streaming upstream for the concurrent-streams test (Python asyncio):
# every request gets N_EVENTS SSE events, one every GAP seconds, chunked.
slow_port=$(free_port)
slow_events=10 slow_gap=0.5
start slowup python3 "$root/tests/bench/slow_upstream.py" "$slow_port" "$slow_events" "$slow_gap"
wait_port "$slow_port"

# --- the stack under test, rendered by lunaroute-control
fe_eng=$(free_port) fe_plain=$(free_port) eng_port=$(free_port)
render_stack "$fe_eng" "$eng_port" "$threads" "$up_port" \
  '  slow:      {provider_type: openai, base_url: "http://127.0.0.1:'"$slow_port"'", http_client: {max_retries: 0}}
routing:
  rules: [{name: slow, model_pattern: "^slow-", primary: slow}]'
# plain: no SPOE filter, the chat path straight to the openai provider backend (nginx), its
# own frontend port and sockets, no stats frontend.
plain_config "$work/eng" "$work/plain" "$fe_eng" "$fe_plain" "/v1/chat/completions lr_provider_openai"

start_pair "$work/eng" "$work/plain" "$fe_eng" "$fe_plain" "$eng_port"

REQ='{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
# Both paths must reach nginx; the engine path must really go through the engine.
for p in $fe_eng $fe_plain; do
  body=$(curl -sf -H 'content-type: application/json' -d "$REQ" "http://127.0.0.1:$p/v1/chat/completions") ||
    { echo "engine.sh: request via :$p failed" >&2; exit 1; }
  case $body in *chatcmpl-bench*) ;; *) echo "engine.sh: unexpected body via :$p: $body" >&2; exit 1 ;; esac
  for q in '?big=1' '?sse=1'; do
    body=$(curl -sf -H 'content-type: application/json' -d "$REQ" "http://127.0.0.1:$p/v1/chat/completions$q") ||
      { echo "engine.sh: request $q via :$p failed" >&2; exit 1; }
    case $body in *chatcmpl-bench*) ;; *) echo "engine.sh: unexpected body for $q via :$p: $body" >&2; exit 1 ;; esac
  done
done
engine_reqs() { engine_requests "$eng_port" openai; }
before=$(engine_reqs)
curl -sf -o /dev/null -H 'content-type: application/json' -d "$REQ" "http://127.0.0.1:$fe_eng/v1/chat/completions"
curl -sf -o /dev/null -H 'content-type: application/json' -d "$REQ" "http://127.0.0.1:$fe_plain/v1/chat/completions"
after=$(engine_reqs)
[ $((after - before)) -eq 1 ] || { echo "engine.sh: the engine counted $((after - before)) requests for 1 via the engine frontend and 1 via plain (want 1)" >&2; exit 1; }

# --- wrk scripts
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$REQ'
LUA
cat > "$work/post256k.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"' .. string.rep("abcdefgh", 32768) .. '"}]}'
LUA

engine_wrk() { # port conns script [query] -> "rps p50_us p99_us"
  run_wrk "http://127.0.0.1:$1/v1/chat/completions${4:-}" "$2" "$3" "$secs"
}

# --- TTFB client: keep-alive connection, N streaming requests, time from the request
# written to the first SSE byte ("data:") read; prints the median and p90 in microseconds.
cat > "$work/ttfb.py" <<'PY'
import socket, statistics, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
body = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}'
req = (b"POST /v1/chat/completions?sse=1 HTTP/1.1\r\nHost: bench\r\n"
       b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def one():
    t0 = time.perf_counter()
    s.sendall(req)
    buf = b""
    first = None
    while True:
        d = s.recv(65536)
        if not d:
            raise SystemExit("connection closed by the server")
        buf += d
        if first is None and b"data:" in buf:
            first = time.perf_counter() - t0
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if not sep:
            continue
        h = head.lower()
        if b"transfer-encoding: chunked" in h:
            if rest.endswith(b"\r\n0\r\n\r\n") or rest == b"0\r\n\r\n":
                break
        else:
            cl = int(h.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(rest) >= cl:
                break
    if b"[DONE]" not in buf or not buf.startswith(b"HTTP/1.1 200"):
        raise SystemExit("bad stream response: %r" % buf[:300])
    return first
for _ in range(50):
    one()
v = sorted(one() for _ in range(n))
print("%.1f %.1f" % (statistics.median(v) * 1e6, v[int(len(v) * 0.9)] * 1e6))
PY

declare -A res
for r in $(seq "$rounds"); do
  note "round $r/$rounds"
  for c in 1 32; do
    for v in plain engine; do
      port=$([ $v = engine ] && echo "$fe_eng" || echo "$fe_plain")
      res[$v,$c,$r]=$(engine_wrk "$port" "$c" "$work/post.lua")
    done
  done
  for v in plain engine; do
    port=$([ $v = engine ] && echo "$fe_eng" || echo "$fe_plain")
    res[$v,big,$r]=$(engine_wrk "$port" 1 "$work/post256k.lua" "?big=1")
    res[$v,ttfb,$r]=$(python3 "$work/ttfb.py" "$port" "$ttfb_iters")
  done
done

# --- 512 concurrent streams through the engine against the slow upstream
note "$streams concurrent streams ($slow_events events, ${slow_gap}s apart)"
cat > "$work/streams.py" <<'PY'
import asyncio, json, sys, time
port, n, n_events, gap = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
body = b'{"model":"slow-bench","stream":true,"messages":[{"role":"user","content":"hi"}]}'
req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
       b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
async def one(i, start):
    await start.wait()
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    t0 = time.monotonic()
    w.write(req)
    await w.drain()
    buf, last, max_gap, events = b"", None, 0.0, 0
    while True:
        d = await r.read(65536)
        if not d:
            break
        now = time.monotonic()
        k = d.count(b"data:")
        if k:
            if last is not None:
                max_gap = max(max_gap, now - last)
            last = now
            events += k
        buf += d
        if b"[DONE]" in buf and buf.endswith(b"0\r\n\r\n"):
            break
    w.close()
    ok = buf.startswith(b"HTTP/1.1 200") and b"[DONE]" in buf and events == n_events + 1
    return ok, max_gap, time.monotonic() - t0, buf[:200]
async def main():
    start = asyncio.Event()
    tasks = [asyncio.create_task(one(i, start)) for i in range(n)]
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    start.set()
    out = await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.monotonic() - t0
    bad = [o for o in out if isinstance(o, BaseException) or not o[0]]
    gaps = [o[1] for o in out if not isinstance(o, BaseException)]
    durs = [o[2] for o in out if not isinstance(o, BaseException)]
    print(json.dumps({"n": n, "failed": len(bad), "max_gap": max(gaps or [0]),
                      "max_duration": max(durs or [0]), "wall": wall,
                      "first_failure": repr(bad[0])[:300] if bad else None}))
asyncio.run(main())
PY
if [ -n "${LR_BENCH_HOLD:-}" ]; then # debugging: keep everything up for a while
  note "holding: nginx :$up_port slow :$slow_port engine-fe :$fe_eng plain-fe :$fe_plain engine :$eng_port work $work"
  sleep "$LR_BENCH_HOLD"
fi
streams_json=$(python3 "$work/streams.py" "$fe_eng" "$streams" "$slow_events" "$slow_gap")
agent_hwm_kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$agent_pid/status")
agent_rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$agent_pid/status")

# --- Portkey gateway on the same nginx (throughput at 32 connections)
pk_rps=""
if [ $portkey = 1 ]; then
  pk_dir=${LR_PORTKEY_DIR:-$work/portkey}
  mkdir -p "$pk_dir"
  if [ ! -f "$pk_dir/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
    note "npm install @portkey-ai/gateway into $pk_dir"
    (cd "$pk_dir" && npm install --no-audit --no-fund --loglevel=error @portkey-ai/gateway >"$work/npm.log" 2>&1) ||
      { note "npm install failed (see below); Portkey skipped"; tail -5 "$work/npm.log" >&2; portkey=0; }
  fi
fi
if [ $portkey = 1 ]; then
  pk_port=$(free_port)
  start portkey env NODE_ENV=production node "$pk_dir/node_modules/@portkey-ai/gateway/build/start-server.js" --headless "--port=$pk_port"
  wait_port "$pk_port"
  cat > "$work/portkey.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
wrk.headers["x-portkey-provider"] = "openai"
wrk.headers["x-portkey-custom-host"] = "http://127.0.0.1:$up_port/v1"
wrk.body = '$REQ'
LUA
  body=$(curl -s -H 'content-type: application/json' -H 'Authorization: Bearer sk-bench' \
         -H 'x-portkey-provider: openai' -H "x-portkey-custom-host: http://127.0.0.1:$up_port/v1" \
         -d "$REQ" "http://127.0.0.1:$pk_port/v1/chat/completions" || true)
  case $body in
    *Hello*) pk_rps=$(engine_wrk "$pk_port" 32 "$work/portkey.lua" | cut -d' ' -f1) ;;
    *) note "Portkey did not proxy to nginx (skipped): $body" ;;
  esac
fi

python3 - "$rounds" "$secs" "$streams_json" "$agent_hwm_kb" "$agent_rss_kb" "${pk_rps:-}" "$ttfb_iters" "$threads" <<PY
import json, os, statistics, sys
rounds, secs = int(sys.argv[1]), sys.argv[2]
st = json.loads(sys.argv[3]); hwm_kb, rss_kb = int(sys.argv[4]), int(sys.argv[5])
pk = float(sys.argv[6]) if sys.argv[6] else None
ttfb_iters = sys.argv[7]
threads = sys.argv[8]
res = {}
$(for k in "${!res[@]}"; do echo "res['$k'] = '${res[$k]}'.split()"; done)
def med(v, c, i):
    return statistics.median(float(res[f"{v},{c},{r}"][i]) for r in range(1, rounds + 1))
print(f"engine benchmark: {rounds} interleaved rounds, wrk {secs}s each, median shown, agent threads {threads}")
print(f"{'variant':<8} {'test':<22} {'req/s':>9} {'p50 us':>9} {'p99 us':>9}")
for c in (1, 32):
    for v in ("plain", "engine"):
        print(f"{v:<8} {'chat POST, '+str(c)+' conn':<22} {med(v,c,0):>9.0f} {med(v,c,1):>9.1f} {med(v,c,2):>9.1f}")
for v in ("plain", "engine"):
    print(f"{v:<8} {'256 KiB body, 1 conn':<22} {med(v,'big',0):>9.0f} {med(v,'big',1):>9.1f} {med(v,'big',2):>9.1f}")
for v in ("plain", "engine"):
    print(f"{v:<8} {'stream TTFB (x'+ttfb_iters+')':<22} {'':>9} {med(v,'ttfb',0):>9.1f} {'p90 '+format(med(v,'ttfb',1),'.1f'):>9}")
if pk is not None:
    print(f"{'portkey':<8} {'chat POST, 32 conn':<22} {pk:>9.0f}")
add50 = med("engine", 1, 1) - med("plain", 1, 1)
add99 = med("engine", 1, 2) - med("plain", 1, 2)
thr = med("engine", 32, 0) / med("plain", 32, 0)
ttfb = med("engine", "ttfb", 0) - med("plain", "ttfb", 0)
big = med("engine", "big", 1) - med("plain", "big", 1)
stall_ok = st["failed"] == 0 and st["max_gap"] < 2.0
rss_ok = hwm_kb <= 64 * 1024
rows = [
    ("added p50, 1 conn", f"{add50:.1f} us", "(info)", None),
    ("added p99, 1 conn", f"{add99:.1f} us", "<= 100 us", add99 <= 100),
    ("throughput ratio, 32 conns", f"{thr:.2f}", ">= 0.50", thr >= 0.5),
    ("added TTFB on a stream (median)", f"{ttfb:.1f} us", "<= 250 us", ttfb <= 250),
    (f"{st['n']} concurrent streams", f"{st['failed']} failed, max event gap {st['max_gap']:.2f} s, "
     f"slowest {st['max_duration']:.2f} s", "no stall", stall_ok),
    ("agent RSS high-water (VmHWM)", f"{hwm_kb/1024:.1f} MiB (now {rss_kb/1024:.1f})", "<= 64 MiB", rss_ok),
    ("256 KiB body added p50, 1 conn", f"{big/1000:.3f} ms", "<= 1 ms", big <= 1000),
]
if pk is not None:
    ours = med("engine", 32, 0)
    rows.append(("Portkey req/s, 32 conns", f"{pk:.0f} (ours {ours:.0f}: {ours/pk:.1f}x)", "(info)", None))
print()
print(f"{'measure':<32} {'result':<52} {'target':<10} ok")
for name, val, target, ok in rows:
    print(f"{name:<32} {val:<52} {target:<10} {'' if ok is None else ('yes' if ok else 'NO')}")
if st["failed"]:
    print("first stream failure:", st["first_failure"])
if os.environ.get("BENCH_RESULTS"):
    t = f"engine ({threads} thread{'s' if threads != '1' else ''})"
    def m(v, c, i, unit=" us"):
        return f"{med(v, c, i):.0f}{unit}"
    out = [
        ("chat, 1 conn, p50", m("plain", 1, 1), m("engine", 1, 1), f"{add50:+.0f} us", "", None),
        ("chat, 1 conn, p99", m("plain", 1, 2), m("engine", 1, 2), f"{add99:+.0f} us", "<= +100 us", add99 <= 100),
        ("chat, 32 conns, req/s", m("plain", 32, 0, ""), m("engine", 32, 0, ""), f"{thr:.2f} of plain", ">= 0.50", thr >= 0.5),
        ("stream, time to first byte", m("plain", "ttfb", 0), m("engine", "ttfb", 0), f"{ttfb:+.0f} us", "<= +250 us", ttfb <= 250),
        ("256 KiB body, 1 conn, p50", m("plain", "big", 1), m("engine", "big", 1), f"{big/1000:+.2f} ms", "<= +1 ms", big <= 1000),
        (f"{st['n']} concurrent streams", "", f"{st['failed']} failed, max gap {st['max_gap']:.2f} s",
         f"agent RSS high-water {hwm_kb/1024:.0f} MiB", "no stall, <= 64 MiB", stall_ok and rss_ok),
    ]
    if pk is not None:
        ours = med("engine", 32, 0)
        out.append(("Portkey gateway, 32 conns, req/s", "", f"{ours:.0f} (Portkey {pk:.0f})", f"{ours/pk:.1f}x Portkey", "", None))
    with open(os.environ["BENCH_RESULTS"], "a") as f:
        for r in out:
            f.write("\t".join([t] + list(r[:5]) + ["" if r[5] is None else ("yes" if r[5] else "no")]) + "\n")
PY
