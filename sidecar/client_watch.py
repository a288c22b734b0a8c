"""Requests that wait for an invocation's result stop waiting when their client hangs up.

aiohttp does not cancel a handler whose client disconnected, so a call or an attach whose client
gave up (a timeout; a poller that attaches again and again) would wait, holding its task, until
the invocation ends: for a workflow waiting on a human, days. Once a second, the waiting handlers
whose connection is gone are cancelled. Their invocations go on; only the waiting ends (over the
mesh, the owning worker is told too, see ``mesh.Abandoned``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

#: How often the waiting handlers are checked for a client that hung up.
CHECK_S = 1.0


class ClientWatch:
    def __init__(self) -> None:
        self._waiting: dict[asyncio.Task[Any], web.Request] = {}

    @contextmanager
    def waiting(self, request: web.Request) -> Iterator[None]:
        """While inside, the current handler is cancelled if ``request``'s client hangs up."""
        task = asyncio.current_task()
        assert task is not None
        self._waiting[task] = request
        try:
            yield
        finally:
            self._waiting.pop(task, None)

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: the check runs while the app serves."""
        sweeper = asyncio.ensure_future(self._sweep())
        yield
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(CHECK_S)
            for task, request in list(self._waiting.items()):
                transport = request.transport
                if transport is None or transport.is_closing():
                    task.cancel()
