"""State writes submitted to the store but not yet committed, per object key.

The next invocation on a key may start before the previous one's writes (or an operator's
edit, see state_edits.py) are durable (see ``Invoker._hand_over_key``); its state snapshot is
then the committed state with these writes replayed on top. Replaying is safe even if some of them have meanwhile committed: every write is
an absolute overwrite (set, clear, clear-all) applied in submit order, so applying a sequence
again over a state that already holds a prefix of it gives the same result.
"""

from __future__ import annotations

from collections import deque

from handler_sdk.protocol import ClearAllState, ClearState, SetState

StateWrite = SetState | ClearState | ClearAllState


class StateInFlight:
    def __init__(self) -> None:
        self._writes: dict[tuple[str, str], deque[StateWrite]] = {}

    def add(self, key: tuple[str, str], write: StateWrite) -> None:
        """``write`` to object ``key`` (service, key) was submitted."""
        self._writes.setdefault(key, deque()).append(write)

    def settled(self, key: tuple[str, str]) -> None:
        """The oldest write for this key has committed (or failed): commits keep submit order."""
        writes = self._writes.get(key)
        if writes:
            writes.popleft()
            if not writes:
                del self._writes[key]

    def overlay(self, service: str, key: str, committed: dict[str, bytes]) -> dict[str, bytes]:
        state = committed
        for write in self._writes.get((service, key), ()):
            kind = type(write)
            if kind is SetState:
                state[write.name] = write.value  # type: ignore[union-attr]
            elif kind is ClearState:
                state.pop(write.name, None)  # type: ignore[union-attr]
            else:
                state.clear()
        return state
