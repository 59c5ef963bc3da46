#!/usr/bin/env bash
# The routing engine's CPU cost per request, counted rather than timed: the agent runs under
# valgrind's callgrind (instructions executed in user space: stable on a loaded machine) or
# strace -c (system calls), behind the rendered HAProxy config (SPOE filter on, so the
# SPOP classification is counted too), in front of nginx returning a fixed chat completion.
# A warm-up, then counters zeroed, then exactly N requests over C keep-alive connections.
#
# Usage: tests/bench/engine_cost.sh [--bin-dir build/bin] [--requests 2000] [--conns 4]
#                                   [--body small|256k] [--tool callgrind|strace]
#                                   [--threads 1] [--agent-tcp] [--top 25] [--out FILE]
# Prints instructions (or system calls) per request and the top functions by self cost.
# Needs: haproxy, nginx, python3, valgrind (callgrind) or strace. Not run in CI.
set -euo pipefail
BENCH_NAME=engine_cost
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build/bin requests=2000 conns=4 body=small tool=callgrind threads=1 top=25 out=""
while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) bin=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --body) body=$2; shift 2 ;;
    --tool) tool=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --agent-tcp) agent_tcp=1; shift ;;
    --top) top=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--bin-dir DIR] [--requests N] [--conns N] [--body small|256k] [--tool callgrind|strace] [--threads N] [--agent-tcp] [--top N] [--out FILE]" >&2; exit 2 ;;
  esac
done
case $body in small|256k) ;; *) echo "engine_cost.sh: --body small|256k" >&2; exit 2 ;; esac
case $tool in callgrind) tool_cmd=valgrind ;; strace) tool_cmd=strace ;; *) echo "engine_cost.sh: --tool callgrind|strace" >&2; exit 2 ;; esac
. "$root/tests/bench/lib.sh"
need haproxy nginx python3 curl "$tool_cmd"
need_bins "$bin"


CHAT_JSON='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}'
up_port=$(free_port)
nginx_conf "$up_port" "
    location = /v1/chat/completions { default_type application/json; return 200 '$CHAT_JSON'; }"
start nginx nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
wait_port "$up_port"

fe=$(free_port) eng=$(free_port)
render_stack "$fe" "$eng" "$threads" "$up_port"
if [ $tool = callgrind ]; then
  start agent valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" --dump-instr=no \
    "$bin/lunaroute-agent" --settings "$work/eng/agent.json"
else
  start agent "$bin/lunaroute-agent" --settings "$work/eng/agent.json"
fi
agent_pid=${pids[-1]}
start haproxy haproxy -W -f "$work/eng/haproxy.cfg" -p "$work/eng/haproxy.pid"
wait_port "$fe" 600; wait_port "$eng" 600 # the agent may be under valgrind: slow to start
# spop-check marks the agent up (slowly under valgrind): wait for one request through
for i in $(seq 120); do
  curl -sf -o /dev/null -H 'content-type: application/json' -d '{"model":"gpt-4o","messages":[]}' \
    "http://127.0.0.1:$fe/v1/chat/completions" && break
  [ "$i" = 120 ] && { echo "engine_cost.sh: the chain never answered" >&2; exit 1; }
  sleep 0.5
done

cat > "$work/client.py" <<'PY'
import http.client, sys, threading
port, n, conns, body = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if body == "256k":
    payload = ('{"model":"gpt-4o","messages":[{"role":"user","content":"' + "abcdefgh" * 32768 + '"}]}').encode()
else:
    payload = b'{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
bad = []
def worker(k):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(k):
        c.request("POST", "/v1/chat/completions", payload, {"Content-Type": "application/json"})
        r = c.getresponse()
        d = r.read()
        if r.status != 200 or b"chatcmpl-bench" not in d:
            bad.append((r.status, d[:200]))
    c.close()
ts = [threading.Thread(target=worker, args=(n // conns + (1 if i < n % conns else 0),)) for i in range(conns)]
for t in ts: t.start()
for t in ts: t.join()
if bad:
    sys.exit("bad responses: %d, first %r" % (len(bad), bad[0]))
PY
python3 "$work/client.py" "$fe" 200 "$conns" "$body" # warm-up: connections, caches
if [ $tool = callgrind ]; then
  callgrind_control -z "$agent_pid" >/dev/null 2>&1
  python3 "$work/client.py" "$fe" "$requests" "$conns" "$body"
  callgrind_control -d "$agent_pid" >/dev/null 2>&1
  sleep 1
  dump=$(ls -t "$work"/cg.out.* | head -1)
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); t = $1} END {print t}')
  python3 -c "import sys; t, n = int(sys.argv[1]), int(sys.argv[2]); print(f'agent instructions per request: {t/n:,.0f} ({t:,} for {n} requests, body {sys.argv[3]}, {sys.argv[4]} conns, {sys.argv[5]} thread(s))')" \
    "$total" "$requests" "$body" "$conns" "$threads"
  callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null | sed -n "/^Ir/,\$p" | sed -n "1,$((top + 2))p"
  [ -z "$out" ] || cp "$dump" "$out"
else
  strace -c -f -q -p "$agent_pid" -o "$work/strace.txt" &
  spid=$!
  sleep 1
  python3 "$work/client.py" "$fe" "$requests" "$conns" "$body"
  kill -INT $spid; wait $spid 2>/dev/null || true
  python3 - "$work/strace.txt" "$requests" <<'PY'
import sys
rows, n = [], int(sys.argv[2])
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls = int(f[3]); rows.append((calls, f[-1]))
tot = sum(c for c, _ in rows)
print(f"agent system calls per request: {tot/n:.2f} ({tot} for {n} requests)")
for c, name in sorted(rows, reverse=True):
    print(f"  {name:<16} {c/n:6.2f}")
PY
  [ -z "$out" ] || cp "$work/strace.txt" "$out"
fi
