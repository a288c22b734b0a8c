"""The typed client (handler_sdk.client) against a real sidecar and handler service: every call
shape, the SSE stream to its end and across a sidecar crash, and error answers as exceptions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from handler_sdk.client import (
    BadRequest, Client, Conflict, End, InvocationFailed, Milestone, NotFound, NotReady, Overloaded, PayloadTooLarge,
    TimedOut, Token,
)
from tests.e2e.conftest import Cluster, running_cluster
from tests.e2e.handlers import Order, add, approve, chat, counter, get, hold, run, signup, status, steps, streams, typed


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    async with Client(f"http://{cluster.ingress}") as connected:
        yield connected


async def test_calls_by_target_string_and_typed_from_the_handlers(client: Client) -> None:
    assert await client.call("Counter/alice/add", 5) == 5
    alice = client.object(counter, "alice")
    assert await alice.call(add, 2) == 7
    assert await alice.call(get) == 7
    assert await client.call("Counter/alice/get", type=int) == 7
    assert await client.service(steps).call(typed, Order("pen", 2)) == "2 x pen"
    assert await client.call("Steps/typed", {"item": "ink", "quantity": 3}) == "3 x ink"
    # A key with a slash and a space is one path part, in both forms.
    assert await client.object(counter, "a/b c").call(add, 1) == 1
    assert await client.call("Counter/a%2Fb c/get") == 1
    # Headers reach the handler; a budget is accepted as x-budget.
    assert await alice.call(add, 1, headers={"x-note": "hi"}, budget=2.5) == 8


async def test_an_idempotent_call_runs_once_and_repeats_its_result(client: Client) -> None:
    bob = client.object(counter, "bob")
    assert await bob.call(add, 4, idempotency_key="once") == 4
    assert await bob.call(add, 4, idempotency_key="once") == 4
    assert await client.call("Counter/bob/add", 4, idempotency_key="once") == 4
    assert await bob.call(get) == 4
    assert await bob.attach(add, "once") == 4
    assert await client.output_by_key("Counter/bob/add", "once") == 4


async def test_a_delayed_send_starts_later_once_and_is_attached_to(client: Client) -> None:
    carol = client.object(counter, "carol")
    before = time.monotonic()
    receipt = await carol.send(add, 3, delay=timedelta(seconds=3), idempotency_key="later")
    assert receipt.status == "Accepted" and receipt.invocation_id.startswith("inv_")
    repeat = await carol.send(add, 3, delay=3.0, idempotency_key="later")
    assert repeat.previously_accepted and repeat.invocation_id == receipt.invocation_id
    with pytest.raises(NotReady) as not_ready:
        await client.output(receipt)
    assert not_ready.value.code == 470 and not_ready.value.invocation_id == receipt.invocation_id
    assert await client.attach(receipt) == 3
    assert time.monotonic() - before >= 2.9
    assert await client.output(receipt) == 3
    assert await client.attach(receipt.invocation_id, type=int) == 3
    assert await client.attach_by_key("Counter/carol/add", "later") == 3
    assert await carol.output(add, "later") == 3
    assert await carol.call(get) == 3

    unkeyed = await client.send("Counter/dave/add", 1)
    assert unkeyed.status == "Accepted" and await client.attach(unkeyed) == 1


async def test_a_workflow_runs_once_per_key_and_is_attached_to_by_key(client: Client) -> None:
    flow = client.workflow(signup, "w1")
    with pytest.raises(NotFound):
        await flow.output(run)  # it has not run
    receipt = await flow.send(run, "ann@example.com")
    assert receipt.status == "Accepted"
    assert (await flow.send(run, "ann@example.com")).previously_accepted
    with pytest.raises(NotReady):
        await flow.output(run)
    assert await flow.call(approve, "approved") == "recorded"
    assert await flow.attach(run) == "ann@example.com: approved"
    assert await flow.output(run) == "ann@example.com: approved"
    assert await client.workflow_attach("Signup", "w1") == "ann@example.com: approved"
    assert await client.workflow_output("Signup", "w1", type=str) == "ann@example.com: approved"
    assert await flow.call(status) == "approved"
    with pytest.raises(Conflict) as again:
        await flow.call(run, "ann@example.com")
    assert again.value.code == 409 and "already ran" in again.value.message


async def test_events_stream_to_the_end_while_an_awakeable_is_resolved(client: Client) -> None:
    receipt = await client.service(streams).send(chat, "hello brave world")
    seen = []
    async with client.events(receipt) as stream:
        async for event in stream:
            seen.append(event)
            if isinstance(event, Milestone) and event.data.get("stage") == "review":
                await client.resolve_awakeable(event.data["awakeable"], "ship it")
        assert stream.last_event_id == "5"
    assert [type(e).__name__ for e in seen] == ["Milestone", "Token", "Token", "Token", "Milestone", "Milestone", "End"]
    assert [e.data for e in seen if isinstance(e, Token)] == ["hello", "brave", "world"]
    assert seen[-1] == End(status="completed", output="HELLO BRAVE WORLD (ship it)")
    assert await client.attach(receipt) == "HELLO BRAVE WORLD (ship it)"
    # Resumed after the review milestone: only what followed it.
    assert [e async for e in client.events(receipt.invocation_id, last_event_id="4")] == seen[-2:]
    with pytest.raises(NotFound):  # it ended: its awakeable is gone
        await client.resolve_awakeable(seen[4].data["awakeable"], "twice")  # type: ignore[union-attr]


async def test_a_rejected_awakeable_fails_the_handler_and_the_stream_ends_with_it(client: Client) -> None:
    receipt = await client.send("Streams/chat", "no")
    async for event in client.events(receipt):
        if isinstance(event, Milestone) and event.data.get("stage") == "review":
            await client.reject_awakeable(event.data["awakeable"], "not like this")
        if isinstance(event, End):
            assert event.status == "failed" and event.failure is not None
            assert "not like this" in event.failure.message
    with pytest.raises(InvocationFailed) as failed:
        await client.attach(receipt)
    assert failed.value.code == 500 and "not like this" in failed.value.message
    assert failed.value.invocation_id == receipt.invocation_id


async def test_error_answers_surface_as_exceptions_with_their_code(client: Client) -> None:
    with pytest.raises(NotFound) as unknown:
        await client.call("Nope/handler")
    assert unknown.value.code == 404 and "Nope" in unknown.value.message
    with pytest.raises(NotFound):
        await client.attach("inv_01M8C5ZDZ50CR4RNHTYTQHFYN8")
    with pytest.raises(NotFound):
        await client.resolve_awakeable("awk_nothing", 1)
    with pytest.raises(BadRequest) as bad:
        await client.call("Steps/typed", {"item": "pen"})  # the string form is checked by the handler
    assert bad.value.code == 400 and "quantity" in bad.value.message
    with pytest.raises(InvocationFailed) as refused:
        await client.call("Steps/refuse", "no")
    assert (refused.value.code, refused.value.message) == (422, "refused: no")
    assert refused.value.invocation_id is not None and refused.value.invocation_id.startswith("inv_")
    with pytest.raises(PayloadTooLarge) as large:
        await client.call("Steps/length", "x" * (10 * 1024 * 1024 + 1))
    assert large.value.code == 413
    with pytest.raises(TimedOut):
        await client.call("Waits/park", 30, timeout=0.5)
    with pytest.raises(TimeoutError):  # a TimedOut is a TimeoutError too
        await client.call("Waits/park", 30, timeout=timedelta(milliseconds=200))


@pytest.fixture
async def small_lines(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """One worker; a key's line holds two waiting invocations at most."""
    flags = ["--durability", "none", "--workers", "1", "--max-queue-per-key", "2"]
    async with running_cluster(tmp_path, http, request, flags) as cluster:
        yield cluster


async def test_a_refused_idempotent_call_is_retried_after_retry_after(small_lines: Cluster) -> None:
    async with Client(f"http://{small_lines.ingress}", overload_retries=5) as client:
        busy = client.object(counter, "busy")
        holder = await busy.send(hold, 1500)  # runs 1.5 s; two more wait behind it and fill the line
        await busy.send(add, 1)
        await busy.send(add, 1)
        with pytest.raises(Overloaded) as refused:
            await busy.call(add, 1)  # no idempotency key: not retried
        assert refused.value.code == 429 and refused.value.retry_after == 1.0
        assert await busy.call(add, 10, idempotency_key="patient") == 12
        assert await client.attach(holder) == holder.invocation_id
    _, metrics = await small_lines.get("/metrics", admin=True)
    refusals = sum(float(row.split()[-1]) for row in metrics.splitlines()
                   if row.startswith("sidecar_invocations_refused_total"))
    assert refusals >= 2  # the unkeyed call's and at least one of the patient one's


async def test_a_stream_reconnects_across_a_sidecar_crash_losing_and_repeating_nothing(
    durable_cluster: Cluster,
) -> None:
    cluster = durable_cluster
    async with Client(f"http://{cluster.ingress}") as client:
        receipt = await client.send("Streams/chat", "one two")
        seen = []

        async def crash_and_resolve(awakeable_id: str) -> None:
            cluster.sidecar.kill()  # SIGKILL while the stream is open
            await cluster.start_sidecar()
            await client.resolve_awakeable(awakeable_id, "ok")

        crash: asyncio.Task[None] | None = None
        async with client.events(receipt, max_reconnects=40) as stream:
            async for event in stream:
                seen.append(event)
                if isinstance(event, Milestone) and event.data.get("stage") == "review":
                    crash = asyncio.create_task(crash_and_resolve(event.data["awakeable"]))
        assert crash is not None
        await crash
    ids = [event.id for event in seen if not isinstance(event, End)]
    assert ids == ["1", "2.0", "2.1", "4", "5"]
    assert [e.data["stage"] for e in seen if isinstance(e, Milestone)] == ["thinking", "review", "done"]
    assert seen[-1] == End(status="completed", output="ONE TWO (ok)")
