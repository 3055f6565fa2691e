"""The OpenTelemetry exporter with the real opentelemetry-sdk, into Kafka."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from streams.sdk import SpendstreamProducer, SpendstreamSpanExporter

pytestmark = pytest.mark.integration  # needs the embedded broker


def test_genai_spans_become_events(kafka: Any, topic: str) -> None:
    kafka.create_topic_sync(topic)
    producer = SpendstreamProducer.kafka(kafka.bootstrap, topic, linger_s=0.02)
    exporter = SpendstreamSpanExporter(producer, tenant_id="acme", team_id="research")
    provider = TracerProvider(
        resource=Resource.create({"service.name": "agent", "deployment.environment.name": "prod"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("invoke_agent planner") as agent:
        agent.set_attributes(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-sonnet-4-5",
                # aggregated usage of the calls below: must not be counted again
                "gen_ai.usage.input_tokens": 5012,
                "gen_ai.usage.output_tokens": 350,
            }
        )
        with tracer.start_as_current_span("chat claude-sonnet-4-5") as call:
            call.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-5",
                    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
                    "gen_ai.response.id": "msg_otel_1",
                    "gen_ai.usage.input_tokens": 5000,
                    "gen_ai.usage.output_tokens": 200,
                    "gen_ai.usage.cache_read.input_tokens": 4000,
                    "gen_ai.usage.cache_creation.input_tokens": 900,
                    "spendstream.workflow_run_id": "run-7",
                    "spendstream.team_id": "planner-team",
                }
            )
        with tracer.start_as_current_span("chat gpt-4o-mini") as call:
            call.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.prompt_tokens": 12,
                    "gen_ai.usage.completion_tokens": 150,
                }
            )
            second_span_id = format(call.get_span_context().span_id, "016x")
            trace_id = format(call.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span("GET /search") as http:
            http.set_attribute("http.response.status_code", 200)

    assert provider.force_flush()
    assert exporter.recorded == 2 and exporter.skipped == 0
    provider.shutdown()
    assert producer.close(timeout=5)

    messages = kafka.consume_sync(topic, min_events=2)
    events = {e["request_id"]: e for m in messages for e in m.events}
    assert set(events) == {"msg_otel_1", f"{trace_id}-{second_span_id}"}

    claude = events["msg_otel_1"]
    assert (claude["provider"], claude["model"]) == ("anthropic", "claude-sonnet-4-5-20250929")
    assert (claude["input_tokens"], claude["cached_tokens"], claude["cache_write_tokens"]) == (
        5000,
        4000,
        900,
    )
    assert claude["output_tokens"] == 200
    assert (claude["tenant_id"], claude["team_id"], claude["workflow_run_id"]) == (
        "acme",
        "planner-team",
        "run-7",
    )
    assert claude["environment"] == "prod"

    mini = events[f"{trace_id}-{second_span_id}"]
    assert (mini["provider"], mini["model"], mini["input_tokens"]) == ("openai", "gpt-4o-mini", 12)
    assert (mini["output_tokens"], mini["team_id"]) == (150, "research")
    assert mini["latency_ms"] >= 0
