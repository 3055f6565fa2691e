"""`UsageConsumer`: the ingest side of the worker, a service of the Faust app.

It reads the usage topic in large batches with aiokafka's `getmany` and hands each to
the `IngestPipeline`. Faust's own stream machinery costs about 180 µs per message
(docs/architecture.md, "Faust facts"), more than the pipeline's work per event: an agent cannot
reach the throughput targets, so the usage topic is consumed here directly, in its own
consumer group. The spend agent and its tables stay on Faust.

Two stages, like a batching sink with backpressure. The reading loop decodes,
de-duplicates and prices a batch and queues it. A writer task takes every queued batch
at once, writes them to ClickHouse in one insert, then publishes their costed events
(of the rows the ledger took) and dead letters, and only then commits their offsets:
commit after durable write and publish (streams/ingest/pipeline.py says why in that
order). At most `MAX_QUEUED` batches wait; the reader waits when that many do. Ids of
queued batches are not yet in the filter, so the next batch's preparation excludes
them explicitly (`in_flight`).

On a rebalance, the revoked-partitions callback waits until every queued batch is
written, published and committed, so the next owner starts after them. A batch whose
partitions were revoked while it was being prepared is prepared again from the
partitions still held; the new owner ledgers the rest. When partitions are assigned,
the ledger rows at or after their committed offsets (written by a worker that stopped
before publishing them) are looked up first, to be published again when their
messages come back (streams/ingest/unpublished.py).

A new log can appear behind the same address: the embedded in-memory broker restarted
under a running worker, offsets from 0 again. That broker answers fetches past its end
with no records and no error, and takes commits from a member it does not know. Two
signs, both followed:
- a log that ends before the consumer's position: that partition is read again from
  its beginning, as Kafka's out-of-range reset would, and no offset past the log end of
  the last fetch is committed;
- another cluster id at the address (the embedded broker takes a new one at each
  start): a new log may already have grown past the position, where a fetch finds
  records and nothing says they are not the ones after it. Checked with each batch
  and at each assignment; on a change every assigned partition is read from its
  beginning (what was ledgered already is dropped as duplicates), committed offsets
  written before the assignment that followed are not trusted (the worker may have
  committed old-log positions into the new broker), and dead letters take a log epoch
  of the new cluster, so the new log's positions do not collide with the old one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from streams.ingest.dedupe import U64
from streams.ingest.pipeline import IngestPipeline, PreparedBatch, UsageMessage
from streams.ingest.unpublished import load_unpublished
from streams.kafka.admin import ClusterIdentity
from streams.kafka.topics import INGEST_GROUP
from streams.kafka.tuning import FETCH_MAX_WAIT_MS
from streams.retrying import until_done
from streams.settings import Settings

log = logging.getLogger(__name__)

# Published batches waiting for their ledger write. More would hold more memory and
# re-deliver more after a crash, for no more throughput: one insert takes them all.
MAX_QUEUED = 4
# The spend agent's cost grows with costed messages (one per tenant and batch) more
# than with events: batches are at least this far apart, which bounds what that
# costs under load and adds at most this much to alert latency.
MIN_BATCH_INTERVAL_SECONDS = 0.2
# A fetch is prepared in parts of at most this many message bytes (about 8,000 events),
# each queued as a batch: the event loop runs between them (the group's heartbeats,
# the writer beginning the insert of the parts before), where a whole fetch of 64,000
# events held it for a second or more. The writer still takes every queued part in one
# insert.
PREPARE_PART_BYTES = 4 * 1024 * 1024
# A stop writes what is queued for at most this long. A write still failing then (an
# outage) is abandoned: its offsets stay uncommitted, so a durable broker delivers it
# again; the embedded in-memory broker loses it with its log (docs/reliability.md).
# Waiting longer would keep a stopped worker, and the data dir it holds, alive for as
# long as the outage lasts.
STOP_WRITE_SECONDS = 5.0
# How often a durable-ack wait reads the group's committed offsets for a partition
# another worker holds.
COMMITTED_POLL_SECONDS = 0.25


@dataclass
class Queued:
    batch: PreparedBatch
    offsets: dict[TopicPartition, int]  # next offset to consume, per partition


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
        self.pipeline: IngestPipeline | None = None
        self.queued: list[Queued] = []
        self.writing: list[Queued] = []
        self.changed = asyncio.Condition()
        self.failures = 0
        self.lag: dict[tuple[str, int], int] = {}
        # Set at the first assignment (empty or not): the group is joined.
        self.joined = asyncio.Event()
        # partition -> the next offset of the usage topic ledgered by this worker; set
        # (and replaced) after each ledger write, for `wait_ledgered`.
        self.ledgered_to: dict[int, int] = {}
        self._ledgered = asyncio.Event()
        self._loops: list[asyncio.Future[Any]] = []
        self.identity: ClusterIdentity | None = None
        # The cluster whose logs the positions refer to, and the one the group's
        # committed offsets were read from at the last assignment.
        self.cluster_id: str | None = None
        self.assigned_cluster_id: str | None = None
        self.log_epoch = settings.log_epoch
        # Assigned since the last look for ledgered rows whose costed events may
        # never have been published (streams/ingest/unpublished.py).
        self.to_look_up: set[TopicPartition] = set()

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
            # The embedded broker holds a fetch for its whole max wait (streams/kafka/tuning.py).
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self.identity = ClusterIdentity(self.settings.kafka_bootstrap, f"{INGEST_GROUP}-identity")
        await self.identity.start()
        self.consumer.subscribe([self.settings.usage_topic], listener=_Rebalance(self))
        await self.consumer.start()
        self._loops = [self.add_future(self._consume()), self.add_future(self._write())]

    async def on_stop(self) -> None:
        # A clean stop writes and commits what is queued; SIGKILL does not, and those
        # batches are re-delivered (ledgered ids are then dropped as duplicates). The
        # loops go first: one may be retrying a write for as long as an outage lasts.
        for future in self._loops:
            future.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self.pipeline is not None:
            try:
                await asyncio.wait_for(self._write_queued(self.pipeline), STOP_WRITE_SECONDS)
            except TimeoutError:
                events = sum(q.batch.events for q in self.queued)
                log.error(
                    "stopping with %d events not written to the ledger (still failing after "
                    "%.0fs); their offsets are not committed",
                    events,
                    STOP_WRITE_SECONDS,
                )
        if self.consumer is not None:
            await self.consumer.stop()
        if self.identity is not None:
            await self.identity.stop()

    async def _consume(self) -> None:
        assert self.consumer is not None
        pipeline = self.pipeline = await self.open_pipeline()
        pipeline.log_epoch = self.log_epoch
        timeout_ms = int(self.settings.batch_within_seconds * 1000)
        loop = asyncio.get_running_loop()
        next_batch = loop.time()
        while not self.should_stop:
            async with self.changed:
                await self.changed.wait_for(lambda: len(self.queued) < MAX_QUEUED)
            await asyncio.sleep(next_batch - loop.time())
            records = await self.consumer.getmany(timeout_ms=timeout_ms)
            # The log the positions fetched from belong to: `cluster_id` changes with
            # every seek to a new log's start, before the seek.
            source_log = self.cluster_id
            next_batch = loop.time() + MIN_BATCH_INTERVAL_SECONDS
            await self._rewind_past_log_end()
            if not records:
                continue
            # These records may be the new log's, from the old position on: they are
            # ledgered all the same, and the new log is read again from its start,
            # where their ids are duplicates. Their costed events name the old log,
            # whose marks in the spend tables are all below these positions.
            await self._until_done(self._follow_cluster)
            pipeline.source_log = source_log or self.cluster_id or ""
            self._note_lag(records)
            await self.before_batch()
            if self.to_look_up:
                await self._until_done(partial(self._look_up_unpublished, pipeline))
            for part in _parts(records, PREPARE_PART_BYTES):
                await self._prepare_and_queue(pipeline, part)
                await asyncio.sleep(0)  # the heartbeats; the writer takes what is queued

    async def _prepare_and_queue(
        self, pipeline: IngestPipeline, records: dict[TopicPartition, list[Any]]
    ) -> None:
        batch = pipeline.prepare(_messages(records), self._in_flight())
        held = self.assignment()
        if any(tp not in held for tp in records):
            # Revoked meanwhile (the callback has written what was queued).
            records = {tp: rs for tp, rs in records.items() if tp in held}
            if not records:
                return
            batch = pipeline.prepare(_messages(records), self._in_flight())
        offsets = {tp: rs[-1].offset + 1 for tp, rs in records.items()}
        async with self.changed:
            self.queued.append(Queued(batch, offsets))
            self.changed.notify_all()

    async def _look_up_unpublished(self, pipeline: IngestPipeline) -> None:
        """The ledger rows of the partitions assigned since the last look, at or after
        their committed offsets: written, perhaps never published."""
        assert self.consumer is not None
        assigned = set(self.to_look_up)
        # A worker writes at most the batches queued and the one being written past
        # the committed offset, each of at most `batch_max_events` messages: the look
        # stays that small whatever the ledger holds (no committed offset: from the
        # log's start).
        most = (MAX_QUEUED + 1) * self.settings.batch_max_events
        held = [tp for tp in assigned if tp in self.assignment()]
        # All at once: the embedded broker answers a connection's requests in turn, each
        # behind the fetch it holds for its whole wait.
        committed = await asyncio.gather(*(self.consumer.committed(tp) for tp in held))
        unset = [tp for tp, offset in zip(held, committed, strict=True) if offset is None]
        beginnings = await self.consumer.beginning_offsets(unset) if unset else {}
        windows: dict[int, tuple[int, int]] = {}
        for tp, offset in zip(held, committed, strict=True):
            start = beginnings[tp] if offset is None else offset
            windows[tp.partition] = (start, start + most)
        # Rows of an earlier in-memory log share its offsets: only this log's count. On
        # Kafka, a re-delivery after the de-duplication horizon is a new event anyway.
        since = self.settings.log_epoch_started_at or datetime.now(UTC) - timedelta(
            days=self.settings.dedupe_horizon_days + 1
        )
        found = await pipeline.sink.executor.run(
            load_unpublished,
            pipeline.sink.executor.client,
            self.settings.usage_topic,
            windows,
            since,
        )
        pipeline.unpublished = found
        self.to_look_up -= assigned  # only once found: a failed look is retried whole
        if found:
            log.info(
                "%d ledgered events at or after the committed offsets of usage partitions %s: "
                "published again when re-delivered",
                len(found),
                sorted(windows),
            )

    def _in_flight(self) -> U64 | None:
        waiting = [q.batch.hashes for q in (*self.writing, *self.queued)]
        return np.concatenate(waiting) if waiting else None

    async def _write(self) -> None:
        pipeline = await self.open_pipeline()
        while not self.should_stop:
            async with self.changed:
                await self.changed.wait_for(lambda: bool(self.queued))
            await self._write_queued(pipeline)

    async def _write_queued(self, pipeline: IngestPipeline) -> None:
        """Write every queued batch in one insert, then commit their offsets. One
        writer at a time: the revoke callback and the stop wait for the running one."""
        async with self.changed:
            await self.changed.wait_for(lambda: not self.writing)
            self.writing, self.queued = self.queued, []
        batches = self.writing
        try:
            if batches:
                prepared = [q.batch for q in batches]
                await self._until_done(partial(pipeline.write, prepared))
                self._note_ledgered(batches)
                await self._until_done(partial(pipeline.publish, prepared))
                await self._commit(batches)
        except asyncio.CancelledError:
            self.queued[:0] = batches  # unwritten or unpublished: `on_stop` finishes them
            raise
        finally:
            async with self.changed:
                self.writing = []
                self.changed.notify_all()

    def _note_ledgered(self, batches: list[Queued]) -> None:
        for queued in batches:
            for tp, offset in queued.offsets.items():
                if offset > self.ledgered_to.get(tp.partition, 0):
                    self.ledgered_to[tp.partition] = offset
        self._ledgered.set()
        self._ledgered = asyncio.Event()

    async def wait_ledgered(self, positions: Sequence[tuple[int, int]], seconds: float) -> bool:
        """Wait until every usage message at `positions` ((partition, offset), as the
        producer's acknowledgement gave them) is ledger or dead-letter rows; False if
        that takes more than `seconds`. A partition this worker does not hold (another
        worker's, or moved by a rebalance) is read from the group's committed offsets,
        which follow the ledger write."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        waiting: dict[int, int] = {}
        for partition, offset in positions:
            waiting[partition] = max(waiting.get(partition, 0), offset + 1)
        while True:
            waiting = {p: o for p, o in waiting.items() if self.ledgered_to.get(p, 0) < o}
            held = {tp.partition for tp in self.assignment()}  # of the usage topic only
            for partition in [p for p in waiting if p not in held]:
                committed = await self._committed(partition)
                if committed >= waiting[partition]:
                    del waiting[partition]
            if not waiting:
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ledgered.wait(), min(left, COMMITTED_POLL_SECONDS))

    async def _committed(self, partition: int) -> int:
        # Until the first join the consumer may not have started: aiokafka (0.14) makes
        # its group coordinator in `start`, and a request that comes in meanwhile (the
        # web server answers before the ingest group is joined) waits for the join.
        if self.consumer is None or not self.joined.is_set():
            return 0
        try:
            tp = TopicPartition(self.settings.usage_topic, partition)
            return int(await self.consumer.committed(tp) or 0)
        except KafkaError:
            return 0

    async def _commit(self, batches: list[Queued]) -> None:
        assert self.consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for queued in batches:
            offsets.update(queued.offsets)
        for tp in list(offsets):
            end = self.consumer.highwater(tp) if tp in self.assignment() else None
            if end is not None and offsets[tp] > end:
                log.warning(
                    "ingest commit skipped for usage partition %d: offset %d is past the "
                    "log end %d (a new log behind the broker address)",
                    tp.partition,
                    offsets.pop(tp),
                    end,
                )
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # Durable but not committed: re-delivered later and dropped as duplicates.
            log.warning("ingest commit failed (%s): the batch will be re-delivered", exc)

    async def _follow_cluster(self) -> None:
        assert self.identity is not None
        cluster = await self.identity.cluster_id()
        if self.cluster_id is not None and cluster != self.cluster_id:
            self._read_new_log_from_start(cluster)
            self.cluster_id = cluster
            await self._seek_to_beginning(self.assignment())
        self.cluster_id = cluster

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        await self._until_done(partial(self._check_assigned_cluster, partitions))
        self.to_look_up |= partitions

    async def _check_assigned_cluster(self, partitions: set[TopicPartition]) -> None:
        """The group's committed offsets were just read: under a cluster other than at
        the last assignment, they are not the new log's to trust."""
        assert self.identity is not None
        cluster = await self.identity.cluster_id()
        if self.assigned_cluster_id is not None and cluster != self.assigned_cluster_id:
            if cluster != self.cluster_id:  # no batch has seen it yet
                self._read_new_log_from_start(cluster)
                self.cluster_id = cluster
            await self._seek_to_beginning(partitions)
        self.cluster_id = self.assigned_cluster_id = cluster

    def _read_new_log_from_start(self, cluster: str) -> None:
        log.warning(
            "the broker at %s is another cluster (%s, was %s): a new log; reading every "
            "usage partition from its start",
            self.settings.kafka_bootstrap,
            cluster,
            self.cluster_id,
        )
        self.log_epoch = f"{self.settings.log_epoch}/{cluster}"
        self.ledgered_to.clear()  # offsets of the old log
        if self.pipeline is not None:
            self.pipeline.log_epoch = self.log_epoch

    async def _seek_to_beginning(self, partitions: set[TopicPartition]) -> None:
        assert self.consumer is not None
        held = [tp for tp in partitions if tp in self.assignment()]
        if held:
            await self.consumer.seek_to_beginning(*held)

    async def _rewind_past_log_end(self) -> None:
        assert self.consumer is not None
        # A high-water mark is known once a fetch answered, so the position is valid.
        ends = {tp: self.consumer.highwater(tp) for tp in self.assignment()}
        past_end = []
        for tp, end in ends.items():
            if end is None or tp not in self.assignment():
                continue  # no fetch answered yet, or revoked meanwhile
            position = await self.consumer.position(tp)
            if position > end:
                log.warning(
                    "usage partition %d ends at offset %d, before the consumer's position "
                    "%d: a new log behind the broker address (an in-memory broker "
                    "restarted?); reading it from the start",
                    tp.partition,
                    end,
                    position,
                )
                past_end.append(tp)
        if past_end:
            # A new log: its cluster id is learnt before any of its records are read,
            # so that their costed events name it (the old log's marks would skip them).
            await self._until_done(self._follow_cluster)
        await self._seek_to_beginning(set(past_end))

    async def _until_done(self, step: Callable[[], Awaitable[None]]) -> None:
        """The sink retries its own writes for ever; this covers the rest (publishing,
        the look-up at assignment). Repeating a step is safe: a written batch is not
        written again, inserts carry a deduplication token, and the spend tables skip
        costed rows by source position."""
        await until_done(step, log, "ingest batch", on_failure=self._count_failure)

    def _count_failure(self, exc: Exception) -> None:
        self.failures += 1

    async def settle(self) -> None:
        """Wait until every queued batch is durable and committed."""
        if self.pipeline is not None:
            await self._write_queued(self.pipeline)

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
        await self.owner.assigned(set(assigned))
        self.owner.joined.set()
        self.owner.on_assigned()


def _parts(
    records: dict[TopicPartition, list[Any]], most_bytes: int
) -> Iterator[dict[TopicPartition, list[Any]]]:
    """`records` in order, in parts of at most `most_bytes` of message values (a larger
    message alone)."""
    part: dict[TopicPartition, list[Any]] = {}
    size = 0
    for tp, consumed in records.items():
        for record in consumed:
            length = len(record.value or b"")
            if part and size + length > most_bytes:
                yield part
                part, size = {}, 0
            part.setdefault(tp, []).append(record)
            size += length
    if part:
        yield part


def _messages(records: dict[TopicPartition, list[Any]]) -> list[UsageMessage]:
    return [
        UsageMessage(record.value or b"", record.topic, record.partition, record.offset)
        for records_of_tp in records.values()
        for record in records_of_tp
    ]
