"""The filter that keeps aiohttp's server log to a few short lines a second."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadHttpMessage

from sidecar.http.log_limits import RateLimitedServerLog


def _refusal() -> logging.LogRecord:
    try:
        raise BadHttpMessage("Invalid header token:\n\n  b'Bad Header'\n       ^")
    except BadHttpMessage as exc:
        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                                 ("10.0.0.7",), (type(exc), exc, exc.__traceback__))


def test_a_malformed_request_is_one_warning_line_without_traceback() -> None:
    record = _refusal()
    assert RateLimitedServerLog(clock=lambda: 0.0).filter(record)
    assert record.levelname == "WARNING" and record.exc_info is None
    assert record.getMessage() == "refused a malformed request from 10.0.0.7: 400 Invalid header token: b'Bad Header'"
    assert "Traceback" not in logging.Formatter().format(record)


def test_past_the_limit_records_are_counted_and_the_next_line_says_how_many() -> None:
    now = [0.0]
    limiter = RateLimitedServerLog(per_second=3, clock=lambda: now[0])
    assert [limiter.filter(_refusal()) for _ in range(10)] == [True] * 3 + [False] * 7
    now[0] = 1.5
    record = _refusal()
    assert limiter.filter(record) and "(7 more lines of the HTTP server not logged)" in record.getMessage()
    assert limiter.dropped == 0


def test_other_errors_keep_their_traceback_within_the_limit() -> None:
    try:
        raise KeyError("bug")
    except KeyError as exc:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Unhandled exception", (),
                                   (type(exc), exc, exc.__traceback__))
    assert RateLimitedServerLog(clock=lambda: 0.0).filter(record)
    assert record.exc_info is not None and record.levelname == "ERROR"
