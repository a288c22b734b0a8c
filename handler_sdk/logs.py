"""Log output of a handler service (and of the sidecar, which uses the same options).

``text`` is for people; ``json`` is one object per line for log collectors, with ``time`` (ISO
8601, UTC, milliseconds), ``level``, ``logger``, ``message`` and, where a line is about one
invocation, its ``invocation_id`` as a field of its own (pass ``extra={"invocation_id": ...}``).
Only the standard library and msgspec: the sidecar imports it without the SDK's runtime.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_encode = msgspec.json.Encoder().encode


def iso_time(created: float) -> str:
    """``time.time()`` seconds as ISO 8601 in UTC with milliseconds: ``2026-12-03T06:37:06.609Z``."""
    whole = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((created - whole) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes in ``exception``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": iso_time(record.created), "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(),
        }
        invocation_id = getattr(record, "invocation_id", None)
        if invocation_id is not None:
            line["invocation_id"] = invocation_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _encode(line).decode()


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send every log record at ``level`` or above to stderr, as ``fmt`` (one of ``FORMATS``)."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
