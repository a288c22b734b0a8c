"""What the invoker asks of the other workers, where workers share the partitions.

One worker owns each partition; what an invocation here does to one owned elsewhere (call it,
cancel it, resolve its awakeable, answer its call) goes to that worker through these. Worker 0
holds the circuit breakers and the limit groups' slots: the others ask it, report to it, and
hear from it when a breaker opens or a slot is theirs. A sidecar
of one process has no peers (``None`` wherever a part takes them): it owns every partition.
"""

from __future__ import annotations

from typing import Protocol

from handler_sdk.protocol import BreakerSpec, Failure

from ..store.records import ChildSpec
from .breakers import Decision
from .limits import Holder


class Peers(Protocol):
    async def hand_child(self, owner: int, spec: ChildSpec) -> None:
        """Give worker ``owner`` a child to create; ConnectionError until it has it durably."""

    async def hand_result(self, owner: int, caller_id: str, index: int, value: bytes | None,
                          failure: Failure | None) -> None:
        """Tell worker ``owner`` that the call at ``caller_id``'s entry ``index`` returned."""

    async def cancel(self, invocation_id: str) -> None:
        """Cancel an invocation another worker owns (its caller was cancelled here)."""

    async def resolve_awakeable(self, awakeable_id: str, value: bytes | None, failure: Failure | None) -> None:
        """Complete an awakeable another worker owns; ConnectionError while it is unreachable,
        any answer it gives is final."""

    async def ask_breaker(self, spec: BreakerSpec) -> Decision:
        """Ask worker 0 whether a try of a step naming this breaker may run; ConnectionError while
        it is unreachable."""

    def report_breaker(self, spec: BreakerSpec, failed: bool) -> None:
        """Tell worker 0 how a try of a step naming this breaker ended (not waiting for it)."""

    def revoke_leases(self, name: str, epoch: int) -> None:
        """Tell every other worker that breaker ``name`` opened (worker 0 does, not waiting)."""

    async def acquire_slot(self, name: str, holder: Holder) -> bool:
        """Ask worker 0 for a slot of limit group ``name``: True if ``holder`` has one now, False
        if it waits in line (``grant_slot`` comes later); ``UnknownLimit``, ``ConnectionError``."""

    def release_slot(self, name: str, holder: Holder) -> None:
        """Give a slot back to worker 0, or leave the line (not waiting for it)."""

    def grant_slot(self, holder: Holder) -> None:
        """Tell ``holder``'s worker that it has its slot (worker 0 does, not waiting)."""
