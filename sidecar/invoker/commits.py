"""Reading a commit future whose awaiter gave up.

A future the store hands out can be cancelled by whoever awaits it (a client that hung up, a
task stopped at shutdown), but cancelling it does not withdraw its batch: the writer commits it
all the same. A done-callback that finds its future cancelled therefore learns nothing about the
batch; it waits for an empty batch submitted now instead, which commits after it (submit order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..store import Changes, Store


def recheck_if_cancelled(store: Store, written: asyncio.Future[None],
                         callback: Callable[[asyncio.Future[None]], None]) -> bool:
    """True if ``written`` was cancelled: ``callback`` then runs again once an empty batch
    submitted now settles, which says what became of ``written``'s batch."""
    if not written.cancelled():
        return False
    store.submit(Changes()).add_done_callback(callback)
    return True
