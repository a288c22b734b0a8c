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
import typing
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import msgspec

from ._gates import StepGate
from .errors import TerminalError
from .options import RetryPolicy
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


async def _call(name: str, fn: Callable[..., Any], args: tuple[Any, ...], is_async: bool,
                timeout: float | None) -> Any:
    if timeout is None:
        return await _invoke(fn, args, is_async)
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


async def execute(
    owner: object, index: int, name: str, fn: Callable[..., Any], args: tuple[Any, ...], *,
    policy: RetryPolicy, cost: float | None, timeout: float | None = None, invocation_id: str | None = None,
    gate: StepGate | None = None,
) -> tuple[Run, Any]:
    """Run the step until it succeeds, fails terminally or exhausts ``policy``.

    Each try is bounded by ``timeout`` seconds: one that takes longer fails with a (retryable)
    ``TimeoutError``. Returns the entry to journal and, on success, the value user code will
    see: the result decoded back from its JSON, exactly what a replay will return. ``gate``
    (a step naming a circuit breaker or a limit group) is asked before each try and told how it
    ended.
    """
    info = step_fn(fn)
    token = current_step.set((owner, index))
    try:
        attempts = 0
        while True:
            attempts += 1
            try:
                if gate is not None:
                    await gate.admit()
                result = await _call(name, fn, args, info.is_async, timeout)
                if gate is not None:
                    gate.succeeded()
                raw = _json_encode(result)
                return Run(name=name, value=raw, cost=cost), info.decoder.decode(raw)
            except TerminalError as exc:
                if gate is not None:
                    gate.succeeded()
                failure = Failure(code=exc.code, message=exc.message, terminal=True)
                return Run(name=name, failure=failure, cost=cost), None
            except Exception as exc:
                if gate is not None:
                    gate.failed()
                about = {"invocation_id": invocation_id}
                if policy.exhausted(attempts):
                    logger.warning("%s: step %r failed for good after %d attempts", invocation_id, name, attempts,
                                   exc_info=True, extra=about)
                    message = f"step {name!r} failed after {attempts} attempts: {type(exc).__name__}: {exc}"
                    return Run(name=name, failure=Failure(code=500, message=message), cost=cost), None
                delay = policy.delay(attempts, _jitter)
                logger.info("%s: step %r attempt %d failed (%s: %s); retrying in %.3f s",
                            invocation_id, name, attempts, type(exc).__name__, exc, delay, extra=about)
            await asyncio.sleep(delay)
    finally:
        current_step.reset(token)


def replayed(entry: Run, fn: Callable[..., Any]) -> Any:
    """A recorded step's outcome: its value decoded as a fresh run would, or its failure raised."""
    if entry.failure is not None:
        raise TerminalError(entry.failure.message, entry.failure.code)
    return step_fn(fn).decoder.decode(entry.value if entry.value is not None else b"null")
