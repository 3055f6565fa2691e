"""Every source reaches the ledger through the real worker: a Kafka client this project
did not write (kafka-python), HTTP ingest with scoped keys, the SDK, and OpenTelemetry
(the real opentelemetry-sdk exporting through our exporter, and OTLP/HTTP JSON)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers.stack import RunningStack, analyst_headers, read_topic, spendstream
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


# Monthly budgets for /v1/limits: each tenant's events put it over, in warn (>= 80 %), or ok.
BUDGETS = {"lim-over": "0.001", "lim-warn": "0.001", "lim-ok": "1"}
LIMIT_EVENTS = {"lim-over": 5, "lim-warn": 4, "lim-ok": 1}


@dataclass
class Sources:
    running: RunningStack
    key: str
    recovering: list[httpx.Response]  # /v1/limits answers before the tables were recovered


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sources]:
    root = tmp_path_factory.mktemp("sources")
    data_dir = root / "data"
    data_dir.mkdir()
    created = spendstream(
        "keys", "create", "--tenant", "acme", "--team", "search", "--data-dir", str(data_dir)
    )
    assert created.returncode == 0, created.stderr.decode()
    key = created.stdout.decode().strip().splitlines()[-1]
    config = root / "spend.yaml"
    config.write_text(
        "tenants:\n"
        + "".join(f'  {t}:\n    monthly_budget_usd: "{b}"\n' for t, b in BUDGETS.items())
    )
    running = RunningStack(
        data_dir,
        {"SPENDSTREAM_INGEST_KEYS_REQUIRED": "true", "SPENDSTREAM_CONFIG_FILE": str(config)},
    )
    try:
        # The web server answers before the worker joined its group and recovered its
        # tables (seconds on this broker): /v1/limits says so until then.
        recovering: list[httpx.Response] = []

        def limits_ready() -> bool:
            response = httpx.get(
                f"{running.url}/v1/limits/acme",
                headers=analyst_headers(running.settings.data_dir),
                timeout=10,
            )
            if response.status_code != 200:
                recovering.append(response)
            return response.status_code == 200

        wait_for(limits_ready, timeout=120, interval=0.05)
        yield Sources(running, key, recovering)
    finally:
        running.stop()


@pytest.fixture
def stack(sources: Sources) -> tuple[RunningStack, str]:
    return sources.running, sources.key


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
    # Durable ack (the embedded default): the answer waits for the ledger write.
    response = httpx.post(url, content=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)
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


def test_opentelemetry_otlp_http_exporter_in_protobuf_reaches_the_ledger(
    stack: tuple[RunningStack, str],
) -> None:
    """The SDK's own OTLPSpanExporter, as an instrumented app configures it: its default
    encoding (protobuf) and compression, our /v1/traces, a ledger row per model call."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    running, key = stack
    exporter = OTLPSpanExporter(
        endpoint=f"{running.url}/v1/traces", headers={"Authorization": f"Bearer {key}"}
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for i in range(2):
        with (
            tracer.start_as_current_span("GET /answer"),
            tracer.start_as_current_span("chat gpt-4o-mini") as span,
        ):
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.id": f"otelproto-{i}",
                    "gen_ai.usage.input_tokens": 1000,
                    "gen_ai.usage.output_tokens": 100,
                }
            )
    provider.shutdown()
    ids = wait_for(
        lambda: (found := ledger_ids(running, "otelproto-")) and len(found) == 2 and found
    )
    assert set(ids.values()) == {GPT4O_MINI_1000_100}
    rows = running.query(
        "SELECT DISTINCT tenant_id, team_id FROM usage_ledger FINAL "
        "WHERE startsWith(request_id, 'otelproto-')"
    )
    assert rows == [("acme", "search")]  # stamped from the key


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


def test_a_bad_message_reaches_the_dlq_topic_with_its_reason(
    stack: tuple[RunningStack, str],
) -> None:
    """Bad input is published to spendstream.usage.dlq (and the dead_letters table),
    with its reason, its place in the usage topic and its payload."""
    from kafka import KafkaProducer

    running, _ = stack
    producer = KafkaProducer(bootstrap_servers=running.bootstrap, api_version=(2, 5, 0))
    producer.send("spendstream.usage", b'{"request_id": "dlq-malformed", "tenant_id": ')
    producer.send("spendstream.usage", orjson.dumps(event("dlq-negative", input_tokens=-5)))
    producer.flush()
    producer.close()

    def letters() -> dict[str, dict[str, Any]]:
        values = asyncio.run(read_topic(running.bootstrap, "spendstream.usage.dlq"))
        found = [orjson.loads(v) for v in values]
        return {
            letter["raw_payload"][:40]: letter
            for letter in found
            if "dlq-malformed" in letter["raw_payload"] or "dlq-negative" in letter["raw_payload"]
        }

    found = wait_for(lambda: (seen := letters()) and len(seen) == 2 and seen)
    by_reason = {letter["reason"]: letter for letter in found.values()}
    assert set(by_reason) == {"malformed_json", "token_count_out_of_range"}
    malformed = by_reason["malformed_json"]
    assert malformed["topic"] == "spendstream.usage" and malformed["offset"] >= 0
    assert malformed["raw_payload"] == '{"request_id": "dlq-malformed", "tenant_id": '
    assert by_reason["token_count_out_of_range"]["request_id"] == "dlq-negative"
    rows = wait_for(
        lambda: running.query(
            "SELECT reason FROM dead_letters FINAL WHERE raw_payload LIKE '%dlq-%' ORDER BY reason"
        )
    )
    assert rows == [("malformed_json",), ("token_count_out_of_range",)]


def test_http_ingest_publishes_a_large_request_in_messages_of_500(
    stack: tuple[RunningStack, str],
) -> None:
    running, key = stack
    events = [event(f"chunked-{i:04d}") for i in range(1201)]
    response = httpx.post(
        f"{running.url}/v1/events",
        content=orjson.dumps(events),
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 202 and response.json()["accepted"] == 1201
    values = asyncio.run(read_topic(running.bootstrap, "spendstream.usage"))
    messages = [orjson.loads(v) for v in values if b'"chunked-' in v]
    assert sorted(len(m) for m in messages) == [201, 500, 500]
    assert sorted(e["request_id"] for m in messages for e in m) == [e["request_id"] for e in events]
    wait_for(lambda: len(ledger_ids(running, "chunked-")) == 1201)


def test_spend_limits_endpoint(stack: tuple[RunningStack, str]) -> None:
    """Month-to-date spend is the ledger's, to the Decimal; no budget: no remaining."""
    running, _ = stack
    wait_for(lambda: ledger_ids(running, "kp-"))

    def agreed() -> dict[str, Any] | None:
        [(ledgered,)] = running.query(
            "SELECT sum(cost_usd) FROM usage_ledger FINAL WHERE tenant_id = 'acme' "
            "AND toStartOfMonth(timestamp) = toStartOfMonth(now64(3, 'UTC'))"
        )
        body = dict(
            httpx.get(
                f"{running.url}/v1/limits/acme", headers=analyst_headers(running.settings.data_dir)
            ).json()
        )
        in_stream = Decimal(body.get("month_to_date_usd", "NaN"))  # absent while recovering
        return body if in_stream == ledgered > 0 else None

    answer = wait_for(agreed)
    assert answer["status"] == "ok" and answer["tenant_id"] == "acme"
    assert answer["month"] == f"{datetime.now(UTC):%Y-%m}"
    assert answer["monthly_budget_usd"] is None and answer["remaining_usd"] is None


def test_spend_limits_warn_over_and_remaining(stack: tuple[RunningStack, str]) -> None:
    from kafka import KafkaProducer

    running, _ = stack
    producer = KafkaProducer(bootstrap_servers=running.bootstrap, api_version=(2, 5, 0))
    for tenant, count in LIMIT_EVENTS.items():
        for i in range(count):
            rid = f"{tenant}-{i}"
            producer.send("spendstream.usage", orjson.dumps(event(rid, tenant)), key=rid.encode())
    producer.flush()
    producer.close()

    def limits(tenant: str) -> dict[str, Any] | None:
        body = dict(
            httpx.get(
                f"{running.url}/v1/limits/{tenant}",
                headers=analyst_headers(running.settings.data_dir),
            ).json()
        )
        spent = LIMIT_EVENTS[tenant] * GPT4O_MINI_1000_100
        ready = Decimal(body.get("month_to_date_usd", "NaN")) == spent
        return body if ready else None

    answers = {tenant: wait_for(lambda t=tenant: limits(t)) for tenant in LIMIT_EVENTS}
    summary = {
        t: (a["status"], Decimal(a["monthly_budget_usd"]), Decimal(a["remaining_usd"]))
        for t, a in answers.items()
    }
    assert summary == {
        "lim-over": ("over", Decimal("0.001"), Decimal(0)),  # 0.00105 spent
        "lim-warn": ("warn", Decimal("0.001"), Decimal("0.00016")),  # 84 %
        "lim-ok": ("ok", Decimal(1), Decimal(1) - GPT4O_MINI_1000_100),
    }


def test_spend_limits_answer_503_with_retry_after_while_recovering(sources: Sources) -> None:
    """Seen at the worker's start: a partial total is never served as spend."""
    assert sources.recovering, "no answer before the tables were recovered"
    for response in sources.recovering:
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json()["status"] == "recovering"
        assert "month_to_date_usd" not in response.json()


def test_query_goes_through_the_running_worker(stack: tuple[RunningStack, str]) -> None:
    running, key = stack
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
    # The refusal did not poison the worker's writer: ingestion continues, and a request
    # without a key is still refused.
    url = f"{running.url}/v1/events"
    assert httpx.post(url, content=orjson.dumps(event("after-refusal-x"))).status_code == 401
    response = httpx.post(
        url,
        content=orjson.dumps(event("after-refusal-1")),
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 202
    wait_for(lambda: ledger_ids(running, "after-refusal-"))
    assert set(ledger_ids(running, "after-refusal-")) == {"after-refusal-1"}


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
