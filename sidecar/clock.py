"""Wall-clock milliseconds: what records, timers and deadlines are stamped with."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
