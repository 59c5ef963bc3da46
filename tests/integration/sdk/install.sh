#!/usr/bin/env bash
# Installs the official SDKs (npm `openai`, `@anthropic-ai/sdk`, versions pinned by
# package-lock.json) into tests/integration/sdk/node_modules for test_translate_sdk.py.
# Idempotent: does nothing when node_modules was installed from the same package-lock.json
# (sha256 recorded in node_modules/.lunaroute-lock.sha256). Needs node >= 18 and npm
# (Debian 12: apt-get install nodejs npm). Usage: tests/integration/sdk/install.sh [--force]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lock="$here/package-lock.json"
stamp="$here/node_modules/.lunaroute-lock.sha256"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "sdk/install.sh: '$tool' not found; install Node.js >= 18 and npm" \
         "(Debian 12: apt-get install nodejs npm)" >&2
    exit 1
  fi
done
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
  echo "sdk/install.sh: node $(node --version) is too old; the SDK tests need node >= 18" >&2
  exit 1
fi

want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ "${1:-}" != "--force" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && [ -f "$here/node_modules/openai/package.json" ] \
    && [ -f "$here/node_modules/@anthropic-ai/sdk/package.json" ]; then
  exit 0
fi

echo "sdk/install.sh: npm ci in $here" >&2
# --ignore-scripts: nothing in this tree needs an install script; no audit/fund calls.
(cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
printf '%s\n' "$want" > "$stamp"
