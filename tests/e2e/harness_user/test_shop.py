"""A user's tests of shop.py with the ``sidecar_harness`` fixture: days pass in no time, crashes
are real SIGKILLs, and what happened outside is counted in a file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from handler_sdk.testing import SidecarError, TestSidecar

import shop

pytestmark = pytest.mark.asyncio  # for pytest-asyncio's strict mode; auto mode needs none


@pytest.fixture
def effects(tmp_path: Path) -> Path:
    return tmp_path / "side-effects.txt"


def happened(effects: Path) -> list[str]:
    return effects.read_text().splitlines() if effects.exists() else []


Harness = Callable[..., TestSidecar]


async def test_a_three_day_trial_reminds_after_three_days_in_seconds(sidecar_harness: Harness, effects: Path) -> None:
    started = time.monotonic()
    async with sidecar_harness(shop.SERVICES, env={"SIDE_EFFECTS": str(effects)}) as sc:
        invocation_id = await sc.send("Trial/bob/start", "bob@example.com")
        sleeping = await sc.wait_for(invocation_id, until=lambda inv: inv.sleeping)
        assert happened(effects) == ["welcome bob@example.com"] and sleeping.status in ("running", "suspended")
        await sc.advance(timedelta(days=2))
        assert (await sc.invocation(invocation_id)).sleeping  # two days are not three
        await sc.advance(timedelta(days=1))
        assert await sc.attach(invocation_id) == "reminded bob@example.com after 3 days"
        assert happened(effects) == ["welcome bob@example.com", "reminder bob@example.com"]
    assert time.monotonic() - started < 60


async def test_a_send_delayed_two_days_runs_once_they_have_passed(sidecar_harness: Harness, effects: Path) -> None:
    async with sidecar_harness(shop.SERVICES, env={"SIDE_EFFECTS": str(effects)}) as sc:
        invocation_id = await sc.send("Trial/carol/welcome", "carol@example.com", delay=timedelta(days=2))
        delayed = await sc.invocation(invocation_id)
        assert delayed.status == "pending" and delayed.reason is not None and delayed.reason.startswith("delayed")
        await sc.advance(timedelta(days=1, hours=23))
        assert (await sc.invocation(invocation_id)).status == "pending" and happened(effects) == []
        await sc.advance(timedelta(hours=1))
        assert await sc.attach(invocation_id) == "welcome carol@example.com"
        assert happened(effects) == ["welcome carol@example.com"]


async def test_a_handlers_deadline_passes_when_the_clock_is_advanced(sidecar_harness: Harness) -> None:
    async with sidecar_harness(shop.SERVICES) as sc:
        invocation_id = await sc.send("Quote/hold")
        await sc.wait_for(invocation_id, until=lambda inv: inv.sleeping)
        await sc.advance(timedelta(hours=1, minutes=1))
        with pytest.raises(SidecarError) as failed:
            await sc.attach(invocation_id)
        assert failed.value.code == 408
        assert (await sc.invocation(invocation_id)).status == "failed"


async def test_a_retry_backed_off_for_an_hour_comes_at_once_when_the_hour_is_skipped(
        sidecar_harness: Harness, effects: Path) -> None:
    async with sidecar_harness(shop.SERVICES, env={"SIDE_EFFECTS": str(effects)}) as sc:
        invocation_id = await sc.send("Flaky/twice")
        backing_off = await sc.wait_for(invocation_id, "backing-off")
        assert backing_off.next_retry_at is not None and backing_off.next_retry_at - await sc.now() > timedelta(minutes=25)
        await sc.advance(timedelta(hours=1))
        assert await sc.attach(invocation_id) == "the second attempt worked"


async def test_a_handler_killed_mid_step_resumes_without_repeating_the_steps_done(
        sidecar_harness: Harness, effects: Path) -> None:
    async with sidecar_harness(shop.SERVICES, env={"SIDE_EFFECTS": str(effects)}) as sc:
        invocation_id = await sc.send("Order/o-1/checkout", 4200)
        shipping = Path(str(effects) + ".shipping")
        await sc.wait_for(invocation_id, until=lambda inv: bool(inv.entries("Run", "charge")) and shipping.exists())
        shipping.unlink()  # the step waits for its gate now: only the next attempt touches this again
        await sc.kill_handler()  # SIGKILL while "ship" runs; a fresh process serves when this returns
        await sc.wait_for(invocation_id, until=lambda inv: shipping.exists())  # the retry got as far again
        Path(str(effects) + ".gate").touch()
        assert await sc.attach(invocation_id) == "o-1 shipped"
        assert happened(effects) == ["charge o-1 4200", "ship o-1"]
        done = await sc.invocation(invocation_id)
        assert done.attempts >= 2 and [e.name for e in done.entries("Run")] == ["charge", "ship"]


async def test_a_restart_keeps_what_finished_and_the_time_it_was(sidecar_harness: Harness) -> None:
    async with sidecar_harness(shop.SERVICES) as sc:
        assert await sc.call("Counter/alice/add", 5) == 5
        added = await sc.send("Counter/alice/add", 2)
        assert await sc.attach(added) == 7
        advanced = await sc.advance(timedelta(hours=12))
        await sc.restart()
        assert await sc.now() >= advanced
        kept = await sc.invocation(added)
        assert (kept.status, kept.output) == ("completed", 7)
        assert await sc.call("Counter/alice/add", 1) == 8


async def test_failures_come_back_as_errors_with_their_code(sidecar_harness: Harness) -> None:
    async with sidecar_harness(shop.SERVICES) as sc:
        with pytest.raises(SidecarError) as unknown:
            await sc.call("Nobody/here", 1)
        assert unknown.value.code == 404
        with pytest.raises(SidecarError) as refused:
            await sc.call("Counter/alice/add", "five")
        assert refused.value.code == 400


async def fired(sc: TestSidecar, name: str, after: str | None) -> str:
    """The invocation schedule ``name`` started last, once it is another than ``after``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        last = (await sc.admin("GET", f"/schedules/{name}"))["last_invocation_id"]
        if last is not None and last != after:
            return str(last)
        await asyncio.sleep(0.05)
    raise AssertionError(f"schedule {name} did not fire")


async def test_a_daily_schedule_fires_once_for_each_day_skipped_across_a_sidecar_stop(
        sidecar_harness: Harness) -> None:
    async with sidecar_harness(shop.SERVICES) as sc:
        await sc.admin("PUT", "/schedules/nightly", {"every": "1d", "target": "Counter/nightly/add", "input": 1})
        await sc.advance(timedelta(days=1))
        first = await fired(sc, "nightly", None)
        assert await sc.attach(first) == 1
        await sc.restart()
        await sc.advance(timedelta(days=1))
        second = await fired(sc, "nightly", first)
        assert await sc.attach(second) == 2
        assert await sc.call("Counter/nightly/add", 0) == 2  # two days, two firings: none doubled
