"""`IngestPipeline`: one batch of usage messages → costed events, ledger rows, dead letters.

The steps, in the order that keeps the invariants (docs/architecture.md, "Invariants"):

1. decode and validate every message (`streams.ingest.batch_validation`: compiled,
   the model deciding what it cannot vouch for);
2. drop request_ids already ledgered within the horizon, or repeated in the batch;
3. price the rest (cached resolution, Decimal arithmetic);
4. publish costed events downstream and wait for the broker's acknowledgement
   (`publish`, at once: the detectors see a batch before its ledger write);
5. write ledger and dead-letter rows and wait until ClickHouse holds them (`write`,
   one insert for the batches published meanwhile);
6. only then return, so the caller lets Kafka commit the batches' offsets.

A crash before 5 re-delivers the batch: nothing was ledgered, the rebuilt filter has
not seen the ids, so they are processed again; downstream spend tables skip costed
events they already counted by source offset. A crash after 5 re-delivers ids that
the filter, rebuilt from the ledger at start, knows: counted as duplicates, dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from streams.cost.catalog import PriceCatalog
from streams.cost.rows import SourcePosition, costed_event, price_events
from streams.ingest.batch_validation import ValidatedEvent, decode_batch_message
from streams.ingest.decoding import Rejection
from streams.ingest.dedupe import U64, RequestIdFilter, hash_request_ids
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
    """A decoded, de-duplicated and priced batch, not yet published or written."""

    messages: int
    events: int
    hashes: U64  # of the admitted request_ids, marked in the filter once durable
    rows: list[dict[str, Any]]
    costed_by_tenant: dict[str, list[dict[str, Any]]]
    dead_letters: list[dict[str, Any]]
    day: int
    positions: list[SourcePosition] = field(default_factory=list)  # of `rows`, in order


@dataclass
class IngestCounters:
    messages: int = 0
    events: int = 0
    ledgered: int = 0
    duplicates: int = 0
    unpriced: int = 0
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
        self.publish_costed = publish_costed
        self.publish_dead_letters = publish_dead_letters
        self.clock = clock
        self.timestamp_floor = timestamp_floor
        self.raw_retention = raw_retention
        self.counters = IngestCounters()

    def prepare(
        self, messages: Sequence[UsageMessage], in_flight: U64 | None = None
    ) -> PreparedBatch:
        """Steps 1-3, CPU only. `in_flight`: hashes of a batch still being delivered,
        not yet marked in the filter, whose ids must not be admitted twice."""
        now = self.clock()
        events: list[tuple[ValidatedEvent, SourcePosition]] = []
        dead_letters: list[dict[str, Any]] = []
        for message in messages:
            decoded, rejections = decode_batch_message(message.value, now, self.timestamp_floor)
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
        rows = price_events(
            self.catalog,
            [event for event, _ in admitted],
            [position for _, position in admitted],
            now,
        )
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        if self.publish_costed is not None:
            for row, (_, position) in zip(rows, admitted, strict=True):
                by_tenant.setdefault(row["tenant_id"], []).append(costed_event(row, position.index))
        return PreparedBatch(
            messages=len(messages),
            events=len(events),
            hashes=hashes[fresh],
            rows=rows,
            costed_by_tenant=by_tenant,
            dead_letters=dead_letters,
            day=ingest_day(now),
            positions=[position for _, position in admitted],
        )

    async def publish(self, batch: PreparedBatch) -> None:
        """Step 4: returns once the broker acknowledged the costed events and dead
        letters. Safe to repeat: the spend tables skip costed events by source position."""
        if self.publish_costed is not None and batch.costed_by_tenant:
            await self.publish_costed(batch.costed_by_tenant)
        if self.publish_dead_letters is not None and batch.dead_letters:
            await self.publish_dead_letters(batch.dead_letters)

    async def write(self, batches: Sequence[PreparedBatch]) -> None:
        """Step 5 for published batches, in one insert: returns once the rows are
        durable and the ids marked."""
        rows = [row for batch in batches for row in batch.rows]
        positions = [position for batch in batches for position in batch.positions]
        dead_letters = [letter for batch in batches for letter in batch.dead_letters]
        refused = await self.sink.write(
            rows,
            dead_letters,
            lambda index, error: refused_dead_letter(
                rows[index], error, log_epoch=self.log_epoch, element_index=positions[index].index
            ),
        )
        # Marked only now: a batch that is never written (its partition revoked before
        # the write, or the process stopped) leaves its ids free for re-delivery.
        for batch in batches:
            self.dedupe.mark(batch.hashes, batch.day)
            self._count(batch)
        self.dedupe.expire(batches[-1].day)
        # Rows ClickHouse refused for their data are dead letters, not ledger rows.
        self.counters.ledgered -= len(refused)
        for letter in refused:
            by_reason = self.counters.dead_letters_by_reason
            by_reason[letter["reason"]] = by_reason.get(letter["reason"], 0) + 1

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
        c.ledgered += len(batch.rows)
        c.duplicates += batch.events - len(batch.rows)
        c.unpriced += sum(1 for row in batch.rows if row["cost_status"] != "priced")
        if self.raw_retention is not None:
            expired = self.clock() - self.raw_retention
            old = [row for row in batch.rows if row["timestamp"] < expired]
            c.rollup_only += len(old)
            c.rollup_only_cost_usd += sum((row["cost_usd"] for row in old), Decimal(0))
        for letter in batch.dead_letters:
            reason = letter["reason"]
            c.dead_letters_by_reason[reason] = c.dead_letters_by_reason.get(reason, 0) + 1
