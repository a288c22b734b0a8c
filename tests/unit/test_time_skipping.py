"""The test clock (``sidecar serve --test-clock``): ``clock.now_ms`` and ``clock.call_at_ms``
follow it, an advance runs every wait it makes due, at once and in the order of due times, and
re-arms the others; the offset outlives the process, in the data directory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import clock
from sidecar.time_skipping import OFFSET_FILE, ClockFileError, SkippingClock

HOUR_MS = 3_600_000


@pytest.fixture
def skipping(tmp_path: Path) -> Iterator[SkippingClock]:
    test_clock = SkippingClock.load(tmp_path)
    clock.use_skipping_clock(test_clock)
    yield test_clock
    clock.use_skipping_clock(None)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_an_advance_runs_what_it_made_due_at_once_in_due_order_and_not_the_rest(
        skipping: SkippingClock) -> None:
    fired: list[str] = []
    start = clock.now_ms()
    clock.call_at_ms(start + 3 * HOUR_MS, fired.append, "three hours")
    clock.call_at_ms(start + HOUR_MS, fired.append, "one hour")
    clock.call_at_ms(start + 5 * HOUR_MS, fired.append, "five hours")
    cancelled = clock.call_at_ms(start + 2 * HOUR_MS, fired.append, "cancelled")
    cancelled.cancel()
    await asyncio.sleep(0.05)
    assert fired == []

    now = await skipping.advance(4 * HOUR_MS)
    assert now >= start + 4 * HOUR_MS and clock.now_ms() >= now
    await asyncio.sleep(0)  # what is due runs on the loop's next turn, no later
    assert fired == ["one hour", "three hours"]
    assert [wait.due_ms for wait in skipping.waits] == [start + 5 * HOUR_MS]

    await skipping.advance(HOUR_MS)
    await asyncio.sleep(0)
    assert fired == ["one hour", "three hours", "five hours"] and not skipping.waits


async def test_a_wait_left_short_of_due_by_an_advance_fires_when_the_rest_has_passed(
        skipping: SkippingClock) -> None:
    fired = asyncio.Event()
    clock.call_at_ms(clock.now_ms() + HOUR_MS + 100, fired.set)
    await skipping.advance(HOUR_MS)
    await asyncio.sleep(0)
    assert not fired.is_set()
    await asyncio.wait_for(fired.wait(), 5)  # the 100 ms left, in real time


async def test_a_wait_already_due_runs_at_once(skipping: SkippingClock) -> None:
    fired: list[int] = []
    clock.call_at_ms(clock.now_ms() - 1000, fired.append, 1)
    await asyncio.sleep(0)
    assert fired == [1] and not skipping.waits


async def test_the_offset_is_on_disk_before_anything_runs_on_it_and_read_back(
        tmp_path: Path, skipping: SkippingClock) -> None:
    seen: list[int] = []
    clock.call_at_ms(clock.now_ms() + HOUR_MS, lambda: seen.append(SkippingClock.load(tmp_path).offset_ms))
    await skipping.advance(2 * HOUR_MS)
    await asyncio.sleep(0)
    assert seen == [2 * HOUR_MS]
    await skipping.advance(HOUR_MS)
    again = SkippingClock.load(tmp_path)
    assert again.offset_ms == 3 * HOUR_MS
    before = wall_ms()
    assert before + 3 * HOUR_MS <= again.now_ms() <= wall_ms() + 3 * HOUR_MS


async def test_concurrent_advances_add_up(tmp_path: Path, skipping: SkippingClock) -> None:
    await asyncio.gather(*(skipping.advance(1000) for _ in range(20)))
    assert skipping.offset_ms == 20_000 == SkippingClock.load(tmp_path).offset_ms


async def test_the_clock_never_moves_back(skipping: SkippingClock) -> None:
    with pytest.raises(ValueError, match="only moves forward"):
        await skipping.advance(-1)
    assert skipping.offset_ms == 0


def test_a_new_data_directory_starts_at_the_wall_clock(tmp_path: Path) -> None:
    assert SkippingClock.load(tmp_path / "new").offset_ms == 0


@pytest.mark.parametrize("content", [b"", b"{", b'{"offset_ms": "soon"}', b'{"offset_ms": 1, "x": 2}'])
def test_an_unreadable_offset_file_is_refused_with_its_path(tmp_path: Path, content: bytes) -> None:
    (tmp_path / OFFSET_FILE).write_bytes(content)
    with pytest.raises(ClockFileError, match=OFFSET_FILE):
        SkippingClock.load(tmp_path)


async def test_without_a_test_clock_waits_are_the_loops_own_timers() -> None:
    assert clock.offset_ms() == 0
    before = wall_ms()
    assert before <= clock.now_ms() <= wall_ms()
    handle = clock.call_at_ms(clock.now_ms() + HOUR_MS, lambda: None)
    assert isinstance(handle, asyncio.TimerHandle)
    handle.cancel()
