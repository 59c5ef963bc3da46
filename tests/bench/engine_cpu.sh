#!/usr/bin/env bash
# Where the CPU goes at 32 connections (issue #3): wrk POSTs a chat completion through plain
# HAProxy (SPOE filter removed, path straight to nginx) and through the engine (HAProxy ->
# SPOE -> lunaroute-agent's engine -> nginx), two interleaved rounds each, and prints each
# process group's CPU (utime + stime from /proc, in µs per request) and the machine's busy
# and idle time per request. Numbers move with machine load: compare variants of one run.
#
# Usage: tests/bench/engine_cpu.sh [--bin-dir build/bin] [--secs 5] [--threads 1] [--agent-tcp] [--conns 32]
# Needs: haproxy, nginx, wrk, python3, curl. Not run in CI.
set -euo pipefail
BENCH_NAME=engine_cpu
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build/bin threads=1 secs=5 conns=32
while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) bin=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --agent-tcp) agent_tcp=1; shift ;;
    --conns) conns=$2; shift 2 ;;
    *) echo "usage: $0 [--bin-dir DIR] [--secs N] [--threads N] [--agent-tcp] [--conns N]" >&2; exit 2 ;;
  esac
done
. "$root/tests/bench/lib.sh"
need haproxy nginx wrk python3 curl
need_bins "$bin"
CHAT_JSON='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}'
up_port=$(free_port)
nginx_conf "$up_port" "
    location = /v1/chat/completions { default_type application/json; return 200 '$CHAT_JSON'; }
    location / { default_type application/json; return 200 '{\"object\":\"list\",\"data\":[]}'; }"
start nginx nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
wait_port "$up_port"
fe_eng=$(free_port) fe_plain=$(free_port) eng_port=$(free_port)
render_stack "$fe_eng" "$eng_port" "$threads" "$up_port"
plain_config "$work/eng" "$work/plain" "$fe_eng" "$fe_plain" "/v1/chat/completions lr_provider_openai"
start_pair "$work/eng" "$work/plain" "$fe_eng" "$fe_plain" "$eng_port"
REQ='{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
wrk_post_script "$work/post.lua" "'$REQ'"
engine_reqs() { engine_requests "$eng_port" openai; }
before=$(engine_reqs)
curl -sf -o /dev/null -H 'content-type: application/json' -d "$REQ" "http://127.0.0.1:$fe_eng/v1/chat/completions"
curl -sf -o /dev/null -H 'content-type: application/json' -d "$REQ" "http://127.0.0.1:$fe_plain/v1/chat/completions"
[ $(($(engine_reqs) - before)) -eq 1 ] || { echo "engine_cpu.sh: the engine did not count exactly the engine frontend's request" >&2; exit 1; }
hz=$(getconf CLK_TCK)
ticks() { # pids -> their utime + stime, in clock ticks
  local t=0 p
  for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo $t
}
hp=$(pgrep -f "haproxy -W -f $work/" | tr '\n' ' ')
ag=$(pgrep -f "lunaroute-agent --settings $work" | tr '\n' ' ')
ng=$(ps -o pid= -g "${pids[0]}" | tr '\n' ' ') # nginx master and worker
echo "engine_cpu: wrk ${secs}s at $conns connections, agent threads $threads; CPU per request in us"
for v in plain engine plain engine; do
  port=$([ $v = engine ] && echo "$fe_eng" || echo "$fe_plain")
  a0=$(ticks $ag) h0=$(ticks $hp) n0=$(ticks $ng) s0=$(head -1 /proc/stat)
  out=$(wrk -t 2 -c "$conns" -d "${secs}s" -s "$work/post.lua" "http://127.0.0.1:$port/v1/chat/completions")
  s1=$(head -1 /proc/stat) a1=$(ticks $ag) h1=$(ticks $hp) n1=$(ticks $ng)
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then echo "engine_cpu.sh: wrk reported errors:" >&2; echo "$out" >&2; exit 1; fi
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  python3 - "$v" "$rps" "$secs" "$hz" "$((h1 - h0))" "$((a1 - a0))" "$((n1 - n0))" "$s0" "$s1" <<'PY'
import sys
v, rps, secs, hz, h, a, n, s0, s1 = sys.argv[1:]
reqs = float(rps) * float(secs)
d = [int(y) - int(x) for x, y in zip(s0.split()[1:], s1.split()[1:])]
busy, idle = sum(d) - d[3] - d[4], d[3]  # user nice system [idle] [iowait] irq softirq ...
us = lambda t: float(t) * 1e6 / int(hz) / reqs
print(f"{v:<7} {float(rps):>9.0f} req/s  haproxy {us(h):5.1f}  agent {us(a):5.1f}  nginx {us(n):5.1f}"
      f"  machine busy {us(busy):5.1f}  idle {us(idle):5.1f}")
PY
done
