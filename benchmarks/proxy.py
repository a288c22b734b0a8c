"""The baseline's first hop: a bare aiohttp reverse proxy, nothing journaled.

    python -m benchmarks.proxy --port 8180 --upstream http://127.0.0.1:8181

It stands where the sidecar stands (client -> proxy -> handler process), so the baseline pays
the same two HTTP hops and the same extra process, and the difference between the two systems is
what durability costs: journaling, the store, per-key scheduling and the handler protocol.
Every ``POST /{path}`` (query string included) is forwarded with one pooled ``ClientSession``
(keep-alive, no connection limit); status, body and content type come back unchanged.
"""

from __future__ import annotations

import argparse

import aiohttp
import uvloop
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def _session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        app[SESSION] = session
        yield


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    headers = {}
    if ctype := request.headers.get("content-type"):
        headers["content-type"] = ctype
    url = request.app[UPSTREAM] + request.rel_url.raw_path_qs
    try:
        async with request.app[SESSION].post(url, data=body, headers=headers) as resp:
            payload = await resp.read()
            return web.Response(
                status=resp.status, body=payload,
                headers={"content-type": resp.headers.get("content-type", "application/json")},
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return web.json_response({"code": 502, "message": f"upstream: {type(exc).__name__}"}, status=502)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session_ctx)
    app.router.add_get("/health", health)
    app.router.add_post("/{path:.*}", forward)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.proxy", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8180)
    p.add_argument("--upstream", default="http://127.0.0.1:8181")
    args = p.parse_args(argv)
    web.run_app(make_app(args.upstream), host=args.host, port=args.port, print=None,
                access_log=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
