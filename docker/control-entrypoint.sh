#!/bin/sh
# Entrypoint of the `control` container (docker/Dockerfile.control).
#
# lunaroute-control has no mode yet that renders, watches and reloads HAProxy (master CLI
# socket) and the agent (admin socket) without spawning them, which is what a container
# next to `haproxy` and `agent` needs; `up` spawns both, so it cannot be used here. Until
# then this script:
#   1. runs `lunaroute-control "$@"` once (compose: render into the shared run directory)
#      and exits with its status if it fails (a bad config stops the stack from starting);
#   2. stays up, so the health check and `docker compose exec control ...` work;
#   3. on SIGHUP runs the same command again (re-render; a bad config is rejected and the
#      previous files are kept): then `docker compose kill -s HUP agent` and
#      `docker compose kill -s USR2 haproxy` apply the new files;
#   4. exits 0 on SIGTERM/SIGINT.
# tests/integration/test_compose.py runs this script natively with the compose arguments.
set -u

lunaroute-control "$@" || exit $?

rerender() {
    if lunaroute-control "$@"; then
        echo "control: re-rendered; apply with: docker compose kill -s HUP agent;" \
             "docker compose kill -s USR2 haproxy" >&2
    else
        echo "control: re-render failed; the previous files are kept" >&2
    fi
}
trap 'rerender "$@"' HUP
trap 'exit 0' TERM INT

while :; do
    sleep 3600 &
    wait $!
    kill $! 2>/dev/null
done
