"""This worker's steps that wait for, or hold, a slot of a limit group.

The slots themselves are counted by their owner (``LimitOwner``: the board in worker 0, the mesh
elsewhere). A step that asks waits here, its attempt kept, for ``wait_ms`` (its handler's
``suspend_after``); past that the attempt is ended and the invocation waits in the group's line
with none (``backing-off``, journaling nothing). When the owner grants the slot, a waiting
attempt is told to run (``Leave``), a parked invocation is launched again and finds the slot
held for it when its step asks (for ``CLAIM_S``, after which it is given back). A slot goes back
when the step's ``Run`` entry arrives or its attempt ends, however it ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from handler_sdk.protocol import AskLeave, Failure, Leave, encoder

from ..clock import now_ms
from ..store import InvocationRecord
from .background import Background
from .limits import Holder, UnknownLimit
from .live import Attempt, Live

log = logging.getLogger(__name__)

#: How long a slot granted to a parked invocation waits for its step to ask again.
CLAIM_S = 10.0


class LimitOwner(Protocol):
    """Whoever counts the slots (``LimitBoard``, or a peer that reaches it)."""

    async def acquire(self, name: str, holder: Holder) -> bool: ...

    def release(self, name: str, holder: Holder) -> None: ...


class Relaunch(Protocol):
    """What a parked invocation needs of the lifecycle."""

    def launch(self, live: Live) -> None: ...

    def persist(self, record: InvocationRecord) -> asyncio.Future[None]: ...


class _Waiter:
    __slots__ = ("name", "attempt", "live", "lease", "timer")

    def __init__(self, name: str, attempt: Attempt, lease: bool) -> None:
        self.name = name
        #: The attempt that waits; None once parked (``live`` waits without one).
        self.attempt: Attempt | None = attempt
        self.live = attempt.live
        self.lease = lease
        self.timer: asyncio.TimerHandle | None = None


class _Parked:
    """A parked invocation's place in a group's line, as its ``retry_handle``: a kill, pause or
    cancel takes it out."""

    __slots__ = ("_slots", "_holder")

    def __init__(self, slots: Slots, holder: Holder) -> None:
        self._slots = slots
        self._holder = holder

    def cancel(self) -> None:
        self._slots.withdraw(self._holder)


class Slots:
    def __init__(self, *, owner: LimitOwner, worker: int, steering: Relaunch, background: Background) -> None:
        self.owner = owner
        self._worker = worker
        self._steering = steering
        self._background = background
        self._waiting: dict[Holder, _Waiter] = {}
        #: Slots held by a running step: its group.
        self._held: dict[Holder, str] = {}
        #: Slots granted to a parked invocation that has not asked again yet.
        self._claims: dict[Holder, tuple[str, asyncio.TimerHandle]] = {}

    def enter(self, attempt: Attempt, ask: AskLeave, name: str, lease: bool) -> None:
        """A try of step ``ask.index`` needs a slot of group ``name``: ``Leave`` once it holds one."""
        holder = Holder(self._worker, attempt.live.record.id, ask.index)
        claim = self._claims.pop(holder, None)
        if claim is not None:
            claim[1].cancel()
            self._hold(attempt, holder, claim[0], lease)
        elif holder in self._held:  # another try of a step that holds its slot
            self._leave(attempt, holder, lease)
        elif holder not in self._waiting:
            waiter = self._waiting[holder] = _Waiter(name, attempt, lease)
            attempt.when_over(lambda: self._gone(holder, attempt))
            self._background.spawn(self._acquire(holder, waiter, ask.wait_ms))

    async def _acquire(self, holder: Holder, waiter: _Waiter, wait_ms: int) -> None:
        try:
            granted = await self.owner.acquire(waiter.name, holder)
        except UnknownLimit as exc:
            self._refuse(holder, waiter, Failure(400, str(exc)))
            return
        except ConnectionError as exc:  # the owner is restarting: the step waits no more
            log.warning("limit %s: its owner is not reachable (%s); letting a step through", waiter.name, exc)
            self._refuse(holder, waiter, None)
            return
        if granted:
            self.granted(holder)
        elif self._waiting.get(holder) is waiter:
            waiter.timer = asyncio.get_running_loop().call_later(max(0, wait_ms) / 1000, self._park, holder)

    def _refuse(self, holder: Holder, waiter: _Waiter, failure: Failure | None) -> None:
        if self._waiting.get(holder) is waiter:
            del self._waiting[holder]
            if waiter.attempt is not None and not waiter.attempt.over:
                waiter.attempt.link.send(encoder.encode(Leave(holder.invocation_id, holder.step, lease=waiter.lease,
                                                              granted=failure is None, failure=failure)))

    def granted(self, holder: Holder) -> None:
        """The owner gave ``holder`` a slot."""
        waiter = self._waiting.pop(holder, None)
        if waiter is None:  # it left (its release is on the way) or holds one already
            return
        if waiter.timer is not None:
            waiter.timer.cancel()
        attempt, live = waiter.attempt, waiter.live
        if attempt is not None and not attempt.over:
            self._hold(attempt, holder, waiter.name, waiter.lease)
        elif attempt is None and live.retry_handle is not None and live.record.status == "backing-off":
            live.retry_handle = None
            loop = asyncio.get_running_loop()
            self._claims[holder] = (waiter.name, loop.call_later(CLAIM_S, self._unclaimed, holder))
            self._steering.launch(live)
        else:
            self.owner.release(waiter.name, holder)

    def _hold(self, attempt: Attempt, holder: Holder, name: str, lease: bool) -> None:
        self._held[holder] = name
        attempt.when_over(lambda: self.step_ended(holder))
        self._leave(attempt, holder, lease)

    def _leave(self, attempt: Attempt, holder: Holder, lease: bool) -> None:
        attempt.link.send(encoder.encode(Leave(holder.invocation_id, holder.step, lease=lease)))

    def step_ended(self, holder: Holder) -> None:
        """The step's ``Run`` entry arrived, or its attempt is over: its slot goes back."""
        name = self._held.pop(holder, None)
        if name is not None:
            self.owner.release(name, holder)

    def journaled(self, attempt: Attempt, index: int) -> None:
        """A ``Run`` entry at ``index`` arrived from ``attempt``."""
        if self._held:
            self.step_ended(Holder(self._worker, attempt.live.record.id, index))

    def _gone(self, holder: Holder, attempt: Attempt) -> None:
        """A waiting attempt ended (not by parking): it leaves the line."""
        waiter = self._waiting.get(holder)
        if waiter is not None and waiter.attempt is attempt:
            self.withdraw(holder)

    def withdraw(self, holder: Holder) -> None:
        waiter = self._waiting.pop(holder, None)
        if waiter is not None:
            if waiter.timer is not None:
                waiter.timer.cancel()
            self.owner.release(waiter.name, holder)

    def _unclaimed(self, holder: Holder) -> None:
        claim = self._claims.pop(holder, None)
        if claim is not None:
            self.owner.release(claim[0], holder)

    def _park(self, holder: Holder) -> None:
        """The step waited ``wait_ms``: free its attempt; the invocation waits in line without one."""
        waiter = self._waiting.get(holder)
        attempt = waiter.attempt if waiter is not None else None
        if waiter is None or attempt is None or attempt.over:
            return
        waiter.attempt = None
        attempt.detach(kill=True)
        live, record = waiter.live, waiter.live.record
        live.journal = None  # its next attempt reads the committed journal
        live.retry_handle = _Parked(self, holder)
        record.status = "backing-off"
        record.next_retry_ms = None
        record.last_error = f"waiting for a slot of limit {waiter.name}"
        record.modified_ms = now_ms()
        self._steering.persist(record)
