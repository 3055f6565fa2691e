"""OTLP trace export requests → the GenAI model-call spans they carry.

The input is an `ExportTraceServiceRequest` in the OTLP/JSON encoding
(`resourceSpans[].scopeSpans[].spans[]`, attributes as
`[{"key", "value": {"stringValue" | "intValue" | ...}}]`, 64-bit integers
possibly as decimal strings, trace and span ids as hex), or the same message
in protobuf (`application/x-protobuf`, the default encoding of OpenTelemetry's
OTLP/HTTP exporters), decoded with the official `opentelemetry-proto` messages.

Each span becomes a flat body for the `otel_genai` normalizer (attributes as
a plain mapping, the resource's attributes alongside). Only model-call spans
are kept (`schemas.normalizers.is_model_call_span`): a trace also holds HTTP,
database and agent spans, and an agent span's aggregated usage would count
its model calls twice.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from schemas.normalizers import is_model_call_span


class OtlpFormatError(ValueError):
    """The request is not an ExportTraceServiceRequest."""


@dataclass(frozen=True)
class ExportedSpans:
    total: int
    """Spans in the request, model calls or not."""
    model_calls: list[dict[str, Any]]
    """Flat span bodies for the `otel_genai` normalizer."""


def model_call_spans(document: Any) -> ExportedSpans:
    if not isinstance(document, Mapping):
        raise OtlpFormatError("an OTLP export request must be a JSON object")
    total = 0
    kept: list[dict[str, Any]] = []
    for resource_spans in _list(document.get("resourceSpans"), "resourceSpans"):
        resource_spans = _object(resource_spans, "resourceSpans[]")
        resource = _object(resource_spans.get("resource") or {}, "resource")
        resource_attributes = attribute_map(resource.get("attributes"))
        # instrumentationLibrarySpans: the name before OTLP 0.15, still sent by old SDKs.
        scopes = resource_spans.get("scopeSpans", resource_spans.get("instrumentationLibrarySpans"))
        for scope_spans in _list(scopes, "scopeSpans"):
            scope_spans = _object(scope_spans, "scopeSpans[]")
            for span in _list(scope_spans.get("spans"), "spans"):
                span = _object(span, "spans[]")
                total += 1
                attributes = attribute_map(span.get("attributes"))
                if is_model_call_span(attributes):
                    kept.append(_flat_span(span, attributes, resource_attributes))
    return ExportedSpans(total, kept)


def _flat_span(
    span: Mapping[str, Any], attributes: dict[str, Any], resource: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": span.get("name"),
        "trace_id": span.get("traceId"),
        "span_id": span.get("spanId"),
        "start_time_unix_nano": span.get("startTimeUnixNano"),
        "end_time_unix_nano": span.get("endTimeUnixNano"),
        "attributes": attributes,
        "resource": resource,
    }


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpFormatError(f"{what} must be a JSON array")
    return value


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise OtlpFormatError(f"{what} must be a JSON object")
    return value


def attribute_map(raw: Any) -> dict[str, Any]:
    """OTLP `[{"key", "value": AnyValue}]` → {key: plain value}."""
    out: dict[str, Any] = {}
    for item in _list(raw, "attributes"):
        if isinstance(item, Mapping) and isinstance(item.get("key"), str):
            out[item["key"]] = any_value(item.get("value"))
    return out


def any_value(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        raw = value["intValue"]
        # The protobuf JSON mapping writes int64 as a decimal string.
        if isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                return raw  # left for the normalizer to reject with its field name
        return raw
    for key in ("doubleValue", "boolValue", "bytesValue"):
        if key in value:
            return value[key]
    if "arrayValue" in value:
        array = value["arrayValue"] if isinstance(value["arrayValue"], Mapping) else {}
        return [any_value(v) for v in _list(array.get("values"), "arrayValue.values")]
    if "kvlistValue" in value:
        kvlist = value["kvlistValue"] if isinstance(value["kvlistValue"], Mapping) else {}
        return attribute_map(kvlist.get("values"))
    return None


def decode_protobuf(body: bytes) -> dict[str, Any]:
    """A protobuf ExportTraceServiceRequest as its OTLP/JSON document."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise OtlpFormatError(f"not a protobuf ExportTraceServiceRequest: {exc}") from None
    document: dict[str, Any] = MessageToDict(request)
    # The generic protobuf JSON mapping writes bytes as base64; OTLP/JSON
    # (and so the normalizer and request ids) writes trace and span ids as hex.
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId"):
                    if key in span:
                        span[key] = _base64_to_hex(span[key])
    return document


def protobuf_response(rejected_spans: int, message: str) -> bytes:
    """A serialized ExportTraceServiceResponse."""
    response = ExportTraceServiceResponse()
    if rejected_spans:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected_spans, error_message=message)
        )
    data: bytes = response.SerializeToString()
    return data


def _base64_to_hex(value: Any) -> Any:
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, TypeError, ValueError):
        return value
