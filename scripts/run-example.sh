#!/usr/bin/env bash
# `make run`: the counter example handler service in the background, a sidecar in front of it in the
# foreground. Ctrl-C stops the sidecar; the trap then stops the handler service too.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
HANDLER_PORT=${HANDLER_PORT:-9080}

"$VENV/bin/python" -m handler_sdk examples.counter:counter --port "$HANDLER_PORT" &
handler_pid=$!
trap 'kill "$handler_pid" 2>/dev/null || true; wait "$handler_pid" 2>/dev/null || true' EXIT

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

echo "try:  curl -s localhost:8080/Counter/alice/add -H 'content-type: application/json' -d 5"
echo "      curl -s -X POST localhost:8080/Counter/alice/get"
"$VENV/bin/sidecar" serve --register "http://127.0.0.1:$HANDLER_PORT"
