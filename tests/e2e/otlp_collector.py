"""A stand-in OpenTelemetry collector: takes OTLP/HTTP trace exports (protobuf, as the exporter
package sends them, or JSON, ``http/json``, checked against the same protobuf schema), decodes
each span, and answers what it received.

``python -m tests.e2e.otlp_collector --port P`` serves ``POST /v1/traces`` and ``GET /spans``
(every span so far, as JSON); ``GET /requests`` counts the exports. ``--discard`` counts exports
without decoding them (a collector that costs the exporting side nothing but the send).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)
from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_OK = ExportTraceServiceResponse().SerializeToString()
SPANS = web.AppKey("spans", list)
REQUESTS = web.AppKey("requests", list)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _from_json(body: bytes) -> ExportTraceServiceRequest:
    """An ``http/json`` export, held to the protobuf schema (an unknown field or a wrong type is an
    error). OTLP's JSON spells IDs in hex where protobuf's JSON mapping has base64."""
    request = json.loads(body)
    for resource_spans in request.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for field in ("traceId", "spanId", "parentSpanId"):
                    if span.get(field):
                        span[field] = base64.b64encode(bytes.fromhex(span[field])).decode()
    return json_format.ParseDict(request, ExportTraceServiceRequest())


def decode(body: bytes, *, as_json: bool = False) -> list[dict[str, Any]]:
    """Each span of one export, flattened: its service, IDs (hex), times, status, attributes."""
    spans = []
    request = _from_json(body) if as_json else ExportTraceServiceRequest.FromString(body)
    for resource_spans in request.resource_spans:
        service = _attributes(resource_spans.resource.attributes).get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append({
                    "service": service, "scope": scope_spans.scope.name, "name": span.name,
                    "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex() or None, "kind": span.kind,
                    "start_ns": span.start_time_unix_nano, "end_ns": span.end_time_unix_nano,
                    "status_code": span.status.code, "status_message": span.status.message,
                    "attributes": _attributes(span.attributes),
                })
    return spans


def make_app(*, discard: bool = False) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SPANS] = []
    app[REQUESTS] = []

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        app[REQUESTS].append(len(body))
        if not discard:
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            app[SPANS].extend(decode(body, as_json=request.content_type == "application/json"))
        return web.Response(body=_OK, content_type="application/x-protobuf")

    async def spans(_request: web.Request) -> web.Response:
        return web.json_response(app[SPANS])

    async def requests(_request: web.Request) -> web.Response:
        return web.json_response({"exports": len(app[REQUESTS]), "bytes": sum(app[REQUESTS])})

    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/spans", spans)
    app.router.add_get("/requests", requests)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--discard", action="store_true")
    args = parser.parse_args()
    web.run_app(make_app(discard=args.discard), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
