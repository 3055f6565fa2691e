"""spendstream producer SDK: publish usage events from application code.

    from streams.sdk import SpendstreamProducer, record_openai, set_default_producer

    producer = SpendstreamProducer.http("https://spend.example.com", api_key="sk_ingest_...")
    set_default_producer(producer)
    record_openai(response, tenant_id="acme", team_id="search", workflow_id="rerank")

See `docs/sources.md` for every source.
"""

from typing import TYPE_CHECKING, Any

from streams.sdk.helpers import (
    Ownership,
    record_anthropic,
    record_gemini,
    record_openai,
    record_response,
    set_default_producer,
)
from streams.sdk.producer import (
    AsyncSpendstreamProducer,
    ProducerClosedError,
    ProducerStats,
    QueueFullError,
    SpendstreamProducer,
    encode_event,
)
from streams.sdk.transports import (
    DEFAULT_TOPIC,
    EncodedEvent,
    HttpTransport,
    KafkaTransport,
    Transport,
    TransportError,
)

if TYPE_CHECKING:
    from streams.sdk.otel import SpendstreamSpanExporter


def __getattr__(name: str) -> Any:
    # The exporter needs opentelemetry-sdk; importing it lazily keeps the
    # producers usable where OpenTelemetry is not installed.
    if name == "SpendstreamSpanExporter":
        from streams.sdk.otel import SpendstreamSpanExporter

        return SpendstreamSpanExporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_TOPIC",
    "AsyncSpendstreamProducer",
    "EncodedEvent",
    "HttpTransport",
    "KafkaTransport",
    "Ownership",
    "ProducerClosedError",
    "ProducerStats",
    "QueueFullError",
    "SpendstreamProducer",
    "SpendstreamSpanExporter",
    "Transport",
    "TransportError",
    "encode_event",
    "record_anthropic",
    "record_gemini",
    "record_openai",
    "record_response",
    "set_default_producer",
]
