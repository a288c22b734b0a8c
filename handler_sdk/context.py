"""What a handler may call: the context contract, and nothing else.

Handlers, tests and type checkers depend on these abstract classes only; the behaviour (journal
replay, the socket, acknowledgements) lives in the private ``_invocation`` module. The classes nest
by capability: every handler gets ``Context``; keyed handlers also read their key's state
(``ObjectSharedContext``); exclusive handlers also write it (``ObjectContext``).

Every method that touches the outside world goes through the journal, so that a retried attempt
replays what already happened instead of doing it again. Code outside ``ctx`` (the wall clock,
``random``, ``uuid4``, network calls) is re-executed on every attempt: use ``ctx.now()``,
``ctx.random()``, ``ctx.uuid()`` and ``ctx.run()`` instead.
"""

from __future__ import annotations

import datetime
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, TypeVarTuple, Unpack, overload

from .options import RetryPolicy

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


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
        retry: RetryPolicy | None = None, cost: float | None = None,
    ) -> T: ...

    @overload
    async def run(
        self, name: str, fn: Callable[[Unpack[Ts]], T], *args: Unpack[Ts],
        retry: RetryPolicy | None = None, cost: float | None = None,
    ) -> T: ...

    @abstractmethod
    async def run(
        self, name: str, fn: Callable[[Unpack[Ts]], Any], *args: Unpack[Ts],
        retry: RetryPolicy | None = None, cost: float | None = None,
    ) -> Any:
        """Run ``fn(*args)`` as a named, journaled step, at most once per invocation.

        A sync ``fn`` runs in a worker thread (it must not block the event loop); an async one is
        awaited. Failures are retried in-process per ``retry`` (default: 3 tries, from 0.1 s);
        a ``TerminalError`` from ``fn`` is not retried. The result (JSON-encoded with msgspec,
        decoded with ``fn``'s return annotation) is returned only once the sidecar has made it
        durable; a failed step raises ``TerminalError`` here, now and on every replay. ``cost``
        is recorded with the step for accounting. Name steps distinctly: replay matches by name.
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


class WorkflowSharedContext(ObjectSharedContext):
    """The context of a workflow's shared handlers (signals, queries)."""

    __slots__ = ()


class WorkflowContext(ObjectContext, WorkflowSharedContext):
    """The context of a workflow's main handler, which runs at most once per key."""

    __slots__ = ()
