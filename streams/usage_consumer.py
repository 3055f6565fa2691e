"""`UsageConsumer`: the ingest side of the worker, a service of the Faust app.

It reads the usage topic in large batches with aiokafka's `getmany` and hands each to
the `IngestPipeline`. Faust's own stream machinery costs about 180 µs per message
(ARCHITECTURE.md), more than the whole pipeline's work per event: an agent cannot
reach the throughput targets, so the usage topic is consumed here directly, in its own
consumer group. The spend agent and its tables stay on Faust.

Commit after durable write, with one batch of overlap: while batch N is published
and written to ClickHouse (a thread), batch N+1 is decoded and priced. N's offsets are
committed once its write returned, and never before. Ids of N are not yet in the
filter while N+1 is prepared, so they are excluded explicitly (`in_flight`).

On a rebalance, the revoked-partitions callback waits for the batch in flight and
commits it, so the next owner starts after it. A prepared batch whose partitions were
revoked meanwhile is prepared again from the partitions still held: its ids were
never marked, so the new owner is free to ledger them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from streams.ingest import IngestPipeline, PreparedBatch, UsageMessage
from streams.settings import Settings
from streams.topics import INGEST_GROUP

log = logging.getLogger(__name__)

RETRY_MAX_SECONDS = 10.0


@dataclass
class InFlight:
    batch: PreparedBatch
    offsets: dict[TopicPartition, int]  # next offset to consume, per partition
    task: asyncio.Task[None]


class UsageConsumer(Service):
    def __init__(
        self,
        settings: Settings,
        open_pipeline: Callable[[], Awaitable[IngestPipeline]],
        before_batch: Callable[[], Awaitable[None]],
        on_assigned: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.open_pipeline = open_pipeline
        self.before_batch = before_batch
        self.on_assigned = on_assigned
        self.consumer: AIOKafkaConsumer | None = None
        self.in_flight: InFlight | None = None
        self.failures = 0
        self.lag: dict[tuple[str, int], int] = {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment()) if self.consumer is not None else set()

    async def on_start(self) -> None:
        session_ms = int(self.settings.session_timeout_seconds * 1000)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=INGEST_GROUP,
            client_id=INGEST_GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(500, session_ms // 6),
            rebalance_timeout_ms=max(10_000, session_ms * 2),
            max_poll_records=self.settings.batch_max_events,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        self.consumer.subscribe([self.settings.usage_topic], listener=_Rebalance(self))
        await self.consumer.start()
        self.add_future(self._consume())

    async def on_stop(self) -> None:
        # A clean stop lets the batch in flight finish and commits it; SIGKILL does not,
        # and the batch is re-delivered (ledgered ids are then dropped as duplicates).
        if self.in_flight is not None:
            await self.settle()
        if self.consumer is not None:
            await self.consumer.stop()

    async def _consume(self) -> None:
        assert self.consumer is not None
        pipeline = await self.open_pipeline()
        timeout_ms = int(self.settings.batch_within_seconds * 1000)
        while not self.should_stop:
            records = await self.consumer.getmany(timeout_ms=timeout_ms)
            if not records:
                await self.settle()
                continue
            self._note_lag(records)
            messages = _messages(records)
            await self.before_batch()
            in_flight = self.in_flight.batch.hashes if self.in_flight else None
            batch = pipeline.prepare(messages, in_flight)
            await self.settle()
            held = self.assignment()
            if any(tp not in held for tp in records):
                kept = {tp: rs for tp, rs in records.items() if tp in held}
                if not kept:
                    continue
                records, batch = kept, pipeline.prepare(_messages(kept))
            offsets = {tp: rs[-1].offset + 1 for tp, rs in records.items()}
            task = asyncio.create_task(self._deliver_until_done(pipeline, batch))
            self.in_flight = InFlight(batch, offsets, task)

    async def _deliver_until_done(self, pipeline: IngestPipeline, batch: PreparedBatch) -> None:
        """The sink retries its own writes for ever; this covers the rest (publishing
        costed rows). Delivering twice is safe: inserts carry a deduplication token and
        the spend tables skip costed rows by source offset."""
        delay = 0.5
        while True:
            try:
                await pipeline.deliver(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                log.exception("ingest batch failed; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def settle(self) -> None:
        """Wait for the batch in flight to be durable, then commit its offsets."""
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is None:
            return
        await in_flight.task
        assert self.consumer is not None
        try:
            await self.consumer.commit(in_flight.offsets)
        except KafkaError as exc:
            # Durable but not committed: re-delivered later and dropped as duplicates.
            log.warning("ingest commit failed (%s): the batch will be re-delivered", exc)

    def _note_lag(self, records: dict[TopicPartition, list[Any]]) -> None:
        assert self.consumer is not None
        for tp, consumed in records.items():
            end = self.consumer.highwater(tp)
            if end is not None:
                self.lag[(tp.topic, tp.partition)] = max(0, end - consumed[-1].offset - 1)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: UsageConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self.owner.settle()

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("usage partitions assigned: %s", sorted(tp.partition for tp in assigned))
        self.owner.on_assigned()


def _messages(records: dict[TopicPartition, list[Any]]) -> list[UsageMessage]:
    return [
        UsageMessage(record.value or b"", record.topic, record.partition, record.offset)
        for records_of_tp in records.values()
        for record in records_of_tp
    ]
