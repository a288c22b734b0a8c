"""The context implementation: one object per running attempt of one invocation.

It turns each context call into a journal command: answered from the journal while replaying
(``_replay``), executed and sent to the sidecar past its end. Commands are pipelined (sent without
waiting) and kept in order by the connection's single writer; only a step's result waits for the
sidecar's ``Ack``, because user code must not see a result that a crash could still un-happen
("durable before visible").

Timers and awakeables are journaled like any command, then awaited through ``_waits``: the sidecar
completes them later, and an attempt that only waits for them suspends itself.

The classes nest like the contract: ``ServiceAttempt`` has no state, ``SharedAttempt`` reads it,
``ExclusiveAttempt`` also writes it. A method a context does not offer is absent, not a stub.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import math
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVarTuple, Unpack, cast

import msgspec

from . import _steps
from ._definition import BadInput, HandlerDef
from ._replay import Replay
from ._waits import AwakeableFuture, Waits
from .context import Context, WorkflowContext, WorkflowSharedContext
from .errors import AttemptAborted, NondeterminismError, Suspended, TerminalError
from .options import DEFAULT_STEP_RETRY, RetryPolicy
from .protocol import (
    Awakeable, ClearAllState, ClearState, Command, CompleteAwakeable, End, Entry, Failure, GetState,
    GetStateKeys, Now, Run, SetState, Sleep, Start, Suspend, ToSidecar,
)

logger = logging.getLogger("handler_sdk")

_json_encode = msgspec.json.Encoder().encode
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

Send = Callable[[ToSidecar], None]

_IN_STEP = (
    "context calls are not allowed inside a ctx.run function: the step's result is journaled, "
    "not its insides, so a replay would skip them; call them before or after the step"
)
_CANCELLED_STEP = (
    "step {name!r} (journal entry {index}) was cancelled before it finished, so it has no "
    "outcome to journal and the attempt cannot go on; it is retried. Put timeouts inside the "
    "step's function rather than around ctx.run"
)
Ts = TypeVarTuple("Ts")


def _delay_ms(delay: float | datetime.timedelta) -> int:
    if isinstance(delay, datetime.timedelta):
        return delay // datetime.timedelta(milliseconds=1)  # integer arithmetic, no float rounding
    if not math.isfinite(delay):
        raise ValueError(f"sleep needs a finite delay, got {delay!r}")
    return round(delay * 1000)


def _check_types(**arguments: tuple[Any, type]) -> None:
    for name, (value, expected) in arguments.items():
        if not isinstance(value, expected):
            raise TypeError(f"{name} must be {expected.__name__}, got {value!r}")


class Attempt(Context):
    """Engine and ``Context`` methods shared by every kind of handler."""

    def __init__(self, start: Start, handler: HandlerDef, send: Send, *, suspend_after: float = 1.0) -> None:
        self._id = start.invocation_id
        self._handler = handler
        self._input = start.input
        self._headers = start.headers
        self._key = start.key
        self._send = send
        self._replay = Replay(start.invocation_id, start.journal)
        # Snapshot plus this attempt's own writes. The snapshot already includes what earlier
        # attempts wrote (writes are applied as they commit), so replayed writes change nothing.
        self._state: dict[str, bytes] = dict(start.state) if start.state else {}
        self._seed = start.seed
        self._rng: random.Random | None = None  # built on first use: seeding costs a few us
        # Entries already in the journal are durable; acks are cumulative.
        self._acked = len(start.journal) - 1
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Commands leave in index order even when steps run concurrently (asyncio.gather):
        # one that finishes early waits here until every lower index has been sent.
        self._unsent = len(start.journal)
        self._held: dict[int, Entry] = {}
        self._closed = False
        #: Why the attempt cannot go on (a divergence, a step cancelled midway): every later
        #: context call raises it, and the attempt ends with it even if user code caught it.
        self._fatal: Exception | None = None
        #: Steps currently executing: the attempt heartbeats, and does not suspend, while > 0.
        self.steps_running = 0
        self._waits = Waits(suspend_after, self._only_waiting, self._suspend)
        self.task: asyncio.Task[None] | None = None

    # --- the engine, driven by the connection -----------------------------------------------

    @property
    def invocation_id(self) -> str:
        return self._id

    @property
    def needs_heartbeat(self) -> bool:
        """Whether the attempt is alive but silent: a step executing, or code awaiting a completion."""
        return not self._closed and (self.steps_running > 0 or self._waits.waiting)

    def on_ack(self, index: int) -> None:
        """The sidecar made every entry up to ``index`` durable."""
        if index <= self._acked:
            return
        self._acked = index
        if self._waiters:
            waiting = []
            for wanted, future in self._waiters:
                if wanted > index:
                    waiting.append((wanted, future))
                elif not future.done():
                    future.set_result(None)
            self._waiters = waiting
            self._waits.reschedule()

    def on_completion(self, index: int, value: bytes | None, failure: Failure | None) -> None:
        """Entry ``index`` (a timer, an awakeable) is done; whoever awaits it, now or later, gets it."""
        if not self._closed:
            self._waits.complete(index, value, failure)

    def kill(self) -> None:
        """End the attempt now: cancel its task; nothing more is sent for it."""
        self._closed = True
        self._waits.close()
        if self.task is not None:
            self.task.cancel()

    def _only_waiting(self) -> bool:
        # An outstanding ack counts as activity: it comes at once, and suspending under a step
        # whose result is not durable yet would only replay that step's wait.
        return not self._closed and self.steps_running == 0 and not self._waiters

    def _suspend(self, waiting_on: list[int]) -> Callable[[], BaseException]:
        """The code has only waited on ``waiting_on`` for ``suspend_after``: free the attempt."""
        fatal = self._fatal
        if fatal is not None:  # it cannot go on anyway: fail now rather than resume it later
            return lambda: fatal
        logger.debug("invocation %s suspends, waiting on entries %s", self._id, waiting_on)
        self._closed = True
        self._waits.close()
        self._send(Suspend(invocation_id=self._id, waiting_on=waiting_on))
        return Suspended

    async def execute(self) -> None:
        """The attempt's task: run the handler and send its ``End`` (unless killed)."""
        try:
            args = self._handler.decode_input(self._input)
        except BadInput as exc:
            self._end(failure=Failure(code=400, message=str(exc)))
            return
        output: bytes | None = None
        failure: Failure | None = None
        try:
            result = await self._handler.fn(self, *args)
            self._check_live()
            self._replay.finish()
            output = _json_encode(result)
        except AttemptAborted:
            return
        except asyncio.CancelledError:
            if self._closed:
                raise
            failure = self._retryable(asyncio.CancelledError("the handler was cancelled"))
        except TerminalError as exc:
            failure = self._terminal(exc)
        except Exception as exc:
            if self._closed:  # killed, and the code raised while unwinding: nobody is listening
                return
            failure = self._retryable(exc)
        if self._fatal is not None:
            failure, output = self._retryable(self._fatal), None
        self._end(output=output, failure=failure)

    def _terminal(self, exc: TerminalError) -> Failure:
        try:
            self._replay.finish()
        except NondeterminismError as divergence:
            return self._retryable(divergence)
        logger.info("invocation %s failed terminally (%d): %s", self._id, exc.code, exc.message)
        return Failure(code=exc.code, message=exc.message, terminal=True)

    def _retryable(self, exc: BaseException) -> Failure:
        # The traceback goes to the log, never on the wire: it may hold paths and data.
        logger.warning("invocation %s attempt failed", self._id, exc_info=exc)
        return Failure(code=500, message=f"{type(exc).__name__}: {exc}", terminal=False)

    def _end(self, *, output: bytes | None = None, failure: Failure | None = None) -> None:
        if not self._closed:
            self._closed = True
            self._waits.close()
            self._send(End(invocation_id=self._id, output=output, failure=failure))

    def _check_live(self) -> None:
        if self._closed:
            raise AttemptAborted()
        if self._fatal is not None:
            raise self._fatal
        step = _steps.current_step.get()
        if step is not None and step[0] is self:
            raise RuntimeError(_IN_STEP)

    def _step(self, kind: type, name: str) -> tuple[int, Entry | None]:
        self._check_live()
        try:
            return self._replay.step(kind, name)
        except NondeterminismError as exc:
            self._fatal = exc
            raise

    def _command(self, index: int, entry: Entry) -> None:
        if index != self._unsent:
            self._held[index] = entry
            return
        self._send(Command(invocation_id=self._id, index=index, entry=entry))
        self._unsent = index = index + 1
        while self._held and index in self._held:
            self._send(Command(invocation_id=self._id, index=index, entry=self._held.pop(index)))
            self._unsent = index = index + 1

    async def _durable(self, index: int) -> None:
        if self._acked >= index:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((index, future))
        self._waits.reschedule()
        await future

    # --- Context -------------------------------------------------------------------------------

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    async def run(
        self, name: str, fn: Callable[[Unpack[Ts]], Any], *args: Unpack[Ts],
        retry: RetryPolicy | None = None, cost: float | None = None,
    ) -> Any:
        index, recorded = self._step(Run, name)
        if recorded is not None:
            return _steps.replayed(cast(Run, recorded), fn)
        self.steps_running += 1
        self._waits.reschedule()
        try:
            entry, value = await _steps.execute(
                self, index, name, fn, args, policy=retry or DEFAULT_STEP_RETRY, cost=cost
            )
        except asyncio.CancelledError:
            if not self._closed:  # user code cancelled the step (asyncio.wait_for, a task group)
                self._fatal = RuntimeError(_CANCELLED_STEP.format(name=name, index=index))
            raise
        finally:
            self.steps_running -= 1
            self._waits.reschedule()
        self._check_live()
        self._command(index, entry)
        await self._durable(index)
        if entry.failure is not None:
            raise TerminalError(entry.failure.message, entry.failure.code)
        return value

    async def now(self) -> datetime.datetime:
        index, recorded = self._step(Now, "")
        if recorded is None:
            ms = time.time_ns() // 1_000_000
            self._command(index, Now(ms=ms))
        else:
            ms = cast(Now, recorded).ms
        # Integer arithmetic: a float timestamp would not round-trip every millisecond.
        return _EPOCH + datetime.timedelta(milliseconds=ms)

    async def sleep(self, delay: float | datetime.timedelta) -> None:
        ms = _delay_ms(delay)  # before claiming an index: a bad delay leaves no gap
        index, recorded = self._step(Sleep, "")
        if recorded is None:
            # The wall clock is fine here: the wake-up instant is journaled, and replays use it.
            self._command(index, Sleep(wake_at_ms=time.time_ns() // 1_000_000 + ms))
        elif cast(Sleep, recorded).done:
            return
        _, failure = await self._waits.wait(index)
        if failure is not None:
            raise TerminalError(failure.message, failure.code)

    def awakeable(self, *, type: Any = Any) -> tuple[str, AwakeableFuture[Any]]:
        decoder = _steps.decoder_for(type)
        index, recorded = self._step(Awakeable, "")
        if recorded is None:
            # The sidecar finds the entry from the ID (invocation, index); the secret makes it
            # unguessable. Random, not seeded: it is journaled, so replays reuse it.
            awakeable_id = f"awk_{self._id}_{index}_{secrets.token_urlsafe(16)}"
            self._command(index, Awakeable(id=awakeable_id))
        else:
            entry = cast(Awakeable, recorded)
            awakeable_id = entry.id
            if entry.done:
                self._waits.complete(index, entry.value, entry.failure)
        return awakeable_id, AwakeableFuture(index, functools.partial(self._awakeable_result, index, decoder))

    async def _awakeable_result(self, index: int, decoder: msgspec.json.Decoder[Any]) -> Any:
        self._check_live()
        value, failure = await self._waits.wait(index)
        if failure is not None:
            raise TerminalError(failure.message, failure.code)
        return decoder.decode(value if value is not None else b"null")

    def resolve_awakeable(self, id: str, value: Any) -> None:
        # Checked before claiming an index: a command that fails to encode would leave a gap.
        _check_types(id=(id, str))
        raw = _json_encode(value)
        index, recorded = self._step(CompleteAwakeable, "")
        if recorded is None:
            self._command(index, CompleteAwakeable(id=id, value=raw))

    def reject_awakeable(self, id: str, reason: str, *, code: int = 500) -> None:
        _check_types(id=(id, str), reason=(reason, str), code=(code, int))
        index, recorded = self._step(CompleteAwakeable, "")
        if recorded is None:
            failure = Failure(code=code, message=reason, terminal=True)
            self._command(index, CompleteAwakeable(id=id, failure=failure))

    def _random(self) -> random.Random:
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng

    def random(self) -> float:
        self._check_live()
        return self._random().random()

    def uuid(self) -> uuid.UUID:
        self._check_live()
        return uuid.UUID(int=self._random().getrandbits(128), version=4)

    def idempotency_key(self) -> str:
        step = _steps.current_step.get()
        if step is not None and step[0] is self:
            return f"{self._id}:{step[1]}"
        return f"{self._id}:{self._replay.next_index}"


class ServiceAttempt(Attempt):
    """A service handler's context: no key, no state."""


class _ReadState(Attempt):
    @property
    def key(self) -> str:
        return cast(str, self._key)

    async def get(self, name: str, *, type: Any = Any) -> Any:
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
        index, recorded = self._step(GetStateKeys, "")
        if recorded is not None:
            return list(cast(GetStateKeys, recorded).keys)
        keys = sorted(self._state)
        self._command(index, GetStateKeys(keys=keys))
        return list(keys)


class _WriteState(_ReadState):
    def set(self, name: str, value: Any) -> None:
        raw = _json_encode(value)  # before claiming an index: a failed encode leaves no gap
        index, recorded = self._step(SetState, name)
        if recorded is None:
            self._state[name] = raw
            self._command(index, SetState(name=name, value=raw))

    def clear(self, name: str) -> None:
        index, recorded = self._step(ClearState, name)
        if recorded is None:
            self._state.pop(name, None)
            self._command(index, ClearState(name=name))

    def clear_all(self) -> None:
        index, recorded = self._step(ClearAllState, "")
        if recorded is None:
            self._state.clear()
            self._command(index, ClearAllState())


class SharedAttempt(_ReadState, WorkflowSharedContext):
    """A shared object or workflow handler's context: reads state."""


class ExclusiveAttempt(_WriteState, WorkflowContext):
    """An exclusive object handler's, or a workflow main handler's, context: reads and writes."""


def new_attempt(
    start: Start, handler: HandlerDef, send: Send, service_kind: str, *, suspend_after: float = 1.0,
) -> Attempt:
    """The context class that matches what the handler may do."""
    if service_kind == "service":
        return ServiceAttempt(start, handler, send, suspend_after=suspend_after)
    if handler.kind == "shared":
        return SharedAttempt(start, handler, send, suspend_after=suspend_after)
    return ExclusiveAttempt(start, handler, send, suspend_after=suspend_after)

