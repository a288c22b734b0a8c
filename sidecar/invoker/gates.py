"""A step's leave to run: the ``AskLeave`` and ``StepReport`` frames of this worker's attempts.

A step may name a circuit breaker, a limit group, or both: the breaker is asked first, then the
step waits for its group's slot (``slots.Slots``).

Breakers' state lives with their owner (``BreakerOwner``: the board itself in the worker that
holds it, the mesh elsewhere); this part answers the attempts of its own worker, remembers which
of its links hold a lease on a closed breaker, and revokes those leases when the owner says the
breaker opened. A step refused by an open breaker takes its fallback, or, without one, its
invocation backs off until the breaker may let a trial through, spending nothing.
"""

from __future__ import annotations

import logging
import weakref
from typing import Protocol

from handler_sdk.protocol import MAX_DELAY_MS, AskLeave, BreakerSpec, Leave, Revoke, StepReport, encoder, name_problem

from ..clock import iso_ms, now_ms
from ..transport.links import Carrier
from .background import Background
from .breakers import Decision
from .limits import Holder
from .live import Attempt, Live
from .peers import Peers
from .slots import Slots

log = logging.getLogger(__name__)


class BreakerOwner(Protocol):
    """Whoever holds the breakers' state (``BreakerBoard``, or a peer that reaches it)."""

    async def ask(self, spec: BreakerSpec) -> Decision: ...

    def report(self, spec: BreakerSpec, failed: bool) -> None: ...


class RemoteBreakers:
    """The breakers of worker 0, reached from another worker."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    async def ask(self, spec: BreakerSpec) -> Decision:
        return await self._peers.ask_breaker(spec)

    def report(self, spec: BreakerSpec, failed: bool) -> None:
        self._peers.report_breaker(spec, failed)


class RemoteLimits:
    """The limit groups of worker 0, reached from another worker."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    async def acquire(self, name: str, holder: Holder) -> bool:
        return await self._peers.acquire_slot(name, holder)

    def release(self, name: str, holder: Holder) -> None:
        self._peers.release_slot(name, holder)


class Backoff(Protocol):
    """How an invocation whose attempt is over waits (``Lifecycle.back_off``)."""

    def back_off(self, live: Live, reason: str, delay: float) -> None: ...


def spec_problem(spec: BreakerSpec) -> str | None:
    """What is wrong with a breaker as a frame declares it, if anything (a protocol violation)."""
    problem = name_problem(spec.name)
    if problem is not None:
        return f"breaker name: {problem}"
    if spec.failure_threshold < 1:
        return f"breaker {spec.name}: failure_threshold must be 1 or more, not {spec.failure_threshold}"
    if not 1 <= spec.cool_down_ms <= MAX_DELAY_MS:
        return f"breaker {spec.name}: cool_down_ms must be between 1 and {MAX_DELAY_MS}, not {spec.cool_down_ms}"
    return None


def open_reason(name: str, until_ms: int) -> str:
    return f"breaker {name} open until {iso_ms(until_ms)}"


class Gates:
    def __init__(self, *, breakers: BreakerOwner, slots: Slots, backoff: Backoff, background: Background) -> None:
        self.breakers = breakers
        self._slots = slots
        self._backoff = backoff
        self._background = background
        #: The links of this worker holding a lease on each closed breaker.
        self._leases: dict[str, weakref.WeakSet[Carrier]] = {}
        #: The last epoch each breaker was revoked in (a lease granted before it is void).
        self._revoked: dict[str, int] = {}

    def asked(self, attempt: Attempt, ask: AskLeave) -> None:
        if ask.breaker is None and ask.limit is None:
            attempt.link.send(encoder.encode(Leave(attempt.live.record.id, ask.index)))
            return
        self._background.spawn(self._ask(attempt, ask))

    async def _ask(self, attempt: Attempt, ask: AskLeave) -> None:
        lease = False
        if ask.breaker is not None:
            lease_or_refused = await self._breaker(attempt, ask, ask.breaker)
            if lease_or_refused is None:
                return
            lease = lease_or_refused
        if attempt.over:
            return
        if ask.limit is not None:
            self._slots.enter(attempt, ask, ask.limit, lease)
        else:
            attempt.link.send(encoder.encode(Leave(attempt.live.record.id, ask.index, lease=lease)))

    async def _breaker(self, attempt: Attempt, ask: AskLeave, spec: BreakerSpec) -> bool | None:
        """Whether the breaker lets this try through with a lease (False: without); None: it
        does not (the step was told, or its invocation backed off)."""
        try:
            decision = await self.breakers.ask(spec)
        except ConnectionError as exc:  # the owner is restarting: let the step run, as if closed
            log.warning("breaker %s: its owner is not reachable (%s); letting a step through", spec.name, exc)
            decision = Decision(True)
        if attempt.over:
            return None
        invocation_id = attempt.live.record.id
        if decision.granted:
            lease = decision.lease and decision.epoch >= self._revoked.get(spec.name, 0)
            if lease:
                self._leases.setdefault(spec.name, weakref.WeakSet()).add(attempt.link)
            return lease
        if ask.fallback:
            attempt.link.send(encoder.encode(Leave(invocation_id, ask.index, granted=False,
                                                   open_until_ms=decision.open_until_ms)))
        else:
            attempt.detach(kill=True)
            reason = open_reason(spec.name, decision.open_until_ms)
            log.info("%s backs off: %s", invocation_id, reason, extra={"invocation_id": invocation_id})
            self._backoff.back_off(attempt.live, reason, max(0.0, (decision.open_until_ms - now_ms()) / 1000))
        return None

    def journaled(self, attempt: Attempt, index: int) -> None:
        """A ``Run`` entry arrived: the step is over, and so is any slot it held."""
        self._slots.journaled(attempt, index)

    def reported(self, report: StepReport) -> None:
        self.breakers.report(report.breaker, report.failed)

    def revoke(self, name: str, epoch: int) -> None:
        """Breaker ``name`` opened (its ``epoch``-th time): every lease on it here is void."""
        self._revoked[name] = max(epoch, self._revoked.get(name, 0))
        links = self._leases.pop(name, None)
        if links:
            frame = encoder.encode(Revoke("", name))
            for link in list(links):
                link.send(frame)
