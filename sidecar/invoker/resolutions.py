"""Awakeable resolutions: from clients over HTTP, and from handlers (``CompleteAwakeable``).

A handler's resolution is journaled with an outbox entry in the same batch, so that it is
delivered once: to the waits here, or to the worker that owns the awakeable, retried until that
worker answers; then the outbox entry goes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from handler_sdk.protocol import Failure

from ..process.partitions import PartitionMap
from ..store import Changes, Store
from ..store.records import ResolutionSpec
from .awakeable_ids import parse_awakeable_id
from .background import Background
from .peers import Peers
from .waits import AwakeableCompleted, AwakeableNotFound, DurableWaits

log = logging.getLogger(__name__)


class Resolutions:
    def __init__(self, *, store: Store, waits: DurableWaits, partitions: PartitionMap, peers: Peers | None,
                 background: Background) -> None:
        self._store = store
        self._waits = waits
        self._partitions = partitions
        self._peers = peers
        self._background = background

    def resolve(self, awakeable_id: str, value: bytes | None, failure: Failure | None) -> asyncio.Future[None]:
        """Resolve or reject an awakeable this worker owns; the future resolves once durable.

        Shielded: a caller that stops waiting (its client hung up) must not cancel the commit
        whose callback hands the result to the attempt."""
        return asyncio.shield(self._waits.resolve(awakeable_id, value, failure))

    def deliver(self, resolution: ResolutionSpec) -> None:
        """Deliver a handler's resolution, whose outbox entry was submitted."""
        self._background.spawn(self._deliver(resolution))

    def recover(self, owns: Callable[[str], bool]) -> None:
        """After a restart: deliver the resolutions of senders ``owns`` says are ours again."""
        for pending in self._store.outbox():
            if type(pending) is ResolutionSpec and owns(pending.sender_id):
                self.deliver(pending)

    async def _deliver(self, resolution: ResolutionSpec) -> None:
        """Complete it (here, or at the worker that owns it), retrying until that worker answers,
        then drop it from the outbox. A resolution that finds no such awakeable, or one already
        completed, has been delivered as well as it can."""
        awakeable_id, delay = resolution.awakeable_id, 0.1
        while True:
            try:
                invocation_id, _ = parse_awakeable_id(awakeable_id)
                if self._partitions.owns_invocation(invocation_id) or self._peers is None:
                    await self.resolve(awakeable_id, resolution.value, resolution.failure)
                else:
                    await self._peers.resolve_awakeable(awakeable_id, resolution.value, resolution.failure)
                break
            except (ValueError, AwakeableNotFound, AwakeableCompleted) as exc:
                log.info("awakeable %s not completed by a handler: %s", awakeable_id, type(exc).__name__)
                break
            except ConnectionError as exc:
                log.warning("awakeable %s: its owner is unreachable, retrying: %s", awakeable_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        delivered = Changes()
        delivered.remove_outbox(resolution)
        await self._store.submit(delivered)
