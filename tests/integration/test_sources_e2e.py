"""Every source reaches the ledger through the real worker: a Kafka client this project
did not write (kafka-python), HTTP ingest with scoped keys, the SDK, and OpenTelemetry
(the real opentelemetry-sdk exporting through our exporter, and OTLP/HTTP JSON)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers.stack import RunningStack, spendstream
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def event(
    request_id: str, tenant: str = "acme", team: str = "search", **extra: Any
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "timestamp": NOW.isoformat(),
        "tenant_id": tenant,
        "team_id": team,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        **extra,
    }


GPT4O_MINI_1000_100 = (Decimal(1000) * Decimal("0.15") + Decimal(100) * Decimal("0.60")) / 10**6


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, str]]:
    data_dir = tmp_path_factory.mktemp("sources") / "data"
    data_dir.mkdir()
    created = spendstream(
        "keys", "create", "--tenant", "acme", "--team", "search", "--data-dir", str(data_dir)
    )
    assert created.returncode == 0, created.stderr.decode()
    key = created.stdout.decode().strip().splitlines()[-1]
    running = RunningStack(data_dir, {"SPENDSTREAM_INGEST_KEYS_REQUIRED": "true"})
    try:
        yield running, key
    finally:
        running.stop()


def ledger_ids(running: RunningStack, prefix: str) -> dict[str, Decimal]:
    rows = running.query(
        "SELECT request_id, cost_usd FROM usage_ledger FINAL "
        f"WHERE startsWith(request_id, '{prefix}')"
    )
    return {row[0]: row[1] for row in rows}


def test_kafka_python_producer_reaches_the_ledger(stack: tuple[RunningStack, str]) -> None:
    from kafka import KafkaProducer

    running, _ = stack
    producer = KafkaProducer(bootstrap_servers=running.bootstrap, api_version=(2, 5, 0))
    for i in range(5):
        producer.send("spendstream.usage", orjson.dumps(event(f"kp-{i}")), key=f"kp-{i}".encode())
    producer.flush()
    producer.close()
    ids = wait_for(lambda: (found := ledger_ids(running, "kp-")) and len(found) == 5 and found)
    assert set(ids.values()) == {GPT4O_MINI_1000_100}


def test_http_ingest_with_keys(stack: tuple[RunningStack, str]) -> None:
    running, key = stack
    url = f"{running.url}/v1/events"
    body = orjson.dumps([event("http-1"), event("http-2"), event("http-forged", team="finance")])
    assert httpx.post(url, content=body).status_code == 401
    assert (
        httpx.post(url, content=body, headers={"Authorization": "Bearer ssk_bad_x"}).status_code
        == 401
    )
    response = httpx.post(url, content=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    assert answer["errors"][0]["reason"] == "ownership_mismatch"
    # No tenant or team: stamped from the key.
    bare = event("http-3")
    del bare["tenant_id"], bare["team_id"]
    ndjson = orjson.dumps(bare) + b"\n"
    response = httpx.post(
        url,
        content=ndjson,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 202 and response.json()["accepted"] == 1
    wait_for(lambda: len(ledger_ids(running, "http-")) == 3)
    rows = running.query(
        "SELECT request_id, tenant_id, team_id FROM usage_ledger FINAL "
        "WHERE startsWith(request_id, 'http-') ORDER BY request_id"
    )
    assert rows == [
        ("http-1", "acme", "search"),
        ("http-2", "acme", "search"),
        ("http-3", "acme", "search"),
    ]
    dead = wait_for(
        lambda: running.query(
            "SELECT reason, topic FROM dead_letters FINAL WHERE request_id = 'http-forged'"
        )
    )
    assert dead == [("ownership_mismatch", "http")]


def test_sdk_http_producer(stack: tuple[RunningStack, str]) -> None:
    from streams.sdk import SpendstreamProducer

    running, key = stack
    producer = SpendstreamProducer.http(running.url, api_key=key)
    for i in range(3):
        assert producer.record(event(f"sdk-{i}"))
    producer.close(timeout=10)
    wait_for(lambda: len(ledger_ids(running, "sdk-")) == 3)


def test_opentelemetry_sdk_spans_through_our_exporter(stack: tuple[RunningStack, str]) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from streams.sdk import SpendstreamProducer
    from streams.sdk.otel import SpendstreamSpanExporter

    running, key = stack
    producer = SpendstreamProducer.http(running.url, api_key=key)
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(SpendstreamSpanExporter(producer, tenant_id="acme", team_id="search"))
    )
    tracer = provider.get_tracer("test")
    for i in range(2):
        with tracer.start_as_current_span("chat gpt-4o-mini") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            span.set_attribute("gen_ai.response.id", f"otel-{i}")
            span.set_attribute("gen_ai.usage.input_tokens", 1000)
            span.set_attribute("gen_ai.usage.output_tokens", 100)
    with tracer.start_as_current_span("db query"):
        pass  # not a GenAI span: no event
    provider.shutdown()
    producer.close(timeout=10)
    ids = wait_for(lambda: (found := ledger_ids(running, "otel-")) and len(found) == 2 and found)
    assert set(ids.values()) == {GPT4O_MINI_1000_100}


def test_otlp_http_json_receiver(stack: tuple[RunningStack, str]) -> None:
    running, key = stack

    def attr(k: str, v: Any) -> dict[str, Any]:
        value = {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}
        return {"key": k, "value": value}

    spans = [
        {
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": f"eee19b7ec3c1b17{i}",
            "name": "chat gpt-4o-mini",
            "startTimeUnixNano": str(int(NOW.timestamp() * 1e9)),
            "endTimeUnixNano": str(int(NOW.timestamp() * 1e9) + 5_000_000),
            "attributes": [
                attr("gen_ai.operation.name", "chat"),
                attr("gen_ai.system", "openai"),
                attr("gen_ai.request.model", "gpt-4o-mini"),
                attr("gen_ai.response.id", f"otlp-{i}"),
                attr("gen_ai.usage.input_tokens", 1000),
                attr("gen_ai.usage.output_tokens", 100),
            ],
        }
        for i in range(2)
    ]
    body = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]}
    response = httpx.post(
        f"{running.url}/v1/traces",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    ids = wait_for(lambda: (found := ledger_ids(running, "otlp-")) and len(found) == 2 and found)
    assert set(ids.values()) == {GPT4O_MINI_1000_100}


def test_spend_limits_endpoint(stack: tuple[RunningStack, str]) -> None:
    running, _ = stack
    wait_for(lambda: ledger_ids(running, "kp-"))
    answer = wait_for(
        lambda: (
            (body := httpx.get(f"{running.url}/v1/limits/acme").json())
            and Decimal(body.get("month_to_date_usd", "0")) > 0  # 503 while recovering
            and body
        )
    )
    assert answer["status"] == "ok" and answer["tenant_id"] == "acme"


def test_query_goes_through_the_running_worker(stack: tuple[RunningStack, str]) -> None:
    running, _ = stack
    wait_for(lambda: ledger_ids(running, "kp-"))
    result = spendstream(
        "query",
        "SELECT count() AS n FROM usage_ledger",
        "--format",
        "json",
        "--data-dir",
        str(running.settings.data_dir),
    )
    assert result.returncode == 0, result.stderr.decode()
    assert int(orjson.loads(result.stdout)[0]["n"]) >= 5
    refused = spendstream(
        "query",
        "INSERT INTO usage_ledger (request_id) VALUES ('x')",
        "--data-dir",
        str(running.settings.data_dir),
    )
    assert refused.returncode != 0
    # The refusal did not poison the worker's writer: ingestion continues.
    httpx.post(f"{running.url}/v1/events")  # noise: 401, nothing published
    _ = os.environ  # keep the import used across Python versions


def test_metrics_endpoint(stack: tuple[RunningStack, str]) -> None:
    running, _ = stack
    wait_for(lambda: ledger_ids(running, "kp-"))
    response = httpx.get(f"{running.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    metrics = {
        line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line and not line.startswith("#")
    }
    assert metrics["spendstream_events_in_total"] >= 5
    assert metrics["spendstream_events_ledgered_total"] >= 5
    assert metrics["spendstream_sink_batch_seconds_count"] >= 1
    assert 'spendstream_dead_letters_total{reason="ownership_mismatch"}' in metrics
    assert metrics['spendstream_cardinality_overflowed_total{dimension="workflow"}'] == 0
    # The ingest consumer's lag per usage partition (aiokafka, not Faust's monitor).
    assert any(
        name.startswith("spendstream_consumer_lag{") and "spendstream.usage" in name
        for name in metrics
    )


def test_reports_read_through_the_running_worker(stack: tuple[RunningStack, str]) -> None:
    running, _ = stack
    wait_for(lambda: ledger_ids(running, "kp-"))
    result = spendstream(
        "report",
        "chargeback",
        "--month",
        f"{NOW:%Y-%m}",
        "--by",
        "tenant",
        "--format",
        "csv",
        "--data-dir",
        str(running.settings.data_dir),
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "acme" in result.stdout.decode()
