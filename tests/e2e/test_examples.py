"""The examples work as their README lines say, against real vendors, and survive a crash."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from examples.approval import approval
from handler_sdk.testing import SidecarError, TestSidecar
from tests.e2e.conftest import Cluster, running_cluster
from tests.e2e.sse import read_events, stage, subscribe
from tests.procs import eventually

ORDER = {"customer": "alice", "amount_cents": 4200, "email": "alice@example.com"}


@pytest.fixture
async def shop(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, http, request, ["--durability", "none"], handlers="examples.checkout:checkout",
                        sink="examples.vendors", sink_env="VENDORS_URL", sink_ready="/stats") as cluster:
        yield cluster


async def _vendor_stats(cluster: Cluster) -> dict:
    async with cluster.http.get(f"{cluster.sink_url}/stats") as response:
        return await response.json()


async def test_checkout_charges_once_and_mails_once(shop: Cluster) -> None:
    status, receipt, headers = await shop.post("/Checkout/order-1/place", ORDER)
    assert status == 200, receipt
    assert receipt["order_id"] == "order-1" and receipt["emailed_to"] == "alice@example.com"
    stats = await _vendor_stats(shop)
    assert (stats["charges"], stats["emails"]) == (1, 1)
    assert (await shop.post("/Checkout/order-1/status"))[1] == ORDER
    status, body, _ = await shop.post("/Checkout/order-1/place", ORDER)
    assert status == 409 and "already placed" in body["message"]
    assert ((await _vendor_stats(shop))["charges"], (await _vendor_stats(shop))["emails"]) == (1, 1)


async def test_checkout_after_a_handler_crash_still_charges_once(shop: Cluster) -> None:
    _, accepted, _ = await shop.post("/Checkout/order-2/place/send", ORDER)
    shop.handlers.kill()  # likely mid-flight; wherever it lands, the retry must not double-charge
    await shop.restart_handlers()
    status, receipt = await shop.get(f"/restate/invocation/{accepted['invocationId']}/attach")
    assert status == 200 and receipt["charge_id"]
    stats = await _vendor_stats(shop)
    assert (stats["charges"], stats["emails"]) == (1, 1)


@pytest.fixture
async def approvals(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest,
) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, http, request, ["--workers", "2"], handlers="examples.approval:approval") as cluster:
        yield cluster


async def test_approval_publishes_once_approved_even_across_a_sidecar_crash(approvals: Cluster) -> None:
    status, _, _ = await approvals.post("/Approval/post-1/run/send", {"topic": "launch", "deadline_s": 60})
    assert status == 202

    async def drafted() -> str:
        return (await approvals.post("/Approval/post-1/draft"))[1] or ""

    assert "launch" in await eventually(drafted, what="the draft")
    approvals.sidecar.kill()
    await approvals.start_sidecar()
    assert (await approvals.post("/Approval/post-1/decide", "approved"))[:2] == (200, "recorded: approved")
    status, result = await approvals.get("/restate/workflow/Approval/post-1/attach")
    assert status == 200 and result.startswith("published: Announcing launch")
    await _assert_nothing_left_pinned(approvals)


async def _assert_nothing_left_pinned(cluster: Cluster) -> None:
    """Once the workflow is over, nothing of it waits on (and pins) its deployment: the deadline
    does not outlive the decision, so a new deployment would leave this one drained at once."""
    _, listed = await cluster.get("/invocations?limit=100", admin=True)
    assert [inv for inv in listed["invocations"] if inv["status"] not in ("completed", "failed")] == []
    _, deployments = await cluster.get("/deployments", admin=True)
    assert [d["pinned_invocations"] for d in deployments["deployments"]] == [0]


async def test_approval_streams_its_progress_and_its_draft_as_it_writes_it(approvals: Cluster) -> None:
    status, accepted, _ = await approvals.post("/Approval/post-3/run/send", {"topic": "streams", "deadline_s": 60})
    assert status == 202
    async with await subscribe(approvals, accepted["invocationId"]) as stream:
        waiting = await read_events(stream, until=stage("awaiting a decision"))
        assert waiting[0][1:] == ("milestone", {"stage": "drafting"})
        assert {kind for _, kind, _ in waiting[1:-1]} == {"token"}
        assert " ".join(data for _, _, data in waiting[1:-1]) == "Announcing streams: it is finally here."
        assert (await approvals.post("/Approval/post-3/decide", "approved"))[0] == 200
        rest = await read_events(stream)
    assert rest[0][2] == {"stage": "decided", "decision": "approved"}
    assert rest[-1][1:] == ("end", {"status": "completed", "failure": None,
                                    "output": "published: Announcing streams: it is finally here."})
    await _assert_nothing_left_pinned(approvals)


async def test_approval_escalates_when_nobody_decides_within_its_two_days(
        sidecar_harness: Callable[..., TestSidecar]) -> None:
    """A realistic deadline, skipped through with the test clock (handler_sdk.testing)."""
    async with sidecar_harness([approval]) as sc:
        run = await sc.send("Approval/post-2/run", {"topic": "quiet", "deadline_s": 2 * 86400})
        await sc.wait_for(run, until=lambda inv: inv.sleeping)
        await sc.advance(timedelta(days=1, hours=23))
        assert not (await sc.invocation(run)).finished
        await sc.advance(timedelta(hours=1))
        assert await sc.attach(run) == "escalated to the on-call editor (timed out)"
        with pytest.raises(SidecarError) as late:
            await sc.call("Approval/post-2/decide", "approved")
        assert late.value.code == 409 and "already completed" in late.value.message


@pytest.fixture
async def counters(tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, http, request, ["--durability", "none"],
                               handlers="examples.counter:counter") as cluster:
        yield cluster


async def test_the_counter_client_calls_and_sends_typed_and_a_rerun_sends_nothing_new(counters: Cluster) -> None:
    command = [sys.executable, "-m", "examples.counter_client", "--ingress", f"http://{counters.ingress}", "--key", "k"]
    first = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == "add(5) -> 5" and lines[1].startswith("send add(2): Accepted inv_")
    assert lines[2:] == ["its result, once it ran -> 7", "get() -> 7"]
    again = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[1] == lines[1].replace("Accepted", "PreviouslyAccepted")
    assert again.stdout.splitlines()[2:] == ["its result, once it ran -> 7", "get() -> 12"]
