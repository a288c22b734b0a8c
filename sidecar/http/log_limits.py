"""Logs a client cannot flood: aiohttp logs every request its parser refuses with a full
traceback, so a stream of malformed requests would fill the disk and bury what matters."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError

#: Lines a second from aiohttp's server logger; the rest are counted, and the count is logged.
LINES_PER_SECOND = 5


class RateLimitedServerLog(logging.Filter):
    """On ``aiohttp.server``: a request refused as malformed becomes one warning line without a
    traceback; past ``per_second`` lines in a second records are dropped, and the next line that
    is written says how many were."""

    def __init__(self, per_second: int = LINES_PER_SECOND, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._per_second = per_second
        self._clock = clock
        self._window = -1.0
        self._written = 0
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        if now - self._window >= 1.0:
            self._window, self._written = now, 0
        if self._written >= self._per_second:
            self.dropped += 1
            return False
        self._written += 1
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):  # the client's mistake: what was wrong is enough
            reason = " ".join(str(exc.message).split()).rstrip(" ^")[:200]  # without the caret line
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "refused a malformed request from %s: %d %s", (remote, exc.code, reason)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if self.dropped:
            record.msg = f"{record.getMessage()} ({self.dropped} more lines of the HTTP server not logged)"
            record.args = ()
            self.dropped = 0
        return True


def limit_server_log() -> None:
    """Install :class:`RateLimitedServerLog` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, RateLimitedServerLog) for f in logger.filters):
        logger.addFilter(RateLimitedServerLog())
