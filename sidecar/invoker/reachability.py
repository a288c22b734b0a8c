"""Waiting for an unreachable deployment: one prober per deployment instead of a retry per invocation.

An attempt that cannot even connect tells nothing about the handler, only about its host. Counting
it as a failure would pause every invocation of a deployment that is down for a minute, and the
invocations' own backoffs would keep them waiting long after it is back. So such invocations wait
here, off the retry budget; one prober knocks with its own backoff and, at the first connection
that succeeds, wakes all of them at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..clock import iso_ms, now_ms
from ..transport.links import LinkError

log = logging.getLogger(__name__)

#: The prober's backoff: quick at first (a restart is often over in a second), at most this slow.
PROBE_INITIAL_S = 0.05
PROBE_MAX_S = 1.0


class Waiting:
    """One invocation waiting on a deployment; ``cancel`` (kill, pause, shutdown) takes it out."""

    __slots__ = ("_prober", "wake")

    def __init__(self, prober: Prober, wake: Callable[[], None]) -> None:
        self._prober = prober
        self.wake = wake

    def cancel(self) -> None:
        self._prober.waiting.discard(self)


class Prober:
    """Knocks on one deployment (``connect``) while invocations wait on it."""

    def __init__(self, deployment_id: str, connect: Callable[[], Awaitable[object]],
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.deployment_id = deployment_id
        self._connect = connect
        self._spawn = spawn
        self.waiting: set[Waiting] = set()
        #: When the current outage began (ms since the epoch); None while the deployment answers.
        self.down_since_ms: int | None = None
        self._error = ""

    @property
    def down(self) -> bool:
        return self.down_since_ms is not None

    def reason(self) -> str:
        return f"deployment {self.deployment_id} unreachable since {iso_ms(self.down_since_ms or now_ms())}: " \
               f"{self._error}"

    def wait(self, wake: Callable[[], None], error: str | None = None) -> Waiting:
        """Call ``wake`` once the deployment accepts a connection again (``error``: why it did not)."""
        if error is not None:
            self._error = error
        if self.down_since_ms is None:
            self.down_since_ms = now_ms()
            log.warning("%s; invocations wait for it, probing", self._error)
            self._spawn(self._probe())
        waiting = Waiting(self, wake)
        self.waiting.add(waiting)
        return waiting

    async def _probe(self) -> None:
        started = time.monotonic()
        try:
            if not await self._knock():
                return  # all killed or paused meanwhile: knock again when one waits
            log.info("deployment %s reachable again after %.1f s: resuming %d invocation(s)", self.deployment_id,
                     time.monotonic() - started, len(self.waiting))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the sidecar is shutting down
                raise
            # The open it awaited was cancelled (its pool closed): nobody would ever wake them.
            log.warning("deployment %s: probing was cut short; resuming %d invocation(s) to connect on their own",
                        self.deployment_id, len(self.waiting))
        except Exception:  # not an outage but a fault: each waiter's own attempt then reports it
            log.exception("deployment %s: probing failed; resuming %d invocation(s) to connect on their own",
                          self.deployment_id, len(self.waiting))
        finally:
            self.down_since_ms = None  # whatever ended it: the next waiter starts a new prober
        waiting, self.waiting = self.waiting, set()
        loop = asyncio.get_running_loop()
        for one in waiting:  # each on its own: one that raises is reported and stops no other
            loop.call_soon(one.wake)

    async def _knock(self) -> bool:
        """Knock with backoff until a connection succeeds (True) or nobody waits any more (False)."""
        delay = PROBE_INITIAL_S
        while True:
            await asyncio.sleep(delay)
            if not self.waiting:
                return False
            try:
                await self._connect()
                return True
            except LinkError as exc:
                self._error = str(exc)
                delay = min(delay * 2, PROBE_MAX_S)
