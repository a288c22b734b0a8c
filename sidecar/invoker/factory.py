"""New invocation records: their IDs, partitions, delays and deadlines."""

from __future__ import annotations

from ..clock import now_ms
from ..cli.config import Settings
from ..ids import IdGenerator
from ..process.partitions import PartitionMap
from ..transport.registry import Route
from ..store import InvocationRecord
from ..tracing import Tracing


class RecordFactory:
    def __init__(self, ids: IdGenerator, partitions: PartitionMap, settings: Settings, tracing: Tracing) -> None:
        self._ids = ids
        self._tracing = tracing
        self._partitions = partitions
        self._settings = settings
        self._anywhere = 0  # spreads keyless invocations over the partitions this worker owns

    def new_record(
        self, route: Route, key: str | None, *, headers: dict[str, str], idempotency_key: str | None = None,
        partition: int | None = None, delay_s: float = 0.0, invocation_id: str | None = None,
        caller: InvocationRecord | None = None,
    ) -> InvocationRecord:
        """A new invocation's record, in ``partition`` (anywhere this worker owns if None), with
        ``invocation_id`` if one was assigned to it already (a parked send's); ``caller``: the
        invocation whose call or send makes it (its trace continues)."""
        now = now_ms()
        if partition is None:
            self._anywhere += 1
            partition = self._partitions.local_partition(self._anywhere)
        spec = route.handler
        total_ms = spec.timeouts.total_ms or int(self._settings.invocation_timeout_s * 1000)
        return InvocationRecord(
            id=invocation_id or self._ids.invocation_id(partition), service=route.service.name, handler=spec.name,
            key=key, handler_kind=spec.kind if route.service.kind != "service" else "shared",
            status="pending", deployment_id=route.deployment_id, headers=headers,
            idempotency_key=idempotency_key, created_ms=now, modified_ms=now,
            start_at_ms=now + int(delay_s * 1000) if delay_s > 0 else None,
            deadline_ms=now + int(delay_s * 1000) + total_ms if total_ms else None,
            trace=self._tracing.accepted(headers, None if caller is None else caller.trace),
        )

    def new_invocation_id(self, partition: int) -> str:
        return self._ids.invocation_id(partition)
