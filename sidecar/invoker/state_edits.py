"""An operator's state edits, serialized with the exclusive invocations of their key.

An edit joins its key's line (:class:`~sidecar.invoker.keylocks.KeyLocks`) like an exclusive
invocation and takes effect when it reaches the front: after the invocation that held the key
has ended, whose writes were all submitted before it (the store commits in submit order, so the
edit lands after them), and before the next one starts, whose state snapshot includes it (in
flight or committed). It holds the key only for that instant, so a running handler never works
from a snapshot the edit changed under it, and its later writes never hide the edit.

An edit waits at most as long as its caller allows: one still in line then is taken out of it,
never applied, and refused with :class:`KeyHeld`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import msgspec
from prometheus_client import Gauge

from handler_sdk.protocol import ClearState, SetState

from ..clock import now_ms
from ..store import Changes, InvocationRecord, Store
from .keylocks import KeyLocks
from .live import Live
from .state_in_flight import StateInFlight

ObjectKey = tuple[str, str]


class StateEdit:
    """One edit in its key's line; ``written`` is set once it has had its turn."""

    __slots__ = ("key", "write", "written")

    def __init__(self, key: ObjectKey, write: SetState | ClearState) -> None:
        self.key = key
        self.write = write
        self.written: asyncio.Future[asyncio.Future[None]] = asyncio.get_running_loop().create_future()


class Applied(msgspec.Struct):
    #: When the edit was durable (epoch ms).
    applied_ms: int
    #: The invocation that held the key when the edit arrived, which it waited for.
    waited_for: str | None


class KeyHeld(Exception):
    """The key stayed held for as long as the edit could wait: nothing was changed (HTTP 409)."""

    def __init__(self, service: str, key: str, wait_s: float, holder: InvocationRecord | None) -> None:
        held_by = f"invocation {holder.id} ({holder.status})" if holder else "an invocation"
        super().__init__(
            f"state of {service}/{key} not changed: {held_by} held the key for all of the {wait_s:g} s the edit "
            "could wait; retry when it has ended (or cancel or kill it), or wait longer with ?wait=")


class StateEdits:
    def __init__(self, store: Store, keys: KeyLocks[Live | StateEdit], in_flight: StateInFlight,
                 active: Mapping[str, Live], waiting: Gauge) -> None:
        self._store = store
        self._keys = keys
        self._in_flight = in_flight
        self._active = active
        self._waiting = waiting

    def current(self, service: str, key: str) -> dict[str, bytes]:
        """The key's state as its next invocation would see it: committed, plus writes in flight."""
        return self._in_flight.overlay(service, key, self._store.read_state(service, key))

    async def edit(self, service: str, key: str, write: SetState | ClearState, wait_s: float) -> Applied:
        """Apply ``write`` in the key's turn, waiting up to ``wait_s`` for it; once durable."""
        edit = StateEdit((service, key), write)
        holder = None
        if not self._keys.locked(edit.key):
            self._apply(edit)
        else:
            holder = self._holder(edit.key)
            self._keys.admit(edit.key, edit)
            self._waiting.inc()
            try:
                await asyncio.wait_for(asyncio.shield(edit.written), wait_s)
            except TimeoutError:
                if self._withdraw(edit):  # else its turn came just now: it is applied
                    raise KeyHeld(service, key, wait_s, self._holder(edit.key) or holder) from None
            except asyncio.CancelledError:  # its caller left: an edit still in line goes too
                self._withdraw(edit)
                raise
        await asyncio.shield(edit.written.result())  # once it had its turn, it commits whoever waits
        return Applied(now_ms(), holder.id if holder else None)

    def release(self, key: ObjectKey) -> Live | None:
        """The key's holder has ended: the edits at the front of its line take their turn, and
        the next invocation in it (returned, to be launched) holds the key, or no one does."""
        while isinstance(successor := self._keys.release(key), StateEdit):
            self._waiting.dec()
            self._apply(successor)
        return successor

    def _withdraw(self, edit: StateEdit) -> bool:
        """Take ``edit`` out of its line; False if it is not there (it had its turn)."""
        if not self._keys.withdraw(edit.key, edit):
            return False
        self._waiting.dec()
        return True

    def _apply(self, edit: StateEdit) -> None:
        service, key = edit.key
        changes = Changes()
        if isinstance(edit.write, SetState):
            changes.set_state(service, key, edit.write.name, edit.write.value)
        else:
            changes.clear_state(service, key, edit.write.name)
        self._in_flight.add(edit.key, edit.write)
        written = self._store.submit(changes)
        written.add_done_callback(lambda _: self._in_flight.settled(edit.key))
        edit.written.set_result(written)

    def _holder(self, key: ObjectKey) -> InvocationRecord | None:
        """Who holds ``key`` now (searched for: only an edit that cannot get it asks)."""
        return next((l.record for l in self._active.values() if l.holds_key and l.lock_key == key), None)

