"""The producers against the real embedded Kafka broker."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from streams.sdk import AsyncSpendstreamProducer, QueueFullError, SpendstreamProducer

pytestmark = pytest.mark.integration  # needs the embedded broker

PARTITIONS = 4  # what the `kafka` fixture creates topics with


def partition_of(request_id: str) -> int:
    return (murmur2(request_id.encode()) & 0x7FFFFFFF) % PARTITIONS


async def test_async_producer_publishes_batches_keyed_by_request_id(
    kafka: Any, topic: str, make_event: Any
) -> None:
    assert kafka.partitions == PARTITIONS
    await kafka.create_topic(topic)
    async with AsyncSpendstreamProducer.kafka(
        kafka.bootstrap, topic, max_events_per_message=10, linger_s=0.05
    ) as producer:
        for i in range(50):
            assert producer.record(make_event(f"req-{i}", prompt="secret prompt text"))
        assert producer.record(make_event("req-7"))  # a re-sent duplicate
        assert await producer.flush(timeout=10)
        assert producer.stats.sent == 51

    messages = await kafka.consume(topic, min_events=51)
    events = [(m, e) for m in messages for e in m.events]
    assert sorted(e["request_id"] for _, e in events) == sorted(
        [f"req-{i}" for i in range(50)] + ["req-7"]
    )
    for message in messages:
        assert 1 <= len(message.events) <= 10
        # Every event sits where its own request id hashes, whatever array it is in.
        assert {partition_of(e["request_id"]) for e in message.events} == {message.partition}
        assert message.key == message.events[0]["request_id"].encode()
    duplicate_partitions = {m.partition for m, e in events if e["request_id"] == "req-7"}
    assert duplicate_partitions == {partition_of("req-7")}
    assert all("prompt" not in e for _, e in events)
    assert events[0][1]["cached_tokens"] == 1000


async def test_messages_stay_under_the_byte_limit(kafka: Any, topic: str, make_event: Any) -> None:
    await kafka.create_topic(topic)
    producer = AsyncSpendstreamProducer.kafka(kafka.bootstrap, topic, linger_s=0.05)
    assert isinstance(producer.transport.max_message_bytes, int)
    producer.transport.max_message_bytes = 1000
    await producer.start()
    for i in range(40):
        producer.record(make_event(f"big-{i}", tags={"note": "x" * 100}))
    assert await producer.close(timeout=10)

    messages = await kafka.consume(topic, min_events=40)
    assert sum(len(m.events) for m in messages) == 40
    assert all(len(m.value) <= 1000 for m in messages)
    assert any(len(m.events) > 1 for m in messages)


def test_sync_producer_from_many_threads(kafka: Any, topic: str, make_event: Any) -> None:
    kafka.create_topic_sync(topic)
    producer = SpendstreamProducer.kafka(kafka.bootstrap, topic, batch_size=64, linger_s=0.05)

    def work(worker: int) -> None:
        for i in range(100):
            assert producer.record(make_event(f"w{worker}-{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert producer.flush(timeout=10)
    assert producer.close(timeout=5)
    assert producer.stats.sent == 400 and producer.stats.queued == 0

    messages = kafka.consume_sync(topic, min_events=400)
    ids = [e["request_id"] for m in messages for e in m.events]
    assert sorted(ids) == sorted(f"w{w}-{i}" for w in range(4) for i in range(100))


def test_record_neither_blocks_nor_raises_while_the_broker_is_down(
    unused_port: int, make_event: Any
) -> None:
    errors: list[tuple[BaseException, int]] = []
    producer = SpendstreamProducer.kafka(
        f"127.0.0.1:{unused_port}",
        linger_s=0.01,
        backoff_initial_s=0.05,
        on_error=lambda exc, n: errors.append((exc, n)),
    )
    started = time.perf_counter()
    results = [producer.record(make_event(f"down-{i}")) for i in range(1000)]
    elapsed = time.perf_counter() - started

    assert all(results)
    assert elapsed < 1.0  # validation + append only: ~1 ms per 10 events at worst
    assert producer.record({"request_id": "no-tenant"}) is False
    assert producer.record("not an event") is False  # type: ignore[arg-type]
    assert producer.flush(timeout=0.5) is False
    assert producer.close(timeout=1.0) is False

    stats = producer.stats
    assert (stats.recorded, stats.invalid, stats.failed, stats.sent) == (1000, 2, 1000, 0)
    assert sum(n for exc, n in errors if not isinstance(exc, ValueError | TypeError)) == 1000
    assert producer.record(make_event("after-close")) is False


def test_queue_full_drops_the_new_event_and_says_so(unused_port: int, make_event: Any) -> None:
    errors: list[BaseException] = []
    producer = SpendstreamProducer.kafka(
        f"127.0.0.1:{unused_port}", max_queue=5, on_error=lambda exc, n: errors.append(exc)
    )
    try:
        accepted = [producer.record(make_event(f"q-{i}")) for i in range(7)]
        assert accepted == [True] * 5 + [False] * 2
        assert producer.stats.dropped == 2
        assert sum(isinstance(exc, QueueFullError) for exc in errors) == 2
    finally:
        producer.close(timeout=0.2)


async def test_events_recorded_during_an_outage_arrive_when_the_broker_comes_back(
    spare_kafka: Any, topic: str, make_event: Any
) -> None:
    errors: list[BaseException] = []
    producer = AsyncSpendstreamProducer.kafka(
        spare_kafka.bootstrap,
        topic,
        linger_s=0.02,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        max_retries=50,
        on_error=lambda exc, n: errors.append(exc),
    )
    await producer.start()
    try:
        for i in range(20):
            assert producer.record(make_event(f"late-{i}"))
        await asyncio.sleep(0.3)
        assert producer.stats.retries >= 1 and producer.stats.sent == 0

        await asyncio.to_thread(spare_kafka.broker.start)
        await spare_kafka.create_topic(topic)
        assert await producer.flush(timeout=15)
        assert producer.stats.sent == 20 and producer.stats.failed == 0
        messages = await spare_kafka.consume(topic, min_events=20)
        assert sorted(e["request_id"] for m in messages for e in m.events) == sorted(
            f"late-{i}" for i in range(20)
        )
    finally:
        await producer.close(timeout=5)
    assert not errors
