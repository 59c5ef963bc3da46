#!/usr/bin/env bash
# Bypass overhead benchmark (issue #2). In one run, side by side, to the same fast local
# upstream (nginx returning a fixed JSON body):
#   spoe : HAProxy + lunaroute-agent (the rendered standalone config, SPOE filter on)
#   plain: the same rendered HAProxy config with the SPOE filter line removed (requests are
#          routed by the static ACL classification instead)
# at 1 connection (latency) and 32 connections (throughput). Rounds are interleaved so both
# see the same machine noise; the median of the rounds is reported. With BENCH_RESULTS set,
# result rows are appended to that file for tests/bench/run.sh.
#
# Usage: tests/bench/bypass.sh [--bin-dir build/bin] [--secs 5] [--rounds 3]
# Needs: haproxy, nginx (nginx-light), wrk. Prints a table and the ratios.
set -euo pipefail
BENCH_NAME=bypass
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
. "$root/tests/bench/lib.sh"
need haproxy nginx wrk python3
need_bins "$bin"

# --- upstream: nginx with a fixed JSON body
up_port=$(free_port)
nginx_conf "$up_port" "
    default_type application/json;
    location / { return 200 '{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.1,0.2,0.3]}],\"model\":\"bench\"}'; }"
start nginx nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
wait_port "$up_port"

# --- the stack under test, rendered by lunaroute-control
fe_spoe=$(free_port) fe_plain=$(free_port) eng_port=$(free_port)
cat >"$work/lunaroute.yaml" <<YAML
providers:
  openai:    {base_url: "http://127.0.0.1:$up_port"}
  anthropic: {base_url: "http://127.0.0.1:$up_port"}
bypass: {enabled: true, provider: auto}
haproxy: {bind: "127.0.0.1:$fe_spoe", stats_bind: "127.0.0.1:$(free_port)", maxconn: 4000}
agent: {spoa_bind: "127.0.0.1:$(free_port)", engine_bind: "127.0.0.1:$eng_port", threads: 1}
logging: {level: warn}
YAML
"$bin/lunaroute-control" render --config "$work/lunaroute.yaml" --out "$work/spoe" >/dev/null
# The plain variant: same file, no SPOE filter (the static ACLs route), its own ports.
plain_config "$work/spoe" "$work/plain" "$fe_spoe" "$fe_plain"

start agent "$bin/lunaroute-agent" --settings "$work/spoe/agent.json"
start haproxy-spoe haproxy -W -f "$work/spoe/haproxy.cfg" -p "$work/spoe/haproxy.pid"
start haproxy-plain haproxy -W -f "$work/plain/haproxy.cfg" -p "$work/plain/haproxy.pid"
wait_port "$fe_spoe"; wait_port "$fe_plain"

# Both paths must really reach nginx.
for p in $fe_spoe $fe_plain; do
  body=$(curl -sf "http://127.0.0.1:$p/v1/embeddings") || { echo "bypass.sh: request via :$p failed" >&2; exit 1; }
  case $body in *'"model":"bench"'*) ;; *) echo "bypass.sh: unexpected body via :$p: $body" >&2; exit 1 ;; esac
done
sleep 2 # let spop-check mark the agent up
echo 'wrk.method = "GET"' >"$work/get.lua"

declare -A res
for r in $(seq "$rounds"); do
  note "round $r/$rounds"
  for c in 1 32; do
    for v in plain spoe; do
      port=$([ $v = spoe ] && echo "$fe_spoe" || echo "$fe_plain")
      res[$v,$c,$r]=$(run_wrk "http://127.0.0.1:$port/v1/embeddings" "$c" "$work/get.lua" "$secs")
    done
  done
done
# The SPOE variant must really have been classified by the agent, not by the static ACLs.
classified=$(curl -sf "http://127.0.0.1:$eng_port/metrics" |
  awk '/^lunaroute_classifications_total\{route="bypass"/ {s+=$2} END {print s+0}')

python3 - "$rounds" "$secs" "$classified" <<PY
import os, statistics, sys
rounds, secs, classified = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
res = {}
$(for k in "${!res[@]}"; do echo "res['$k'] = '${res[$k]}'.split()"; done)
def med(v, c, i):
    return statistics.median(float(res[f"{v},{c},{r}"][i]) for r in range(1, rounds + 1))
print(f"bypass benchmark: {rounds} interleaved rounds of {secs}s each, median shown")
print(f"{'variant':<8} {'conns':>5} {'req/s':>10} {'p50 us':>9} {'p99 us':>9}")
for c in (1, 32):
    for v in ("plain", "spoe"):
        print(f"{v:<8} {c:>5} {med(v,c,0):>10.0f} {med(v,c,1):>9.1f} {med(v,c,2):>9.1f}")
thr = med("spoe", 32, 0) / med("plain", 32, 0)
add50 = med("spoe", 1, 1) - med("plain", 1, 1)
add99 = med("spoe", 1, 2) - med("plain", 1, 2)
print(f"throughput ratio spoe/plain at 32 conns: {thr:.2f}  (target >= 0.70)")
print(f"added p50 at 1 conn: {add50:.1f} us  (target <= 30 us); added p99: {add99:.1f} us")
print(f"requests classified by the agent: {classified}")
if classified == 0:
    sys.exit("bypass.sh: the agent classified no request: the SPOE variant did not use it")
rows = [
    ("bypass, 32 conns, req/s", f"{med('plain',32,0):.0f}", f"{med('spoe',32,0):.0f}", f"{thr:.2f} of plain", ">= 0.70", thr >= 0.70),
    ("bypass, 1 conn, p50", f"{med('plain',1,1):.0f} us", f"{med('spoe',1,1):.0f} us", f"{add50:+.0f} us", "<= 30 us", add50 <= 30),
    ("bypass, 1 conn, p99", f"{med('plain',1,2):.0f} us", f"{med('spoe',1,2):.0f} us", f"{add99:+.0f} us", "", None),
]
if os.environ.get("BENCH_RESULTS"):
    with open(os.environ["BENCH_RESULTS"], "a") as f:
        for r in rows:
            f.write("\t".join(["bypass"] + [str(x) for x in r[:5]] + ["" if r[5] is None else ("yes" if r[5] else "no")]) + "\n")
PY
