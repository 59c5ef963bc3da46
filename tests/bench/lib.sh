# Shared helpers of the benchmarks (sourced, not run). Set BENCH_NAME first; sets $work
# (a temp dir removed at exit) and the pids array (every process started is killed at exit,
# by pid and by process group).
: "${BENCH_NAME:?set BENCH_NAME before sourcing lib.sh}"
work=$(mktemp -d "/tmp/lr-bench-$BENCH_NAME.XXXXXX")
pids=()
bench_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5 # time to exit cleanly (an agent under valgrind writes its profile)
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  # HAProxy -W workers and nginx workers are children of what we started, in the process
  # group that setsid gave it (group id = its pid).
  for p in "${pids[@]}"; do kill -9 -- "-$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap bench_cleanup EXIT INT TERM

note() { echo "[$BENCH_NAME] $*" >&2; }

need() { # commands that must be installed
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null || { echo "$BENCH_NAME: $c is not installed (make bench installs it)" >&2; exit 2; }
  done
}

need_bins() { # dir: the built binaries must be there
  [ -x "$1/lunaroute-control" ] && [ -x "$1/lunaroute-agent" ] || {
    echo "$BENCH_NAME: build first (make build), or pass --bin-dir" >&2; exit 2; }
}

start() { # name cmd...: runs in its own session (process group = its pid), logs in $work
  local name=$1; shift
  setsid "$@" >"$work/$name.out" 2>"$work/$name.err" </dev/null &
  pids+=($!)
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # port [tries of 50 ms, default 200]
  for _ in $(seq "${2:-200}"); do
    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$BENCH_NAME: port $1 never opened" >&2; return 1
}

nginx_conf() { # port locations-text: writes $work/nginx/nginx.conf for one server
  mkdir -p "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<NGX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_max_body_size 4m;
  client_body_buffer_size 512k;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$1 backlog=4096;
$2
  }
}
NGX
}

# plain_config ENG_DIR PLAIN_DIR ENG_PORT PLAIN_PORT 'path backend' ...: the rendered
# config of ENG_DIR with the SPOE filter removed, its stats frontend dropped, its bind moved
# to PLAIN_PORT and, for each 'path backend' pair, that exact path sent straight to that
# provider backend (before the map lookup: the first matching use_backend wins).
plain_config() {
  local eng=$1 plain=$2 fe_eng=$3 fe_plain=$4; shift 4
  mkdir -p "$plain"
  sed -e '/filter spoe/d' -e "s#127.0.0.1:$fe_eng#127.0.0.1:$fe_plain#" \
      -e "s#$eng/#$plain/#g" "$eng/haproxy.cfg" >"$plain/haproxy.cfg"
  cp "$eng/routes.map" "$plain/routes.map"
  python3 - "$plain/haproxy.cfg" "$@" <<'PY'
import re, sys
p, pairs = sys.argv[1], sys.argv[2:]
s = open(p).read()
s = re.sub(r"\nfrontend lr_stats\n(?:[ \t]+.*\n|\n)*?(?=\S)", "\n", s)
lines = "".join(r"\1use_backend %s if { path %s }" % (b, a) for a, b in (x.split() for x in pairs))
s, n = re.subn(r"(\n[ \t]+)(use_backend %\[var\(txn\.lunaroute\.backend\))", lines + r"\1\2", s, count=1)
assert n == 1, "use_backend line not found in the rendered config"
open(p, "w").write(s)
PY
}

# render_stack FE_PORT ENG_PORT THREADS UP_PORT [EXTRA_YAML]: writes $work/lunaroute.yaml
# (openai and anthropic on http://127.0.0.1:UP_PORT, the HAProxy frontend on FE_PORT, the
# engine on ENG_PORT, agent.threads THREADS; EXTRA_YAML is appended: more providers under
# `providers:` must be indented by two spaces and come first) and renders it into $work/eng.
# agent_tcp=1 (set by --agent-tcp) makes HAProxy reach the agent over loopback TCP instead of
# its unix sockets (agent.local_sockets: false).
agent_tcp=${agent_tcp:-0}
render_stack() {
  local extra=${5:-}
  {
    echo "providers:"
    echo "  openai:    {base_url: \"http://127.0.0.1:$4\", http_client: {max_retries: 0}}"
    echo "  anthropic: {base_url: \"http://127.0.0.1:$4\"}"
    [ -n "$extra" ] && printf '%s\n' "$extra"
    echo "bypass: {enabled: true, provider: auto}"
    echo "haproxy: {bind: \"127.0.0.1:$1\", stats_bind: \"127.0.0.1:$(free_port)\", maxconn: 4000}"
    echo "agent: {spoa_bind: \"127.0.0.1:$(free_port)\", engine_bind: \"127.0.0.1:$2\", threads: $3$([ "$agent_tcp" = 1 ] && echo ', local_sockets: false')}"
    echo "logging: {level: warn}"
  } >"$work/lunaroute.yaml"
  "$bin/lunaroute-control" render --config "$work/lunaroute.yaml" --out "$work/eng" >/dev/null
}

# start_pair ENG_DIR PLAIN_DIR FE_ENG FE_PLAIN ENG_PORT: the agent of ENG_DIR (its pid in
# $agent_pid), HAProxy on both rendered configs; returns once the three ports listen and
# spop-check has had time to mark the agent up.
start_pair() {
  start agent "$bin/lunaroute-agent" --settings "$1/agent.json"
  agent_pid=${pids[-1]}
  start haproxy-eng haproxy -W -f "$1/haproxy.cfg" -p "$1/haproxy.pid"
  start haproxy-plain haproxy -W -f "$2/haproxy.cfg" -p "$2/haproxy.pid"
  wait_port "$3"; wait_port "$4"; wait_port "$5"
  sleep 2
}

# engine_requests ENG_PORT [PROVIDER]: the engine's lunaroute_requests_total (for PROVIDER)
engine_requests() {
  curl -sf "http://127.0.0.1:$1/metrics" |
    awk -v p="${2:-}" 'index($0, "lunaroute_requests_total{provider=\"" p (p == "" ? "" : "\"")) == 1 {s += $NF} END {print s + 0}'
}

# run_wrk URL CONNS SCRIPT SECS -> "rps p50_us p99_us"; exits non-zero on any non-2xx answer
# or socket error, so a benchmark never reports the speed of failures.
run_wrk() {
  local out
  out=$(wrk -t "$([ "$2" -gt 1 ] && echo 2 || echo 1)" -c "$2" -d "${4}s" --latency -s "$3" "$1")
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def us(v, unit):
    return float(v) * {"us": 1, "ms": 1000, "s": 1e6}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
if re.search(r"Non-2xx or 3xx responses: (\d+)", out) or re.search(r"Socket errors: (.*)", out):
    sys.stderr.write("wrk reported errors:\n" + out)
    sys.exit(1)
print(f"{rps:.0f} {us(*p50.groups()):.1f} {us(*p99.groups()):.1f}")
PY
}

wrk_post_script() { # file body-lua-expression [header=value ...]
  local f=$1 body=$2; shift 2
  {
    echo 'wrk.method = "POST"'
    echo 'wrk.headers["Content-Type"] = "application/json"'
    local h
    for h in "$@"; do echo "wrk.headers[\"${h%%=*}\"] = \"${h#*=}\""; done
    echo "wrk.body = $body"
  } >"$f"
}
