#!/usr/bin/env bash
# Dialect-translation overhead benchmark (issue #5). In one run, interleaved rounds, wrk at
# 1 connection against the same nginx upstream (which answers both dialects), for a 1 KiB
# and a 256 KiB multi-turn conversation:
#   plain : HAProxy with the SPOE filter removed, the path straight to the provider backend
#   pass  : HAProxy -> engine -> provider of the request's own dialect (body bytes unchanged)
#   trans : HAProxy -> engine -> provider of the other dialect (request translated, answer
#           translated back), OpenAI client -> Anthropic provider and the reverse
# and reports each variant's latency added over plain, and translation's added latency as a
# multiple of passthrough's (target <= 2x for 1 KiB). Then bench_translate (in process):
# translation cost per request and per streamed chunk (target <= 5 us).
#
# Usage: tests/bench/translate.sh [--bin-dir build/bin] [--secs 5] [--rounds 3]
# Needs: haproxy, nginx, wrk, python3. Not run in CI.
set -euo pipefail
BENCH_NAME=translate
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

CHAT_JSON='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}'
MSG_JSON='{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":9}}'

# nginx reads every request body (return alone answers before reading it): each path goes
# through nginx's proxy module to an inner location. Every variant pays that same hop.
up_port=$(free_port)
nginx_conf "$up_port" "
    location = /v1/chat/completions { proxy_pass http://127.0.0.1:$up_port/__chat; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    location = /v1/messages { proxy_pass http://127.0.0.1:$up_port/__msg; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    location = /__chat { default_type application/json; return 200 '$CHAT_JSON'; }
    location = /__msg { default_type application/json; return 200 '$MSG_JSON'; }
    location / { default_type application/json; return 200 '{\"object\":\"list\",\"data\":[]}'; }"
start nginx nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
wait_port "$up_port"

fe_eng=$(free_port) fe_plain=$(free_port) eng_port=$(free_port)
cat >"$work/lunaroute.yaml" <<YAML
providers:
  openai:    {base_url: "http://127.0.0.1:$up_port", http_client: {max_retries: 0}}
  anthropic: {base_url: "http://127.0.0.1:$up_port", http_client: {max_retries: 0}}
routing:
  rules:
    - {name: claude, model_pattern: "^claude-", primary: anthropic}
    - {name: gpt, model_pattern: "^gpt-", primary: openai}
haproxy: {bind: "127.0.0.1:$fe_eng", stats_bind: "127.0.0.1:$(free_port)", maxconn: 4000}
agent: {spoa_bind: "127.0.0.1:$(free_port)", engine_bind: "127.0.0.1:$eng_port", threads: 1}
logging: {level: warn}
YAML
"$bin/lunaroute-control" render --config "$work/lunaroute.yaml" --out "$work/eng" >/dev/null
plain_config "$work/eng" "$work/plain" "$fe_eng" "$fe_plain" \
  "/v1/chat/completions lr_provider_openai" "/v1/messages lr_provider_anthropic"

start_pair "$work/eng" "$work/plain" "$fe_eng" "$fe_plain" "$eng_port"

# Conversations: N turns of alternating user/assistant text, in each dialect, ~SIZE bytes.
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def conv(size, model, dialect):
    turns, n = [], max(4, size // 4096 * 2) if size > 4096 else 4
    text = "lorem ipsum dolor sit amet " * (size // (n * 27) + 1)
    for i in range(n):
        turns.append({"role": "user" if i % 2 == 0 else "assistant", "content": text[: size // n]})
    if dialect == "openai":
        return {"model": model, "messages": [{"role": "system", "content": "Be brief."}] + turns,
                "max_tokens": 64, "temperature": 0.5}
    return {"model": model, "system": "Be brief.", "messages": turns, "max_tokens": 64,
            "temperature": 0.5}
for size, tag in ((1024, "1k"), (256 * 1024, "256k")):
    for dialect, own, other in (("openai", "gpt-4o", "claude-bench"), ("anthropic", "claude-bench", "gpt-4o")):
        for kind, model in (("pass", own), ("trans", other)):
            with open(f"{work}/{dialect}-{kind}-{tag}.json", "w") as f:
                json.dump(conv(size, model, dialect), f, separators=(",", ":"))
PY
for f in "$work"/*-{pass,trans}-*.json; do
  wrk_post_script "${f%.json}.lua" "io.open('$f'):read('*a')" "anthropic-version=2023-06-01"
done

# Each variant must reach nginx in the expected dialect and, through the engine, be
# translated exactly when it should be.
translations() { curl -sf "http://127.0.0.1:$eng_port/metrics" | awk '/^lunaroute_translations_total/ {s+=$2} END {print s+0}'; }
check() { # port path file want-substring translated(0|1)
  local before body
  before=$(translations)
  body=$(curl -sf -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
         --data-binary "@$3" "http://127.0.0.1:$1$2") || { echo "translate.sh: $2 via :$1 failed ($3)" >&2; exit 1; }
  case $body in *"$4"*) ;; *) echo "translate.sh: unexpected answer for $3 via :$1: $body" >&2; exit 1 ;; esac
  [ $(($(translations) - before)) -eq "$5" ] || { echo "translate.sh: $3 via :$1: translated count off (want $5)" >&2; exit 1; }
}
for tag in 1k 256k; do
  check "$fe_plain" /v1/chat/completions "$work/openai-pass-$tag.json" '"chat.completion"' 0
  check "$fe_eng" /v1/chat/completions "$work/openai-pass-$tag.json" '"chatcmpl-bench"' 0
  check "$fe_eng" /v1/chat/completions "$work/openai-trans-$tag.json" '"chat.completion"' 1
  check "$fe_plain" /v1/messages "$work/anthropic-pass-$tag.json" '"msg_bench"' 0
  check "$fe_eng" /v1/messages "$work/anthropic-pass-$tag.json" '"msg_bench"' 0
  check "$fe_eng" /v1/messages "$work/anthropic-trans-$tag.json" '"type":"message"' 1
done

declare -A res
variants="o-plain o-pass o-trans a-plain a-pass a-trans"
for r in $(seq "$rounds"); do
  note "round $r/$rounds"
  for tag in 1k 256k; do
    for v in $variants; do
      case $v in
        o-*) path=/v1/chat/completions dialect=openai ;;
        a-*) path=/v1/messages dialect=anthropic ;;
      esac
      case $v in
        *-plain) port=$fe_plain kind=pass ;;
        *-pass) port=$fe_eng kind=pass ;;
        *-trans) port=$fe_eng kind=trans ;;
      esac
      res[$v,$tag,$r]=$(run_wrk "http://127.0.0.1:$port$path" 1 "$work/$dialect-$kind-$tag.lua" "$secs")
    done
  done
done

python3 - "$rounds" "$secs" <<PY
import os, statistics, sys
rounds, secs = int(sys.argv[1]), sys.argv[2]
res = {}
$(for k in "${!res[@]}"; do echo "res['$k'] = '${res[$k]}'.split()"; done)
def med(v, tag, i):
    return statistics.median(float(res[f"{v},{tag},{r}"][i]) for r in range(1, rounds + 1))
print(f"translation benchmark: {rounds} interleaved rounds, wrk {secs}s at 1 connection, medians")
print(f"{'client':<10} {'body':<6} {'plain p50':>10} {'pass p50':>10} {'trans p50':>10} {'pass +':>9} {'trans +':>9} {'ratio':>6}")
ok, rows = True, []
for side, name, arrow in (("o", "openai", "OpenAI client -> Anthropic"), ("a", "anthropic", "Anthropic client -> OpenAI")):
    for tag in ("1k", "256k"):
        p, q, t = (med(f"{side}-{k}", tag, 1) for k in ("plain", "pass", "trans"))
        ratio = (t - p) / (q - p) if q > p else float("inf")
        print(f"{name:<10} {tag:<6} {p:>8.0f}us {q:>8.0f}us {t:>8.0f}us {q-p:>7.0f}us {t-p:>7.0f}us {ratio:>6.2f}")
        good = ratio <= 2 if tag == "1k" else None
        ok = ok and good is not False
        size = "1 KiB" if tag == "1k" else "256 KiB"
        rows.append((f"translated {arrow}, {size}, p50", f"{p:.0f} us", f"{t:.0f} us",
                     f"{t-p:+.0f} us = {ratio:.2f}x passthrough's {q-p:+.0f} us",
                     "<= 2x" if tag == "1k" else "", good))
print("translated added latency <= 2x passthrough's for 1 KiB:", "yes" if ok else "NO")
if os.environ.get("BENCH_RESULTS"):
    with open(os.environ["BENCH_RESULTS"], "a") as f:
        for r in rows:
            f.write("\t".join(["translate"] + [str(x) for x in r[:5]] + ["" if r[5] is None else ("yes" if r[5] else "no")]) + "\n")
PY

if [ -x "$bin/../bench/bench_translate" ]; then
  echo
  "$bin/../bench/bench_translate" | tee "$work/bench_translate.out" || true # a miss shows in the table
  if [ -n "${BENCH_RESULTS:-}" ]; then
    awk '/^per chunk, / {dir=$3; us=$4; ok=(us <= 5) ? "yes" : "no";
         printf "translate\tper streamed chunk, %s\t\t%s us\t%s us\t<= 5 us\t%s\n", dir, us, us, ok}' \
      "$work/bench_translate.out" >>"$BENCH_RESULTS"
  fi
else
  note "bench_translate not built ($bin/../bench/bench_translate): in-process numbers skipped"
fi
