"""Executing one ``ctx.run`` step: call the function, retry it in-process, produce its ``Run`` entry.

Whatever happens inside the step (the function raising, its result not encoding, the result not
matching the function's return annotation) ends as a recorded outcome: a value or a failure.
That keeps journal indices dense (a claimed index always gets its entry) and makes the step's
outcome the same on every replay.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import time
import typing
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import msgspec

from ._gates import StepGate
from ._spending import BUDGET_EXCEEDED, Cost, CostError, Spending, check_cost_option, checked_cost, cost_of_result, plus
from .errors import BudgetExceeded, RetryableError, TerminalError
from .options import DEFAULT_STEP_RETRY, RetryPolicy
from .protocol import Failure, Run

logger = logging.getLogger("handler_sdk")

#: The (attempt, index) of the step whose function is running in this context, so that
#: ``ctx.idempotency_key()`` called inside it names that step. ``asyncio.to_thread`` copies the
#: context, so the value reaches sync functions in worker threads too.
current_step: ContextVar[tuple[object, int] | None] = ContextVar("handler_sdk_step", default=None)

_json_encode = msgspec.json.Encoder().encode
_ANY_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

# Jitter needs no determinism, and must not consume the per-invocation generator that backs
# ctx.random()/ctx.uuid(): a retry in one attempt would shift every later value.
_jitter = random.Random()


@functools.lru_cache(maxsize=1024)
def _cached_decoder(tp: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(tp)


def decoder_for(tp: Any) -> msgspec.json.Decoder[Any]:
    """A reusable JSON decoder for ``tp``; the untyped one for ``Any``."""
    if tp is Any:
        return _ANY_DECODER
    try:
        return _cached_decoder(tp)
    except TypeError:  # unhashable type object: build one each time
        return msgspec.json.Decoder(tp)


class StepFn(typing.NamedTuple):
    is_async: bool
    decoder: msgspec.json.Decoder[Any]


@functools.lru_cache(maxsize=1024)
def _inspect(fn: Callable[..., Any]) -> StepFn:
    try:
        result_type = typing.get_type_hints(fn).get("return", Any)
        decoder = decoder_for(result_type)
    except Exception:  # no usable annotation (a lambda, a builtin, an unsupported type)
        decoder = _ANY_DECODER
    return StepFn(inspect.iscoroutinefunction(fn), decoder)


def step_fn(fn: Callable[..., Any]) -> StepFn:
    """Whether ``fn`` is async, and how to decode its journaled result (its return annotation)."""
    try:
        return _inspect(fn)
    except TypeError:  # unhashable callable
        return _inspect.__wrapped__(fn)


async def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], is_async: bool) -> Any:
    if is_async:
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):  # a sync callable that returns a coroutine (a lambda)
        result = await result
    return result


async def _call_with_timeout(name: str, fn: Callable[..., Any], args: tuple[Any, ...], is_async: bool,
                             timeout: float) -> Any:
    # A sync fn's thread cannot be stopped: on expiry we stop awaiting it (to_thread's future is
    # cancelled) and it runs on in the background, holding a worker of the default executor.
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await _invoke(fn, args, is_async)
    except TimeoutError:
        if deadline.expired():  # ours, not a TimeoutError that fn raised itself
            raise TimeoutError(f"step {name!r} timed out after {timeout:g} s") from None
        raise


class StepOptions(typing.NamedTuple):
    """How one ``ctx.run`` step runs: its retries, cost, per-try timeout and fallback."""

    policy: RetryPolicy
    cost: Cost = None
    timeout: float | None = None
    fallback: Callable[..., Any] | None = None
    #: Transient failures of ``fn`` after which ``fallback`` takes over.
    fallback_after: int = 1
    #: What a try of ``fn`` asks the sidecar first (its circuit breaker, its limit group), and
    #: what a try of ``fallback`` does (the limit group alone: the breaker guards ``fn``).
    gate: StepGate | None = None
    fallback_gate: StepGate | None = None


#: ``ctx.run`` without options (the common case): checked once, here, not on every step.
DEFAULT_STEP_OPTIONS = StepOptions(DEFAULT_STEP_RETRY)


class _Tries:
    """A step's tries so far: how many, what they cost, when the first began."""

    __slots__ = ("count", "cost", "started")

    def __init__(self) -> None:
        self.count = 0
        self.cost: float | None = None
        self.started = time.monotonic()

    def spend(self, cost: float | None) -> None:
        self.cost = plus(self.cost, cost)

    def entry(self, name: str, variant: str, *, value: bytes | None = None,
              failure: Failure | None = None) -> Run:
        return Run(name=name, value=value, failure=failure, cost=self.cost, attempts=self.count, variant=variant,
                   duration_ms=round((time.monotonic() - self.started) * 1000))


def check_options(options: StepOptions) -> None:
    """Refuse options that cannot work, before the step claims its journal index."""
    check_cost_option(options.cost)
    if options.fallback is None:
        return
    if not callable(options.fallback):
        raise TypeError(f"fallback must be a function, got {options.fallback!r}")
    if isinstance(options.fallback_after, bool) or not isinstance(options.fallback_after, int) \
            or options.fallback_after < 1:
        raise ValueError(f"fallback_after must be a whole number of failures, 1 or more, got {options.fallback_after!r}")
    if options.policy.exhausted(options.fallback_after):
        raise ValueError(f"fallback_after={options.fallback_after} leaves the fallback no try under "
                         f"max_attempts={options.policy.max_attempts}")


def _failed_try_cost(exc: BaseException) -> float | None:
    """What a failed try says it cost (``RetryableError``/``TerminalError`` ``cost=``)."""
    cost = getattr(exc, "cost", None) if isinstance(exc, TerminalError | RetryableError) else None
    return None if cost is None else checked_cost(cost, "the cost of a failed try")


async def execute(
    owner: object, index: int, name: str, fn: Callable[..., Any], args: tuple[Any, ...],
    options: StepOptions, spending: Spending, *, invocation_id: str | None = None,
) -> tuple[Run, Any]:
    """Run the step until it succeeds, fails terminally or exhausts its policy.

    Each try is bounded by ``options.timeout`` seconds: one that takes longer fails with a
    (retryable) ``TimeoutError``. Before each try the invocation's budget is checked against what
    it spent, this step's failed tries included, and the step's gate is asked: a breaker open
    for ``fn`` sends the try to the fallback at once. Returns the entry to journal and, on success,
    the value user code will see: the result decoded back from its JSON, exactly what a replay
    will return.
    """
    policy = options.policy
    tries = _Tries()
    variant = "primary"
    token = current_step.set((owner, index))
    try:
        while True:
            use_fallback = options.fallback is not None and tries.count >= options.fallback_after
            refusal = None if spending.budget is None else spending.refusal(tries.cost or 0.0)
            if refusal is not None:
                variant = "fallback" if use_fallback else "primary"
                return tries.entry(name, variant, failure=Failure(code=refusal.code, message=refusal.message)), None
            gate = None if options.gate is None else await _admitted(options, use_fallback)
            use_fallback = options.fallback is not None and (use_fallback or gate is not options.gate)
            variant = "fallback" if use_fallback else "primary"
            call = options.fallback if use_fallback and options.fallback is not None else fn
            info = step_fn(call)
            tries.count += 1
            try:
                if options.timeout is not None:
                    result = await _call_with_timeout(name, call, args, info.is_async, options.timeout)
                elif info.is_async:  # the common case, one coroutine less
                    result = await call(*args)
                else:
                    result = await _invoke(call, args, False)
                if gate is not None:
                    gate.succeeded()
                raw = _json_encode(result)
                value = info.decoder.decode(raw)
                if options.cost is not None:
                    tries.spend(cost_of_result(options.cost, result))
                return tries.entry(name, variant, value=raw), value
            except CostError as exc:
                failure = Failure(code=500, message=f"step {name!r}: {exc}")
                return tries.entry(name, variant, failure=failure), None
            except TerminalError as exc:
                if gate is not None:
                    gate.succeeded()  # the dependency answered
                tries.spend(_failed_try_cost(exc))
                return tries.entry(name, variant, failure=Failure(code=exc.code, message=exc.message)), None
            except Exception as exc:
                if gate is not None:
                    gate.failed()
                outcome = _after_failure(name, exc, policy, tries, invocation_id)
                if isinstance(outcome, Failure):
                    return tries.entry(name, variant, failure=outcome), None
            await asyncio.sleep(outcome)
    except CostError as exc:  # a failed try's own cost is unusable
        return tries.entry(name, variant, failure=Failure(code=500, message=f"step {name!r}: {exc}")), None
    finally:
        current_step.reset(token)


async def _admitted(options: StepOptions, use_fallback: bool) -> StepGate | None:
    """Ask leave for the next try: the gate it runs under (``options.gate`` for ``fn``; the
    fallback's, when it is the fallback's turn or the breaker is open for ``fn``)."""
    if not use_fallback and options.gate is not None:
        if await options.gate.admit():
            return options.gate
        # Open, and the step has a fallback (without one the sidecar ends the attempt instead).
    if options.fallback_gate is not None:
        await options.fallback_gate.admit()
    return options.fallback_gate


def _after_failure(name: str, exc: Exception, policy: RetryPolicy, tries: _Tries,
                   invocation_id: str | None) -> float | Failure:
    """The pause before the next try, or the failure that ends the step."""
    tries.spend(_failed_try_cost(exc))
    about = {"invocation_id": invocation_id}
    reason = f"{type(exc).__name__}: {exc}"
    if policy.gives_up(exc):
        logger.info("%s: step %r failed with a non-retryable %s", invocation_id, name, reason, extra=about)
        return Failure(code=500, message=f"step {name!r} failed (not retryable): {reason}")
    if policy.exhausted(tries.count):
        logger.warning("%s: step %r failed for good after %d attempts", invocation_id, name, tries.count,
                       exc_info=exc, extra=about)
        return Failure(code=500, message=f"step {name!r} failed after {tries.count} attempts: {reason}")
    asked = exc.retry_after if isinstance(exc, RetryableError) else None
    delay = policy.delay(tries.count, _jitter) if asked is None else max(0.0, asked)
    elapsed = time.monotonic() - tries.started
    if policy.out_of_time(elapsed, delay):
        logger.warning("%s: step %r gave up after %d attempts in %.1f s (max_elapsed %g s)", invocation_id,
                       name, tries.count, elapsed, policy.max_elapsed, exc_info=exc, extra=about)
        return Failure(code=500, message=(f"step {name!r} gave up after {tries.count} attempts in {elapsed:.1f} s "
                                          f"(max_elapsed {policy.max_elapsed:g} s): {reason}"))
    logger.info("%s: step %r attempt %d failed (%s); retrying in %.3f s", invocation_id, name, tries.count,
                reason, delay, extra=about)
    return delay


def failure_error(failure: Failure) -> TerminalError:
    """What a failed step raises in user code, on its first run and on every replay alike."""
    if failure.code == 402 and failure.message.startswith(BUDGET_EXCEEDED):
        return BudgetExceeded(failure.message)
    return TerminalError(failure.message, failure.code)


def replayed(entry: Run, fn: Callable[..., Any], fallback: Callable[..., Any] | None = None) -> Any:
    """A recorded step's outcome: its value decoded as a fresh run of the same variant would, or
    its failure raised."""
    if entry.failure is not None:
        raise failure_error(entry.failure)
    ran = fallback if entry.variant == "fallback" and fallback is not None else fn
    return step_fn(ran).decoder.decode(entry.value if entry.value is not None else b"null")
