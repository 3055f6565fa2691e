"""An OpenTelemetry span exporter that turns GenAI model-call spans into usage
events.

    exporter = SpendstreamSpanExporter(producer, tenant_id="acme", environment="prod")
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))

Spans without GenAI usage, and agent/tool spans (whose usage aggregates the
model calls under them), are skipped. Ownership set on a span as
`spendstream.<field>` attributes (e.g. `spendstream.workflow_run_id`) wins
over the exporter's defaults. Export never fails the tracing pipeline: a span
that cannot be normalized is logged and counted in `skipped`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Unpack

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from schemas.normalizers.otel_genai import (
    OWNERSHIP_PREFIX,
    is_model_call_span,
    normalize_otel_genai,
)
from streams.sdk.helpers import EventSink, Ownership
from streams.sdk.producer import SpendstreamProducer

log = logging.getLogger("spendstream.sdk")


def span_body(span: ReadableSpan) -> dict[str, Any]:
    """The flat span body the `otel_genai` normalizer reads."""
    context = span.context
    body: dict[str, Any] = {
        "name": span.name,
        "attributes": dict(span.attributes or {}),
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
    }
    if context is not None:
        body["trace_id"] = format(context.trace_id, "032x")
        body["span_id"] = format(context.span_id, "016x")
    if span.resource is not None:
        body["resource"] = dict(span.resource.attributes)
    return body


class SpendstreamSpanExporter(SpanExporter):
    """Hands each GenAI model-call span to `producer` as a usage event.

    The producer is the caller's: `shutdown()` does not close it, and
    `force_flush()` flushes it when it is a `SpendstreamProducer`.
    """

    def __init__(self, producer: EventSink, **ownership: Unpack[Ownership]) -> None:
        self.producer = producer
        self.ownership: dict[str, Any] = dict(ownership)
        self.recorded = 0
        self.skipped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            try:
                attributes = span.attributes or {}
                if not is_model_call_span(attributes):
                    continue
                defaults = {
                    key: value
                    for key, value in self.ownership.items()
                    if OWNERSHIP_PREFIX + key not in attributes
                }
                event = normalize_otel_genai(span_body(span), **defaults)
                if self.producer.record(event):
                    self.recorded += 1
                else:
                    self.skipped += 1
            except Exception as exc:
                self.skipped += 1
                log.warning("spendstream: span %r not recorded: %s", span.name, exc)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if isinstance(self.producer, SpendstreamProducer):
            return self.producer.flush(timeout_millis / 1000)
        return True
