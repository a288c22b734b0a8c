#!/usr/bin/env bash
# `make run`: the counter example handler service and a sidecar in front of it, until Ctrl-C.
#
# Every process this starts ends with it, however it ends:
# - Ctrl-C, SIGTERM or SIGHUP to this script (or to `make`, which passes SIGTERM on): the trap
#   stops the sidecar and the handler service with SIGTERM, waits for them, and exits.
# - SIGKILL of this script: each child was started with PR_SET_PDEATHSIG (Linux), so the kernel
#   sends it SIGTERM when this script dies; the sidecar's workers and writer end with the sidecar.
# - SIGKILL of `make`: this script has the same guard towards `make` (the recipe execs it, so
#   `make` is its parent), so it gets SIGTERM and the first case applies.
# The children run in their own process groups (set -m), so a Ctrl-C in the terminal reaches this
# script alone, and it stops them in order: the sidecar first, then the handler service.
#
# Overrides (environment): VENV (.venv), HANDLER_PORT (9080), and the sidecar's own SIDECAR_*
# settings, e.g. SIDECAR_DATA_DIR (./data), SIDECAR_INGRESS (127.0.0.1:8080), SIDECAR_ADMIN.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
HANDLER_PORT=${HANDLER_PORT:-9080}
INGRESS=${SIDECAR_INGRESS:-127.0.0.1:8080}

# `guarded PARENT_PID CMD...` execs CMD with PR_SET_PDEATHSIG = SIGTERM, so that the kernel
# signals CMD when its parent dies; it exits at once if PARENT_PID is no longer its parent (the
# parent died before the guard was set). Elsewhere than Linux it only execs CMD.
guarded() {
    exec "$PY" -c '
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):
        sys.exit(143)
os.execvp(sys.argv[2], sys.argv[2:])
' "$@"
}

if [[ -z "${RUN_EXAMPLE_GUARDED:-}" ]]; then  # once: this script itself, towards its parent
    export RUN_EXAMPLE_GUARDED=1
    guarded "$PPID" bash "$PWD/scripts/$(basename "$0")" "$@"
fi

stop() {
    trap - EXIT INT TERM HUP
    for pid in ${sidecar_pid:-} ${handler_pid:-}; do  # the sidecar first: it may still be talking to the handlers
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
set -m  # each child in its own process group: a Ctrl-C in the terminal reaches this script alone

guarded $$ "$PY" -m handler_sdk examples.counter:counter --port "$HANDLER_PORT" &
handler_pid=$!

# The sidecar registers the handler service at start, so wait until it listens (at most 10 s).
for _ in $(seq 100); do
    if ! kill -0 "$handler_pid" 2>/dev/null; then
        echo "the counter handler service exited: is port $HANDLER_PORT taken?" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$HANDLER_PORT") 2>/dev/null; then
        break
    fi
    sleep 0.1
done

echo "try:  curl -s $INGRESS/Counter/alice/add -H 'content-type: application/json' -d 5"
echo "      curl -s -X POST $INGRESS/Counter/alice/get"
echo "stop: Ctrl-C"
guarded $$ "$VENV/bin/sidecar" serve --register "http://127.0.0.1:$HANDLER_PORT" &
sidecar_pid=$!
status=0
wait "$sidecar_pid" || status=$?  # a trapped signal ends the wait at once (the trap then exits)
sidecar_pid=
exit "$status"
