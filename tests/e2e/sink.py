"""An external system that counts side effects, as a payment provider or mailer would see them.

``POST /effect`` with an ``idempotency-key`` header counts one delivery of that key, so a test can
tell "ran once" from "ran twice" no matter what the handler or sidecar believe.
``POST /incr/{name}`` is a plain counter (how many times did the handler try?).
``POST /acked`` says "the handler saw this key's step acknowledged": any delivery of that key
after it is a step that ran again although its result was durable, and is listed as a violation.
``POST /enter/{key}`` and ``/exit/{key}`` record overlapping executions per key, and the most
inside at once (``peaks``).
``POST /vendor/{name}`` is a paid API that can be told to fail its first calls.
``POST /webhook`` is a webhook receiver: it keeps each delivery (its Standard Webhooks headers and
body) in the order it answered them, listed by ``GET /webhooks``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

from aiohttp import web

EFFECTS: web.AppKey[Counter[str]] = web.AppKey("effects", Counter)
COUNTERS: web.AppKey[Counter[str]] = web.AppKey("counters", Counter)
#: When each ``/incr/{name}`` came (epoch ms), per name.
TIMES: web.AppKey[dict[str, list[float]]] = web.AppKey("times", dict)
INSIDE: web.AppKey[Counter[str]] = web.AppKey("inside", Counter)
OVERLAPS: web.AppKey[list[str]] = web.AppKey("overlaps", list)
PEAKS: web.AppKey[Counter[str]] = web.AppKey("peaks", Counter)
ACKED: web.AppKey[set[str]] = web.AppKey("acked", set)
VIOLATIONS: web.AppKey[list[str]] = web.AppKey("violations", list)
NOTES: web.AppKey[dict[str, str]] = web.AppKey("notes", dict)
WEBHOOKS: web.AppKey[list[dict[str, str]]] = web.AppKey("webhooks", list)


async def effect(request: web.Request) -> web.Response:
    key = request.headers.get("idempotency-key")
    if not key:
        return web.json_response({"message": "idempotency-key required"}, status=400)
    request.app[EFFECTS][key] += 1
    if key in request.app[ACKED]:
        request.app[VIOLATIONS].append(key)
    return web.json_response({"key": key, "deliveries": request.app[EFFECTS][key]})


async def acked(request: web.Request) -> web.Response:
    request.app[ACKED].add(request.headers["idempotency-key"])
    return web.json_response(True)


async def incr(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    request.app[COUNTERS][name] += 1
    request.app[TIMES].setdefault(name, []).append(time.time() * 1000)
    return web.json_response(request.app[COUNTERS][name])


async def enter(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    request.app[INSIDE][key] += 1
    request.app[PEAKS][key] = max(request.app[PEAKS][key], request.app[INSIDE][key])
    if request.app[INSIDE][key] > 1:
        request.app[OVERLAPS].append(key)
    return web.json_response(True)


async def leave(request: web.Request) -> web.Response:
    request.app[INSIDE][request.match_info["key"]] -= 1
    return web.json_response(True)


async def note(request: web.Request) -> web.Response:
    """A handler leaves a value for the test to pick up (an awakeable's ID)."""
    request.app[NOTES][request.match_info["name"]] = (await request.read()).decode()
    return web.json_response(True)


async def read_note(request: web.Request) -> web.Response:
    value = request.app[NOTES].get(request.match_info["name"])
    return web.json_response(value, status=200 if value is not None else 404)


async def vendor(request: web.Request) -> web.Response:
    """A paid vendor's endpoint ``name``: each call is counted (``COUNTERS[name]``); the first
    ``fail`` calls answer ``status`` (with ``Retry-After: retry_after`` when given), later ones 200."""
    name = request.match_info["name"]
    request.app[COUNTERS][name] += 1
    if request.app[COUNTERS][name] <= int(request.query.get("fail", "0")):
        headers = {"Retry-After": request.query["retry_after"]} if "retry_after" in request.query else {}
        return web.json_response({"message": "vendor trouble"}, status=int(request.query["status"]), headers=headers)
    return web.json_response({"text": f"{name} answer", "call": request.app[COUNTERS][name]})


async def webhook(request: web.Request) -> web.Response:
    """``?slow=S``: answer only after S seconds (a receiver a crash can catch mid-delivery)."""
    body = (await request.read()).decode()
    await asyncio.sleep(float(request.query.get("slow", "0")))  # taken even if the sender is gone by then
    request.app[WEBHOOKS].append({
        "id": request.headers.get("webhook-id", ""), "timestamp": request.headers.get("webhook-timestamp", ""),
        "signature": request.headers.get("webhook-signature", ""),
        "content_type": request.headers.get("content-type", ""), "body": body})
    return web.Response(status=204)


async def webhooks(request: web.Request) -> web.Response:
    return web.json_response(request.app[WEBHOOKS])


async def counts(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[EFFECTS]))


async def stats(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response({"counters": dict(app[COUNTERS]), "overlaps": app[OVERLAPS], "violations": app[VIOLATIONS],
                              "peaks": dict(app[PEAKS]), "times": app[TIMES],
                              "inside": {k: v for k, v in app[INSIDE].items() if v}})


def make_app() -> web.Application:
    app = web.Application()
    app[EFFECTS] = Counter()
    app[COUNTERS] = Counter()
    app[TIMES] = {}
    app[INSIDE] = Counter()
    app[OVERLAPS] = []
    app[PEAKS] = Counter()
    app[ACKED] = set()
    app[VIOLATIONS] = []
    app[NOTES] = {}
    app[WEBHOOKS] = []
    app.router.add_post("/effect", effect)
    app.router.add_post("/acked", acked)
    app.router.add_post("/incr/{name}", incr)
    app.router.add_post("/enter/{key}", enter)
    app.router.add_post("/exit/{key}", leave)
    app.router.add_get("/counts", counts)
    app.router.add_post("/vendor/{name}", vendor)
    app.router.add_post("/notes/{name}", note)
    app.router.add_get("/notes/{name}", read_note)
    app.router.add_get("/stats", stats)
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/webhooks", webhooks)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    web.run_app(make_app(), host="127.0.0.1", port=parser.parse_args().port, print=None, access_log=None)
