"""A webhook receiver for ``benchmarks.run --webhooks``: answers every ``POST /`` with 204 at once
and counts them (``GET /count``), so that what is measured is the sidecar's side of delivery."""

from __future__ import annotations

import argparse

from aiohttp import web

RECEIVED: web.AppKey[list[int]] = web.AppKey("received", list)


async def take(request: web.Request) -> web.Response:
    await request.read()
    request.app[RECEIVED][0] += 1
    return web.Response(status=204)


async def count(request: web.Request) -> web.Response:
    return web.json_response(request.app[RECEIVED][0])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    app = web.Application()
    app[RECEIVED] = [0]
    app.router.add_post("/", take)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=parser.parse_args().port, print=None, access_log=None)
