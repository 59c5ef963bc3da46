#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and `make run` need: only the missing
# ones, so a second run does nothing. Usage: scripts/install-deps.sh [build|test|bench]
set -euo pipefail

what=${1:-test}
pkgs=(gcc make cmake pkg-config libev-dev libjansson-dev libyajl-dev libyaml-dev libcurl4-openssl-dev
      node-llhttp haproxy ca-certificates python3)
case "$what" in
  # docker-compose (1.29, Python) only validates docker-compose.yml (`docker-compose config`):
  # no Docker engine is needed or installed; python3-yaml is how test_compose.py reads it;
  # systemd brings systemd-analyze for test_systemd.py (nothing is started).
  test)  pkgs+=(libcmocka-dev clang libclang-rt-14-dev curl docker-compose python3-yaml systemd)
         # node + npm for the official-SDK tests (tests/integration/sdk); a node already on
         # the machine (e.g. NodeSource's, which bundles npm) is used as it is
         command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
         command -v npm >/dev/null 2>&1 || pkgs+=(npm) ;;
  bench) pkgs+=(libcmocka-dev wrk nginx-light curl) ;;
  build) ;;
  *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# The pinned npm `openai` and `@anthropic-ai/sdk` for test_translate_sdk.py (a no-op when
# installed from the same package-lock.json).
sdk() { [ "$what" != test ] || "$(dirname "$0")/../tests/integration/sdk/install.sh"; }
[ ${#missing[@]} -eq 0 ] && { sdk; exit 0; }

echo "install-deps: installing ${missing[*]}" >&2
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo
  else echo "install-deps: missing packages (${missing[*]}) and not root; install them" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# The package lists may be stale or empty on a fresh machine; refresh once if install fails.
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
sdk
