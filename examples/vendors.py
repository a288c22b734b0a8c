"""Two fake external vendors in one aiohttp app: a payment service and a mail service.

Both demand an ``idempotency-key`` header, the way Stripe or Postmark do, and count what they did,
so that a demo or a crash test can check that a retried checkout charged and mailed exactly once:

    .venv/bin/python -m examples.vendors --port 9090
    curl -s localhost:9090/stats
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
from aiohttp import web


T = TypeVar("T", bound=msgspec.Struct)


class ChargeRequest(msgspec.Struct):
    amount_cents: int
    customer: str


class Charge(msgspec.Struct):
    id: str
    amount_cents: int
    customer: str


class EmailRequest(msgspec.Struct):
    to: str
    subject: str
    body: str


@dataclass
class Ledger:
    """Everything the vendors did, in memory: the 'external world' of the examples."""

    charges: dict[str, tuple[ChargeRequest, Charge]] = field(default_factory=dict)  # by idempotency key
    emails: dict[str, EmailRequest] = field(default_factory=dict)  # by idempotency key
    charge_requests: int = 0
    email_requests: int = 0


LEDGER = web.AppKey("ledger", Ledger)


def _error_body(status: int, message: str) -> bytes:
    return msgspec.json.encode({"code": status, "message": message})


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=_error_body(status, message), content_type="application/json")


async def _read(request: web.Request, type_: type[T]) -> tuple[str, T]:
    """The request's idempotency key and typed body, or a 400 answer."""
    key = request.headers.get("idempotency-key")
    if not key:
        raise web.HTTPBadRequest(body=_error_body(400, "an idempotency-key header is required"),
                                 content_type="application/json")
    try:
        return key, msgspec.json.decode(await request.read(), type=type_)
    except msgspec.DecodeError as exc:
        raise web.HTTPBadRequest(body=_error_body(400, f"bad request body: {exc}"),
                                 content_type="application/json") from None


async def charge(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    ledger.charge_requests += 1
    key, order = await _read(request, ChargeRequest)
    if key in ledger.charges:
        first_request, first = ledger.charges[key]
        if first_request != order:
            return _error(422, f"idempotency key {key!r} was used for a different charge")
        # A repeat is answered with the first charge, never a second one.
        return web.Response(body=msgspec.json.encode(first), content_type="application/json",
                            headers={"idempotent-replayed": "true"})
    created = Charge(id=f"ch_{len(ledger.charges) + 1}", amount_cents=order.amount_cents,
                     customer=order.customer)
    ledger.charges[key] = (order, created)
    return web.Response(status=201, body=msgspec.json.encode(created), content_type="application/json")


async def send_email(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    ledger.email_requests += 1
    key, email = await _read(request, EmailRequest)
    if key in ledger.emails:
        return _error(409, f"an email with idempotency key {key!r} was already sent")
    ledger.emails[key] = email
    return web.json_response({"id": f"em_{len(ledger.emails)}"}, status=201)


async def stats(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    return web.json_response({
        "charges": len(ledger.charges), "emails": len(ledger.emails),
        "charge_requests": ledger.charge_requests, "email_requests": ledger.email_requests,
    })


def app() -> web.Application:
    application = web.Application()
    application[LEDGER] = Ledger()
    application.add_routes([
        web.post("/charge", charge), web.post("/emails", send_email), web.get("/stats", stats),
    ])
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake payment and mail vendors.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    web.run_app(app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
