"""`BatchedTable` on a real Faust table and the real embedded broker (tansu): writes go
to the table's store at once and to its changelog only on `flush`, one record per
changed key (its last value; a deletion as a tombstone) in the partition asked for,
encoded as Faust's own recovery decodes them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.serializers import codecs

from streams.embedded.broker import EmbeddedBroker
from streams.faust_ext.batched_table import BatchedTable
from streams.kafka.admin import TopicSpec, ensure_topics

pytestmark = pytest.mark.integration

PARTITIONS = 4
BATCH_BYTES = 16 * 1024  # small: a flush of a few hundred records takes several batches


@pytest.fixture
async def table(broker: EmbeddedBroker) -> AsyncIterator[tuple[faust.App, BatchedTable]]:
    app = faust.App(
        f"batched-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{broker.bootstrap}",
        store="memory://",
        topic_disable_leader=True,
        producer_max_batch_size=BATCH_BYTES,
    )
    spend = app.Table("spend", default=None, partitions=PARTITIONS)
    changelog = spend.changelog_topic.get_topic_name()
    await ensure_topics(broker.bootstrap, [TopicSpec(changelog, PARTITIONS)])
    await app.producer.start()
    try:
        yield app, BatchedTable(spend)
    finally:
        await app.producer.stop()


async def changelog_records(
    bootstrap: str, topic: str
) -> dict[int, list[tuple[object, object | None]]]:
    """partition → its (key, value) records, decoded with Faust's JSON codec."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: dict[int, list[tuple[object, object | None]]] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while batches := await consumer.getmany(timeout_ms=1000):
            for tp, records in batches.items():
                found.setdefault(tp.partition, []).extend(
                    (
                        codecs.loads("json", r.key),
                        None if r.value is None else codecs.loads("json", r.value),
                    )
                    for r in records
                )
    finally:
        await consumer.stop()
    return found


async def test_flush_sends_the_last_value_of_each_changed_key_to_its_partition(
    broker: EmbeddedBroker, table: tuple[faust.App, BatchedTable]
) -> None:
    app, batched = table
    topic = batched.table.changelog_topic.get_topic_name()
    batched.writing_to(2)
    batched["acme|2026-12-06T10"] = {"cost": "1.50"}
    batched["acme|2026-12-06T10"] = {"cost": "2.75"}  # the same key again
    batched["old|2026-11-01T00"] = {"cost": "9"}
    del batched["old|2026-11-01T00"]
    batched.writing_to(0)["globex|2026-12-06T10"] = {"cost": "0.25"}

    # The store has the writes at once; the changelog nothing until the flush.
    assert dict(batched) == {
        "acme|2026-12-06T10": {"cost": "2.75"},
        "globex|2026-12-06T10": {"cost": "0.25"},
    }
    assert await changelog_records(broker.bootstrap, topic) == {}

    # One flush: each record to the partition it was written for.
    await batched.flush(app)
    assert batched.pending == {}
    assert await changelog_records(broker.bootstrap, topic) == {
        0: [("globex|2026-12-06T10", {"cost": "0.25"})],
        2: [
            ("acme|2026-12-06T10", {"cost": "2.75"}),
            ("old|2026-11-01T00", None),  # a tombstone: recovery deletes the key
        ],
    }

    await batched.flush(app)  # nothing changed since: nothing sent
    batched.writing_to(2)["acme|2026-12-06T10"] = {"cost": "3"}
    await batched.flush(app)
    assert await changelog_records(broker.bootstrap, topic) == {
        0: [("globex|2026-12-06T10", {"cost": "0.25"})],
        2: [
            ("acme|2026-12-06T10", {"cost": "2.75"}),
            ("old|2026-11-01T00", None),
            ("acme|2026-12-06T10", {"cost": "3"}),
        ],
    }


async def test_a_failed_flush_keeps_its_records_for_the_next_one(
    broker: EmbeddedBroker, table: tuple[faust.App, BatchedTable]
) -> None:
    app, batched = table
    topic = batched.table.changelog_topic.get_topic_name()
    batched.writing_to(1)["a"] = 1
    # aiokafka refuses a record for a partition the topic does not have.
    batched.writing_to(PARTITIONS + 5)["b"] = 2
    with pytest.raises(AssertionError, match="Unrecognized partition"):
        await batched.flush(app)
    batched["b"] = 3  # written since: the newer value wins
    # The partition that failed keeps its records; the one delivered is not sent again.
    assert batched.pending == {PARTITIONS + 5: {"b": 3}}
    assert await changelog_records(broker.bootstrap, topic) == {1: [("a", 1)]}
    batched.pending[1] = batched.pending.pop(PARTITIONS + 5)  # (that one never exists)
    await batched.flush(app)
    assert await changelog_records(broker.bootstrap, topic) == {1: [("a", 1), ("b", 3)]}


async def test_a_flush_larger_than_a_batch_sends_every_record_in_order(
    broker: EmbeddedBroker, table: tuple[faust.App, BatchedTable]
) -> None:
    """Records go out as record batches of the producer Faust started (its batch size
    here 16 KiB): 2,000 records take several, and a value larger than a batch goes
    alone; every record arrives once, in the order written."""
    app, batched = table
    producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
    assert isinstance(producer, AIOKafkaProducer)  # the internal point the flush uses
    topic = batched.table.changelog_topic.get_topic_name()
    expected = []
    for index in range(2_000):
        value: object = {"cost": f"{index}.25", "seen": {"log|0": index}}
        if index == 1_000:
            value = {"cost": "1", "note": "x" * (2 * BATCH_BYTES)}
        batched.writing_to(3)[f"acme|run|wf|run-{index}"] = value
        expected.append((f"acme|run|wf|run-{index}", value))
    await batched.flush(app)
    assert await changelog_records(broker.bootstrap, topic) == {3: expected}
