"""Durations as clients write them: ``10s``, ``1m30s``, ``250ms`` or ISO 8601 ``PT10S``; and the
longest delay the sidecar takes, from a client or from a handler."""

from __future__ import annotations

import math
import re

from handler_sdk.protocol import MAX_DELAY_MS

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_HUMAN = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_ISO = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")

_TOO_LONG = f"at most {MAX_DELAY_MS // 86_400_000} days (10 years)"


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError with the accepted forms when it is not a finite duration."""
    text = text.strip()
    iso = _ISO.fullmatch(text.upper())
    total: float | None = None
    if iso and text.upper() not in ("P", "PT"):
        days, hours, minutes, seconds = (float(g) if g else 0.0 for g in iso.groups())
        total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    else:
        pos, summed = 0, 0.0
        for match in _HUMAN.finditer(text):
            if match.start() != pos:
                break
            summed += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos == len(text) and text:
            total = summed
    if total is None:
        raise ValueError(f"invalid duration {text[:100]!r}: write it like 10s, 1m30s, 250ms or PT10S")
    if not math.isfinite(total):
        raise ValueError(f"duration {text[:100]!r} is too long: {_TOO_LONG}")
    return total


def parse_delay(text: str) -> float:
    """A client's delay in seconds: a duration of at most :data:`MAX_DELAY_MS`."""
    seconds = parse_duration(text)
    if seconds * 1000 > MAX_DELAY_MS:
        raise ValueError(f"delay {text[:100]!r} is too long: {_TOO_LONG}")
    return seconds


def delay_problem(delay_ms: int) -> str | None:
    """Why a handler's delay (a delayed send; a negative one is now) cannot be taken, or None."""
    if delay_ms > MAX_DELAY_MS:
        return f"a delay of {delay_ms} ms is too long: {_TOO_LONG}"
    return None


def wake_problem(wake_at_ms: int, now_ms: int) -> str | None:
    """Why a handler's timer (a sleep until ``wake_at_ms``, epoch ms) cannot be taken, or None."""
    if not 0 <= wake_at_ms <= now_ms + MAX_DELAY_MS:
        return f"a timer at {wake_at_ms} ms since the epoch is out of range: {_TOO_LONG} from now"
    return None
