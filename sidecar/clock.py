"""Wall-clock milliseconds: what records, timers and deadlines are stamped with."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    """``ms`` since the epoch as ISO 8601 in UTC with milliseconds, as people and logs read it."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
