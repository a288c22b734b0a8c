"""The DBOS side of the peer benchmark: ``Steps.run`` as a DBOS workflow behind a plain ASGI endpoint.

    .bench/peers/venv/bin/python -m benchmarks.peers.dbos_app --port 9090 --db /tmp/x/dbos.sqlite

Runs in the peers' own venv (``benchmarks.peers.install``), never the project's: it imports only the
standard library, ``dbos``, ``uvicorn`` and ``benchmarks.logic``.

- ``POST /Steps/run`` (body ``n``) runs the ``steps`` workflow: the three ``benchmarks.logic.STEPS``,
  each a ``@DBOS.step()``, so DBOS checkpoints each one in its system database before the next
  starts (what ``ctx.run`` does on the sidecar and on Restate), and returns the result.
- ``GET /health``: 200 once DBOS is launched.
There is no Counter: DBOS has no keyed objects (per-key state with per-key serialization), so the
Counter scenarios are reported as not applicable rather than approximated.

The system database is SQLite (``system_database_url``) with DBOS's own settings: rollback
journal, ``synchronous=FULL`` (SQLite's default, which DBOS leaves alone), so every commit is
fsynced, as the sidecar's ``--durability fsync`` is. The app is a bare ASGI callable (no web
framework: DBOS works with any, and a framework's cost is not DBOS's) served by uvicorn with
uvloop and httptools, the fastest common ASGI setup, so the front does not hold DBOS back.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn
from dbos import DBOS, DBOSConfig

from benchmarks import logic


@DBOS.step()
async def step_one(n: int) -> int:
    return await logic.step_one(n)


@DBOS.step()
async def step_two(x: int) -> int:
    return await logic.step_two(x)


@DBOS.step()
async def step_three(x: int) -> int:
    return await logic.step_three(x)


@DBOS.workflow()
async def steps(n: int) -> int:
    x = await step_one(n)
    x = await step_two(x)
    return await step_three(x)


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send: Any, status: int, value: object) -> None:
    payload = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Launched inside the server's event loop, which the async workflows then run on.
                DBOS.launch()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                DBOS.destroy()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/health" and method == "GET":
        await _respond(send, 200, {"status": "ok"})
    elif path == "/Steps/run" and method == "POST":
        try:
            n = json.loads(await _read_body(receive))
        except ValueError as exc:
            await _respond(send, 400, {"code": 400, "message": str(exc)})
            return
        if not isinstance(n, int):
            await _respond(send, 400, {"code": 400, "message": "expected an integer"})
            return
        await _respond(send, 200, await steps(n))
    else:
        await _respond(send, 404, {"code": 404, "message": f"no route {method} {path}"})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers.dbos_app", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--db", required=True, help="the SQLite system database file (created)")
    args = p.parse_args(argv)
    config: DBOSConfig = {"name": "sidecar-bench", "system_database_url": f"sqlite:///{args.db}",
                          "log_level": "WARNING"}
    DBOS(config=config)
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools", lifespan="on",
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
