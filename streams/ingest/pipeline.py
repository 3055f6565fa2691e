"""`IngestPipeline`: one batch of usage messages → ledger rows, costed events, dead letters.

The steps, in the order that keeps the invariants (docs/architecture.md, "Invariants"):

1. decode and validate every message (`streams.ingest.batch_validation`: compiled,
   the model deciding what it cannot vouch for);
2. drop request_ids already ledgered within the horizon, or repeated in the batch;
3. price the rest (cached resolution, Decimal arithmetic);
4. write ledger and dead-letter rows and wait until ClickHouse holds them (`write`,
   one insert for the batches queued meanwhile); rows ClickHouse refuses for their
   data become dead letters (`ledger_insert_failed`, streams/ledger/isolation.py);
5. publish the costed events of the rows the ledger took, and every dead letter (the
   refused rows' too), and wait for the broker's acknowledgement (`publish`);
6. only then return, so the caller lets Kafka commit the batches' offsets.

Costed events go out after the ledger write, as a Quix Streams sink flushes before its
checkpoint commits: the spend tables, /v1/limits and the detectors count only what the
ledger, the system of record, holds. Published first, a row the ledger then refused
would stay in every in-stream total. A compensating record instead would have to undo
a row in every table (hours, days, months, runs, users, model mix), with marks of its
own, after the detectors had already seen it.

A crash before 4 re-delivers the batch: nothing was ledgered, the rebuilt filter has
not seen the ids, so they are processed again. A crash between 4 and 5 re-delivers ids
that the filter, rebuilt from the ledger at start, knows; their costed events may never
have gone out, so the events ledgered at the re-delivered message's own position are
published again from their ledger rows (streams/ingest/unpublished.py), and the spend
tables skip a source position they already counted. A crash after 5 is the same, with
every position already counted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from schemas.validated_event import ValidatedEvent
from streams.cost.catalog import PriceCatalog
from streams.cost.rows import SourcePosition, costed_event, price_events
from streams.ingest.batch_validation import decode_batch
from streams.ingest.decoding import Rejection
from streams.ingest.dedupe import U64, RequestIdFilter, hash_request_ids
from streams.ingest.unpublished import Unpublished
from streams.ledger.isolation import refused_dead_letter
from streams.ledger.sink import ClickHouseLedgerSink

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class UsageMessage:
    value: bytes
    topic: str
    partition: int
    offset: int


# Publish costed events (costing.costed_event) grouped by tenant, and dead letters;
# each returns once the broker acknowledged.
CostedPublisher = Callable[[dict[str, list[dict[str, Any]]]], Awaitable[None]]
DeadLetterPublisher = Callable[[list[dict[str, Any]]], Awaitable[None]]


@dataclass
class PreparedBatch:
    """A decoded, de-duplicated and priced batch, not yet written or published."""

    messages: int
    events: int
    hashes: U64  # of `rows`' request_ids, marked in the filter once durable
    rows: list[dict[str, Any]]
    # In message order: (index in `rows`, or -1 for an event ledgered before and
    # published again, see streams/ingest/unpublished.py; its costed event).
    costed: list[tuple[int, dict[str, Any]]]
    dead_letters: list[dict[str, Any]]
    day: int
    positions: list[SourcePosition] = field(default_factory=list)  # of `rows`, in order
    written: bool = False
    # Rows ClickHouse refused for their data (indexes in `rows`) and their dead letters.
    refused: set[int] = field(default_factory=set)
    refused_letters: list[dict[str, Any]] = field(default_factory=list)

    def costed_by_tenant(self) -> dict[str, list[dict[str, Any]]]:
        """The costed events to publish, by tenant: none of a refused row."""
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for index, event in self.costed:
            if index not in self.refused:
                by_tenant.setdefault(event["tenant_id"], []).append(event)
        return by_tenant


@dataclass
class IngestCounters:
    messages: int = 0
    events: int = 0
    ledgered: int = 0
    duplicates: int = 0
    unpriced: int = 0
    # Events ledgered before a stop and published again when re-delivered (their
    # costed events may not have gone out).
    republished: int = 0
    # Ledgered rows older than the ledger's raw retention: its TTL drops them, the
    # rollups keep them (counted in `ledgered` too).
    rollup_only: int = 0
    rollup_only_cost_usd: Decimal = Decimal(0)
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)


def ingest_day(moment: datetime) -> int:
    return int(moment.timestamp()) // SECONDS_PER_DAY


class IngestPipeline:
    def __init__(
        self,
        catalog: PriceCatalog,
        dedupe: RequestIdFilter,
        sink: ClickHouseLedgerSink,
        *,
        log_epoch: str,
        publish_costed: CostedPublisher | None = None,
        publish_dead_letters: DeadLetterPublisher | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        timestamp_floor: datetime | None = None,
        raw_retention: timedelta | None = None,
    ) -> None:
        self.catalog = catalog
        self.dedupe = dedupe
        self.sink = sink
        self.log_epoch = log_epoch
        # The log the next batch's messages were read from (the usage broker's cluster
        # id): costed events carry it with their source position (UsageConsumer sets it).
        self.source_log = ""
        self.publish_costed = publish_costed
        self.publish_dead_letters = publish_dead_letters
        self.clock = clock
        self.timestamp_floor = timestamp_floor
        self.raw_retention = raw_retention
        self.counters = IngestCounters()
        # Set by the consumer at assignment (streams/ingest/unpublished.py).
        self.unpublished: Unpublished = {}

    def prepare(
        self, messages: Sequence[UsageMessage], in_flight: U64 | None = None
    ) -> PreparedBatch:
        """Steps 1-3, CPU only. `in_flight`: hashes of a batch still being delivered,
        not yet marked in the filter, whose ids must not be admitted twice."""
        # To the millisecond, as the ledger's `ingested_at` keeps it: the costed events
        # carry the same instant, and the spend tables compare it with the ledger's.
        now = self.clock()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        events: list[tuple[ValidatedEvent, SourcePosition]] = []
        dead_letters: list[dict[str, Any]] = []
        decoded_messages = decode_batch([m.value for m in messages], now, self.timestamp_floor)
        for message, (decoded, rejections) in zip(messages, decoded_messages, strict=True):
            events.extend(
                (event, SourcePosition(message.topic, message.partition, message.offset, index))
                for index, event in enumerate(decoded)
            )
            dead_letters.extend(
                self._dead_letter(rejection, message, now) for rejection in rejections
            )

        hashes = hash_request_ids(event.request_id for event, _ in events)
        fresh = self.dedupe.new_mask(hashes)
        if in_flight is not None and len(in_flight):
            fresh &= ~np.isin(hashes, in_flight)
        admitted = [pair for pair, is_new in zip(events, fresh, strict=True) if is_new]
        positions = [position for _, position in admitted]
        rows = price_events(self.catalog, [event for event, _ in admitted], positions, now)
        # In message order: each admitted event's costed event, and each event ledgered
        # at this very position before a stop (streams/ingest/unpublished.py).
        costed: list[tuple[int, dict[str, Any]]] = []
        priced = iter(enumerate(rows))
        for (event, position), is_new in zip(events, fresh, strict=True):
            if is_new:
                index, row = next(priced)
                costed.append((index, costed_event(row, position.index, self.source_log)))
            elif self.unpublished:
                key = (position.topic, position.partition, position.offset, event.request_id)
                ledgered = self.unpublished.get(key)
                if ledgered is not None:
                    costed.append((-1, costed_event(ledgered, position.index, self.source_log)))
        return PreparedBatch(
            messages=len(messages),
            events=len(events),
            hashes=hashes[fresh],
            rows=rows,
            costed=costed,
            dead_letters=dead_letters,
            day=ingest_day(now),
            positions=positions,
        )

    async def write(self, batches: Sequence[PreparedBatch]) -> None:
        """Step 4, in one insert for the batches not written yet: returns once their rows
        are durable, as ledger rows or dead letters, and the ledgered ids marked."""
        todo = [batch for batch in batches if not batch.written]
        if not todo:
            return
        rows = [row for batch in todo for row in batch.rows]
        positions = [position for batch in todo for position in batch.positions]
        dead_letters = [letter for batch in todo for letter in batch.dead_letters]
        refused_at: list[int] = []

        def refused_letter(index: int, error: str) -> dict[str, Any]:
            refused_at.append(index)
            return refused_dead_letter(
                rows[index], error, log_epoch=self.log_epoch, element_index=positions[index].index
            )

        letters = await self.sink.write(rows, dead_letters, refused_letter)
        refused = dict(zip(refused_at, letters, strict=True))
        start = 0
        for batch in todo:
            mine = {i - start: refused[i] for i in refused if start <= i < start + len(batch.rows)}
            start += len(batch.rows)
            batch.refused = set(mine)
            batch.refused_letters = list(mine.values())
            # Marked only now, and only what the ledger holds: a batch that is never
            # written (its partition revoked before the write, or the process stopped)
            # leaves its ids free for re-delivery, and so does a refused row.
            ledgered = np.ones(len(batch.rows), dtype=bool)
            ledgered[list(batch.refused)] = False
            self.dedupe.mark(batch.hashes[ledgered], batch.day)
            self._count(batch)
            batch.written = True
        self.dedupe.expire(todo[-1].day)

    async def publish(self, batches: Sequence[PreparedBatch]) -> None:
        """Step 5, for written batches: returns once the broker acknowledged their costed
        events and dead letters. Safe to repeat: the spend tables skip costed events by
        source position, and a dead letter is keyed by its position."""
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        letters: list[dict[str, Any]] = []
        for batch in batches:
            for tenant, events in batch.costed_by_tenant().items():
                by_tenant.setdefault(tenant, []).extend(events)
            letters += batch.dead_letters + batch.refused_letters
        if self.publish_costed is not None and by_tenant:
            await self.publish_costed(by_tenant)
        if self.publish_dead_letters is not None and letters:
            await self.publish_dead_letters(letters)

    def _dead_letter(
        self, rejection: Rejection, message: UsageMessage, now: datetime
    ) -> dict[str, Any]:
        return {
            "log_epoch": self.log_epoch,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "element_index": rejection.element_index,
            "reason": rejection.reason,
            "message": rejection.message,
            "raw_payload": rejection.raw_payload,
            "payload_bytes": len(message.value),
            "request_id": rejection.request_id,
            "tenant_id": rejection.tenant_id,
            "received_at": now,
        }

    def _count(self, batch: PreparedBatch) -> None:
        c = self.counters
        c.messages += batch.messages
        c.events += batch.events
        ledgered = [row for i, row in enumerate(batch.rows) if i not in batch.refused]
        c.ledgered += len(ledgered)
        c.duplicates += batch.events - len(batch.rows)
        c.republished += sum(1 for index, _ in batch.costed if index < 0)
        c.unpriced += sum(1 for row in ledgered if row["cost_status"] != "priced")
        if self.raw_retention is not None:
            expired = self.clock() - self.raw_retention
            old = [row for row in ledgered if row["timestamp"] < expired]
            c.rollup_only += len(old)
            c.rollup_only_cost_usd += sum((row["cost_usd"] for row in old), Decimal(0))
        for letter in [*batch.dead_letters, *batch.refused_letters]:
            reason = letter["reason"]
            c.dead_letters_by_reason[reason] = c.dead_letters_by_reason.get(reason, 0) + 1
