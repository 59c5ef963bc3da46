#!/usr/bin/env bash
# Soak benchmark (issue #7), not run in CI: --secs (default 600) of mixed traffic through
# HAProxy + agent to a local nginx:
#   wrk, 16 keep-alive connections, rotating bypassed (/v1/embeddings), intercepted
#   (/v1/chat/completions) and streamed intercepted (?sse=1) requests;
#   four Python clients opening a new connection per stream to a slow streaming upstream (5
#   events 0.1 s apart), half of the streams abandoned after the first event (a client
#   disconnect mid-stream, which must cancel the upstream transfer).
# Every --every seconds it samples the agent's RSS and open descriptors. After the warm-up
# (--warmup, default 60 s) RSS must stay within 10% of its warm-up high-water mark and the
# descriptor count (which moves with the connections in flight at the sample) within 10% of
# its warm-up median, in median, for every quarter of the rest of the run; once the load
# stops, the agent must hold no more descriptors (+4 pooled connections) than it did idle
# after a 10 s burst of the same load before the soak. It prints
# the curve and exits 1 when any of that fails or any request failed.
#
# Usage: tests/bench/soak.sh [--bin-dir build/bin] [--secs 600] [--warmup 60] [--every 10]
set -euo pipefail
BENCH_NAME=soak
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build/bin secs=600 warmup=60 every=10
while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) bin=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --every) every=$2; shift 2 ;;
    *) echo "usage: $0 [--bin-dir DIR] [--secs N] [--warmup N] [--every N]" >&2; exit 2 ;;
  esac
done
. "$root/tests/bench/lib.sh"
need haproxy nginx wrk python3
need_bins "$bin"
[ "$warmup" -lt "$secs" ] || { echo "soak.sh: --warmup must be shorter than --secs" >&2; exit 2; }

CHAT_JSON='{"id":"chatcmpl-soak","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}'
SSE_BODY='data: {"id":"chatcmpl-soak","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"}}]}\n\ndata: {"id":"chatcmpl-soak","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" world"}}]}\n\ndata: [DONE]\n\n'
up_port=$(free_port)
nginx_conf "$up_port" "
    location = /v1/chat/completions {
      if (\$arg_sse) { rewrite ^ /__sse last; }
      default_type application/json;
      return 200 '$CHAT_JSON';
    }
    location = /__sse { internal; default_type text/event-stream; return 200 '$SSE_BODY'; }
    location / { default_type application/json; return 200 '{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.1]}]}'; }"
start nginx nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
wait_port "$up_port"

slow_port=$(free_port)
start slowup python3 "$root/tests/bench/slow_upstream.py" "$slow_port" 5 0.1
wait_port "$slow_port"

fe=$(free_port) eng_port=$(free_port)
cat >"$work/lunaroute.yaml" <<YAML
providers:
  openai:    {base_url: "http://127.0.0.1:$up_port", http_client: {max_retries: 0}}
  anthropic: {base_url: "http://127.0.0.1:$up_port"}
  slow:      {provider_type: openai, base_url: "http://127.0.0.1:$slow_port", http_client: {max_retries: 0}}
routing:
  rules: [{name: slow, model_pattern: "^slow-", primary: slow}]
haproxy: {bind: "127.0.0.1:$fe", stats_bind: "127.0.0.1:$(free_port)", maxconn: 4000}
agent: {spoa_bind: "127.0.0.1:$(free_port)", engine_bind: "127.0.0.1:$eng_port", threads: 1}
logging: {level: warn}
YAML
"$bin/lunaroute-control" render --config "$work/lunaroute.yaml" --out "$work/run" >/dev/null
start agent "$bin/lunaroute-agent" --settings "$work/run/agent.json"
agent_pid=${pids[-1]}
start haproxy haproxy -W -f "$work/run/haproxy.cfg" -p "$work/run/haproxy.pid"
wait_port "$fe"; wait_port "$eng_port"
sleep 2 # spop-check marks the agent up

cat >"$work/mixed.lua" <<'LUA'
local reqs, i = {}, 0
function init(args)
  local chat = '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
  local stream = '{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}'
  local h = {["Content-Type"] = "application/json"}
  reqs[1] = wrk.format("POST", "/v1/embeddings", h, '{"model":"e","input":"hi"}')
  reqs[2] = wrk.format("POST", "/v1/chat/completions", h, chat)
  reqs[3] = wrk.format("POST", "/v1/chat/completions?sse=1", h, stream)
end
function request()
  i = i % 3 + 1
  return reqs[i]
end
LUA
cat >"$work/streams.py" <<'PY'
import socket, sys, time
port, until = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
body = b'{"model":"slow-soak","stream":true,"messages":[{"role":"user","content":"hi"}]}'
req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
       b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
done = abandoned = failed = 0
n = 0
while time.monotonic() < until:
    n += 1
    walk_away = n % 2 == 0
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        buf = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
            if walk_away and b"data:" in buf:
                break
            if b"[DONE]" in buf:
                break
        s.close()
        if not buf.startswith(b"HTTP/1.1 200") or b"data:" not in buf:
            failed += 1
        elif walk_away:
            abandoned += 1
        elif b"[DONE]" in buf:
            done += 1
        else:
            failed += 1
    except OSError:
        failed += 1
print(done, abandoned, failed)
PY

# Descriptors once the load has stopped: HAProxy's idle server connections and libcurl's
# connection cache close on their own timers, so wait until the count stops moving.
idle_fds() {
  local prev=-1 n i
  for i in $(seq 30); do
    sleep 1
    n=$(ls "/proc/$agent_pid/fd" | wc -l)
    [ "$n" = "$prev" ] && break
    prev=$n
  done
  echo "$n"
}
load_start() { # secs tag: wrk + the four stream clients in the background
  wrk -t 2 -c 16 -d "${1}s" -s "$work/mixed.lua" "http://127.0.0.1:$fe" >"$work/wrk.$2" 2>&1 &
  load_pids=($!)
  local i
  for i in 1 2 3 4; do
    python3 "$work/streams.py" "$fe" "$1" >"$work/streams.$2.$i" 2>&1 &
    load_pids+=($!)
  done
}
load_wait() {
  local p
  for p in "${load_pids[@]}"; do wait "$p" || true; done
}
# The idle baseline is taken after a short run of the same load, so connection pools are
# as full in it as they will be at the end.
note "warm-up burst (10 s)"
load_start 10 burst
load_wait
fds_before=$(idle_fds)
note "soaking for ${secs}s (warm-up ${warmup}s, sample every ${every}s)"
load_start "$secs" soak
: >"$work/samples"
t0=$(date +%s)
while kill -0 "${load_pids[0]}" 2>/dev/null; do
  now=$(($(date +%s) - t0))
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$agent_pid/status")
  fds=$(ls "/proc/$agent_pid/fd" | wc -l)
  echo "$now $rss $fds" >>"$work/samples"
  sleep "$every"
done
load_wait
mv "$work/wrk.soak" "$work/wrk.out"
awk '{d+=$1; a+=$2; f+=$3} END {print d, a, f}' "$work"/streams.soak.* >"$work/streams.out"
kill -0 "$agent_pid" || { echo "soak.sh: the agent died" >&2; cat "$work/agent.err" >&2; exit 1; }
fds_after=$(idle_fds)

python3 - "$work/samples" "$warmup" "$work/wrk.out" "$work/streams.out" "$fds_before" "$fds_after" <<'PY'
import re, statistics, sys
samples = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
warmup = int(sys.argv[2])
wrk, streams = open(sys.argv[3]).read(), open(sys.argv[4]).read().split()
warm = [s for s in samples if s[0] <= warmup] or samples[:1]
after = [s for s in samples if s[0] > warmup]
ref_rss = max(s[1] for s in warm)
top = max(s[1] for s in samples)
print(f"{'t (s)':>6} {'RSS KiB':>9} {'fds':>5}")
for t, rss, fds in samples:
    print(f"{t:>6} {rss:>9} {fds:>5}  {'#' * max(1, round(40 * rss / top))}")
reqs = re.search(r"(\d+) requests in", wrk)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
sock = re.search(r"Socket errors: (.*)", wrk)
done, abandoned, failed = map(int, streams) if len(streams) == 3 else (0, 0, -1)
max_rss = max((s[1] for s in after), default=ref_rss)
fds_before, fds_after = int(sys.argv[5]), int(sys.argv[6])
med_warm = statistics.median(s[2] for s in warm)
quarters = [after[i * len(after) // 4:(i + 1) * len(after) // 4] for i in range(4)]
med_q = [statistics.median(s[2] for s in q) for q in quarters if q]
rss_ok = max_rss <= ref_rss * 1.10
# a handful of pooled connections may differ between the two idle points
fds_ok = all(m <= med_warm * 1.10 for m in med_q) and fds_after <= fds_before + 4
traffic_ok = reqs and not non2xx and not sock and failed == 0
print(f"wrk: {reqs.group(1) if reqs else '?'} requests, "
      f"{non2xx.group(1) if non2xx else 0} non-2xx, socket errors: {sock.group(1) if sock else 'none'}")
print(f"stream client: {done} complete, {abandoned} abandoned mid-stream, {failed} failed")
print(f"agent RSS after warm-up: max {max_rss} KiB vs warm-up high-water {ref_rss} KiB "
      f"({100.0 * (max_rss - ref_rss) / ref_rss:+.1f}%): {'flat' if rss_ok else 'GREW'}")
print(f"agent fds under load: median per quarter after warm-up {med_q} vs warm-up median "
      f"{med_warm:g}; idle before {fds_before}, idle after {fds_after}: {'flat' if fds_ok else 'GREW'}")
sys.exit(0 if rss_ok and fds_ok and traffic_ok else 1)
PY
