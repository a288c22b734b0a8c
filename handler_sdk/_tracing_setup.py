"""Whether spans are exported, read from the standard ``OTEL_*`` variables before OpenTelemetry
is imported: a handler service without the ``tracing`` extra has no OpenTelemetry to import, and
one with it pays for the import only where tracing is on."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._extras import missing_extra

if TYPE_CHECKING:
    from ._tracing import StepTracer

log = logging.getLogger(__name__)

#: Either one turns export on (the first, when both are set, is where traces go).
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def export_requested(environ: Mapping[str, str]) -> bool:
    """An endpoint variable is set, and neither ``OTEL_SDK_DISABLED=true`` nor
    ``OTEL_TRACES_EXPORTER=none`` turns export off."""
    if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return False
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"


def step_tracer() -> StepTracer | None:
    """Where this handler service's step spans go; None where tracing is off, or where it is asked
    for without the ``tracing`` extra (which is logged: the service serves, untraced)."""
    if not export_requested(os.environ):
        return None
    try:
        from ._tracing import StepTracer
    except ImportError as exc:
        log.warning("%s; until then, no spans are exported", missing_extra(
            "tracing", f"{ENDPOINT_VARIABLES[1]} is set, but tracing", exc.name))
        return None
    return StepTracer.from_environment()
