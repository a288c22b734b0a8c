"""Handler protocol, version 1: every message that crosses the sidecar <-> handler socket.

Both sides import this one module, so the wire shapes cannot drift apart. Frames are msgpack, one
message per WebSocket frame, each a tagged msgspec Struct (the tag is the class name under ``"t"``).
Schema evolution follows msgspec's rules: new fields are appended with defaults, nothing is
reordered or retyped, so an older peer still decodes a newer frame.

Payloads (inputs, outputs, state values, step results) are opaque ``bytes`` here: the sidecar
passes them through untouched and only the SDK decodes them, with the handler's type annotations.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import TypeVar, Union

import msgspec

PROTOCOL_VERSION = 1

#: The longest identifier, in UTF-8 bytes: an object key, idempotency key, state or promise name,
#: service or handler name, awakeable ID. Shorter ones all work; longer ones are refused (400).
MAX_IDENTIFIER_BYTES = 1024


def identifier_problem(what: str, value: str) -> str | None:
    """Why ``value`` cannot be the identifier ``what`` (it is too long), or ``None`` if it can."""
    if len(value) <= MAX_IDENTIFIER_BYTES // 4:  # at most 4 bytes a character: no need to encode
        return None
    size = len(value.encode(errors="surrogatepass"))
    if size <= MAX_IDENTIFIER_BYTES:
        return None
    return f"{what} is {size} bytes long; identifiers may be at most {MAX_IDENTIFIER_BYTES} bytes (UTF-8)"


class Failure(msgspec.Struct, frozen=True):
    """Why a step or an attempt failed. ``terminal`` failures are never retried."""

    code: int
    message: str
    terminal: bool = True


class _Entry(msgspec.Struct, tag_field="t", tag=True, frozen=True, omit_defaults=True):
    """Base of every journal entry."""


# --- journal entries ------------------------------------------------------------------------


class Input(_Entry, frozen=True):
    """Index 0 of every journal: the invocation's argument."""

    value: bytes


class Run(_Entry, frozen=True):
    """A side effect's recorded outcome. On replay the SDK returns it instead of running ``fn``."""

    name: str
    value: bytes | None = None
    failure: Failure | None = None
    #: What the step cost, summed over its tries (failed ones included); None: nothing reported.
    cost: float | None = None
    #: How many tries it took, the last one included.
    attempts: int = 1
    #: Which function gave the outcome: "primary", or "fallback" (the step's ``fallback=``).
    variant: str = "primary"
    #: Milliseconds from the start of its first try to its outcome, backoffs included (None: not told).
    duration_ms: int | None = None


class GetState(_Entry, frozen=True):
    """A state read with the value the code saw (``None``: unset), so replays see the same."""

    name: str
    value: bytes | None = None


class SetState(_Entry, frozen=True):
    name: str
    value: bytes


class ClearState(_Entry, frozen=True):
    name: str


class ClearAllState(_Entry, frozen=True):
    pass


class GetStateKeys(_Entry, frozen=True):
    keys: list[str] = []


class Now(_Entry, frozen=True):
    """The clock as the handler first read it; replays read the same instant."""

    ms: int


class Output(_Entry, frozen=True):
    """The invocation's result, written by the sidecar when the handler ends."""

    value: bytes | None = None
    failure: Failure | None = None


# Completable entries: the handler journals them, the sidecar completes them later (rewriting the
# entry in place with ``done`` set and sending a ``Completion``), and a replay sees them done.


class Sleep(_Entry, frozen=True):
    """A durable timer: done once the clock has passed ``wake_at_ms`` (epoch ms)."""

    wake_at_ms: int
    done: bool = False


class Awakeable(_Entry, frozen=True):
    """A wait for someone outside to resolve or reject ``id`` (opaque, unguessable)."""

    id: str
    done: bool = False
    value: bytes | None = None
    failure: Failure | None = None


class CompleteAwakeable(_Entry, frozen=True):
    """This handler resolves (``value``) or rejects (``failure``) another invocation's awakeable."""

    id: str
    value: bytes | None = None
    failure: Failure | None = None


class Call(_Entry, frozen=True):
    """A request-response call to another handler. The sidecar fills in ``invocation_id`` (the
    callee's) when it journals the entry, and completes it with the callee's result."""

    service: str
    handler: str
    key: str | None = None
    input: bytes = b""
    invocation_id: str = ""
    done: bool = False
    value: bytes | None = None
    failure: Failure | None = None


class Send(_Entry, frozen=True):
    """A one-way call, started ``delay_ms`` later; ``invocation_id`` is filled in by the sidecar."""

    service: str
    handler: str
    key: str | None = None
    input: bytes = b""
    delay_ms: int = 0
    invocation_id: str = ""


class GetPromise(_Entry, frozen=True):
    """Wait for this workflow's durable promise ``name`` to be resolved or rejected."""

    name: str
    done: bool = False
    value: bytes | None = None
    failure: Failure | None = None


class PeekPromise(_Entry, frozen=True):
    """Read promise ``name`` without waiting: completed at once, ``value`` None while unresolved."""

    name: str
    done: bool = False
    value: bytes | None = None
    failure: Failure | None = None


class CompletePromise(_Entry, frozen=True):
    """Resolve (``value``) or reject (``failure``) promise ``name``. The sidecar completes the entry
    with ``outcome``: None when this completion took, a 409 failure when the promise was already
    completed."""

    name: str
    value: bytes | None = None
    failure: Failure | None = None
    done: bool = False
    outcome: Failure | None = None


class Publish(_Entry, frozen=True):
    """A milestone the handler published (``ctx.publish``), JSON: streamed to subscribers once
    durable, and replayed to every later one."""

    event: bytes


Entry = Union[
    Input, Run, GetState, SetState, ClearState, ClearAllState, GetStateKeys, Now, Output, Sleep, Awakeable,
    CompleteAwakeable, Call, Send, GetPromise, PeekPromise, CompletePromise, Publish,
]

#: Entry kinds the sidecar completes later; a handler awaiting one may suspend meanwhile.
COMPLETABLE_KINDS: tuple[type, ...] = (Sleep, Awakeable, Call, GetPromise, PeekPromise, CompletePromise)

#: Entry kinds whose result user code may only see once the sidecar has made it durable.
ACKED_KINDS: tuple[type, ...] = (Run,)


# --- large payloads ------------------------------------------------------------------------------
#
# A payload over the sidecar's ``blob_threshold_bytes`` travels and is stored as a *reference*: in
# place of its bytes, ``BLOB_MAGIC + SHA-256 + size (u64 BE)``, 48 bytes (:class:`BlobRef`). The
# bytes themselves are stored once per content (the sidecar's ``blobs`` database) and reach a
# handler in ``Start.payloads.blobs`` or a ``Blobs`` answer, so that a replay sends only what the handler
# does not hold yet. The magic starts with 0xFF, which UTF-8 never contains, so no name or message
# can hold it; a payload that happens to contain it is always sent and stored as a blob, so a
# payload that *is* a reference is never a payload of its own.

BLOB_MAGIC = b"\xffblob\x00\xfe\x01"


def holds_blob_magic(raw: bytes) -> bool:
    """Whether ``raw`` contains ``BLOB_MAGIC`` anywhere. (``find``, not ``in``: ``in`` on bytes
    first tries its operand as an integer and raises and clears a TypeError, on every value
    stored or sent.)"""
    return raw.find(BLOB_MAGIC) >= 0

_SIZE_BYTES = 8
BLOB_REF_BYTES = len(BLOB_MAGIC) + 32 + _SIZE_BYTES


class BlobRef(msgspec.Struct, frozen=True):
    """A payload stored as a blob: its SHA-256 and its length."""

    sha256: bytes
    size: int

    def encode(self) -> bytes:
        """The 48 bytes that stand for the payload in a journal entry, a state value, a frame."""
        return BLOB_MAGIC + self.sha256 + self.size.to_bytes(_SIZE_BYTES, "big")

    @classmethod
    def of(cls, payload: bytes) -> BlobRef:
        return cls(hashlib.sha256(payload).digest(), len(payload))

    @classmethod
    def parse(cls, payload: bytes) -> BlobRef | None:
        """The reference ``payload`` is, or None if it is a payload of its own."""
        if len(payload) != BLOB_REF_BYTES or not payload.startswith(BLOB_MAGIC):
            return None
        return cls(payload[8:40], int.from_bytes(payload[40:], "big"))


def needs_blob(payload: bytes, threshold: int) -> bool:
    """Whether ``payload`` goes as a reference: it is over ``threshold``, or looks like one."""
    return len(payload) > threshold or holds_blob_magic(payload)


class BlobData(msgspec.Struct, frozen=True, array_like=True):
    """A blob's bytes, sent to a handler that lacks them."""

    sha256: bytes
    data: bytes


#: The payload fields of each entry kind (a payload: bytes the SDK encodes and decodes).
PAYLOAD_FIELDS: dict[type, tuple[str, ...]] = {
    Input: ("value",), Run: ("value",), GetState: ("value",), SetState: ("value",), Output: ("value",),
    Awakeable: ("value",), CompleteAwakeable: ("value",), Call: ("input", "value"), Send: ("input",),
    GetPromise: ("value",), PeekPromise: ("value",), CompletePromise: ("value",), Publish: ("event",),
}

_S = TypeVar("_S", bound=msgspec.Struct)


def blob_payloads(entry: Entry, threshold: int) -> list[bytes]:
    """The payloads of ``entry`` that go as blobs (``needs_blob``): most entries have none, and
    this finds that without the copy or the calls ``map_payloads`` makes."""
    found: list[bytes] = []
    for name in PAYLOAD_FIELDS.get(type(entry), ()):
        held = getattr(entry, name)
        if type(held) is bytes and (len(held) > threshold or holds_blob_magic(held)):
            found.append(held)
    return found


def map_payloads(value: _S, fields: dict[type, tuple[str, ...]], change: Callable[[bytes], bytes]) -> _S:
    """``value`` with ``change`` applied to each of its payloads (``fields`` names them per type,
    a field that holds a Struct is followed into); ``value`` itself where nothing changed."""
    names = fields.get(type(value))
    if not names:
        return value
    changed: dict[str, object] = {}
    for name in names:
        held = getattr(value, name)
        new = change(held) if type(held) is bytes else (
            map_payloads(held, fields, change) if isinstance(held, msgspec.Struct) else held)
        if new is not held:
            changed[name] = new
    return msgspec.structs.replace(value, **changed) if changed else value


def entry_name(entry: Entry) -> str:
    """The name an entry is matched by on replay: its name, a call's ``service/handler``, or empty."""
    if type(entry) is Call or type(entry) is Send:
        return f"{entry.service}/{entry.handler}"
    return getattr(entry, "name", "")


# --- sidecar -> handler -----------------------------------------------------------------------


class Payloads(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a ``Start`` says of large payloads."""

    #: Payloads over this many bytes may come as references (``BlobRef``), in ``input``, the
    #: journal and ``state``; the handler sends its own as they are. 0: the sidecar sends none.
    blob_threshold: int = 0
    #: The bytes of the referenced blobs the sidecar believes this handler process lacks; for the
    #: others the handler looks in its cache, and asks (``FetchBlobs``) for what is not there.
    blobs: list[BlobData] = []
    #: The largest step or state value the sidecar keeps (``max_payload_bytes``); 0: no limit
    #: known. A larger one fails its step as terminal (413).
    max_payload_bytes: int = 0
    #: Whether any payload of this ``Start`` is a reference: without one there is nothing to
    #: resolve, and the handler takes the ``Start`` as it is.
    refs: bool = False


class _ToHandler(msgspec.Struct, tag_field="t", tag=True, frozen=True):
    invocation_id: str


class Start(_ToHandler, frozen=True, omit_defaults=True):
    """Run (or resume) one attempt. ``journal`` holds every committed entry, ``Input`` first.
    (Only the fields added since version 1 have defaults: left out when unset, as before.)"""

    attempt: int
    service: str
    handler: str
    key: str | None
    input: bytes
    headers: dict[str, str]
    journal: list[Entry]
    state: dict[str, bytes] | None
    seed: int
    #: Signs this invocation's awakeable IDs (:func:`awakeable_id`). The sidecar derives it from a
    #: secret of its data directory, so it mints this invocation's IDs and no other's. Empty from
    #: a sidecar that does not check awakeable IDs.
    awakeable_key: bytes = b""
    #: The invocation's spending cap as the sidecar holds it (an ``x-budget`` header, or one raised
    #: by an operator's resume): it overrides the handler's own ``budget=``. None: the handler's.
    budget: float | None = None
    #: How large payloads travel: references, the blobs sent along, the size limit. (One field,
    #: so that a Start stays a msgpack fixmap, 15 fields at most, whenever the test clock's
    #: offset below is left out, as it always is in production.)
    payloads: Payloads = Payloads()
    #: The W3C trace context (``traceparent``) of this attempt's span, where the
    #: sidecar traces: the SDK's step spans are its children, and handler code sees it in
    #: ``ctx.headers``. None: not traced.
    trace: dict[str, str] | None = None
    #: How far the sidecar's clock runs ahead of the wall clock, in ms: 0 (left out) but under a
    #: test clock that skips time (``handler_sdk.testing``). The SDK adds it to the wall clock
    #: where it journals an instant (``ctx.now()``, a ``Sleep``'s wake-up), so both sides agree.
    clock_offset_ms: int = 0


class Ack(_ToHandler, frozen=True):
    """Every journal entry up to and including ``index`` is durable."""

    index: int


class Completion(_ToHandler, frozen=True, omit_defaults=True):
    """Entry ``index`` is done (a timer fired, an awakeable was resolved): ``value`` or ``failure``.

    Sent only once the completed entry is durable."""

    index: int
    value: bytes | None = None
    failure: Failure | None = None
    #: The sidecar's test clock offset now (as ``Start.clock_offset_ms``; 0, left out, but under
    #: one): an advance that fired this timer reaches the attempt that awaited it.
    clock_offset_ms: int = 0


class Cancel(_ToHandler, frozen=True):
    """Stop this invocation. ``kill``: abort at once, run no more user code. Otherwise
    cooperative: the handler's next await raises ``TerminalError(code=409)`` so it can compensate."""

    kill: bool = False


class Leave(_ToHandler, frozen=True):
    """The answer to an ``AskLeave`` for the step at ``index``. ``granted``: run this try (a
    step of a limit group holds its slot until its ``Run`` entry).
    ``lease``: the breaker is closed, and later steps over this link that name it need not ask
    until a ``Revoke``. Refused (only to a step that has a fallback; one without is backed off
    by the sidecar): the breaker is open until ``open_until_ms``."""

    index: int
    granted: bool = True
    lease: bool = False
    open_until_ms: int = 0
    #: The step fails with this (terminal) instead of running: it names no limit group the
    #: sidecar has.
    failure: Failure | None = None


class Revoke(_ToHandler, frozen=True):
    """The link's lease on breaker ``breaker`` is withdrawn (it opened): steps naming it ask again.
    Link-wide: ``invocation_id`` is empty. Sent only over links that asked for a lease."""

    breaker: str


class Blobs(_ToHandler, frozen=True):
    """The answer to ``FetchBlobs``, in one or more frames: ``final`` on the last; ``missing``:
    the blobs the sidecar has not got (the attempt cannot replay: it fails, and is retried)."""

    blobs: list[BlobData]
    final: bool = True
    missing: list[bytes] = []


ToHandler = Union[Start, Ack, Completion, Cancel, Leave, Revoke, Blobs]


# --- handler -> sidecar -----------------------------------------------------------------------


class _ToSidecar(msgspec.Struct, tag_field="t", tag=True, frozen=True):
    invocation_id: str


class Command(_ToSidecar, frozen=True):
    """A new journal entry at ``index`` (indices are dense: the next one is always len(journal))."""

    index: int
    entry: Entry


class Heartbeat(_ToSidecar, frozen=True):
    """Still alive: sent during long steps so that the inactivity timeout does not fire."""


class Suspend(_ToSidecar, frozen=True):
    """The handler awaits only completable entries that are not done: it frees itself, and the
    sidecar starts a new attempt (with the longer journal) once one of ``waiting_on`` completes."""

    waiting_on: list[int]


class Pause(_ToSidecar, frozen=True):
    """Stop trying this invocation until an operator resumes it (its budget is spent and the
    handler says ``on_budget="pause"``): it goes ``paused`` with ``reason``, its journal kept."""

    reason: str


class End(_ToSidecar, frozen=True):
    """The attempt is over: an ``output``, or a ``failure`` (retried unless terminal)."""

    output: bytes | None = None
    failure: Failure | None = None


class Event(_ToSidecar, frozen=True):
    """An ephemeral event (``ctx.publish(..., ephemeral=True)``, JSON): streamed to the subscribers
    of the moment, never journaled. Its place in the stream: after journal entry ``after`` (the
    last one the handler had reached), ``seq``-th of the events published there. An attempt that
    re-runs the same code publishes under the same places, so a subscriber can skip repeats."""

    after: int
    seq: int
    event: bytes


class BreakerSpec(msgspec.Struct, frozen=True):
    """A circuit breaker as its handler declares it (the latest declaration seen wins)."""

    name: str
    failure_threshold: int = 5
    cool_down_ms: int = 30_000


class AskLeave(_ToSidecar, frozen=True):
    """May a try of the step at ``index`` run now? Sent before a try of a step that names a
    ``breaker`` this link holds no lease on, or a ``limit`` group; answered with ``Leave`` (or,
    for a breaker that is open and a step without ``fallback``, by backing the invocation off).
    ``wait_ms``: how long the handler will wait for a limit's slot before the sidecar should
    free the attempt (its ``suspend_after``)."""

    index: int
    breaker: BreakerSpec | None = None
    fallback: bool = False
    limit: str | None = None
    wait_ms: int = 1000


class StepReport(_ToSidecar, frozen=True):
    """A try of a step that names ``breaker`` ended: ``failed`` (a transient failure) or it
    succeeded (a terminal failure counts as an answer: the dependency is up). Never answered."""

    breaker: BreakerSpec
    failed: bool


class FetchBlobs(_ToSidecar, frozen=True):
    """The handler lacks these blobs (by SHA-256) that its ``Start`` refers to: send them."""

    sha256: list[bytes]


ToSidecar = Union[Command, Heartbeat, Suspend, Pause, End, Event, AskLeave, StepReport, FetchBlobs]


# --- one encoder and one decoder per direction, built once ------------------------------------

encoder = msgspec.msgpack.Encoder()
to_handler_decoder = msgspec.msgpack.Decoder(ToHandler)
to_sidecar_decoder = msgspec.msgpack.Decoder(ToSidecar)
entry_decoder = msgspec.msgpack.Decoder(Entry)


# --- discovery (GET /discover, JSON) ------------------------------------------------------------


class RetrySpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """Invocation-level retry policy a handler asks for; unset fields take the sidecar's defaults."""

    initial_interval_ms: int | None = None
    multiplier: float | None = None
    max_interval_ms: int | None = None
    max_attempts: int | None = None


class TimeoutSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    inactivity_ms: int | None = None
    #: The whole invocation, waits included: past it, it fails terminally (code 408).
    total_ms: int | None = None


#: The longest delay a send or a sleep may ask for, and a client's delayed send: 3,650 days (ten
#: years). Longer is a mistake, and past it timestamps would no longer fit the store's 64 bits.
MAX_DELAY_MS = 3650 * 86_400_000

#: Service and handler names: identifiers, since they are path parts of every ingress URL and
#: parts of every stored key. Checked by the SDK when a service is defined and by the sidecar when
#: a deployment is discovered.
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
MAX_NAME_BYTES = 128


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a service or handler, or None."""
    if not NAME_PATTERN.fullmatch(name):
        return (f"{name[:140]!r} is not a valid name: a letter or '_', then letters, digits, "
                "'_', '.' or '-'")
    if len(name) > MAX_NAME_BYTES:
        return f"{name[:40]!r}... is not a valid name: {len(name)} characters, at most {MAX_NAME_BYTES}"
    return None


class HandlerSpec(msgspec.Struct, frozen=True):
    name: str
    kind: str  # "exclusive" | "shared" | "workflow"
    retry: RetrySpec = RetrySpec()
    timeouts: TimeoutSpec = TimeoutSpec()


class ServiceSpec(msgspec.Struct, frozen=True):
    name: str
    kind: str  # "service" | "object" | "workflow"
    handlers: list[HandlerSpec]


class Discovery(msgspec.Struct, frozen=True):
    protocol: int
    services: list[ServiceSpec]
    #: The handler resolves blob references in a ``Start`` (``Start.payloads``, ``FetchBlobs``).
    #: A sidecar sends an SDK that does not say so every payload as it is.
    blob_refs: bool = False


def awakeable_id(invocation_id: str, index: int, key: bytes) -> str:
    """``awk_<invocation id>_<index>_<tag>``: the tag, HMAC-SHA256(``key``, index) cut to 128 bits
    and URL-safe, lets the sidecar tell an ID it handed the key out for from a guess."""
    digest = hmac.new(key, str(index).encode(), hashlib.sha256).digest()[:16]
    return f"awk_{invocation_id}_{index}_{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"
