"""Stopping the cluster's long-running tasks for certain.

nats-py waits with ``asyncio.wait_for`` throughout, and Python 3.11's ``wait_for`` drops a
cancellation that arrives as the future it waits on completes (bpo-42130, fixed in 3.12): the
cancelled task takes the result and runs on. A heartbeat or a follow loop would then live past
its node's close, and ``await task`` would never return. :func:`stop_tasks` cancels again until
the task has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: How long a cancelled task may take to end (its ``finally`` clauses run) before it is cancelled again.
_GRACE_S = 0.5


async def stop_tasks(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and return once every one has ended (however it ended)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_GRACE_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: an error a stopped task ended with is not reported as lost
