"""Which idempotency slot an invocation holds (a workflow's main handler: its key's one run)."""

from __future__ import annotations

from ..store import InvocationRecord
from ..store import keys as store_keys

WORKFLOW_RUN = "\x00workflow-run"


def idempotency_slot(record: InvocationRecord) -> bytes | None:
    """The idempotency key an invocation holds: a workflow's main handler holds its key's one run;
    others, the client's ``idempotency-key`` if it sent one."""
    if record.handler_kind == "workflow":
        return store_keys.idempotency_key(record.service, record.key, record.handler, WORKFLOW_RUN)
    if record.idempotency_key is None:
        return None
    return store_keys.idempotency_key(record.service, record.key, record.handler, record.idempotency_key)
