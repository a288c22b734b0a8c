"""Per-key exclusivity: one exclusive invocation (or operator's state edit, see state_edits.py)
holds an object key at a time, the rest wait in order."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyLocks(Generic[T]):
    """A key is locked while it has an entry; the deque holds who waits, in arrival order."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], deque[T]] = {}

    def admit(self, key: tuple[str, str], item: T) -> bool:
        """True: ``item`` holds ``key`` now. False: it was queued behind the holder."""
        queue = self._waiting.get(key)
        if queue is None:
            self._waiting[key] = deque()
            return True
        queue.append(item)
        return False

    def release(self, key: tuple[str, str]) -> T | None:
        """The holder is done: hand the key to the next in line (returned), or unlock it."""
        queue = self._waiting.get(key)
        if queue:
            return queue.popleft()
        self._waiting.pop(key, None)
        return None

    def locked(self, key: tuple[str, str]) -> bool:
        return key in self._waiting

    def waiting(self, key: tuple[str, str]) -> int:
        """How many wait in ``key``'s line (its holder not counted)."""
        queue = self._waiting.get(key)
        return len(queue) if queue else 0

    def withdraw(self, key: tuple[str, str], item: T) -> bool:
        """Take a waiting ``item`` out of line (it was killed). False if it was not waiting."""
        queue = self._waiting.get(key)
        if queue is None or item not in queue:
            return False
        queue.remove(item)
        return True

    def ahead_of(self, key: tuple[str, str], item: T) -> int:
        """How many wait before ``item`` (the holder not counted); -1 if it is not waiting."""
        queue = self._waiting.get(key)
        if queue is None or item not in queue:
            return -1
        return queue.index(item)
