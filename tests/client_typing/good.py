"""Client code that must type-check under mypy --strict (tests/unit/test_client_typing.py)."""

from __future__ import annotations

from datetime import timedelta

from handler_sdk.client import Client, End, Milestone, SendReceipt

from .definitions import Order, add, approve, counter, get, run, signup, steps, typed


async def calls(client: Client) -> None:
    total: int = await client.object(counter, "alice").call(add, 5)
    now: int = await client.object(counter, "alice").call(get)
    label: str = await client.service(steps).call(typed, Order("pen", 2))
    answer: str = await client.workflow(signup, "w1").call(run, "a@example.com")
    recorded: str = await client.workflow(signup, "w1").call(approve, "yes")
    receipt: SendReceipt[int] = await client.object(counter, "bob").send(add, 1, delay=timedelta(seconds=2),
                                                                           idempotency_key="k1")
    later: int = await client.attach(receipt)
    done: int = await client.output(receipt)
    again: int = await client.object(counter, "bob").attach(add, "k1")
    ran: str = await client.workflow(signup, "w1").attach(run)
    untyped = await client.call("Counter/alice/add", 5)
    typed_text: list[str] = await client.call("Steps/typed", {"item": "pen", "quantity": 1}, type=list[str])
    async with client.events(receipt) as stream:
        async for event in stream:
            if isinstance(event, Milestone):
                print(event.id, event.data)
            elif isinstance(event, End):
                print(event.status, event.output, event.failure)
    print(total, now, label, answer, recorded, later, done, again, ran, untyped, typed_text)
