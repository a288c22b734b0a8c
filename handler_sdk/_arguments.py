"""Checking and encoding what handler code passes to context methods, before a journal index is
claimed: a bad argument is an exception at the call, not a failed attempt retried forever."""

from __future__ import annotations

import datetime
import math
from typing import Any

import msgspec

from .errors import TerminalError
from .protocol import MAX_DELAY_MS, identifier_problem

json_encode = msgspec.json.Encoder().encode


def delay_ms(delay: float | datetime.timedelta) -> int:
    """A sleep's or send's delay in ms (a negative one means now); one past the longest the
    sidecar takes is a ValueError here rather than a failed attempt."""
    if isinstance(delay, datetime.timedelta):
        ms = delay // datetime.timedelta(milliseconds=1)  # integer arithmetic, no float rounding
    elif not math.isfinite(delay):
        raise ValueError(f"a delay must be finite, got {delay!r}")
    else:
        ms = round(delay * 1000)
    if abs(ms) > MAX_DELAY_MS:
        raise ValueError(f"a delay may be at most {MAX_DELAY_MS // 86_400_000} days (10 years), got {delay!r}")
    return ms


def check_types(**arguments: tuple[Any, type]) -> None:
    for name, (value, expected) in arguments.items():
        if not isinstance(value, expected):
            raise TypeError(f"{name} must be {expected.__name__}, got {value!r}")


def check_identifier(what: str, value: str) -> None:
    """Refuse an identifier over the limit where the handler names it: the sidecar would fail
    the attempt for it, and every retry would send it again."""
    problem = identifier_problem(what, value)
    if problem is not None:
        raise TerminalError(problem, code=400)


def encode_arg(arg: Any) -> bytes:
    # No argument is no input (not JSON null), as a bare ingress request sends it.
    return b"" if arg is None else json_encode(arg)
