"""Service, VirtualObject and Workflow: explicit objects that collect their handlers.

Decorators validate at definition time (so a wrong signature fails at import, not on the first
request) and return the function unchanged, so a handler stays a plain, directly testable
coroutine function. Annotations are resolved later, when ``app()`` is built: by then every name a
module defines exists, including those used as string annotations.
"""

from __future__ import annotations

import datetime
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

from .options import RetryPolicy
from .protocol import HandlerSpec, RetrySpec, ServiceSpec, TimeoutSpec

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


class BadInput(Exception):
    """The invocation's input does not decode as the handler's parameter type (a 400)."""


def _accepts_none(tp: Any) -> bool:
    if tp is Any or tp is None or tp is types.NoneType:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return types.NoneType in typing.get_args(tp)
    return False


class HandlerDef:
    """One handler: its function, its options, and (once resolved) its input decoder."""

    def __init__(
        self, service: str, name: str, fn: Callable[..., Awaitable[Any]], *, kind: str,
        retry: RetryPolicy | None, inactivity_timeout: float | None,
    ) -> None:
        self.service = service
        self.name = name
        self.kind = kind
        self.fn = fn
        self.retry = retry
        self.inactivity_timeout = inactivity_timeout
        params = list(inspect.signature(fn).parameters.values())
        self._param = params[1].name if len(params) == 2 else None
        self.takes_input = self._param is not None
        self.input_type: Any = Any
        self._decoder: msgspec.json.Decoder[Any] | None = None

    def resolve(self) -> None:
        """Resolve the input annotation into a reusable decoder (idempotent)."""
        if self._decoder is not None:
            return
        try:
            hints = typing.get_type_hints(self.fn)
        except Exception as exc:
            raise TypeError(
                f"handler {self.service}/{self.name}: cannot resolve its annotations: {exc}"
            ) from exc
        if self._param is not None:
            self.input_type = hints.get(self._param, Any)
        try:
            self._decoder = msgspec.json.Decoder(self.input_type)
        except TypeError as exc:
            raise TypeError(
                f"handler {self.service}/{self.name}: msgspec cannot decode {self.input_type!r}: {exc}"
            ) from exc

    def decode_input(self, raw: bytes) -> tuple[Any, ...]:
        """The handler's positional arguments after ``ctx``. Raises ``BadInput``.

        A handler without a parameter ignores any input: callers may send ``{}`` or nothing.
        """
        if not self.takes_input:
            return ()
        if not raw:
            if _accepts_none(self.input_type):
                return (None,)
            raise BadInput(f"missing input: expected JSON for {_type_name(self.input_type)}")
        if self._decoder is None:
            self.resolve()
        assert self._decoder is not None
        try:
            return (self._decoder.decode(raw),)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise BadInput(str(exc)) from None

    def spec(self) -> HandlerSpec:
        retry = RetrySpec()
        if self.retry is not None:
            retry = RetrySpec(
                initial_interval_ms=round(self.retry.initial_interval * 1000),
                multiplier=self.retry.multiplier,
                max_interval_ms=round(self.retry.max_interval * 1000),
                max_attempts=self.retry.max_attempts,
            )
        timeouts = TimeoutSpec()
        if self.inactivity_timeout is not None:
            timeouts = TimeoutSpec(inactivity_ms=round(self.inactivity_timeout * 1000))
        return HandlerSpec(name=self.name, kind=self.kind, retry=retry, timeouts=timeouts)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


def _check_signature(fn: Callable[..., Any]) -> None:
    where = getattr(fn, "__qualname__", repr(fn))
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"handler {where} must be an async function (async def)")
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or any(p.kind not in positional for p in params):
        raise TypeError(f"handler {where} must take (ctx) or (ctx, arg), positionally")
    if len(params) > 2:
        raise TypeError(f"handler {where} takes at most one argument after ctx, not {len(params) - 1}")
    if len(params) == 2 and params[1].default is not inspect.Parameter.empty:
        raise TypeError(f"handler {where}: give its argument an Optional type instead of a default")


def _seconds(value: float | datetime.timedelta | None) -> float | None:
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


class _Definition:
    """Common part: a named set of handlers of one service kind."""

    kind: ClassVar[str]
    _handler_kinds: ClassVar[frozenset[str]]
    _default_handler_kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        if not name or "/" in name or name.strip() != name:
            raise ValueError(f"invalid service name {name!r}")
        self.name = name
        self._handlers: dict[str, HandlerDef] = {}

    @property
    def handlers(self) -> Mapping[str, HandlerDef]:
        return types.MappingProxyType(self._handlers)

    def _decorator(
        self, name: str | None, kind: str, retry: RetryPolicy | None,
        inactivity_timeout: float | datetime.timedelta | None,
    ) -> Callable[[H], H]:
        if kind not in self._handler_kinds:
            allowed = ", ".join(sorted(self._handler_kinds))
            raise ValueError(f"{type(self).__name__} handlers have kind {allowed}, not {kind!r}")

        def register(fn: H) -> H:
            _check_signature(fn)
            handler_name = name or fn.__name__
            if handler_name in self._handlers:
                raise ValueError(f"{self.name} already has a handler named {handler_name!r}")
            self._handlers[handler_name] = HandlerDef(
                self.name, handler_name, fn, kind=kind, retry=retry,
                inactivity_timeout=_seconds(inactivity_timeout),
            )
            return fn

        return register

    def handler(
        self, name: str | None = None, *, kind: str | None = None, retry: RetryPolicy | None = None,
        inactivity_timeout: float | datetime.timedelta | None = None,
    ) -> Callable[[H], H]:
        """Register the decorated async function as a handler named ``name`` (default: its own).

        ``retry`` is the invocation-level retry policy the sidecar applies to it, and
        ``inactivity_timeout`` (seconds) how long the sidecar waits for a message before it
        aborts and retries an attempt; unset, the sidecar's defaults apply.
        """
        return self._decorator(name, kind or self._default_handler_kind, retry, inactivity_timeout)

    def spec(self) -> ServiceSpec:
        return ServiceSpec(
            name=self.name, kind=self.kind, handlers=[h.spec() for h in self._handlers.values()]
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Service(_Definition):
    """Stateless handlers; any number of invocations run at once.

    Its handlers are announced with kind ``"shared"``: like shared object handlers they run
    concurrently with anything, and they have no state to write.
    """

    kind = "service"
    _handler_kinds = frozenset({"shared"})
    _default_handler_kind = "shared"


class VirtualObject(_Definition):
    """Handlers addressed by a key, each key with its own state.

    ``kind="exclusive"`` (the default) handlers run one at a time per key and may write state;
    ``kind="shared"`` ones run concurrently and may only read it.
    """

    kind = "object"
    _handler_kinds = frozenset({"exclusive", "shared"})
    _default_handler_kind = "exclusive"


class Workflow(_Definition):
    """A keyed object whose ``main`` handler runs at most once per key.

    ``@wf.main()`` marks that handler (kind ``"workflow"``); ``@wf.handler()`` ones are shared:
    they may read state while it runs.
    """

    kind = "workflow"
    _handler_kinds = frozenset({"shared", "workflow"})
    _default_handler_kind = "shared"

    def handler(
        self, name: str | None = None, *, kind: str | None = None, retry: RetryPolicy | None = None,
        inactivity_timeout: float | datetime.timedelta | None = None,
    ) -> Callable[[H], H]:
        if kind == "workflow":
            raise ValueError("use @workflow.main() for the workflow's main handler")
        return super().handler(name, kind=kind, retry=retry, inactivity_timeout=inactivity_timeout)

    def main(
        self, name: str | None = None, *, retry: RetryPolicy | None = None,
        inactivity_timeout: float | datetime.timedelta | None = None,
    ) -> Callable[[H], H]:
        """Register the workflow's main handler (conventionally ``run``)."""
        register = self._decorator(name, "workflow", retry, inactivity_timeout)

        def register_main(fn: H) -> H:
            if any(h.kind == "workflow" for h in self._handlers.values()):
                raise ValueError(f"workflow {self.name} already has a main handler")
            return register(fn)

        return register_main


Definition = Service | VirtualObject | Workflow
