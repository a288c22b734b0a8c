"""Checks on what a client sends, made before anything is stored: each refusal is an
:class:`HTTPProblem` (400) whose message says what is wrong.

Anything stored (invocation records, forwarded headers, keys) is encoded as UTF-8 by msgpack, and
JSON is decoded by a recursive parser: a value that fails there would fail in the writer or deep in
a route, so it is refused here at the door.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import unquote

import msgspec

from .errors import HTTPProblem

T = TypeVar("T")


def _not_json(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "request body is not valid JSON: it is nested too deeply"
    return f"request body is not valid JSON: {exc}"


def json_value(body: bytes) -> Any:
    """``body`` decoded as JSON, whatever it holds."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HTTPProblem(400, _not_json(exc)) from None


def json_body(body: bytes, type: type[T], expected: str) -> T:
    """``body`` decoded as ``type``; ``expected`` shows the shape in the refusal."""
    try:
        return msgspec.json.decode(body, type=type)
    except RecursionError:
        raise HTTPProblem(400, f"expected {expected}: the body is nested too deeply") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise HTTPProblem(400, f"expected {expected}: {exc}") from None


def budget_header(headers: Mapping[str, str]) -> float | None:
    """The ``x-budget`` header's spending cap: a finite number, zero or more; None if not sent."""
    text = headers.get("x-budget")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise HTTPProblem(400, f"x-budget: expected a number, zero or more (such as 2.50), got {text!r}")
    return value


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # bytes that were not UTF-8, decoded with surrogate escapes
        return False
    return True


def storable(headers: Mapping[str, str]) -> None:
    """Refuse a header value that could not be stored with an invocation or handed to another
    worker (both encode text as UTF-8; aiohttp keeps bytes that are not UTF-8 as surrogate
    escapes). Names need no check: the parser takes only ASCII tokens."""
    for name, value in headers.items():
        if not _utf8(value):
            raise HTTPProblem(400, f"header {name!r} is not valid UTF-8")


def path_parts(raw_path: str) -> list[str]:
    """The ``/``-separated parts of a still percent-encoded path, each decoded once: ``%2F`` is a
    ``/`` inside a part, and an escape that is not UTF-8 is refused rather than replaced."""
    parts = []
    for raw in raw_path.strip("/").split("/"):
        try:
            parts.append(unquote(raw, errors="strict"))
        except UnicodeDecodeError:
            raise HTTPProblem(400, f"path part {raw[:100]!r} is not valid UTF-8 once percent-decoded") from None
    return parts
