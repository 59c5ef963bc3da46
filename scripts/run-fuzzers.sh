#!/usr/bin/env bash
# Runs every libFuzzer binary in DIR for SECS seconds, starting from its seed corpus in
# tests/fuzz/corpus/<name>/ (copied, so the repo's corpus only grows by hand).
set -euo pipefail
dir=$1 secs=${2:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
status=0
for f in "$dir"/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  work=$(mktemp -d)
  [ -d "$root/tests/fuzz/corpus/$name" ] && cp -r "$root/tests/fuzz/corpus/$name/." "$work/"
  echo "== $name (${secs}s)"
  if ! "$f" -max_total_time="$secs" -max_len=20000 -print_final_stats=1 \
        -artifact_prefix="$dir/$name-" "$work" 2>"$dir/$name.log"; then
    echo "$name FAILED; see $dir/$name.log" >&2; tail -40 "$dir/$name.log" >&2; status=1
  else
    grep -E 'stat::number_of_executed_units|stat::peak_rss' "$dir/$name.log" || true
  fi
  rm -rf "$work"
done
exit $status
