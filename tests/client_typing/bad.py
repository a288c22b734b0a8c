"""Client code that must NOT type-check: each line marked ``# error: CODE`` is one mypy must
report, with that error code, and no other line may have one (tests/unit/test_client_typing.py)."""

from __future__ import annotations

from handler_sdk.client import Client

from .definitions import Order, add, counter, get, run, signup, steps, typed


async def mistakes(client: Client) -> None:
    await client.object(counter, "alice").call(add, "five")  # error: arg-type
    await client.object(counter, "alice").call(ad, 5)  # error: name-defined
    text: str = await client.object(counter, "alice").call(add, 5)  # error: arg-type
    await client.object(counter, "alice").call(get, 1)  # error: arg-type
    await client.object(counter, "alice").call(add)  # error: arg-type
    await client.service(steps).call(typed, {"item": "pen"})  # error: arg-type
    await client.service(steps).call(add, 5)  # error: arg-type
    await client.object(steps, "alice").call(typed, Order("pen", 1))  # error: arg-type
    await client.object(counter, "alice").call(run, "a@example.com")  # error: arg-type
    (await client.object(counter, "alice").call(add, 5)).upper()  # error: attr-defined
    number: int = await client.workflow(signup, "w1").attach(run)  # error: arg-type
    receipt = await client.object(counter, "bob").send(add, 1)
    wrong: str = await client.attach(receipt)  # error: arg-type
    (await client.attach(receipt)).upper()  # error: attr-defined
    print(text, number, wrong)
