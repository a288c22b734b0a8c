"""Service, VirtualObject and Workflow: explicit objects that collect their handlers.

Decorators validate at definition time (so a wrong signature fails at import, not on the first
request) and return the function unchanged, so a handler stays a plain, directly testable
coroutine function. Annotations are resolved later, when ``app()`` is built: by then every name a
module defines exists, including those used as string annotations.
"""

from __future__ import annotations

import datetime
import inspect
import math
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

from ._spending import ON_BUDGET, checked_cost
from .options import RetryPolicy
from .protocol import HandlerSpec, RetrySpec, ServiceSpec, TimeoutSpec, name_problem

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
        retry: RetryPolicy | None, inactivity_timeout: float | None, timeout: float | None = None,
        budget: float | None = None, on_budget: str = "fail",
    ) -> None:
        self.service = service
        self.name = name
        self.kind = kind
        self.fn = fn
        self.retry = retry
        self.inactivity_timeout = inactivity_timeout
        self.timeout = timeout
        #: The spending cap of each invocation (``None``: none), and what a step past it does.
        self.budget = budget
        self.on_budget = on_budget
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
            raise BadInput(f"{self.service}/{self.name}: {self._param}: missing input: expected JSON "
                           f"for {_type_name(self.input_type)}")
        if self._decoder is None:
            self.resolve()
        assert self._decoder is not None
        try:
            return (self._decoder.decode(raw),)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise BadInput(self._bad_input(exc)) from None

    def _bad_input(self, exc: msgspec.DecodeError) -> str:
        """``Counter/add: n: expected int, got str``: the handler, the parameter (and where in it,
        ``order.items[0]``), then msgspec's reason (``Expected `int`, got `str` - at `$.x```)."""
        reason, at, path = str(exc).partition(" - at `$")
        where = f"{self._param}{path.rstrip('`')}" if at else self._param
        if isinstance(exc, msgspec.ValidationError):
            reason = reason.replace("`", "")
            reason = reason[:1].lower() + reason[1:]
        else:
            reason = f"not valid JSON: {reason}"
        return f"{self.service}/{self.name}: {where}: {reason}"

    def spec(self) -> HandlerSpec:
        retry = RetrySpec()
        if self.retry is not None:
            retry = RetrySpec(
                initial_interval_ms=round(self.retry.initial_interval * 1000),
                multiplier=self.retry.multiplier,
                max_interval_ms=round(self.retry.max_interval * 1000),
                max_attempts=self.retry.max_attempts,
            )
        timeouts = TimeoutSpec(inactivity_ms=_ms(self.inactivity_timeout), total_ms=_ms(self.timeout))
        return HandlerSpec(name=self.name, kind=self.kind, retry=retry, timeouts=timeouts)


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


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


def positive_seconds(option: str, value: float | datetime.timedelta | None) -> float | None:
    """``value`` in seconds (``None`` stays ``None``); ``ValueError`` unless positive and finite."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if value is not None and not (0 < value < math.inf):
        raise ValueError(f"{option} must be a positive number of seconds, got {value!r}")
    return value


#: The attribute that a registered handler function carries: where it is registered, so that
#: ``ctx.service_call(svc, some_handler)`` can name it. Setting an attribute leaves the function
#: itself unchanged (it is still the same, directly callable object).
_REGISTRATIONS = "__handler_sdk_registrations__"


def _remember(fn: Callable[..., Any], definition: _Definition, name: str) -> None:
    try:
        registrations = getattr(fn, _REGISTRATIONS, ())
        setattr(fn, _REGISTRATIONS, (*registrations, (definition, name)))
    except AttributeError:  # a bound method, say: it can still be called by its name
        pass


def registrations(fn: object) -> tuple[tuple[_Definition, str], ...]:
    """Where ``fn`` is registered as a handler: (definition, handler name) pairs."""
    found = getattr(fn, _REGISTRATIONS, ())
    return found if isinstance(found, tuple) else ()


class _Options(typing.NamedTuple):
    """A handler's options as the decorators take them (before conversion to seconds)."""

    retry: RetryPolicy | None
    inactivity_timeout: float | datetime.timedelta | None
    timeout: float | datetime.timedelta | None
    budget: float | None = None
    on_budget: str = "fail"

    def check(self) -> None:
        """Refuse what cannot work at definition time, not on the first request."""
        if self.retry is not None and self.retry.max_elapsed is not None:
            raise ValueError("max_elapsed bounds a step's retries (ctx.run); bound a whole invocation with timeout=")
        if self.budget is not None:
            checked_cost(self.budget, "budget=")
        if self.on_budget not in ON_BUDGET:
            raise ValueError(f"on_budget must be one of {', '.join(map(repr, ON_BUDGET))}, got {self.on_budget!r}")


class _Definition:
    """Common part: a named set of handlers of one service kind."""

    kind: ClassVar[str]
    _handler_kinds: ClassVar[frozenset[str]]
    _default_handler_kind: ClassVar[str]

    def __init__(self, name: str) -> None:
        problem = name_problem(name)
        if problem is not None:
            raise ValueError(f"invalid service name: {problem}")
        self.name = name
        self._handlers: dict[str, HandlerDef] = {}

    @property
    def handlers(self) -> Mapping[str, HandlerDef]:
        return types.MappingProxyType(self._handlers)

    def _decorator(self, name: str | None, kind: str, options: _Options) -> Callable[[H], H]:
        if kind not in self._handler_kinds:
            allowed = ", ".join(sorted(self._handler_kinds))
            raise ValueError(f"{type(self).__name__} handlers have kind {allowed}, not {kind!r}")
        inactivity_timeout = positive_seconds("inactivity_timeout", options.inactivity_timeout)
        timeout = positive_seconds("timeout", options.timeout)
        options.check()

        def register(fn: H) -> H:
            _check_signature(fn)
            handler_name = name or fn.__name__
            problem = name_problem(handler_name)
            if problem is not None:
                raise ValueError(f"invalid handler name in {self.name}: {problem}")
            if handler_name in self._handlers:
                raise ValueError(f"{self.name} already has a handler named {handler_name!r}")
            self._handlers[handler_name] = HandlerDef(
                self.name, handler_name, fn, kind=kind, retry=options.retry,
                inactivity_timeout=inactivity_timeout, timeout=timeout, budget=options.budget,
                on_budget=options.on_budget,
            )
            _remember(fn, self, handler_name)
            return fn

        return register

    def handler(
        self, name: str | None = None, *, kind: str | None = None, retry: RetryPolicy | None = None,
        inactivity_timeout: float | datetime.timedelta | None = None,
        timeout: float | datetime.timedelta | None = None,
        budget: float | None = None, on_budget: str = "fail",
    ) -> Callable[[H], H]:
        """Register the decorated async function as a handler named ``name`` (default: its own).

        ``retry`` is the invocation-level retry policy the sidecar applies to it;
        ``inactivity_timeout`` (seconds) how long the sidecar waits for a message before it
        aborts and retries an attempt; ``timeout`` (seconds) how long the whole invocation may
        take, waits and retries included, before the sidecar fails it terminally (code 408).
        Unset, the sidecar's defaults apply.

        ``budget`` caps what each invocation's steps may spend (their ``cost=``, failed tries
        included; an ``x-budget`` header on the call wins). A step that would start at or past it
        does not run: ``on_budget="fail"`` fails it with ``BudgetExceeded`` (402), ``"pause"``
        pauses the invocation until an operator resumes it with a higher budget.
        """
        options = _Options(retry, inactivity_timeout, timeout, budget, on_budget)
        return self._decorator(name, kind or self._default_handler_kind, options)

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
        timeout: float | datetime.timedelta | None = None,
        budget: float | None = None, on_budget: str = "fail",
    ) -> Callable[[H], H]:
        """Register a shared handler (``WorkflowSharedContext``): it reads state, reaches the
        durable promises (to resolve one that ``main`` awaits, say) and runs concurrently with
        ``main``. Options as for ``Service.handler``."""
        if kind == "workflow":
            raise ValueError("use @workflow.main() for the workflow's main handler")
        return super().handler(
            name, kind=kind, retry=retry, inactivity_timeout=inactivity_timeout, timeout=timeout,
            budget=budget, on_budget=on_budget,
        )

    def main(
        self, name: str | None = None, *, retry: RetryPolicy | None = None,
        inactivity_timeout: float | datetime.timedelta | None = None,
        timeout: float | datetime.timedelta | None = None,
        budget: float | None = None, on_budget: str = "fail",
    ) -> Callable[[H], H]:
        """Register the workflow's main handler (conventionally ``run``; kind ``"workflow"``).

        It gets a ``WorkflowContext`` (state reads and writes, durable promises) and runs at most
        once per key. Options as for ``Service.handler``.
        """
        register = self._decorator(name, "workflow", _Options(retry, inactivity_timeout, timeout, budget, on_budget))

        def register_main(fn: H) -> H:
            if any(h.kind == "workflow" for h in self._handlers.values()):
                raise ValueError(f"workflow {self.name} already has a main handler")
            return register(fn)

        return register_main


Definition = Service | VirtualObject | Workflow


def call_target(target: str | _Definition, handler: str | Callable[..., Any], *, keyed: bool) -> tuple[str, str]:
    """The (service, handler) names a call or send addresses, from names or decorated objects.

    Checked before the call claims a journal index, so that a mistake leaves no gap: a
    definition of the wrong kind (a keyed call to a ``Service``), a handler function registered
    elsewhere, or a handler name the given definition does not have.
    """
    if isinstance(target, _Definition):
        service = target.name
        if keyed and target.kind == "service":
            raise TypeError(f"{target!r} is a service: call it with service_call/service_send")
        if not keyed and target.kind != "service":
            raise TypeError(f"{target!r} is keyed: call it with object_call/object_send and a key")
    elif isinstance(target, str) and target:
        service = target
    else:
        raise TypeError(f"the call target must be a service name or definition, got {target!r}")
    if isinstance(handler, str):
        if not handler:
            raise ValueError("the handler name is empty")
        if isinstance(target, _Definition) and handler not in target.handlers:
            raise ValueError(f"{target!r} has no handler named {handler!r}")
        return service, handler
    names = [name for owner, name in registrations(handler)
             if (owner is target if isinstance(target, _Definition) else owner.name == service)]
    if len(names) != 1:
        what = getattr(handler, "__qualname__", repr(handler))
        problem = "is not a handler registered on" if not names else "is registered twice on"
        raise ValueError(f"{what} {problem} {service}: pass the handler's name instead")
    return service, names[0]
