"""The baseline's handler process: the scenarios' logic in a plain aiohttp app, state in a dict.

    python -m benchmarks.baseline_handlers --port 8181

Same paths and JSON as the sidecar's ingress for the same handlers, so the load generator sends
identical requests to both systems:
- ``POST /Counter/{key}/add`` (body ``n``): awaits ``examples.counter.audit(key, n)``
  (the step the sidecar journals), adds ``n`` to the key's total, returns the total. Requests for one key are not
  serialized: there is no await between reading and writing the total, which is all the
  in-memory version needs.
- ``POST /Counter/{key}/get``: the key's total (0 if never added to).
- ``POST /Steps/run`` (body ``n``): the three ``logic.STEPS`` in sequence, returns the result.
Nothing survives a restart: this is the ceiling, not a durable system.
"""

from __future__ import annotations

import argparse

import msgspec
import uvloop
from aiohttp import web

from benchmarks import logic
from examples.counter import audit

TOTALS = web.AppKey("totals", dict)

_int = msgspec.json.Decoder(int)
_encode = msgspec.json.encode


def _json(value: object) -> web.Response:
    return web.Response(body=_encode(value), content_type="application/json")


def _bad(message: str) -> web.Response:
    return web.Response(status=400, body=_encode({"code": 400, "message": message}),
                        content_type="application/json")


async def counter_add(request: web.Request) -> web.Response:
    try:
        n = _int.decode(await request.read())
    except msgspec.DecodeError as exc:
        return _bad(str(exc))
    key = request.match_info["key"]
    await audit(key, n)
    totals: dict[str, int] = request.app[TOTALS]
    total = totals.get(key, 0) + n
    totals[key] = total
    return _json(total)


async def counter_get(request: web.Request) -> web.Response:
    return _json(request.app[TOTALS].get(request.match_info["key"], 0))


async def steps_run(request: web.Request) -> web.Response:
    try:
        n = _int.decode(await request.read())
    except msgspec.DecodeError as exc:
        return _bad(str(exc))
    x = n
    for _, fn in logic.STEPS:
        x = await fn(x)
    return _json(x)


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application()
    app[TOTALS] = {}
    app.router.add_get("/health", health)
    app.router.add_post("/Counter/{key}/add", counter_add)
    app.router.add_post("/Counter/{key}/get", counter_get)
    app.router.add_post("/Steps/run", steps_run)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.baseline_handlers",
                                description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8181)
    args = p.parse_args(argv)
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
