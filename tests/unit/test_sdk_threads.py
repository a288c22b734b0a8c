"""The threads that run sync ``ctx.run`` functions: results, errors, and an exit that never waits."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from handler_sdk._threads import DaemonExecutor

_where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="")


async def test_sync_functions_run_in_daemon_threads_with_the_callers_context() -> None:
    loop = asyncio.get_running_loop()
    executor = DaemonExecutor(max_workers=2)
    loop.set_default_executor(executor)
    _where.set("step 3")

    def work(n: int) -> tuple[int, str, bool]:
        return n * 2, _where.get(), threading.current_thread().daemon

    assert await asyncio.gather(*(asyncio.to_thread(work, n) for n in range(5))) == [
        (n * 2, "step 3", True) for n in range(5)]

    def fail() -> None:
        raise ValueError("vendor down")

    with pytest.raises(ValueError, match="vendor down"):
        await asyncio.to_thread(fail)


def test_shutdown_does_not_wait_for_a_blocked_function() -> None:
    executor = DaemonExecutor(max_workers=1)
    release = threading.Event()
    blocked = executor.submit(release.wait, 30)
    queued = executor.submit(lambda: "never started")
    started = time.monotonic()
    executor.shutdown(wait=True)
    assert time.monotonic() - started < 0.5
    assert not blocked.done()
    with pytest.raises(RuntimeError):
        executor.submit(lambda: None)
    release.set()
    assert blocked.result(timeout=5) is True
    assert queued.result(timeout=5) == "never started"  # taken before the threads were told to stop
