"""Limit groups as an operator writes them: ``[limits.NAME]`` in TOML, ``--limit NAME=...`` on ``serve``.

A group caps the steps that name it (``ctx.run(..., limit="NAME")``) across the whole sidecar:
``concurrency`` steps at once, and/or ``rate`` starts per period (``"60/min"``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import msgspec

from handler_sdk.protocol import name_problem


class LimitConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    #: At most this many steps of the group inside their function at once.
    concurrency: int | None = None
    #: At most N starts per period: "60/min", "10/s", "1000/hour", "5/10s".
    rate: str | None = None


class Rate(NamedTuple):
    starts: int
    period_ms: int


_UNITS = {"ms": 1, "s": 1000, "sec": 1000, "second": 1000, "m": 60_000, "min": 60_000, "minute": 60_000,
          "h": 3_600_000, "hour": 3_600_000, "d": 86_400_000, "day": 86_400_000}
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*")


def parse_rate(text: str) -> Rate:
    """``"60/min"`` -> Rate(60, 60000); ValueError with what is expected."""
    match = _RATE.fullmatch(text.lower())
    unit = _UNITS.get(match.group(3)) if match else None
    if match is None or unit is None:
        raise ValueError(f"rate {text[:60]!r} is not COUNT/PERIOD, e.g. 60/min, 10/s, 1000/hour or 5/10s")
    count, times = int(match.group(1)), int(match.group(2) or 1)
    if count < 1 or times < 1:
        raise ValueError(f"rate {text[:60]!r}: the count and the period must be 1 or more")
    return Rate(count, times * unit)


def limit_problem(name: str, config: LimitConfig) -> str | None:
    """What is wrong with limit group ``name``, if anything."""
    if (problem := name_problem(name)) is not None:
        return f"limit group name: {problem}"
    if config.concurrency is None and config.rate is None:
        return f"limit group {name!r} needs concurrency, rate or both"
    if config.concurrency is not None and config.concurrency < 1:
        return f"limit group {name!r}: concurrency must be 1 or more, not {config.concurrency}"
    if config.rate is not None:
        try:
            parse_rate(config.rate)
        except ValueError as exc:
            return f"limit group {name!r}: {exc}"
    return None


def parse_limit_flag(text: str) -> tuple[str, LimitConfig]:
    """``NAME=concurrency:8,rate:60/min`` -> (name, config); ValueError naming what is wrong."""
    name, sep, spec = text.partition("=")
    if not sep or not name.strip() or not spec.strip():
        raise ValueError(f"--limit {text[:80]!r}: expected NAME=concurrency:N,rate:COUNT/PERIOD")
    fields: dict[str, object] = {}
    for part in spec.split(","):
        key, colon, value = part.partition(":")
        key, value = key.strip(), value.strip()
        if not colon or key not in ("concurrency", "rate") or key in fields:
            raise ValueError(f"--limit {text[:80]!r}: {part.strip()[:40]!r} is not concurrency:N or rate:COUNT/PERIOD "
                             "(each at most once)")
        if key == "concurrency":
            if not value.isdigit():
                raise ValueError(f"--limit {text[:80]!r}: concurrency must be a whole number, not {value[:20]!r}")
            fields[key] = int(value)
        else:
            fields[key] = value
    return name.strip(), LimitConfig(**fields)  # type: ignore[arg-type]
