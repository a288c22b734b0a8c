"""Stopping a task that drops a cancellation, as Python 3.11's ``asyncio.wait_for`` does when the
future it waits on completes at the same moment (what left a NATS follow loop running after close)."""

from __future__ import annotations

import asyncio

from sidecar.cluster.tasks import stop_tasks


async def _drops_one_cancellation(cancelled: list[int]) -> None:
    while True:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(1)
            if len(cancelled) > 1:
                raise
            # the first one is dropped, and the loop goes on


async def test_a_task_that_drops_a_cancellation_is_stopped_all_the_same() -> None:
    cancelled: list[int] = []
    task = asyncio.ensure_future(_drops_one_cancellation(cancelled))
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_tasks(task), timeout=5)
    assert task.cancelled() and len(cancelled) == 2


async def test_tasks_that_ended_or_failed_are_stopped_without_error() -> None:
    async def fails() -> None:
        raise ValueError("gone")

    done = asyncio.ensure_future(asyncio.sleep(0))
    failed = asyncio.ensure_future(fails())
    await asyncio.sleep(0.01)
    await asyncio.wait_for(stop_tasks(done, failed), timeout=5)
    assert done.done() and isinstance(failed.exception(), ValueError)
