"""Checkout: charge a card and send a receipt, each exactly once, whatever crashes in between.

Each side effect is a `ctx.run` step that hands the vendor that step's `ctx.idempotency_key()`:
if the handler dies after the vendor acted but before the sidecar journaled the result, the retry
sends the same key and the vendor answers with what it already did instead of doing it again.

    .venv/bin/python -m examples.vendors --port 9090
    .venv/bin/python -m handler_sdk examples.checkout:checkout --port 9081
    .venv/bin/sidecar register http://127.0.0.1:9081
    curl -s localhost:8080/Checkout/order-1/place -H 'content-type: application/json' \\
        -d '{"customer": "alice", "amount_cents": 4200, "email": "alice@example.com"}'
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import msgspec

from handler_sdk import ObjectContext, ObjectSharedContext, RetryPolicy, TerminalError, VirtualObject, serve

checkout = VirtualObject("Checkout")

#: Retrying a vendor call is safe (it dedupes on the idempotency key), so ride out an outage of a
#: minute or so in-process before the step fails for good and the order with it.
VENDOR_RETRY = RetryPolicy(max_attempts=20, initial_interval=0.2, max_interval=5.0)


class Order(msgspec.Struct):
    customer: str
    amount_cents: int
    email: str


class Receipt(msgspec.Struct):
    order_id: str
    charge_id: str
    amount_cents: int
    emailed_to: str


def _vendors_url() -> str:
    return os.environ.get("VENDORS_URL", "http://127.0.0.1:9090").rstrip("/")


async def _post(path: str, payload: dict[str, Any], idempotency_key: str) -> tuple[int, Any]:
    """POST JSON to a vendor. 5xx and network errors raise (the step is retried); 4xx is returned."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.post(_vendors_url() + path, data=msgspec.json.encode(payload), headers={
            "content-type": "application/json", "idempotency-key": idempotency_key,
        }) as response:
            body = await response.read()
            if response.status >= 500:
                raise RuntimeError(f"{path}: vendor answered {response.status}")
            return response.status, msgspec.json.decode(body) if body else None


@checkout.handler()
async def place(ctx: ObjectContext, order: Order) -> Receipt:
    """Charge the customer, remember the order, mail the receipt. Keyed by order ID."""
    if await ctx.get("order") is not None:
        raise TerminalError(f"order {ctx.key} was already placed", code=409)

    async def charge() -> str:
        # Called inside the step, idempotency_key() is this step's key: the same on every retry.
        status, body = await _post("/charge", {"amount_cents": order.amount_cents,
                                               "customer": order.customer}, ctx.idempotency_key())
        if status >= 400:
            raise TerminalError(f"payment refused: {body}", code=402)
        return str(body["id"])

    charge_id = await ctx.run("charge", charge, retry=VENDOR_RETRY)
    ctx.set("order", order)

    async def email() -> None:
        status, body = await _post("/emails", {
            "to": order.email, "subject": f"Your order {ctx.key}",
            "body": f"We charged {order.amount_cents / 100:.2f} for order {ctx.key} ({charge_id}).",
        }, ctx.idempotency_key())
        # 409: the mail service already sent the email for this key, on an earlier attempt.
        if status >= 400 and status != 409:
            raise TerminalError(f"mail refused: {body}", code=502)

    await ctx.run("email", email, retry=VENDOR_RETRY)
    return Receipt(order_id=ctx.key, charge_id=charge_id, amount_cents=order.amount_cents,
                   emailed_to=order.email)


@checkout.handler(kind="shared")
async def status(ctx: ObjectSharedContext) -> Order | None:
    """The order as stored once it was charged, or null before that."""
    return await ctx.get("order", type=Order)


if __name__ == "__main__":
    serve([checkout], port=9081)
