"""The HTTP transport against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from streams.sdk import AsyncSpendstreamProducer, HttpTransport, SpendstreamProducer, TransportError


def test_posts_json_arrays_with_the_ingest_key(ingest_server: Any, make_event: Any) -> None:
    producer = SpendstreamProducer.http(
        ingest_server.url, api_key="sk_ingest_secret", batch_size=10, linger_s=0.02
    )
    for i in range(25):
        assert producer.record(make_event(f"h-{i}", completion="secret completion"))
    assert producer.close(timeout=5)

    assert len(ingest_server.requests) == 3  # 10 + 10 + 5
    for request in ingest_server.requests:
        assert request.path == "/v1/events"
        assert request.headers["authorization"] == "Bearer sk_ingest_secret"
        assert request.headers["content-type"] == "application/json"
        assert isinstance(request.events, list)
    ids = [e["request_id"] for e in ingest_server.delivered]
    assert sorted(ids) == sorted(f"h-{i}" for i in range(25))
    assert all("completion" not in e for e in ingest_server.delivered)
    assert producer.stats.sent == 25


def test_the_key_is_a_secret_and_stays_out_of_reprs() -> None:
    transport = HttpTransport("http://127.0.0.1:1", "sk_ingest_secret")
    assert isinstance(transport.api_key, SecretStr)
    assert "sk_ingest_secret" not in repr(transport) + str(vars(transport))


def test_gzip_bodies(ingest_server: Any, make_event: Any) -> None:
    producer = SpendstreamProducer.http(ingest_server.url, gzip_body=True, linger_s=0.02)
    for i in range(5):
        producer.record(make_event(f"gz-{i}"))
    assert producer.close(timeout=5)
    assert ingest_server.requests[0].headers["content-encoding"] == "gzip"
    assert len(ingest_server.delivered) == 5


def test_unavailable_and_rate_limited_answers_are_retried(
    ingest_server: Any, make_event: Any
) -> None:
    ingest_server.answer(503)
    ingest_server.answer(429, {"Retry-After": "0"})
    producer = SpendstreamProducer.http(
        ingest_server.url, linger_s=0.02, backoff_initial_s=0.01, backoff_max_s=0.05
    )
    for i in range(4):
        producer.record(make_event(f"retry-{i}"))
    assert producer.close(timeout=5)

    statuses = [r.headers["x-answered"] for r in ingest_server.requests]
    assert statuses == ["503", "429", "2xx"]
    assert len(ingest_server.delivered) == 4
    stats = producer.stats
    assert (stats.sent, stats.retries, stats.failed) == (4, 2, 0)


def test_a_refused_key_is_final_and_reported(ingest_server: Any, make_event: Any) -> None:
    ingest_server.answer(401, error="invalid ingest key")
    errors: list[tuple[BaseException, int]] = []
    producer = SpendstreamProducer.http(
        ingest_server.url,
        api_key="revoked",
        linger_s=0.02,
        on_error=lambda exc, n: errors.append((exc, n)),
    )
    for i in range(3):
        producer.record(make_event(f"k-{i}"))
    producer.flush(timeout=5)
    producer.close(timeout=1)

    assert len(ingest_server.requests) == 1
    assert producer.stats.failed == 3 and producer.stats.retries == 0
    [(exc, count)] = errors
    assert isinstance(exc, TransportError) and not exc.retriable and count == 3
    assert "401" in str(exc)


def test_too_large_batches_are_split(ingest_server: Any, make_event: Any) -> None:
    ingest_server.answer(413)
    producer = SpendstreamProducer.http(ingest_server.url, linger_s=0.05)
    for i in range(8):
        producer.record(make_event(f"big-{i}"))
    assert producer.close(timeout=5)

    sizes = [(r.headers["x-answered"], len(r.events)) for r in ingest_server.requests]
    assert sizes == [("413", 8), ("2xx", 4), ("2xx", 4)]
    assert producer.stats.sent == 8


def test_rejections_in_the_answer_are_counted_not_retried(
    ingest_server: Any, make_event: Any
) -> None:
    ingest_server.answer(
        202, accepted=2, rejected=1, errors=[{"index": 2, "reason": "tenant_mismatch"}]
    )
    producer = SpendstreamProducer.http(ingest_server.url, linger_s=0.02)
    for i in range(3):
        producer.record(make_event(f"rj-{i}"))
    assert producer.close(timeout=5)
    assert len(ingest_server.requests) == 1
    assert (producer.stats.sent, producer.stats.rejected) == (2, 1)


async def test_async_producer_over_http(ingest_server: Any, make_event: Any) -> None:
    async with AsyncSpendstreamProducer.http(
        ingest_server.url, api_key=SecretStr("sk_async"), linger_s=0.02
    ) as producer:
        for i in range(3):
            producer.record(make_event(f"a-{i}"))
        assert await producer.flush(timeout=5)
    assert ingest_server.requests[0].headers["authorization"] == "Bearer sk_async"
    assert len(ingest_server.delivered) == 3


def test_connection_refused_is_retried_then_given_up(unused_port: int, make_event: Any) -> None:
    producer = SpendstreamProducer.http(
        f"http://127.0.0.1:{unused_port}",
        linger_s=0.01,
        max_retries=2,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
    )
    producer.record(make_event("cr-1"))
    assert producer.flush(timeout=5)  # given up counts as done
    assert producer.close(timeout=1)
    assert (producer.stats.retries, producer.stats.failed) == (2, 1)
