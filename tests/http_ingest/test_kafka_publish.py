"""HTTP ingest into the real embedded Kafka broker (tansu): what the handler
publishes is what the worker's decoder accepts from the usage topic, and its
rejections land on the DLQ topic."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.embedded.broker import EmbeddedBroker
from streams.http_ingest.keys import IngestKeyStore
from streams.ingest.decoding import decode_message
from streams.kafka.admin import TopicSpec, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def _read_all(bootstrap: str, topic: str, partitions: int, want: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + 10
        while len(values) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                values.extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return values


async def test_http_events_reach_the_usage_topic_and_rejections_the_dlq(
    broker: EmbeddedBroker, start_ingest: Any, key_store: IngestKeyStore, usage_event: Any
) -> None:
    usage, dlq = f"usage-{uuid.uuid4().hex[:8]}", f"dlq-{uuid.uuid4().hex[:8]}"
    await ensure_topics(broker.bootstrap, [TopicSpec(usage, 2), TopicSpec(dlq, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()

    async def publish(events: list[dict[str, Any]], dead_letters: list[dict[str, Any]]) -> None:
        # What the lead's callable does: JSON arrays to the usage topic, one
        # dead letter per message to the DLQ.
        if events:
            await producer.send_and_wait(usage, orjson.dumps(events))
        for letter in dead_letters:
            await producer.send_and_wait(dlq, orjson.dumps(letter))

    try:
        _, token = key_store.create("acme", team_id="search")
        ingest = await start_ingest(key_store=key_store, publish=publish)
        response = await ingest.post(
            json=[
                usage_event("kafka-1"),
                usage_event("kafka-2", team_id="payments"),
                usage_event("kafka-3"),
            ],
            key=token.get_secret_value(),
        )
        assert response.json()["accepted"] == 2
    finally:
        await producer.stop()

    [message] = await _read_all(broker.bootstrap, usage, 2, want=1)
    decoded = decode_message(message)
    assert decoded.rejections == []
    assert [(e.request_id, e.tenant_id, e.team_id) for e in decoded.events] == [
        ("kafka-1", "acme", "search"),
        ("kafka-3", "acme", "search"),
    ]
    [letter] = await _read_all(broker.bootstrap, dlq, 1, want=1)
    assert orjson.loads(letter)["reason"] == "ownership_mismatch"
