"""What a handler may call: the context contract, and nothing else.

Handlers, tests and type checkers depend on these abstract classes only; the behaviour (journal
replay, the socket, acknowledgements) lives in the private ``_invocation`` and ``_contexts``
modules. The classes nest by capability: every handler gets ``Context``; keyed handlers also read
their key's state (``ObjectSharedContext``); exclusive handlers also write it (``ObjectContext``);
workflow handlers also reach the workflow's durable promises (``WorkflowSharedContext``,
``WorkflowContext``).

Every method that touches the outside world goes through the journal, so that a retried attempt
replays what already happened instead of doing it again. Code outside ``ctx`` (the wall clock,
``random``, ``uuid4``, network calls) is re-executed on every attempt: use ``ctx.now()``,
``ctx.random()``, ``ctx.uuid()`` and ``ctx.run()`` instead.

Cancellation is cooperative: when the invocation is cancelled, the handler's next await on a
context operation (a step, a sleep, a call, an awakeable or promise, a state read), or the one it
is blocked in, raises ``TerminalError("cancelled", 409)``, once. The handler may catch it and
compensate with further context calls, which are journaled as usual; a step already executing
finishes first and returns its result. The point where the cancellation surfaced is journaled
(as a ``Run`` named ``"<cancelled>"``), so that later attempts replay it at the same await.
"""

from __future__ import annotations

import datetime
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, TypeVarTuple, Unpack, overload

from .breakers import CircuitBreaker
from .options import RetryPolicy

if TYPE_CHECKING:
    from ._definition import Service, VirtualObject, Workflow

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: A handler to call: its name, or the decorated handler function itself.
HandlerRef = str | Callable[..., Awaitable[Any]]
#: Seconds, or a ``timedelta``.
Seconds = float | datetime.timedelta


class Context(ABC):
    """The context of every handler: durable steps and deterministic helpers."""

    __slots__ = ()

    @property
    @abstractmethod
    def invocation_id(self) -> str:
        """This invocation's ID (``inv_...``): the same in every attempt."""

    @property
    @abstractmethod
    def headers(self) -> Mapping[str, str]:
        """The request headers the invocation was made with."""

    @overload
    async def run(
        self, name: str, fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: Unpack[Ts],
        retry: RetryPolicy | None = None, cost: float | Callable[[T], float] | None = None,
        timeout: Seconds | None = None,
        fallback: Callable[[Unpack[Ts]], Awaitable[T]] | None = None, fallback_after: int = 1,
        breaker: CircuitBreaker | str | None = None, limit: str | None = None,
    ) -> T: ...

    @overload
    async def run(
        self, name: str, fn: Callable[[Unpack[Ts]], T], *args: Unpack[Ts],
        retry: RetryPolicy | None = None, cost: float | Callable[[T], float] | None = None,
        timeout: Seconds | None = None,
        fallback: Callable[[Unpack[Ts]], T] | None = None, fallback_after: int = 1,
        breaker: CircuitBreaker | str | None = None, limit: str | None = None,
    ) -> T: ...

    @abstractmethod
    async def run(
        self, name: str, fn: Callable[[Unpack[Ts]], Any], *args: Unpack[Ts],
        retry: RetryPolicy | None = None, cost: float | Callable[[Any], float] | None = None,
        timeout: Seconds | None = None,
        fallback: Callable[[Unpack[Ts]], Any] | None = None, fallback_after: int = 1,
        breaker: CircuitBreaker | str | None = None, limit: str | None = None,
    ) -> Any:
        """Run ``fn(*args)`` as a named, journaled step, at most once per invocation.

        A sync ``fn`` runs in a worker thread (it must not block the event loop); an async one is
        awaited. Failures are retried in-process per ``retry`` (default: 3 tries, from 0.1 s);
        a ``TerminalError`` from ``fn`` is not retried. The result (JSON-encoded with msgspec,
        decoded with ``fn``'s return annotation) is returned only once the sidecar has made it
        durable; a failed step raises ``TerminalError`` here, now and on every replay. Name steps
        distinctly: replay matches by name (``"<cancelled>"`` is reserved: it records where a
        cancellation surfaced).

        ``cost`` is what a successful try cost: a number, or a function of the result (an LLM
        reply's usage). A failed try reports its own with ``RetryableError(cost=)`` or
        ``TerminalError(cost=)``. The step's entry records the sum, the number of tries and which
        function ran; the sidecar sums it per invocation, key, handler and step. Before every try
        the invocation's budget (``budget=`` on the handler, or ``x-budget``) is checked: past it,
        the try does not run and the step raises ``BudgetExceeded`` (or the invocation pauses).

        ``fallback`` takes over after ``fallback_after`` transient failures of ``fn``, with the
        same arguments; its tries count on under the same ``retry``. A replay returns whatever was
        recorded, whichever function gave it.

        ``timeout`` (seconds) bounds each try: a try that takes longer fails with a retryable
        ``TimeoutError`` and is retried per ``retry``. An async ``fn`` is cancelled. A sync ``fn``
        cannot be: Python cannot kill a thread, so the step stops waiting for it and its thread
        runs on to the end in the background (its result is dropped). Make such functions honour
        a deadline of their own (a socket timeout) so that timed-out tries do not pile up.

        ``breaker`` (a ``CircuitBreaker`` or its name) shares a circuit breaker with every step that
        names it: while it is open the function is not run: a step with a ``fallback`` runs that
        at once, one without backs its invocation off until the breaker lets a trial through
        (only tries of ``fn`` count for the breaker, never the fallback's). ``limit`` puts the step in a sidecar-wide limit group
        (``[limits.NAME]`` in the sidecar's configuration): it waits for one of the group's slots
        before its first try, journaling nothing meanwhile (past ``suspend_after`` its attempt
        is freed and the invocation waits without one), and holds it until it ends. A group the
        sidecar does not have fails the step (``TerminalError``, 400).
        """

    @abstractmethod
    async def sleep(self, delay: float | datetime.timedelta) -> None:
        """Pause for ``delay`` (seconds, or a ``timedelta``) on a durable timer.

        The wake-up instant is journaled and kept by the sidecar: the timer survives crashes and
        restarts, and a replay does not sleep again. A zero or negative delay fires at once. While
        the handler only waits, it suspends (frees itself) and is resumed when the timer fires.
        """

    @overload
    def awakeable(self) -> tuple[str, Awaitable[Any]]: ...

    @overload
    def awakeable(self, *, type: type[T]) -> tuple[str, Awaitable[T]]: ...

    @abstractmethod
    def awakeable(self, *, type: Any = Any) -> tuple[str, Awaitable[Any]]:
        """A durable wait for someone outside: returns its ID and an awaitable for its value.

        Hand the ID to whoever decides (a human, a webhook); they resolve it with a JSON value or
        reject it with a reason, through the sidecar (``POST /restate/awakeables/{id}/resolve``)
        or from another handler (``resolve_awakeable``). Awaiting gives the value, decoded as
        ``type`` (default: any JSON), or raises ``TerminalError`` for a rejection. The awaitable
        may be awaited later, even after other steps, and a resolution that came first is kept.
        The ID is journaled: a replay hands out the same one. While the handler only waits, it
        suspends and is resumed when the awakeable completes.
        """

    @abstractmethod
    def resolve_awakeable(self, id: str, value: Any) -> None:
        """Resolve awakeable ``id`` with ``value`` (JSON-encoded with msgspec), once, durably.

        The command is journaled and sent without waiting; the sidecar completes the awakeable
        once it is durable. A replay does not resolve it again.
        """

    @abstractmethod
    def reject_awakeable(self, id: str, reason: str, *, code: int = 500) -> None:
        """Reject awakeable ``id``: its awaiter gets ``TerminalError(reason, code)``. Journaled."""

    @overload
    def service_call(self, service: str | Service, handler: HandlerRef, arg: Any = None) -> Awaitable[Any]: ...

    @overload
    def service_call(
        self, service: str | Service, handler: HandlerRef, arg: Any = None, *, type: type[T],
    ) -> Awaitable[T]: ...

    @abstractmethod
    def service_call(
        self, service: str | Service, handler: HandlerRef, arg: Any = None, *, type: Any = Any,
    ) -> Awaitable[Any]:
        """Call ``handler`` of ``service`` with ``arg`` and await its result, durably.

        ``service`` is a name or the ``Service`` itself; ``handler`` a name or the decorated
        handler function. The call is journaled and sent when this method returns (the sidecar
        starts the callee exactly once, whatever happens to this attempt); await the returned
        awaitable, now or later, for the callee's output decoded as ``type`` (default: any JSON),
        or a ``TerminalError`` with the callee's failure message and code. Start several calls
        and ``asyncio.gather`` them to run them in parallel. ``arg`` is JSON-encoded with
        msgspec (``None``: no input). While the handler only waits, it suspends.
        """

    @overload
    def object_call(
        self, obj: str | VirtualObject | Workflow, key: str, handler: HandlerRef, arg: Any = None,
    ) -> Awaitable[Any]: ...

    @overload
    def object_call(
        self, obj: str | VirtualObject | Workflow, key: str, handler: HandlerRef, arg: Any = None, *,
        type: type[T],
    ) -> Awaitable[T]: ...

    @abstractmethod
    def object_call(
        self, obj: str | VirtualObject | Workflow, key: str, handler: HandlerRef, arg: Any = None, *,
        type: Any = Any,
    ) -> Awaitable[Any]:
        """Call ``handler`` of virtual object or workflow ``obj`` on ``key``; as ``service_call``.

        An exclusive callee queues behind the key's other exclusive invocations, so a cycle of
        calls back into an exclusive handler of a key that is busy waiting on this call cannot
        make progress: avoid such cycles (the sidecar may refuse them with a failure).
        """

    @abstractmethod
    def service_send(
        self, service: str | Service, handler: HandlerRef, arg: Any = None, *, delay: Seconds | None = None,
    ) -> None:
        """Invoke ``handler`` of ``service`` one-way, ``delay`` (seconds) from now: durably, once.

        Journaled and sent without waiting; the callee's result is not returned. The delay is
        kept by the sidecar and survives restarts.
        """

    @abstractmethod
    def object_send(
        self, obj: str | VirtualObject | Workflow, key: str, handler: HandlerRef, arg: Any = None, *,
        delay: Seconds | None = None,
    ) -> None:
        """Invoke ``handler`` of ``obj`` on ``key`` one-way; as ``service_send``."""

    @abstractmethod
    async def now(self) -> datetime.datetime:
        """The current time (UTC, millisecond precision), journaled: replays see the same instant."""

    @abstractmethod
    def random(self) -> float:
        """A float in [0, 1) from a generator seeded per invocation: the same on every replay."""

    @abstractmethod
    def uuid(self) -> uuid.UUID:
        """A version-4 UUID from the same seeded generator as ``random()``."""

    @abstractmethod
    def publish(self, event: Any, *, ephemeral: bool = False) -> None:
        """Stream ``event`` (anything JSON-encodable) to the invocation's subscribers
        (``GET /restate/invocation/{id}/events``).

        By default it is a milestone: journaled, sent once durable, replayed to subscribers that
        come later, and published once however often the handler is replayed. ``ephemeral=True``
        is for token deltas and progress: sent at once to the subscribers of the moment, never
        journaled, and allowed inside a ``run`` function; a step that runs again publishes again.
        """

    @abstractmethod
    def idempotency_key(self) -> str:
        """A key to pass to external systems, stable across retries and replays.

        It is ``"{invocation_id}:{index}"``. Inside a ``run`` function, ``index`` is that step's;
        elsewhere it is the index of the next journal entry the handler will write.
        """


class ObjectSharedContext(Context):
    """The context of a keyed handler that may read its key's state (shared handlers)."""

    __slots__ = ()

    @property
    @abstractmethod
    def key(self) -> str:
        """The object or workflow key this invocation addresses."""

    @overload
    async def get(self, name: str) -> Any: ...

    @overload
    async def get(self, name: str, *, type: type[T]) -> T | None: ...

    @abstractmethod
    async def get(self, name: str, *, type: Any = Any) -> Any:
        """The state value ``name`` (``None`` if unset), decoded as ``type`` (default: any JSON)."""

    @abstractmethod
    async def state_keys(self) -> list[str]:
        """The names of the key's state values, sorted."""


class ObjectContext(ObjectSharedContext):
    """The context of an exclusive handler: it alone writes its key's state while it runs.

    Writes are sent to the sidecar at once and committed in order. A handler that later fails
    terminally keeps the writes it made before failing; a retried attempt replays them.
    """

    __slots__ = ()

    @abstractmethod
    def set(self, name: str, value: Any) -> None:
        """Set state ``name`` to ``value`` (JSON-encoded with msgspec)."""

    @abstractmethod
    def clear(self, name: str) -> None:
        """Remove state ``name``."""

    @abstractmethod
    def clear_all(self) -> None:
        """Remove every state value of the key."""


class DurablePromise(ABC, Generic[T]):
    """A workflow's named, durable promise: ``run`` awaits it, shared handlers complete it.

    It belongs to the workflow key, not to one invocation: whoever completes it first (resolve
    or reject) decides its outcome for good. Every operation is journaled when it is called and
    returns an awaitable for the sidecar's answer; a replay gives the recorded answer.
    """

    __slots__ = ()

    @property
    @abstractmethod
    def name(self) -> str:
        """The promise's name within its workflow key."""

    @abstractmethod
    def value(self) -> Awaitable[T]:
        """Await the promise's value (decoded as the promise's type); a rejection raises
        ``TerminalError`` with its reason and code. While the handler only waits, it suspends."""

    @abstractmethod
    def peek(self) -> Awaitable[T | None]:
        """The value if the promise is resolved, ``None`` if it is not yet (no waiting); a
        rejection raises ``TerminalError``."""

    @abstractmethod
    def resolve(self, value: T) -> Awaitable[None]:
        """Resolve the promise with ``value`` (JSON-encoded with msgspec).

        Awaitable, unlike the bare ``.resolve(v)`` of DESIGN §6: the resolution is journaled and
        sent at once, and awaiting tells whether it took. It raises ``TerminalError`` (409) when
        the promise was already completed. Not awaiting it still resolves the promise.
        """

    @abstractmethod
    def reject(self, reason: str, *, code: int = 500) -> Awaitable[None]:
        """Reject the promise: its awaiters get ``TerminalError(reason, code)``. Awaitable as
        ``resolve``: ``TerminalError`` (409) when the promise was already completed."""


class WorkflowSharedContext(ObjectSharedContext):
    """The context of a workflow's shared handlers (signals, queries): reads state, and reaches
    the workflow's durable promises."""

    __slots__ = ()

    @overload
    def promise(self, name: str) -> DurablePromise[Any]: ...

    @overload
    def promise(self, name: str, *, type: type[T]) -> DurablePromise[T]: ...

    @abstractmethod
    def promise(self, name: str, *, type: Any = Any) -> DurablePromise[Any]:
        """The workflow key's durable promise ``name``, its values decoded as ``type``.

        A handle only: nothing is journaled until one of its operations is called.
        """


class WorkflowContext(ObjectContext, WorkflowSharedContext):
    """The context of a workflow's main handler, which runs at most once per key."""

    __slots__ = ()
