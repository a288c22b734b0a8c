"""The agent's outside world, faked in one aiohttp app: two LLMs, a search tool, a CRM, a mailer
and a billing service. Every one of them demands an ``idempotency-key`` and never acts twice on one:
a repeat gets the first answer back (``idempotent-replayed: true``) and is counted, so the demo
can tell "did it once" from "did it twice" whatever the sidecar or the handler believe.

    .venv/bin/python -m examples.agent.vendors --port 9090
    curl -s localhost:9090/stats
    curl -s -X POST localhost:9090/outage/premium -d '{"down": true}'   # the premium model goes down

The premium model bills 0.03 per answer and 0.01 per failed call (a half-generated reply), fails
one call in ten on its own, and fails every call while its outage is on; the cheap model bills
0.003 and never fails.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

PRICES = {"premium": (0.03, 0.01), "cheap": (0.003, 0.0)}  # per answer, per failed call


class Prompt(msgspec.Struct):
    prompt: str


class Answer(msgspec.Struct):
    text: str
    model: str
    usage_usd: float


@dataclass
class World:
    """What the vendors did, in memory."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)  # by "vendor:idempotency key"
    calls: dict[str, int] = field(default_factory=dict)  # every request, per vendor
    replayed: dict[str, int] = field(default_factory=dict)  # repeats of a key, per vendor
    billed: float = 0.0
    #: Calls that reached a model while it was down.
    while_down: int = 0
    down: set[str] = field(default_factory=set)
    crm: dict[str, dict[str, Any]] = field(default_factory=dict)
    emails: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    flakiness: float = 0.1
    rng: random.Random = field(default_factory=random.Random)


WORLD = web.AppKey("world", World)


def _key(request: web.Request, vendor: str) -> str:
    key = request.headers.get("idempotency-key")
    if not key:
        raise web.HTTPBadRequest(text='{"message": "an idempotency-key header is required"}',
                                 content_type="application/json")
    return f"{vendor}:{key}"


Act = Callable[[World, web.Request], Awaitable["dict[str, Any] | web.Response"]]


def idempotent(vendor: str, act: Act) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A route that counts every request, acts at most once per idempotency key (a repeat gets the
    first answer, marked ``idempotent-replayed``), and keeps what it answered."""

    async def route(request: web.Request) -> web.Response:
        world = request.app[WORLD]
        world.calls[vendor] = world.calls.get(vendor, 0) + 1
        key = _key(request, vendor)
        first = world.done.get(key)
        if first is not None:
            world.replayed[vendor] = world.replayed.get(vendor, 0) + 1
            return web.json_response(first, headers={"idempotent-replayed": "true"})
        answer = await act(world, request)
        if isinstance(answer, web.Response):  # a failure: the next try may act
            return answer
        world.done[key] = answer
        return web.json_response(answer, status=201)

    return route


def model(name: str) -> Act:
    """``POST /llm/NAME``: an answer to a prompt, billed per call (failed calls at their price)."""
    price, failed_price = PRICES[name]

    async def complete(world: World, request: web.Request) -> dict[str, Any] | web.Response:
        prompt = msgspec.json.decode(await request.read(), type=Prompt).prompt
        await asyncio.sleep(world.rng.uniform(0.02, 0.08))  # a model takes its time
        if name in world.down or (name == "premium" and world.rng.random() < world.flakiness):
            world.while_down += name in world.down
            world.billed += failed_price
            return web.json_response({"message": f"{name} is overloaded"}, status=503)
        world.billed += price
        words = " ".join(prompt.split()[:12])
        return msgspec.structs.asdict(Answer(text=f"[{name}] considered: {words}", model=name, usage_usd=price))

    return complete


async def search(world: World, request: web.Request) -> dict[str, Any]:
    query = (await request.json())["query"]
    return {"results": [f"{query}: result {i}" for i in range(3)]}


async def crm(world: World, request: web.Request) -> dict[str, Any]:
    """``PUT /crm/{record}``: merges the fields sent into the record (two halves make it whole)."""
    record = world.crm.setdefault(request.match_info["record"], {})
    record.update(await request.json())
    return {"record": request.match_info["record"], "fields": sorted(record)}


async def email(world: World, request: web.Request) -> dict[str, Any]:
    world.emails.append(await request.json())
    return {"id": f"em_{len(world.emails)}"}


async def invoice(world: World, request: web.Request) -> dict[str, Any]:
    world.invoices.append(await request.json())
    return {"id": f"in_{len(world.invoices)}"}


async def outage(request: web.Request) -> web.Response:
    world, model = request.app[WORLD], request.match_info["model"]
    if (await request.json())["down"]:
        world.down.add(model)
    else:
        world.down.discard(model)
    return web.json_response({"down": sorted(world.down)})


async def stats(request: web.Request) -> web.Response:
    world = request.app[WORLD]
    return web.json_response({
        "calls": world.calls, "replayed": world.replayed, "billed": round(world.billed, 6),
        "while_down": world.while_down,
        "crm": world.crm, "emails": world.emails, "invoices": world.invoices,
    })


def app(flakiness: float = 0.1) -> web.Application:
    application = web.Application()
    application[WORLD] = World(flakiness=flakiness)
    application.add_routes([
        *(web.post(f"/llm/{name}", idempotent(name, model(name))) for name in PRICES),
        web.post("/search", idempotent("search", search)), web.put("/crm/{record}", idempotent("crm", crm)),
        web.post("/emails", idempotent("mail", email)), web.post("/invoices", idempotent("billing", invoice)),
        web.post("/outage/{model}", outage),
        web.get("/stats", stats),
    ])
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description="The agent example's fake vendors.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--flakiness", type=float, default=0.1, help="share of premium calls that fail")
    args = parser.parse_args()
    web.run_app(app(args.flakiness), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
