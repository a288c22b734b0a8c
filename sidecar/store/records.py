"""What the sidecar stores in LMDB: one versioned msgspec Struct per kind of value.

Every record carries ``v`` (its format version). Fields are only ever appended with defaults, so
a newer sidecar reads an older data directory without a migration step.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from handler_sdk.protocol import Failure, Run, Send, ServiceSpec

FORMAT_VERSION = 1

#: Statuses after which nothing more happens to an invocation.
FINISHED = frozenset({"completed", "failed", "cancelled", "killed"})
ALL_STATUSES = FINISHED | {"pending", "running", "suspended", "backing-off", "paused"}
#: The ``by_status`` group of every invocation that has not finished yet (not a status).
UNFINISHED = "unfinished"


class GrowthWarning(msgspec.Struct, kw_only=True, frozen=True):
    """An invocation's journal, or its key's state, grew past its ``warn_*_bytes`` setting."""

    #: "journal" or "state".
    kind: str
    #: The journal entry with which it passed the limit.
    index: int
    size: int
    limit: int
    message: str


class TraceIds(msgspec.Struct, kw_only=True, frozen=True):
    """Where an invocation's span sits in its trace (W3C trace context, lowercase hex): chosen when
    it is accepted, so that every attempt, in this process or after a restart, joins one span."""

    trace_id: str
    span_id: str
    #: The caller's span (the ingress request's ``traceparent``); None: the invocation's is the root.
    parent_span_id: str | None = None
    sampled: bool = True


class InvocationRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An invocation's metadata. Its input and steps live in the journal, not here."""

    v: int = FORMAT_VERSION
    id: str
    service: str
    handler: str
    key: str | None = None
    #: "exclusive" runs one at a time per key; "shared" alongside anything.
    handler_kind: str
    status: str
    deployment_id: str
    headers: dict[str, str] = {}
    idempotency_key: str | None = None
    attempts: int = 0
    last_error: str | None = None
    #: When a backing-off invocation is tried again (epoch ms).
    next_retry_ms: int | None = None
    created_ms: int
    modified_ms: int
    completed_ms: int | None = None
    output: bytes | None = None
    failure: Failure | None = None
    #: A delayed send starts at this instant (epoch ms); until then it holds no key.
    start_at_ms: int | None = None
    #: While suspended: the journal entries whose completion resumes it.
    waiting_on: list[int] = []
    #: Started by another invocation's ``Call`` (``reply`` set) or ``Send`` at journal ``parent_index``.
    parent_id: str | None = None
    parent_index: int | None = None
    reply: bool = False
    #: The exclusive ``service/key`` holders up the call chain: calling one of them would deadlock.
    call_path: list[str] = []
    #: Cancellation was asked for: the handler sees it at its next await.
    cancelled: bool = False
    #: Past this instant (epoch ms) the invocation fails terminally, waits included.
    deadline_ms: int | None = None
    #: Failed attempts since the last progress (a suspension): what the retry policy counts, so
    #: that a long wait with many resumes does not use up the retries.
    failures: int = 0
    #: Its place in its key's inbox (``clock.InboxClock``, assigned by the partition's owner when
    #: it joined): the inbox key holds it, so finishing can delete that key.
    inbox_seq: int = 0
    #: Its spending cap, from an ``x-budget`` header or raised by a resume; overrides the handler's.
    budget: float | None = None
    #: Why it is paused, when it was not for its failures: its handler's word (a spent budget), or
    #: an operator's pause. Cleared when it is resumed.
    pause_reason: str | None = None
    #: What grew past its warning limit (at most one of each kind).
    warnings: list[GrowthWarning] = []
    #: Its span's place in a trace, where tracing is on (``sidecar/tracing.py``).
    trace: TraceIds | None = None

    @property
    def exclusive(self) -> bool:
        """Runs alone on its key and may write state (an exclusive or workflow-main handler)."""
        return self.handler_kind in ("exclusive", "workflow")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def listed_as(self) -> str:
        """Its group in the ``by_status`` index: ``unfinished`` until it ends, then its final
        status, which never changes. Statuses before the end change too often (and ``running`` is
        never written) to be worth an index entry each: the live record says which it is."""
        return self.status if self.status in FINISHED else UNFINISHED

    @property
    def target(self) -> str:
        parts = [self.service, self.key, self.handler] if self.key is not None else [self.service, self.handler]
        return "/".join(parts)


class IdempotencyRecord(msgspec.Struct, kw_only=True):
    """``target + idempotency-key`` -> the one invocation it names."""

    v: int = FORMAT_VERSION
    invocation_id: str


#: How the sidecar reaches a deployment: its ``/connect`` WebSocket, or ``POST /invoke`` per step.
TRANSPORTS = ("websocket", "request-response")


class DeploymentRecord(msgspec.Struct, kw_only=True):
    v: int = FORMAT_VERSION
    id: str
    uri: str
    services: list[ServiceSpec]
    created_ms: int
    transport: str = "websocket"  # one of TRANSPORTS
    #: Its discovery said it resolves blob references (``Discovery.blob_refs``).
    blob_refs: bool = False


class EarlyCompletion(msgspec.Struct, kw_only=True):
    """A resolution that reached the sidecar before the awakeable it names was journaled."""

    v: int = FORMAT_VERSION
    awakeable_id: str
    value: bytes | None = None
    failure: Failure | None = None


class PromiseRecord(msgspec.Struct, kw_only=True):
    """A workflow's durable promise and the entries waiting for it."""

    v: int = FORMAT_VERSION
    done: bool = False
    value: bytes | None = None
    failure: Failure | None = None
    waiters: list[tuple[str, int]] = []


class ChildSpec(msgspec.Struct, kw_only=True, tag=True):
    """An invocation a handler started in a partition another worker owns, until that worker has it."""

    v: int = FORMAT_VERSION
    record: InvocationRecord
    input: bytes
    #: When the caller's worker made it (its ``InboxClock``): after a restart the children still
    #: to hand over go in this order, so the owner accepts them in the order they were made.
    seq: int = 0


class ResolutionSpec(msgspec.Struct, kw_only=True, tag=True):
    """A handler's resolution of an awakeable, journaled with it, until it has been delivered."""

    v: int = FORMAT_VERSION
    sender_id: str
    awakeable_id: str
    value: bytes | None = None
    failure: Failure | None = None


class ParkedSend(msgspec.Struct, kw_only=True, tag=True):
    """A handler's ``Send`` to a service or handler not registered (yet): journaled, with its
    child's ID, and kept until a deployment that has the target is registered."""

    v: int = FORMAT_VERSION
    sender_id: str
    index: int  # the Send's place in the sender's journal
    entry: Send  # invocation_id: the child's ID, assigned when the send was journaled
    journaled_ms: int = 0  # when the send was journaled: its ``delay_ms`` counts from then
    seq: int = 0  # as ``ChildSpec.seq``: parked sends are delivered in the order they were made


OutboxEntry = ChildSpec | ResolutionSpec | ParkedSend


class NamedState(msgspec.Struct, kw_only=True):
    """A state value whose name is too long for its key: the key holds the name's hash (see
    ``keys``), this the name itself."""

    v: int = FORMAT_VERSION
    name: str
    value: bytes


class InboxEntry(msgspec.Struct, kw_only=True, array_like=True):
    """An unfinished invocation, filed under its key in arrival order; recovery scans their keys."""

    v: int = FORMAT_VERSION
    exclusive: bool


class CostRecord(msgspec.Struct, kw_only=True, array_like=True):
    """What one journaled step cost (a ``Run`` entry that reported a cost), filed under its
    invocation's target in the ``costs`` database, in the batch that journals the entry: what
    ``GET /costs`` sums."""

    v: int = FORMAT_VERSION
    invocation_id: str
    step: str
    #: Summed over the step's tries, failed ones included.
    cost: float
    #: When it was journaled (epoch ms): what ``since`` compares.
    recorded_ms: int
    attempts: int = 1
    #: "primary", or "fallback" where the step's fallback gave the outcome.
    variant: str = "primary"

    @classmethod
    def of(cls, invocation_id: str, run: Run, recorded_ms: int) -> CostRecord:
        """The row of ``run``, a step that reported a cost."""
        assert run.cost is not None
        return cls(invocation_id=invocation_id, step=run.name, cost=run.cost, recorded_ms=recorded_ms,
                   attempts=run.attempts, variant=run.variant)


class WebhookMessage(msgspec.Struct, kw_only=True, array_like=True):
    """A webhook not yet delivered to one receiver (``webhook_outbox``): filed in the batch that
    writes the status it tells of, deleted once the receiver answered 2xx."""

    v: int = FORMAT_VERSION
    #: The ``webhook-id``: the same on every redelivery, so a receiver can drop repeats.
    id: str
    #: The JSON body, as signed and sent.
    body: bytes


class BlobCount(msgspec.Struct, kw_only=True, array_like=True):
    """How many stored values refer to one blob (``blob_refs``, keyed like ``blobs`` by its
    SHA-256), and its length: kept apart from the bytes so that a new reference rewrites a few
    bytes, not the blob."""

    v: int = FORMAT_VERSION
    count: int
    size: int


#: What a schedule does about fire times that passed while nobody fired them (``schedules.timing.plan``).
CatchUp = Literal["one", "all", "none"]
#: What a firing does while the previous firing's invocation is unfinished.
Overlap = Literal["skip", "queue"]


class ScheduleSpec(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What an operator set a schedule to (``PUT /schedules/{name}``): when, what, and how."""

    #: A cron expression read in ``timezone``, or (``cron`` None) an interval of ``every_ms``
    #: counted from ``anchor_ms`` (when it was set).
    cron: str | None = None
    timezone: str = "UTC"
    every_ms: int | None = None
    anchor_ms: int = 0
    #: The URL path a send would take: ``Service/handler`` or ``Object/key/handler``, each part
    #: percent-encoded.
    target: str
    #: Each firing of a workflow's main handler runs on a key of its own: ``{key}-{fire time}``.
    key_per_firing: bool = False
    #: The JSON every firing sends.
    input: bytes = b"null"
    #: "skip": no firing while the previous firing's invocation is unfinished; "queue": fire anyway.
    overlap: Overlap = "skip"
    #: After downtime: "one" firing for the missed period, "all" of them (capped), or "none".
    catch_up: CatchUp = "one"


class CatchUpRecord(msgspec.Struct, kw_only=True, frozen=True, array_like=True):
    """A schedule's last catch-up: at ``at_ms``, ``due`` fire times had passed unhandled (counted
    up to ``timing.COUNT_LIMIT``), of which ``fired`` were made."""

    v: int = FORMAT_VERSION
    at_ms: int
    due: int
    fired: int


class ScheduleRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A schedule and where its firings stand. Written by the worker that fires it, after each
    fire time it handles, so that a restart goes on from ``next_fire_ms``."""

    v: int = FORMAT_VERSION
    name: str
    spec: ScheduleSpec
    created_ms: int
    updated_ms: int
    #: The first fire time not handled yet (None: the expression never fires again).
    next_fire_ms: int | None = None
    #: The fire time of the last firing made, and the invocation it made.
    last_fire_ms: int | None = None
    last_invocation_id: str | None = None
    #: Firings made; skipped because the previous one had not finished (``overlap = "skip"``);
    #: missed (not made after downtime, as ``catch_up`` says); refused by the target.
    fired: int = 0
    skipped: int = 0
    last_skipped_ms: int | None = None
    missed: int = 0
    last_catch_up: CatchUpRecord | None = None
    failed: int = 0
    #: Why the last refused firing was refused.
    last_error: str | None = None
