"""The producer SDK's HttpTransport posting to the real ingest server: the
status codes and answer body the SDK relies on, end to end."""

from __future__ import annotations

import time
from typing import Any

import pytest

from streams.http_ingest.keys import IngestKeyStore
from streams.sdk import AsyncSpendstreamProducer

pytestmark = pytest.mark.timeout(30)


async def test_a_producer_delivers_gzip_batches_and_counts_rejections(
    start_ingest: Any, key_store: IngestKeyStore, usage_event: Any
) -> None:
    _, token = key_store.create("acme", team_id="search")
    ingest = await start_ingest(key_store=key_store)
    async with AsyncSpendstreamProducer.http(
        ingest.url, api_key=token, gzip_body=True, batch_size=10, linger_s=0.02
    ) as producer:
        for i in range(24):
            producer.record(usage_event(f"sdk-{i}", team_id=None))
        producer.record(usage_event("sdk-forged", team_id="payments"))
        assert await producer.flush(timeout=10)

    assert (producer.stats.sent, producer.stats.rejected, producer.stats.failed) == (24, 1, 0)
    assert sorted(e["request_id"] for e in ingest.published.events) == sorted(
        f"sdk-{i}" for i in range(24)
    )
    assert {e["team_id"] for e in ingest.published.events} == {"search"}
    assert [d["reason"] for d in ingest.published.dead_letters] == ["ownership_mismatch"]


async def test_a_413_makes_the_producer_split_its_batch(
    start_ingest: Any, usage_event: Any
) -> None:
    ingest = await start_ingest(max_events_per_request=4)
    async with AsyncSpendstreamProducer.http(ingest.url, batch_size=12, linger_s=0.02) as producer:
        for i in range(12):
            producer.record(usage_event(f"split-{i}"))
        assert await producer.flush(timeout=10)

    assert (producer.stats.sent, producer.stats.failed) == (12, 0)
    assert len(ingest.published.events) == 12
    assert ingest.published.calls == 4  # 12 → 6 + 6 → 3 + 3 + 3 + 3


async def test_a_429_is_retried_after_retry_after(
    start_ingest: Any, key_store: IngestKeyStore, usage_event: Any
) -> None:
    _, token = key_store.create("acme")
    ingest = await start_ingest(key_store=key_store, rate_limit_per_key=(1.0, 1))
    async with AsyncSpendstreamProducer.http(
        ingest.url, api_key=token, batch_size=1, linger_s=0.0
    ) as producer:
        started = time.monotonic()
        producer.record(usage_event("rl-1"))
        producer.record(usage_event("rl-2"))
        assert await producer.flush(timeout=10)
        elapsed = time.monotonic() - started

    assert (producer.stats.sent, producer.stats.retries, producer.stats.failed) == (2, 1, 0)
    assert elapsed >= 1.0  # Retry-After is whole seconds
    assert [e["request_id"] for e in ingest.published.events] == ["rl-1", "rl-2"]


async def test_a_revoked_key_is_final_for_the_producer(
    start_ingest: Any, key_store: IngestKeyStore, usage_event: Any
) -> None:
    key, token = key_store.create("acme")
    key_store.revoke(key.key_id)
    ingest = await start_ingest(key_store=key_store)
    errors: list[BaseException] = []
    async with AsyncSpendstreamProducer.http(
        ingest.url, api_key=token, linger_s=0.02, on_error=lambda exc, n: errors.append(exc)
    ) as producer:
        producer.record(usage_event("rv-1"))
        assert await producer.flush(timeout=10)

    assert (producer.stats.failed, producer.stats.retries) == (1, 0)
    assert "401" in str(errors[0])
    assert ingest.published.calls == 0
