"""A step's leave to run, asked of the sidecar only when it must be.

A step naming a circuit breaker asks before each try, unless its connection holds a lease on that
breaker: the sidecar grants one with the first leave while the breaker is closed and revokes it
(a ``Revoke`` frame) when the breaker opens. So while a breaker is closed its steps cost no round
trip; how each try ended is reported without waiting (``StepReport``). A step naming a limit
group always asks: the answer comes once it holds one of the group's slots, which it keeps until
its ``Run`` entry. A request-response attempt cannot be answered midway: its steps run without
asking or reporting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .errors import TerminalError
from .protocol import AskLeave, BreakerSpec, Leave, StepReport, ToSidecar

#: The longest wait for a slot a handler asks for (``suspend_after`` may be infinite).
_MAX_WAIT_MS = 2**31 - 1


class Gates:
    """One connection's leases on closed breakers, and its steps waiting for leave. ``wait_ms``:
    how long a step may wait for a limit's slot before the sidecar frees its attempt."""

    __slots__ = ("_emit", "wait_ms", "_leased", "_asking")

    def __init__(self, emit: Callable[[ToSidecar], None], wait_ms: float = 1000.0) -> None:
        self._emit = emit
        self.wait_ms = int(min(wait_ms, _MAX_WAIT_MS))
        self._leased: set[str] = set()
        self._asking: dict[tuple[str, int], asyncio.Future[Leave]] = {}

    def leased(self, name: str) -> bool:
        return name in self._leased

    def answered(self, leave: Leave) -> None:
        future = self._asking.pop((leave.invocation_id, leave.index), None)
        if future is not None and not future.done():
            future.set_result(leave)

    def revoked(self, name: str) -> None:
        self._leased.discard(name)

    async def ask(self, ask: AskLeave) -> Leave:
        """Send ``ask`` and wait for its answer (the attempt's end cancels the wait)."""
        place = (ask.invocation_id, ask.index)
        future: asyncio.Future[Leave] = asyncio.get_running_loop().create_future()
        self._asking[place] = future
        self._emit(ask)
        try:
            leave = await future
        finally:
            if self._asking.get(place) is future:
                del self._asking[place]
        if leave.lease and ask.breaker is not None:
            self._leased.add(ask.breaker.name)
        return leave

    def report(self, invocation_id: str, spec: BreakerSpec, failed: bool) -> None:
        self._emit(StepReport(invocation_id, spec, failed))


class StepGate:
    """What one step that names a breaker or a limit group asks and tells the sidecar, try by try.

    The hook for fallbacks: ``await gate.admit()`` is False while the breaker is open for this
    step, which then runs its fallback instead (a step with no fallback is never told so: the
    sidecar backs its invocation off and ends the attempt). It raises ``TerminalError`` (400)
    for a limit group the sidecar does not have: the step fails with it."""

    __slots__ = ("_gates", "_invocation_id", "_index", "_spec", "_limit", "_fallback", "_trying")

    def __init__(self, gates: Gates, invocation_id: str, index: int, spec: BreakerSpec | None,
                 limit: str | None = None, *, fallback: bool = False) -> None:
        self._gates = gates
        self._invocation_id = invocation_id
        self._index = index
        self._spec = spec
        self._limit = limit
        self._fallback = fallback
        #: A try that the breaker let through is running: its outcome is reported.
        self._trying = False

    async def admit(self) -> bool:
        """Whether this try may run the step's own function now (False: the breaker is open)."""
        spec = self._spec
        if self._limit is None and spec is not None and self._gates.leased(spec.name):
            self._trying = True
            return True
        leave = await self._gates.ask(AskLeave(self._invocation_id, self._index, breaker=spec,
                                               fallback=self._fallback, limit=self._limit,
                                               wait_ms=self._gates.wait_ms))
        if leave.failure is not None:
            raise TerminalError(leave.failure.message, leave.failure.code)
        self._trying = leave.granted and spec is not None
        return leave.granted

    def failed(self) -> None:
        """A try failed transiently."""
        self._report(True)

    def succeeded(self) -> None:
        """A try returned, or failed terminally: the dependency answered."""
        self._report(False)

    def _report(self, failed: bool) -> None:
        if self._trying and self._spec is not None:
            self._trying = False
            self._gates.report(self._invocation_id, self._spec, failed)


def step_gates(gates: Gates | None, invocation_id: str, index: int, breaker: BreakerSpec | None, limit: str | None,
               *, has_fallback: bool) -> tuple[StepGate | None, StepGate | None]:
    """The gates of the step at ``index``: one for tries of its function (the breaker and the
    limit group), one for tries of its fallback (the limit group alone), each None when there is
    nothing to ask, or no sidecar to ask it of midway (request-response mode)."""
    if gates is None or (breaker is None and limit is None):
        return None, None
    own = StepGate(gates, invocation_id, index, breaker, limit, fallback=has_fallback)
    fallback = StepGate(gates, invocation_id, index, None, limit) if has_fallback and limit is not None else None
    return own, fallback
