"""The concrete contexts, one class per capability set, nesting like the contract.

``ServiceAttempt`` has no state; object handlers read it (``SharedAttempt``) or also write it
(``ExclusiveAttempt``); workflow handlers add durable promises (``WorkflowSharedAttempt``,
``WorkflowAttempt``). A method a context does not offer is absent, not a stub.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import msgspec

from . import _steps
from ._definition import HandlerDef
from ._arguments import check_identifier, check_types, json_encode
from ._gates import Gates
from ._invocation import AttemptContext, Emit
from .payload_limits import check_state_value
from ._waits import EntryFuture
from .context import (
    DurablePromise,
    ObjectContext,
    ObjectSharedContext,
    WorkflowContext,
    WorkflowSharedContext,
)
from .protocol import (
    ClearAllState,
    ClearState,
    CompletePromise,
    Failure,
    GetPromise,
    GetState,
    GetStateKeys,
    PeekPromise,
    SetState,
    Start,
)

if TYPE_CHECKING:
    from ._tracing import StepTracer

T = TypeVar("T")


class ServiceAttempt(AttemptContext):
    """A service handler's context: no key, no state."""


class _ReadState(AttemptContext):
    @property
    def key(self) -> str:
        return cast(str, self._key)

    async def get(self, name: str, *, type: Any = Any) -> Any:
        self._cancellation_point()
        check_identifier("state name", name)
        index, recorded = self._step(GetState, name)
        if recorded is not None:
            raw = cast(GetState, recorded).value
        else:
            raw = self._state.get(name)
            self._command(index, GetState(name=name, value=raw))
        if raw is None:
            return None
        return _steps.decoder_for(type).decode(raw)

    async def state_keys(self) -> list[str]:
        self._cancellation_point()
        index, recorded = self._step(GetStateKeys, "")
        if recorded is not None:
            return list(cast(GetStateKeys, recorded).keys)
        keys = sorted(self._state)
        self._command(index, GetStateKeys(keys=keys))
        return list(keys)


class _WriteState(_ReadState):
    def set(self, name: str, value: Any) -> None:
        check_identifier("state name", name)
        raw = json_encode(value)  # before claiming an index: a failed encode leaves no gap
        check_state_value(name, raw, self.max_payload_bytes)
        index, recorded = self._step(SetState, name)
        if recorded is None:
            self._state[name] = raw
            self._command(index, SetState(name=name, value=raw))

    def clear(self, name: str) -> None:
        check_identifier("state name", name)
        index, recorded = self._step(ClearState, name)
        if recorded is None:
            self._state.pop(name, None)
            self._command(index, ClearState(name=name))

    def clear_all(self) -> None:
        index, recorded = self._step(ClearAllState, "")
        if recorded is None:
            self._state.clear()
            self._command(index, ClearAllState())


class _Promise(DurablePromise[T], Generic[T]):
    """One workflow promise, bound to the attempt that journals its operations."""

    __slots__ = ("_attempt", "_decoder", "_name")

    def __init__(self, attempt: AttemptContext, name: str, decoder: msgspec.json.Decoder[Any]) -> None:
        self._attempt = attempt
        self._name = name
        self._decoder = decoder

    @property
    def name(self) -> str:
        return self._name

    def value(self) -> EntryFuture[T]:
        attempt = self._attempt
        index, recorded = attempt._completable(GetPromise, self._name)
        if recorded is None:
            attempt._command(index, GetPromise(name=self._name))
        return EntryFuture("GetPromise", index, functools.partial(attempt._value, index, self._decoder))

    def peek(self) -> EntryFuture[T | None]:
        attempt = self._attempt
        index, recorded = attempt._completable(PeekPromise, self._name)
        if recorded is None:
            attempt._command(index, PeekPromise(name=self._name))
        return EntryFuture(
            "PeekPromise", index, functools.partial(attempt._optional_value, index, self._decoder),
        )

    def resolve(self, value: T) -> EntryFuture[None]:
        return self._complete(CompletePromise(name=self._name, value=json_encode(value)))

    def reject(self, reason: str, *, code: int = 500) -> EntryFuture[None]:
        check_types(reason=(reason, str), code=(code, int))
        failure = Failure(code=code, message=reason, terminal=True)
        return self._complete(CompletePromise(name=self._name, failure=failure))

    def _complete(self, entry: CompletePromise) -> EntryFuture[None]:
        attempt = self._attempt
        index, recorded = attempt._completable(CompletePromise, self._name)
        if recorded is None:
            attempt._command(index, entry)
        return EntryFuture("CompletePromise", index, functools.partial(attempt._accepted, index))

    def __repr__(self) -> str:
        return f"<DurablePromise {self._name!r}>"


class _Promises(AttemptContext):
    def promise(self, name: str, *, type: Any = Any) -> DurablePromise[Any]:
        check_types(name=(name, str))
        check_identifier("promise name", name)
        return _Promise(self, name, _steps.decoder_for(type))


class SharedAttempt(_ReadState, ObjectSharedContext):
    """A shared object handler's context: reads state."""


class ExclusiveAttempt(_WriteState, ObjectContext):
    """An exclusive object handler's context: reads and writes state."""


class WorkflowSharedAttempt(_Promises, _ReadState, WorkflowSharedContext):
    """A workflow's shared handler: reads state, reaches the promises."""


class WorkflowAttempt(_Promises, _WriteState, WorkflowContext):
    """A workflow's main handler: reads and writes state, reaches the promises."""


def new_attempt(
    start: Start, handler: HandlerDef, emit: Emit, service_kind: str, *, suspend_after: float = 1.0,
    suspend_for_acks: bool = False, gates: Gates | None = None, spans: StepTracer | None = None,
) -> AttemptContext:
    """The context class that matches what the handler may do."""
    cls: type[AttemptContext]
    if service_kind == "service":
        cls = ServiceAttempt
    elif service_kind == "workflow":
        cls = WorkflowSharedAttempt if handler.kind == "shared" else WorkflowAttempt
    else:
        cls = SharedAttempt if handler.kind == "shared" else ExclusiveAttempt
    return cls(start, handler, emit, suspend_after=suspend_after, suspend_for_acks=suspend_for_acks, gates=gates,
               spans=spans)
