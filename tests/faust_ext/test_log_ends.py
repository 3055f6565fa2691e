"""The log ends table recovery reads to (`fetched_log_ends`), against the real embedded
broker, in the two states where its ListOffsets answer is not the end its fetches
serve: short (the base offset of the last batch + 1) and long (records stored before
their topic existed on a new broker, which no fetch serves). Reliability finding 4:
the long case made Faust's recovery wait for ever after a broker restart."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streams.embedded.broker import EmbeddedBroker
from streams.faust_ext.app import fetched_log_ends

TOPIC = "log-ends-changelog"
PARTITION = TopicPartition(TOPIC, 0)


async def create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()


async def topic_names(bootstrap: str) -> list[str]:
    """Every topic the broker knows (a metadata request for all topics creates none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def listed_and_served(bootstrap: str) -> tuple[int, int | None, list[int]]:
    """ListOffsets(latest), then the high-water mark and the offsets of a fetch from 0.
    Assigning the partition asks metadata for the topic, which creates it if missing."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([PARTITION])
        listed = (await consumer.end_offsets([PARTITION]))[PARTITION]
        consumer.seek(PARTITION, 0)
        offsets: list[int] = []
        for _ in range(4):
            batches = await consumer.getmany(PARTITION, timeout_ms=250)
            offsets += [record.offset for record in batches.get(PARTITION, [])]
        return listed, consumer.highwater(PARTITION), offsets
    finally:
        await consumer.stop()


async def probed_end(bootstrap: str, listed: int) -> int | None:
    ends = await fetched_log_ends(bootstrap, {(TOPIC, 0): listed})
    return ends[(TOPIC, 0)]


async def produce_without_metadata(bootstrap: str, values: list[bytes]) -> None:
    """Each of `values` in a produce request of its own to partition 0, and no metadata
    request that names the topic first: what the worker's producer sends to a restarted
    broker with the metadata it had of the old one."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()  # asks metadata for no topic (creates none)
    try:
        for expected_offset, value in enumerate(values):
            builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1024 * 1024)
            builder.append(0, timestamp=None, key=None, value=value, headers=[])
            batch = bytes(builder.build())
            request = ProduceRequest(None, -1, 10_000, [(TOPIC, [(0, batch)])])
            response = await client.send(client.get_random_node(), request)
            ((_, ((_, error, offset, *_),)),) = response.topics
            assert (error, offset) == (0, expected_offset), response
    finally:
        await client.close()


async def write_across_a_restart(broker: EmbeddedBroker) -> list[str]:
    """One record into the first broker; the broker restarted at the same address (a
    new, empty log); then two records stored there before any request creates the
    topic. Returns the new broker's topics just after those writes."""
    await create_topic(broker.bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, b"old log", partition=0)
    finally:
        await producer.stop()
    broker.stop()
    broker.start()
    await produce_without_metadata(broker.bootstrap, [b"new log 0", b"new log 1"])
    return await topic_names(broker.bootstrap)


def test_a_new_broker_lists_records_written_before_their_topic_existed_but_serves_none() -> None:
    """The cause, forced: the topic is created by the first metadata request that names
    it, after its records were stored, and its high-water mark goes back to 0. This is
    the embedded broker's behaviour (tansu, memory storage) that the recovery meets."""
    with EmbeddedBroker() as broker:
        topics_after_the_writes = asyncio.run(write_across_a_restart(broker))
        listed, served, offsets = asyncio.run(listed_and_served(broker.bootstrap))
    assert TOPIC not in topics_after_the_writes, "the writes must precede the topic"
    assert listed == 2
    assert served == 0
    assert offsets == []


def test_recovery_reads_to_the_end_that_fetches_serve_not_a_longer_listed_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Faust's recovery waits for the record just below the end it is given: with the
    listed 2 it waited for ever; the probed end is 0, nothing to wait for. The warning
    is said once for the same unserved records, however often the probe runs (the
    spend agent's stall check probes every few seconds)."""
    with EmbeddedBroker() as broker, caplog.at_level(logging.DEBUG, "streams.faust_ext.app"):
        asyncio.run(write_across_a_restart(broker))
        listed, _, _ = asyncio.run(listed_and_served(broker.bootstrap))
        ends = [asyncio.run(probed_end(broker.bootstrap, listed)) for _ in range(3)]
    assert listed == 2
    assert ends == [0, 0, 0]
    said = [r.levelno for r in caplog.records if "do not serve" in r.getMessage()]
    assert said == [logging.WARNING, logging.DEBUG, logging.DEBUG]


async def write_two_batches(bootstrap: str, size: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for _ in range(2):
            batch = producer.create_batch()
            for index in range(size):
                batch.append(key=None, value=b"%d" % index, timestamp=None)
            await (await producer.send_batch(batch, TOPIC, partition=0))
    finally:
        await producer.stop()


def test_recovery_reads_past_a_short_listed_end_to_the_end_that_fetches_serve() -> None:
    """Two batches of 3 records: a log of 6 that ListOffsets lists as 4 (the last
    batch's base offset + 1); the probed end is 6."""
    with EmbeddedBroker() as broker:
        asyncio.run(create_topic(broker.bootstrap))
        asyncio.run(write_two_batches(broker.bootstrap, 3))
        listed, served, offsets = asyncio.run(listed_and_served(broker.bootstrap))
        end = asyncio.run(probed_end(broker.bootstrap, listed))
    assert (listed, served, offsets) == (4, 6, [0, 1, 2, 3, 4, 5])
    assert end == 6
