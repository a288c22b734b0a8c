"""What the invoker asks of the other workers, where workers share the partitions.

One worker owns each partition; what an invocation here does to one owned elsewhere (call it,
cancel it, resolve its awakeable, answer its call) goes to that worker through these. A sidecar
of one process has no peers (``None`` wherever a part takes them): it owns every partition.
"""

from __future__ import annotations

from typing import Protocol

from handler_sdk.protocol import Failure

from ..store.records import ChildSpec


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
