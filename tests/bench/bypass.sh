#!/usr/bin/env bash
# Bypass overhead benchmark (issue #2). In one run, side by side, to the same fast local
# upstream (nginx returning a fixed JSON body):
#   spoe : HAProxy + lunaroute-agent (the rendered standalone config, SPOE filter on)
#   plain: the same rendered HAProxy config with the SPOE filter line removed (requests are
#          routed by the static ACL classification instead)
# at 1 connection (latency) and 32 connections (throughput). Rounds are interleaved so both
# see the same machine noise; the median of the rounds is reported.
#
# Usage: tests/bench/bypass.sh [--bin-dir build/bin] [--secs 5] [--rounds 3]
# Needs: haproxy, nginx (nginx-light), wrk. Prints a table and the ratios.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build/bin secs=5 rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) bin=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--bin-dir DIR] [--secs N] [--rounds N]" >&2; exit 2 ;;
  esac
done
for c in haproxy nginx wrk; do
  command -v $c >/dev/null || { echo "bypass.sh: $c is not installed (make bench installs it)" >&2; exit 2; }
done
[ -x "$bin/lunaroute-control" ] && [ -x "$bin/lunaroute-agent" ] || {
  echo "bypass.sh: build first (make build)" >&2; exit 2; }

work=$(mktemp -d /tmp/lr-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bypass.sh: port $1 never opened" >&2; return 1
}

# --- upstream: nginx with a fixed JSON body
up_port=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$up_port;
    default_type application/json;
    location / { return 200 '{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3]}],"model":"bench"}'; }
  }
}
NGX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)
wait_port "$up_port"

# --- the stack under test, rendered by lunaroute-control
fe_spoe=$(free_port) fe_plain=$(free_port)
cat > "$work/lunaroute.yaml" <<YAML
providers:
  openai:    {base_url: "http://127.0.0.1:$up_port"}
  anthropic: {base_url: "http://127.0.0.1:$up_port"}
bypass: {enabled: true, provider: auto}
haproxy: {bind: "127.0.0.1:$fe_spoe", stats_bind: "127.0.0.1:$(free_port)", maxconn: 4000}
agent: {spoa_bind: "127.0.0.1:$(free_port)", engine_bind: "127.0.0.1:$(free_port)", threads: 1}
logging: {level: warn}
YAML
"$bin/lunaroute-control" render --config "$work/lunaroute.yaml" --out "$work/spoe" >/dev/null
# The plain variant: same file, no SPOE filter, its own frontend/stats ports and sockets.
mkdir -p "$work/plain"
sed -e '/filter spoe/d' \
    -e "s#127.0.0.1:$fe_spoe#127.0.0.1:$fe_plain#" \
    -e "s#$work/spoe/#$work/plain/#g" "$work/spoe/haproxy.cfg" > "$work/plain/haproxy.cfg"
cp "$work/spoe/routes.map" "$work/plain/routes.map"
# The plain config must not bind the spoe instance's stats port: drop the stats frontend.
python3 - "$work/plain/haproxy.cfg" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s = re.sub(r"\nfrontend lr_stats\n(?:[ \t]+.*\n|\n)*?(?=\S)", "\n", s)
open(p, "w").write(s)
PY

"$bin/lunaroute-agent" --settings "$work/spoe/agent.json" 2>"$work/agent.log" &
pids+=($!)
haproxy -W -f "$work/spoe/haproxy.cfg" -p "$work/spoe/haproxy.pid" 2>"$work/haproxy-spoe.log" &
pids+=($!)
haproxy -W -f "$work/plain/haproxy.cfg" -p "$work/plain/haproxy.pid" 2>"$work/haproxy-plain.log" &
pids+=($!)
wait_port "$fe_spoe"; wait_port "$fe_plain"

# Both paths must really reach nginx, and the SPOE path must really be classified by the agent.
for p in $fe_spoe $fe_plain; do
  body=$(curl -sf "http://127.0.0.1:$p/v1/embeddings") || { echo "bypass.sh: request via :$p failed" >&2; exit 1; }
  case $body in *'"model":"bench"'*) ;; *) echo "bypass.sh: unexpected body via :$p: $body" >&2; exit 1 ;; esac
done
sleep 2 # let spop-check mark the agent up

run_wrk() { # port conns -> "rps p50_us p99_us"
  local out
  out=$(wrk -t "$([ "$2" -gt 1 ] && echo 2 || echo 1)" -c "$2" -d "${secs}s" --latency \
        "http://127.0.0.1:$1/v1/embeddings")
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1000, "s": 1e6}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
sock = re.search(r"Socket errors: (.*)", out)
if errs or sock:
    sys.stderr.write("wrk reported errors:\n" + out)
    sys.exit(1)
print(f"{rps:.0f} {us(*p50.groups()):.1f} {us(*p99.groups()):.1f}")
PY
}

declare -A res
for r in $(seq "$rounds"); do
  for c in 1 32; do
    for v in plain spoe; do
      port=$([ $v = spoe ] && echo "$fe_spoe" || echo "$fe_plain")
      res[$v,$c,$r]=$(run_wrk "$port" "$c")
    done
  done
done

agent_spop_ok=$(grep -c "ERROR\|error" "$work/agent.log" || true)
python3 - "$rounds" "$agent_spop_ok" <<PY
import statistics, sys
rounds = int(sys.argv[1])
res = {}
$(for k in "${!res[@]}"; do echo "res['$k'] = '${res[$k]}'.split()"; done)
def med(v, c, i):
    return statistics.median(float(res[f"{v},{c},{r}"][i]) for r in range(1, rounds + 1))
print(f"bypass benchmark: {rounds} interleaved rounds of ${secs}s each, median shown")
print(f"{'variant':<8} {'conns':>5} {'req/s':>10} {'p50 us':>9} {'p99 us':>9}")
for c in (1, 32):
    for v in ("plain", "spoe"):
        print(f"{v:<8} {c:>5} {med(v,c,0):>10.0f} {med(v,c,1):>9.1f} {med(v,c,2):>9.1f}")
thr = med("spoe", 32, 0) / med("plain", 32, 0)
add50 = med("spoe", 1, 1) - med("plain", 1, 1)
add99 = med("spoe", 1, 2) - med("plain", 1, 2)
print(f"throughput ratio spoe/plain at 32 conns: {thr:.2f}  (target >= 0.70)")
print(f"added p50 at 1 conn: {add50:.1f} us  (target <= 30 us); added p99: {add99:.1f} us")
PY
