"""POST /v1/traces (OTLP/HTTP) on a real aiohttp server."""

from __future__ import annotations

import asyncio
import base64
import gzip
from typing import Any

import orjson
import pytest
from google.protobuf.json_format import ParseDict
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from streams.http_ingest.keys import IngestKeyStore

pytestmark = pytest.mark.timeout(30)

START_NS = 1_748_000_500_000_000_000


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        # Exporters write int64 as a decimal string (protobuf JSON mapping);
        # some write a JSON number: both are accepted.
        return {"key": key, "value": {"intValue": str(value) if value % 2 == 0 else value}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def span(span_id: str, name: str, attributes: dict[str, Any], duration_ms: int = 1200) -> dict:
    return {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": span_id,
        "name": name,
        "kind": 3,
        "startTimeUnixNano": str(START_NS),
        "endTimeUnixNano": str(START_NS + duration_ms * 1_000_000),
        "attributes": [attr(k, v) for k, v in attributes.items()],
        "status": {},
    }


def export_request(*spans: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        attr("service.name", "agent"),
                        attr("deployment.environment.name", "prod"),
                    ]
                },
                "scopeSpans": [{"scope": {"name": "genai-instrumentation"}, "spans": list(spans)}],
            }
        ]
    }


CHAT_ANTHROPIC = span(
    "eee19b7ec3c1b174",
    "chat claude-sonnet-4-5",
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.id": "msg_otlp_1",
        "gen_ai.usage.input_tokens": 5000,
        "gen_ai.usage.output_tokens": 201,
        "gen_ai.usage.cache_read.input_tokens": 4000,
        "spendstream.workflow_run_id": "run-7",
    },
)
CHAT_OPENAI = span(
    "eee19b7ec3c1b175",
    "chat gpt-4o-mini",
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.prompt_tokens": 12,
        "gen_ai.usage.completion_tokens": 3,
    },
    duration_ms=250,
)
HTTP_CALL = span(
    "eee19b7ec3c1b176",
    "GET /search",
    {"http.request.method": "GET", "http.response.status_code": 200, "url.path": "/search"},
)
AGENT = span(
    "eee19b7ec3c1b177",
    "invoke_agent planner",
    {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.usage.input_tokens": 5012,
        "gen_ai.usage.output_tokens": 204,
    },
)


async def test_only_genai_model_call_spans_become_events(
    start_ingest: Any, key_store: IngestKeyStore
) -> None:
    _, token = key_store.create("acme", team_id="research")
    ingest = await start_ingest(key_store=key_store)
    response = await ingest.post(
        "/v1/traces",
        json=export_request(CHAT_ANTHROPIC, CHAT_OPENAI, HTTP_CALL),
        key=token.get_secret_value(),
    )

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {}
    events = {e["request_id"]: e for e in ingest.published.events}
    assert set(events) == {"msg_otlp_1", "5b8efff798038103d269b633813fc60c-eee19b7ec3c1b175"}
    claude = events["msg_otlp_1"]
    assert (claude["provider"], claude["model"]) == ("anthropic", "claude-sonnet-4-5")
    assert (claude["input_tokens"], claude["cached_tokens"], claude["output_tokens"]) == (
        5000,
        4000,
        201,
    )
    assert (claude["tenant_id"], claude["team_id"]) == ("acme", "research")
    assert (claude["workflow_run_id"], claude["environment"]) == ("run-7", "prod")
    assert claude["latency_ms"] == 1200
    gpt = events["5b8efff798038103d269b633813fc60c-eee19b7ec3c1b175"]
    assert (gpt["provider"], gpt["input_tokens"], gpt["output_tokens"]) == ("openai", 12, 3)
    assert ingest.published.dead_letters == []


async def test_agent_spans_are_not_counted_twice(start_ingest: Any) -> None:
    ingest = await start_ingest()
    response = await ingest.post(
        "/v1/traces", json=export_request(AGENT, CHAT_ANTHROPIC), params={"tenant_id": "acme"}
    )
    assert response.status_code == 200
    assert [e["request_id"] for e in ingest.published.events] == ["msg_otlp_1"]


async def test_a_bad_genai_span_is_a_partial_success_and_dead_lettered(
    start_ingest: Any,
) -> None:
    ingest = await start_ingest()
    broken = span(
        "eee19b7ec3c1b178",
        "chat gpt-4o",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": -5,
        },
    )
    response = await ingest.post(
        "/v1/traces",
        content=gzip.compress(orjson.dumps(export_request(CHAT_OPENAI, broken))),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        params={"tenant_id": "acme"},
    )

    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1
    assert partial["errorMessage"].startswith("normalization_failed")
    assert len(ingest.published.events) == 1
    [letter] = ingest.published.dead_letters
    assert (letter["reason"], letter["source"]) == ("normalization_failed", "/v1/traces")
    assert "eee19b7ec3c1b178" in letter["raw_payload"]


async def test_a_span_claiming_another_team_is_rejected(
    start_ingest: Any, key_store: IngestKeyStore
) -> None:
    _, token = key_store.create("acme", team_id="research")
    forged = span(
        "eee19b7ec3c1b179",
        "chat gpt-4o-mini",
        {
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 10,
            "spendstream.team_id": "payments",
        },
    )
    ingest = await start_ingest(key_store=key_store)
    response = await ingest.post(
        "/v1/traces", json=export_request(forged, CHAT_OPENAI), key=token.get_secret_value()
    )
    assert int(response.json()["partialSuccess"]["rejectedSpans"]) == 1
    assert [d["reason"] for d in ingest.published.dead_letters] == ["ownership_mismatch"]
    assert len(ingest.published.events) == 1


async def test_traces_need_a_key_when_keys_are_enabled(
    start_ingest: Any, key_store: IngestKeyStore
) -> None:
    ingest = await start_ingest(key_store=key_store)
    response = await ingest.post("/v1/traces", json=export_request(CHAT_OPENAI))
    assert response.status_code == 401
    assert response.json()["code"] == 16  # google.rpc.Code UNAUTHENTICATED
    assert ingest.published.calls == 0


async def test_a_request_that_is_not_otlp_is_400(start_ingest: Any) -> None:
    ingest = await start_ingest()
    not_json = await ingest.post(
        "/v1/traces", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    not_otlp = await ingest.post("/v1/traces", json={"resourceSpans": {"a": 1}})
    assert (not_json.status_code, not_otlp.status_code) == (400, 400)
    assert [d["reason"] for d in ingest.published.dead_letters] == [
        "malformed_json",
        "not_an_object",
    ]


async def test_an_empty_export_is_a_success(start_ingest: Any) -> None:
    ingest = await start_ingest()
    response = await ingest.post("/v1/traces", json={})
    assert (response.status_code, response.json()) == (200, {})
    assert ingest.published.calls == 0


async def test_other_media_types_are_415(start_ingest: Any) -> None:
    ingest = await start_ingest()
    response = await ingest.post("/v1/traces", content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


async def test_protobuf_export_requests(start_ingest: Any) -> None:
    document = export_request(CHAT_ANTHROPIC, CHAT_OPENAI, HTTP_CALL)
    # ParseDict reads ids as base64 (the generic mapping); OTLP/JSON writes hex.
    for s in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId"):
            s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
    message = ParseDict(document, ExportTraceServiceRequest())
    ingest = await start_ingest()
    response = await ingest.post(
        "/v1/traces",
        content=message.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        params={"tenant_id": "acme"},
    )

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 0
    ids = sorted(e["request_id"] for e in ingest.published.events)
    assert ids == ["5b8efff798038103d269b633813fc60c-eee19b7ec3c1b175", "msg_otlp_1"]


async def test_the_opentelemetry_otlp_http_exporter_delivers_genai_spans(
    start_ingest: Any, key_store: IngestKeyStore
) -> None:
    _, token = key_store.create("acme", team_id="research")
    ingest = await start_ingest(key_store=key_store)
    exporter = OTLPSpanExporter(
        endpoint=ingest.url + "/v1/traces",
        headers={"Authorization": f"Bearer {token.get_secret_value()}"},
        compression=Compression.Gzip,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "agent"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    def trace() -> None:
        with (
            tracer.start_as_current_span("GET /search"),
            tracer.start_as_current_span("chat gpt-4o-mini") as call,
        ):
            call.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.id": "chatcmpl-otlp-sdk",
                    "gen_ai.usage.input_tokens": 1200,
                    "gen_ai.usage.output_tokens": 80,
                }
            )
        provider.shutdown()

    # The exporter is synchronous; the server runs on this test's event loop.
    await asyncio.to_thread(trace)

    [event] = ingest.published.events
    assert event["request_id"] == "chatcmpl-otlp-sdk"
    assert (event["tenant_id"], event["team_id"], event["input_tokens"]) == (
        "acme",
        "research",
        1200,
    )
