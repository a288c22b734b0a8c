"""Waiting on completable entries, and suspending when that is all a handler does.

The sidecar completes a timer, an awakeable, a call, a promise operation later, with a
``Completion`` that may arrive before the code awaits the entry, while it does, or long before (an
awakeable handed out early and awaited at the end). So a completion is kept by index whatever the
code is doing, and an await looks there first.

Suspension: an attempt whose code does nothing but wait for completions holds a task, memory and
the sidecar's attention for nothing. Once it has been in that state for ``suspend_after`` seconds
the owner tells the sidecar which entries it waits on, and every pending await raises the signal
the owner gives, so that the handler unwinds (its ``finally`` blocks run). The clock starts over
whenever a completion arrives: progress is not idleness.

Only awaits made through the context are seen. Code that awaits something else next to a timer
(an ``asyncio.Event``, a socket) is not "doing something": put that work in ``ctx.run``, which
holds suspension off while it executes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

from .protocol import Failure

T = TypeVar("T")

#: A completion's outcome: the value (``None`` for a timer) or the failure.
Result = tuple[bytes | None, Failure | None]
#: Called when the attempt suspends, with the awaited indices; returns how to make each pending
#: await's exception (a fresh one per await, so that tracebacks do not mix).
OnSuspend = Callable[[list[int]], Callable[[], BaseException]]


class Completions:
    """One attempt's completions, its pending awaits on them, and its suspension timer."""

    __slots__ = ("_suspend_after", "_idle", "_on_suspend", "_on_blocked", "_results", "_pending", "_timer")

    def __init__(
        self, suspend_after: float, idle: Callable[[], bool], on_suspend: OnSuspend,
        on_blocked: Callable[[], None] = lambda: None,
    ) -> None:
        self._suspend_after = suspend_after
        #: Called when code starts waiting on an incomplete entry (a cancellation may be due).
        self._on_blocked = on_blocked
        #: Whether the attempt does nothing but wait (no step executing, no ack outstanding).
        self._idle = idle
        self._on_suspend = on_suspend
        self._results: dict[int, Result] = {}
        # One future per await (not per index), mapped to the index it awaits: an await that gives
        # up (asyncio.wait_for) must not cancel the others, nor a later await of the same entry.
        # Insertion order is await order, which ``interrupt`` relies on.
        self._pending: dict[asyncio.Future[None], int] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> bool:
        """Whether some code is awaiting an entry that is not complete yet."""
        return bool(self._pending)

    def complete(self, index: int, value: bytes | None, failure: Failure | None) -> None:
        """Entry ``index`` is done: wake its awaits, or keep the outcome for a later one."""
        if index in self._results:  # a repeat: the first outcome stands
            return
        self._results[index] = (value, failure)
        woken = [future for future, awaited in self._pending.items() if awaited == index]
        for future in woken:
            del self._pending[future]
            if not future.done():
                future.set_result(None)
        self._disarm()  # progress: the idle clock starts over
        self.reschedule()

    async def wait(self, index: int) -> Result:
        """The outcome of entry ``index``, waiting for its completion if it has none yet."""
        result = self._results.get(index)
        if result is not None:
            return result
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[future] = index
        self.reschedule()
        self._on_blocked()
        try:
            await future
        finally:
            if self._pending.pop(future, None) is not None:  # this await gave up (cancelled)
                self.reschedule()
        return self._results[index]

    def interrupt(self, error: BaseException) -> bool:
        """Raise ``error`` at the oldest pending await, the one the code has waited on longest.

        Returns whether there was one. The others keep waiting.
        """
        for future in self._pending:
            del self._pending[future]
            future.set_exception(error)
            self.reschedule()
            return True
        return False

    def reschedule(self) -> None:
        """Arm the suspension timer if the attempt only waits now; disarm it if not."""
        if self._pending and self._idle():
            if self._timer is None and math.isfinite(self._suspend_after):
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._suspend_after, self._fire)
        else:
            self._disarm()

    def close(self) -> None:
        """The attempt is over: no suspension may fire for it any more."""
        self._disarm()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if not (self._pending and self._idle()):
            return
        pending, self._pending = self._pending, {}
        signal = self._on_suspend(sorted(set(pending.values())))
        for future in pending:
            if not future.done():
                future.set_exception(signal())


class EntryFuture(Generic[T]):
    """The outcome of a completable journal entry (an awakeable, a call, a promise operation).

    The entry is journaled when the context method returns this object, not when it is awaited,
    so that several can be started and then awaited together (``asyncio.gather``). It may be
    awaited at any time while the handler runs, and more than once: each await gives the same
    outcome, and a completion that came before the await is kept. A failure raises
    ``TerminalError`` with its message and code. It is not a coroutine: never awaiting it is fine.
    """

    __slots__ = ("_kind", "_index", "_result")

    def __init__(self, kind: str, index: int, result: Callable[[], Awaitable[T]]) -> None:
        self._kind = kind
        self._index = index
        self._result = result

    def __await__(self) -> Generator[Any, None, T]:
        return self._result().__await__()

    def __repr__(self) -> str:
        return f"<{self._kind} future, journal entry {self._index}>"
