"""The log formats: JSON lines that parse, with the invocation ID as a field; options checked."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import given, settings, strategies as st

from handler_sdk.logs import JsonFormatter, configure_logging, iso_time
from sidecar.cli.config import ConfigError, load_settings


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("sidecar.invoker", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_a_line_has_time_level_logger_message_and_the_invocation_id() -> None:
    record = _record("%s attempt %d failed", "inv_1", 3, invocation_id="inv_1")
    record.created = 1_796_279_826.6093
    line = json.loads(JsonFormatter().format(record))
    assert line == {"time": "2026-12-03T06:37:06.609Z", "level": "warning", "logger": "sidecar.invoker",
                    "message": "inv_1 attempt 3 failed", "invocation_id": "inv_1"}


def test_a_line_about_no_invocation_has_no_invocation_id_and_a_traceback_stays_on_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record("step failed")
        record.exc_info = sys.exc_info()
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert "invocation_id" not in line and "RuntimeError: boom" in line["exception"]


@settings(max_examples=50, deadline=None)
@given(st.text(), st.floats(min_value=0, max_value=4_102_444_800))
def test_any_message_is_one_line_of_json(message: str, created: float) -> None:
    record = _record("%s", message, invocation_id=message)
    record.created = created
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == message and line["invocation_id"] == message
    assert line["time"] == iso_time(created) and line["time"].endswith("Z") and len(line["time"]) == 24


def test_configure_logging_refuses_unknown_levels_and_formats() -> None:
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    try:
        configure_logging("debug", "json")
        assert root.level == logging.DEBUG and isinstance(root.handlers[0].formatter, JsonFormatter)
        with pytest.raises(ValueError, match="log format must be one of text, json"):
            configure_logging("info", "xml")
        with pytest.raises(ValueError, match="log level must be one of"):
            configure_logging("loud", "text")
    finally:
        root.handlers[:], _ = before
        root.setLevel(before[1])


def test_log_settings_come_from_the_environment_and_are_checked() -> None:
    settings_ = load_settings(environ={"SIDECAR_LOG_LEVEL": "debug", "SIDECAR_LOG_FORMAT": "json"})
    assert (settings_.log_level, settings_.log_format) == ("debug", "json")
    assert (load_settings(environ={}).log_level, load_settings(environ={}).log_format) == ("info", "text")
    with pytest.raises(ConfigError, match="log_format must be one of text, json, not 'xml'"):
        load_settings(environ={"SIDECAR_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="log_level"):
        load_settings(overrides={"log_level": "chatty"}, environ={})
