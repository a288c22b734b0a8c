"""The context engine: one ``AttemptContext`` object per running attempt of one invocation.

It turns each context call into a journal command: answered from the journal while replaying
(``_replay``), executed and sent to the sidecar past its end. Commands are pipelined (sent without
waiting) and kept in order by the connection's single writer; only a step's result waits for the
sidecar's ``Ack``, because user code must not see a result that a crash could still un-happen
("durable before visible").

Completable entries (timers, awakeables, calls, promise operations) are journaled like any
command, then awaited through ``_waits``: the sidecar completes them later, and an attempt that
only waits for them suspends itself.

Cooperative cancellation surfaces at a *cancellation point*: the start of an await on a context
operation, or an await blocked on a completion. The first one after the ``Cancel`` raises
``TerminalError("cancelled", 409)`` and journals where it did so, as a ``Run`` entry named
``CANCELLED_STEP`` with that failure. A later attempt (the sidecar sends the ``Cancel`` again
after each ``Start``) raises at the same point because the journal says so, not because of when
its ``Cancel`` frame happens to arrive: while an attempt replays recorded entries, a new
cancellation waits until the replay has caught up. So the handler's compensation replays too.

The context classes that add state and promises live in ``_contexts``.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVarTuple, Unpack, cast

import msgspec

from . import _steps
from ._arguments import check_identifier, check_types, delay_ms, encode_arg, json_encode
from ._definition import BadInput, HandlerDef, call_target, positive_seconds
from ._gates import Gates, step_gates
from .payload_limits import checked_step
from ._replay import Replay
from ._spending import Cost, Spending
from .breakers import CircuitBreaker, breaker_spec
from ._waits import Completions, EntryFuture, Result
from .context import Context, HandlerRef
from .errors import AttemptAborted, NondeterminismError, Paused, Suspended, TerminalError
from .options import DEFAULT_STEP_RETRY, RetryPolicy
from .protocol import (
    Awakeable,
    Call,
    Command,
    CompleteAwakeable,
    CompletePromise,
    End,
    Entry,
    Event,
    Failure,
    Now,
    Pause,
    Publish,
    Run,
    Send,
    Sleep,
    Start,
    Suspend,
    ToSidecar,
    awakeable_id as awakeable_id_for,
)

if TYPE_CHECKING:  # the tracing extra's: imported only where tracing is on
    from ._tracing import StepTracer

logger = logging.getLogger("handler_sdk")

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

#: Queues one message to the sidecar.
Emit = Callable[[ToSidecar], None]

#: The name of the ``Run`` entry that records where a cancellation surfaced (reserved).
CANCELLED_STEP = "<cancelled>"
_CANCELLED = Failure(code=409, message="cancelled", terminal=True)

_IN_STEP = (
    "context calls are not allowed inside a ctx.run function: the step's result is journaled, "
    "not its insides, so a replay would skip them; call them before or after the step"
)
_CANCELLED_STEP = (
    "step {name!r} (journal entry {index}) was cancelled before it finished, so it has no "
    "outcome to journal and the attempt cannot go on; it is retried. Use ctx.run(..., "
    "timeout=...) rather than a timeout around ctx.run"
)
Ts = TypeVarTuple("Ts")


def _recorded_outcome(entry: Entry) -> Result:
    """A done completable entry's outcome, as its ``Completion`` delivered it."""
    if type(entry) is CompletePromise:
        return None, entry.outcome
    return getattr(entry, "value", None), getattr(entry, "failure", None)


def _cancelled() -> TerminalError:
    return TerminalError(_CANCELLED.message, _CANCELLED.code)


class AttemptContext(Context):
    """Engine and ``Context`` methods shared by every kind of handler."""

    def __init__(
        self, start: Start, handler: HandlerDef, emit: Emit, *, suspend_after: float = 1.0,
        suspend_for_acks: bool = False, gates: Gates | None = None, spans: StepTracer | None = None,
    ) -> None:
        self._id = start.invocation_id
        self._awakeable_key = start.awakeable_key
        self._handler = handler
        self._input = start.input
        # Handler code continues the trace from the attempt's span (ctx.headers["traceparent"]).
        self._headers = start.headers if start.trace is None else {**start.headers, **start.trace}
        self._step_spans = None if spans is None else spans.attempt(start)
        self._key = start.key
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        #: Request-response mode: nothing can arrive during the attempt, so a step that needs its
        #: acknowledgement ends it with a ``Suspend`` on that step, and the next one replays it.
        self._suspend_for_acks = suspend_for_acks
        #: The connection's leases and leave asked of the sidecar (None: request-response mode).
        self._gates = gates
        self._replay = Replay(start.invocation_id, start.journal)
        # Snapshot plus this attempt's own writes. The snapshot already includes what earlier
        # attempts wrote (writes are applied as they commit), so replayed writes change nothing.
        self._state: dict[str, bytes] = dict(start.state) if start.state else {}
        self._seed = start.seed
        budget = start.budget if start.budget is not None else handler.budget
        self._spending = Spending(start.journal, budget, handler.on_budget)
        self.max_payload_bytes = start.payloads.max_payload_bytes
        self._rng: random.Random | None = None  # built on first use: seeding costs a few us
        #: Added to the wall clock for the instants this attempt journals: the sidecar's test clock.
        self._clock_offset_ms = start.clock_offset_ms
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
        #: A cooperative cancellation: asked for (not surfaced yet), or surfaced (now or in an
        #: earlier attempt: it surfaces once per invocation).
        self._cancel_requested = False
        self._cancel_delivered = False
        #: Steps currently executing: the attempt heartbeats, and does not suspend, while > 0.
        self.steps_running = 0
        self._completions = Completions(suspend_after, self._only_waiting, self._suspend, self._interrupt_if_blocked)
        self.task: asyncio.Task[None] | None = None
        #: Where the last ephemeral event was published: (after entry, seq).
        self._event_place = (-1, -1)

    # --- the engine, driven by the connection -----------------------------------------------

    @property
    def invocation_id(self) -> str:
        return self._id

    @property
    def needs_heartbeat(self) -> bool:
        """Whether the attempt is alive but silent: a step executing, or code awaiting a completion."""
        return not self._closed and (self.steps_running > 0 or self._completions.waiting)

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
            self._completions.reschedule()

    def on_completion(self, index: int, value: bytes | None, failure: Failure | None,
                      clock_offset_ms: int = 0) -> None:
        """Entry ``index`` is done; whoever awaits it, now or later, gets it. ``clock_offset_ms``:
        the sidecar's test clock as of now (it only moves forward)."""
        if not self._closed:
            self._clock_offset_ms = max(self._clock_offset_ms, clock_offset_ms)
            self._completions.complete(index, value, failure)

    def kill(self) -> None:
        """End the attempt now: cancel its task; nothing more is sent for it."""
        self._closed = True
        self._completions.close()
        if self.task is not None:
            self.task.cancel()

    def cancel(self) -> None:
        """Cooperative cancellation: the next cancellation point raises ``TerminalError(409)``.

        Surfaced already (this attempt, or an earlier one whose record is in the journal): the
        sidecar repeats its ``Cancel`` after every ``Start``, and the journal has it covered.
        """
        if self._closed or self._cancel_requested or self._cancel_delivered:
            return
        if any(type(e) is Run and e.name == CANCELLED_STEP for e in self._replay.journal):
            self._cancel_delivered = True  # the replay raises it where it was first raised
            return
        self._cancel_requested = True
        self._interrupt_if_blocked()

    def _interrupt_if_blocked(self) -> None:
        """Surface a requested cancellation at a blocked await, once the replay has caught up."""
        if (self._cancel_requested and not self._replay.replaying and self._completions.waiting
                and self._fatal is None and not self._closed):
            self._journal_cancellation()
            self._completions.interrupt(_cancelled())

    def _journal_cancellation(self) -> None:
        index, _ = self._replay.step(Run, CANCELLED_STEP)  # past the end: a new entry
        self._cancel_requested, self._cancel_delivered = False, True
        logger.info("invocation %s: cancellation surfaces (journal entry %d)", self._id, index,
                    extra={"invocation_id": self._id})
        self._command(index, Run(name=CANCELLED_STEP, failure=_CANCELLED))

    def _cancellation_point(self) -> None:
        """An await on a context operation begins: raise the cancellation here if it is due."""
        self._check_live()
        recorded = self._replay.peek()
        if recorded is not None:  # replaying: only a recorded cancellation surfaces
            if type(recorded) is Run and recorded.name == CANCELLED_STEP:
                self._step(Run, CANCELLED_STEP)
                self._cancel_delivered = True
                raise _cancelled()
        elif self._cancel_requested:
            self._journal_cancellation()
            raise _cancelled()

    def _only_waiting(self) -> bool:
        # An outstanding ack counts as activity: it comes at once, and suspending under a step
        # whose result is not durable yet would only replay that step's wait.
        return not self._closed and self.steps_running == 0 and not self._waiters

    def _suspend(self, waiting_on: list[int]) -> Callable[[], BaseException]:
        """The code has only waited on ``waiting_on`` for ``suspend_after``: free the attempt."""
        fatal = self._fatal
        if fatal is not None:  # it cannot go on anyway: fail now rather than resume it later
            return lambda: fatal
        logger.debug("invocation %s suspends, waiting on entries %s", self._id, waiting_on,
                     extra={"invocation_id": self._id})
        self._closed = True
        self._completions.close()
        self._emit(Suspend(invocation_id=self._id, waiting_on=waiting_on))
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
            output = json_encode(result)
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
            gives_up = self._handler.retry is not None and self._handler.retry.gives_up(exc)
            failure = self._terminal(TerminalError(f"{type(exc).__name__}: {exc}")) if gives_up else self._retryable(exc)
        if self._fatal is not None:
            failure, output = self._retryable(self._fatal), None
        self._end(output=output, failure=failure)

    def _terminal(self, exc: TerminalError) -> Failure:
        try:
            self._replay.finish()
        except NondeterminismError as divergence:
            return self._retryable(divergence)
        logger.info("invocation %s failed terminally (%d): %s", self._id, exc.code, exc.message,
                    extra={"invocation_id": self._id})
        return Failure(code=exc.code, message=exc.message, terminal=True)

    def _retryable(self, exc: BaseException) -> Failure:
        # The traceback goes to the log, never on the wire: it may hold paths and data.
        logger.warning("invocation %s attempt failed", self._id, exc_info=exc)
        return Failure(code=500, message=f"{type(exc).__name__}: {exc}", terminal=False)

    def _end(self, *, output: bytes | None = None, failure: Failure | None = None) -> None:
        self._close_with(End(invocation_id=self._id, output=output, failure=failure))

    def _close_with(self, last: End | Pause) -> None:
        """End the attempt with its last frame, unless it is over already."""
        if not self._closed:
            self._closed = True
            self._completions.close()
            self._emit(last)

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
            index, recorded = self._replay.step(kind, name)
        except NondeterminismError as exc:
            self._fatal = exc
            raise
        if recorded is not None and self._cancel_requested and not self._replay.replaying:
            self._interrupt_if_blocked()  # the replay just caught up with a blocked await
        return index, recorded

    def _completable(self, kind: type, name: str) -> tuple[int, Entry | None]:
        """``_step`` for an entry the sidecar completes: a recorded outcome is kept for its awaits."""
        index, recorded = self._step(kind, name)
        if recorded is not None and getattr(recorded, "done", False):
            self._completions.complete(index, *_recorded_outcome(recorded))
        return index, recorded

    def _command(self, index: int, entry: Entry) -> None:
        if index != self._unsent:
            self._held[index] = entry
            return
        self._emit(Command(invocation_id=self._id, index=index, entry=entry))
        self._unsent = index = index + 1
        while self._held and index in self._held:
            self._emit(Command(invocation_id=self._id, index=index, entry=self._held.pop(index)))
            self._unsent = index = index + 1

    async def _durable(self, index: int) -> None:
        if self._acked >= index:
            return
        if self._suspend_for_acks:
            raise self._suspend([index])()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((index, future))
        self._completions.reschedule()
        await future

    # --- awaiting completable entries ---------------------------------------------------------

    async def _outcome(self, index: int) -> Result:
        self._cancellation_point()
        return await self._completions.wait(index)

    async def _value(self, index: int, decoder: msgspec.json.Decoder[Any]) -> Any:
        """A completion's value, decoded; its failure raised."""
        value, failure = await self._outcome(index)
        if failure is not None:
            raise TerminalError(failure.message, failure.code)
        return decoder.decode(value or b"null")

    async def _optional_value(self, index: int, decoder: msgspec.json.Decoder[Any]) -> Any:
        """As ``_value``, but a completion without a value (a peek at nothing) is ``None``."""
        value, failure = await self._outcome(index)
        if failure is not None:
            raise TerminalError(failure.message, failure.code)
        return None if value is None else decoder.decode(value)

    async def _accepted(self, index: int) -> None:
        """A completion that only says whether the command took (a failure is a refusal)."""
        _, failure = await self._outcome(index)
        if failure is not None:
            raise TerminalError(failure.message, failure.code)

    # --- Context -------------------------------------------------------------------------------

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    async def run(
        self, name: str, fn: Callable[[Unpack[Ts]], Any], *args: Unpack[Ts],
        retry: RetryPolicy | None = None, cost: Cost = None,
        timeout: float | datetime.timedelta | None = None,
        fallback: Callable[[Unpack[Ts]], Any] | None = None, fallback_after: int = 1,
        breaker: CircuitBreaker | str | None = None, limit: str | None = None,
    ) -> Any:
        if name == CANCELLED_STEP:
            raise ValueError(f"the step name {CANCELLED_STEP!r} is reserved")
        if retry is None and cost is None and timeout is None and fallback is None:
            options = _steps.DEFAULT_STEP_OPTIONS
        else:
            options = _steps.StepOptions(retry or DEFAULT_STEP_RETRY, cost, positive_seconds("timeout", timeout),
                                         fallback, fallback_after)
            _steps.check_options(options)
        spec = None if breaker is None else breaker_spec(breaker)
        if limit is not None:
            check_types(limit=(limit, str))
        self._cancellation_point()
        index, recorded = self._step(Run, name)
        if recorded is not None:
            return _steps.replayed(cast(Run, recorded), fn, fallback)
        if spec is not None or limit is not None:
            gate, fallback_gate = step_gates(self._gates, self._id, index, spec, limit, has_fallback=fallback is not None)
            options = options._replace(gate=gate, fallback_gate=fallback_gate)
        self.steps_running += 1
        self._completions.reschedule()
        started_ns = 0 if self._step_spans is None else self._step_spans.begin()
        try:
            entry, value = await _steps.execute(self, index, name, fn, args, options, self._spending,
                                                invocation_id=self._id)
        except Paused as pause:
            self._close_with(Pause(invocation_id=self._id, reason=pause.reason))
            raise
        except asyncio.CancelledError:
            if not self._closed:  # user code cancelled the step (asyncio.wait_for, a task group)
                self._fatal = RuntimeError(_CANCELLED_STEP.format(name=name, index=index))
            raise
        finally:
            self.steps_running -= 1
            self._completions.reschedule()
        self._check_live()
        entry = checked_step(entry, self.max_payload_bytes)
        if self._step_spans is not None:
            self._step_spans.end(started_ns, index, entry)
        self._spending.record(entry)
        self._command(index, entry)
        await self._durable(index)
        if entry.failure is not None:
            raise _steps.failure_error(entry.failure)
        return value

    def _now_ms(self) -> int:
        """The wall clock as the sidecar reads it (ahead by its test clock's offset, if any)."""
        return time.time_ns() // 1_000_000 + self._clock_offset_ms

    async def now(self) -> datetime.datetime:
        self._cancellation_point()
        index, recorded = self._step(Now, "")
        if recorded is None:
            ms = self._now_ms()
            self._command(index, Now(ms=ms))
        else:
            ms = cast(Now, recorded).ms
        # Integer arithmetic: a float timestamp would not round-trip every millisecond.
        return _EPOCH + datetime.timedelta(milliseconds=ms)

    async def sleep(self, delay: float | datetime.timedelta) -> None:
        ms = delay_ms(delay)  # before claiming an index: a bad delay leaves no gap
        self._cancellation_point()
        index, recorded = self._completable(Sleep, "")
        if recorded is None:
            # The wall clock is fine here: the wake-up instant is journaled, and replays use it.
            self._command(index, Sleep(wake_at_ms=self._now_ms() + ms))
        _, failure = await self._outcome(index)  # a cancellation recorded at this wait surfaces here
        if failure is not None:
            raise TerminalError(failure.message, failure.code)

    def awakeable(self, *, type: Any = Any) -> tuple[str, EntryFuture[Any]]:
        decoder = _steps.decoder_for(type)
        index, recorded = self._completable(Awakeable, "")
        if recorded is None:
            # The sidecar finds the entry from the ID (invocation, index) and checks its tag, made
            # with this invocation's key; a sidecar that gives no key gets a random tag. Either
            # way it is journaled, so replays reuse it.
            awakeable_id = awakeable_id_for(self._id, index, self._awakeable_key) if self._awakeable_key \
                else f"awk_{self._id}_{index}_{secrets.token_urlsafe(16)}"
            self._command(index, Awakeable(id=awakeable_id))
        else:
            awakeable_id = cast(Awakeable, recorded).id
        return awakeable_id, EntryFuture("Awakeable", index, functools.partial(self._value, index, decoder))

    def resolve_awakeable(self, id: str, value: Any) -> None:
        # Checked before claiming an index: a command that fails to encode would leave a gap.
        check_types(id=(id, str))
        check_identifier("awakeable ID", id)
        raw = json_encode(value)
        index, recorded = self._step(CompleteAwakeable, "")
        if recorded is None:
            self._command(index, CompleteAwakeable(id=id, value=raw))

    def reject_awakeable(self, id: str, reason: str, *, code: int = 500) -> None:
        check_types(id=(id, str), reason=(reason, str), code=(code, int))
        check_identifier("awakeable ID", id)
        index, recorded = self._step(CompleteAwakeable, "")
        if recorded is None:
            failure = Failure(code=code, message=reason, terminal=True)
            self._command(index, CompleteAwakeable(id=id, failure=failure))

    # --- calls ---------------------------------------------------------------------------------

    def service_call(self, service: Any, handler: HandlerRef, arg: Any = None, *,
                     type: Any = Any) -> EntryFuture[Any]:
        return self._call(call_target(service, handler, keyed=False), None, arg, type)

    def object_call(self, obj: Any, key: str, handler: HandlerRef, arg: Any = None, *,
                    type: Any = Any) -> EntryFuture[Any]:
        check_types(key=(key, str))
        check_identifier("object key", key)
        return self._call(call_target(obj, handler, keyed=True), key, arg, type)

    def service_send(self, service: Any, handler: HandlerRef, arg: Any = None, *,
                     delay: float | datetime.timedelta | None = None) -> None:
        self._send(call_target(service, handler, keyed=False), None, arg, delay)

    def object_send(self, obj: Any, key: str, handler: HandlerRef, arg: Any = None, *,
                    delay: float | datetime.timedelta | None = None) -> None:
        check_types(key=(key, str))
        check_identifier("object key", key)
        self._send(call_target(obj, handler, keyed=True), key, arg, delay)

    def _call(self, target: tuple[str, str], key: str | None, arg: Any, type: Any) -> EntryFuture[Any]:
        decoder = _steps.decoder_for(type)
        raw = encode_arg(arg)  # everything that can fail, before the index is claimed
        service, handler = target
        check_identifier("service name", service)
        check_identifier("handler name", handler)
        index, recorded = self._completable(Call, f"{service}/{handler}")
        if recorded is None:
            self._command(index, Call(service=service, handler=handler, key=key, input=raw))
        return EntryFuture("Call", index, functools.partial(self._value, index, decoder))

    def _send(self, target: tuple[str, str], key: str | None, arg: Any,
              delay: float | datetime.timedelta | None) -> None:
        # A past instant is now, as for ctx.sleep.
        delay_in_ms = 0 if delay is None else max(0, delay_ms(delay))
        raw = encode_arg(arg)
        service, handler = target
        check_identifier("service name", service)
        check_identifier("handler name", handler)
        index, recorded = self._step(Send, f"{service}/{handler}")
        if recorded is None:
            self._command(index, Send(service=service, handler=handler, key=key, input=raw, delay_ms=delay_in_ms))

    # --- determinism ---------------------------------------------------------------------------

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

    def publish(self, event: Any, *, ephemeral: bool = False) -> None:
        raw = json_encode(event)  # before claiming an index: a failed encode leaves no gap
        if not ephemeral:
            index, recorded = self._step(Publish, "")
            if recorded is None:
                self._command(index, Publish(event=raw))
            return
        if self._closed:
            raise AttemptAborted()
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a sync step's function, in its thread: the loop sends it
            self._loop.call_soon_threadsafe(self._publish_ephemeral, raw)
        else:
            self._publish_ephemeral(raw)

    def _publish_ephemeral(self, raw: bytes) -> None:
        if self._closed or self._replay.replaying:
            return  # over, or an earlier attempt published it from this same place
        after = self._replay.next_index - 1
        seq = self._event_place[1] + 1 if self._event_place[0] == after else 0
        self._event_place = (after, seq)
        self._emit(Event(invocation_id=self._id, after=after, seq=seq, event=raw))

    def idempotency_key(self) -> str:
        step = _steps.current_step.get()
        if step is not None and step[0] is self:
            return f"{self._id}:{step[1]}"
        return f"{self._id}:{self._replay.next_index}"
