"""OpenTelemetry set-up that the SDK and the sidecar share: a tracer provider exporting over
OTLP/HTTP, made only where the standard ``OTEL_*`` variables name an endpoint.

Everything else is the OpenTelemetry SDK's reading of the same variables: ``OTEL_SERVICE_NAME``
and ``OTEL_RESOURCE_ATTRIBUTES`` (the resource), ``OTEL_TRACES_SAMPLER`` (which traces are kept),
``OTEL_EXPORTER_OTLP_*`` (headers, timeout, compression), ``OTEL_BSP_*`` (batching).
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = logging.getLogger(__name__)

#: Either one turns export on (the first, when both are set, is where traces go).
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class Exporting(NamedTuple):
    """A provider and the batching processor that exports what it ends; a span recorded after the
    fact (``ReadableSpan``) goes to ``processor.on_end`` directly."""

    provider: TracerProvider
    processor: BatchSpanProcessor


def exporting(default_service_name: str) -> Exporting | None:
    """A provider that exports its spans over OTLP/HTTP in batches, or None where tracing is off:
    no endpoint variable set, ``OTEL_SDK_DISABLED=true``, ``OTEL_TRACES_EXPORTER=none``, or the
    exporter package (the ``otlp`` extra) not installed."""
    if not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return None
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        log.warning("%s is set, but opentelemetry-exporter-otlp-proto-http is not installed "
                    "(pip install 'durable-sidecar[otlp]'): no traces are exported", ENDPOINT_VARIABLES[1])
        return None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    processor = BatchSpanProcessor(OTLPSpanExporter())
    provider.add_span_processor(processor)
    return Exporting(provider, processor)
