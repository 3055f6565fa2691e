"""`IngestPipeline` on the real ClickHouse (chdb): the order that keeps the invariants.

Costed events are published after the ledger write, of the rows the ledger took only,
and request ids are marked as seen once the write is durable: a crash (or a ClickHouse
error) before the write re-delivers events that are processed again, never dropped as
duplicates; a crash after it re-delivers events whose costed rows are published again
from the ledger; a row ClickHouse refuses is a dead letter and counts nowhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from streams.cost.catalog import PriceCatalog
from streams.ingest.dedupe import RequestIdFilter, hash_request_ids
from streams.ingest.pipeline import IngestPipeline, UsageMessage, ingest_day
from streams.ingest.unpublished import load_unpublished
from streams.ledger.connect import ClickHouseHandle
from streams.ledger.isolation import REFUSED_REASON
from streams.ledger.sink import ClickHouseExecutor, ClickHouseLedgerSink
from tests.helpers.waiting import wait_until

NOW = datetime.now(UTC).replace(microsecond=0)
TOPIC = "spendstream.usage"
# gpt-4o-mini at 0.15 / 0.60 USD per million input / output tokens.
COST = (Decimal(1000) * Decimal("0.15") + Decimal(100) * Decimal("0.60")) / 10**6


def event(request_id: str, tenant: str = "acme") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "timestamp": (NOW - timedelta(minutes=5)).isoformat(),
        "tenant_id": tenant,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
    }


def messages(*values: bytes, partition: int = 0) -> list[UsageMessage]:
    return [UsageMessage(v, TOPIC, partition, offset) for offset, v in enumerate(values)]


@pytest.fixture
async def executor(ledger_db: ClickHouseHandle) -> AsyncIterator[ClickHouseExecutor]:
    pool = ClickHouseExecutor(ledger_db.client)
    yield pool
    pool.shutdown()


async def ledger_ids(executor: ClickHouseExecutor) -> list[str]:
    result = await executor.run(
        executor.client.query, "SELECT request_id FROM usage_ledger ORDER BY request_id"
    )
    return [str(row[0]) for row in result.result_rows]


class Published:
    """The costed and dead-letter publishers, noting what the ledger held at each call."""

    def __init__(self, executor: ClickHouseExecutor) -> None:
        self.executor = executor
        self.costed: list[tuple[dict[str, list[dict[str, Any]]], list[str]]] = []
        self.dead_letters: list[list[dict[str, Any]]] = []

    async def publish_costed(self, by_tenant: dict[str, list[dict[str, Any]]]) -> None:
        self.costed.append((by_tenant, await ledger_ids(self.executor)))

    async def publish_dead_letters(self, letters: list[dict[str, Any]]) -> None:
        self.dead_letters.append(letters)


def pipeline(executor: ClickHouseExecutor, published: Published) -> IngestPipeline:
    sink = ClickHouseLedgerSink(executor, backoff_initial=0.01, backoff_max=0.05)
    return IngestPipeline(
        PriceCatalog.load(None),
        RequestIdFilter(),
        sink,
        log_epoch="test",
        publish_costed=published.publish_costed,
        publish_dead_letters=published.publish_dead_letters,
        clock=lambda: NOW,
    )


async def test_costed_events_go_out_after_the_ledger_write_and_ids_are_marked_with_it(
    executor: ClickHouseExecutor,
) -> None:
    published = Published(executor)
    ingest = pipeline(executor, published)
    batch = ingest.prepare(
        messages(
            orjson.dumps(event("p-1")),
            orjson.dumps([event("p-2", "globex"), event("p-3")]),
            b'{"request_id": "p-bad", ',
        )
    )
    assert (batch.messages, batch.events, len(batch.rows)) == (3, 3, 3)
    # Not yet durable: the same messages are admitted again (nothing marked as seen).
    again = ingest.prepare(messages(orjson.dumps(event("p-1"))))
    assert [row["request_id"] for row in again.rows] == ["p-1"]

    await ingest.write([batch])
    assert await ledger_ids(executor) == ["p-1", "p-2", "p-3"]
    assert published.costed == []  # nothing goes out before the write
    await ingest.publish([batch])
    [(by_tenant, ledger_at_publish)] = published.costed
    assert ledger_at_publish == ["p-1", "p-2", "p-3"]  # the ledger held every one
    assert {t: [e["request_id"] for e in rows] for t, rows in by_tenant.items()} == {
        "acme": ["p-1", "p-3"],
        "globex": ["p-2"],
    }
    assert {e["cost_usd"] for rows in by_tenant.values() for e in rows} == {COST}
    [[letter]] = published.dead_letters
    assert (letter["reason"], letter["partition"], letter["offset"]) == ("malformed_json", 0, 2)
    # Durable: now they are duplicates, within a batch and across batches.
    after = ingest.prepare(messages(orjson.dumps(event("p-1")), orjson.dumps(event("p-2"))))
    assert (after.events, after.rows) == (2, [])
    counters = ingest.counters
    assert (counters.messages, counters.events, counters.ledgered) == (3, 3, 3)
    assert counters.dead_letters_by_reason == {"malformed_json": 1}


async def test_repeats_within_one_batch_are_admitted_once(executor: ClickHouseExecutor) -> None:
    ingest = pipeline(executor, Published(executor))
    copy = orjson.dumps(event("r-1"))
    batch = ingest.prepare(messages(copy, copy, orjson.dumps([event("r-1"), event("r-2")])))
    assert batch.events == 4
    assert sorted(row["request_id"] for row in batch.rows) == ["r-1", "r-2"]


async def test_a_clickhouse_error_before_the_write_leaves_the_ids_free_for_redelivery(
    executor: ClickHouseExecutor,
) -> None:
    """A real ClickHouse error (the ledger table detached): the write retries and never
    returns; the worker dies there (the task is cancelled). Re-delivered, the events are
    processed again rather than dropped as already seen, and land once each."""
    published = Published(executor)
    ingest = pipeline(executor, published)
    await ingest.write([ingest.prepare(messages(orjson.dumps(event("c-0"))))])  # schema read
    batch = ingest.prepare(messages(orjson.dumps(event("c-1")), orjson.dumps(event("c-2"))))
    await executor.run(executor.client.command, "DETACH TABLE usage_ledger")
    try:
        write = asyncio.create_task(ingest.write([batch]))
        await wait_until(lambda: ingest.sink.stats.failures >= 2)
        assert "(UNKNOWN_TABLE)" in ingest.sink.stats.last_error
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
    finally:
        await executor.run(executor.client.command, "ATTACH TABLE usage_ledger")
    assert not batch.written

    redelivered = ingest.prepare(
        messages(orjson.dumps(event("c-1")), orjson.dumps(event("c-2")), partition=0)
    )
    assert sorted(row["request_id"] for row in redelivered.rows) == ["c-1", "c-2"]
    await ingest.write([redelivered])
    await ingest.publish([redelivered])
    assert await ledger_ids(executor) == ["c-0", "c-1", "c-2"]
    [(by_tenant, _)] = published.costed  # the failed batch published nothing
    assert [e["request_id"] for e in by_tenant["acme"]] == ["c-1", "c-2"]


REFUSE = (
    "ALTER TABLE usage_ledger ADD CONSTRAINT refuse_poison "
    "CHECK NOT startsWith(request_id, 'poison-')"
)


async def test_a_row_the_ledger_refuses_is_a_dead_letter_and_counts_nowhere(
    executor: ClickHouseExecutor,
) -> None:
    """A real ClickHouse data error (a CHECK constraint, VIOLATED_CONSTRAINT) on one row of
    a batch: the others are ledgered and published as costed events; the refused one is a
    dead letter in the table and on the dead-letter topic, with ClickHouse's error, has
    no costed event (no in-stream total counts it), and its id stays free."""
    published = Published(executor)
    ingest = pipeline(executor, published)
    await executor.run(executor.client.command, REFUSE)
    try:
        batch = ingest.prepare(
            messages(
                orjson.dumps(event("g-1")),
                orjson.dumps([event("g-2"), event("poison-1", "globex"), event("g-3")]),
            )
        )
        await ingest.write([batch])
    finally:
        await executor.run(
            executor.client.command, "ALTER TABLE usage_ledger DROP CONSTRAINT refuse_poison"
        )
    await ingest.publish([batch])
    assert await ledger_ids(executor) == ["g-1", "g-2", "g-3"]
    [(by_tenant, _)] = published.costed
    assert {t: [e["request_id"] for e in rows] for t, rows in by_tenant.items()} == {
        "acme": ["g-1", "g-2", "g-3"]
    }
    [[letter]] = published.dead_letters
    assert (letter["reason"], letter["request_id"], letter["tenant_id"]) == (
        REFUSED_REASON,
        "poison-1",
        "globex",
    )
    assert (letter["partition"], letter["offset"], letter["element_index"]) == (0, 1, 1)
    assert "VIOLATED_CONSTRAINT" in letter["message"], letter["message"]
    stored = await executor.run(
        executor.client.query, "SELECT request_id, reason, message FROM dead_letters"
    )
    [(request_id, reason, message)] = stored.result_rows
    assert (request_id, reason, message) == ("poison-1", REFUSED_REASON, letter["message"])
    counters = ingest.counters
    assert (counters.ledgered, counters.dead_letters_by_reason) == (3, {REFUSED_REASON: 1})
    # Not ledgered, so not a duplicate: sent again (fixed), it is admitted.
    again = ingest.prepare(messages(orjson.dumps(event("poison-1", "globex"))))
    assert [row["request_id"] for row in again.rows] == ["poison-1"]


async def test_rows_ledgered_before_a_crash_are_published_again_when_redelivered(
    executor: ClickHouseExecutor,
) -> None:
    """The worker wrote a batch and died before publishing it. Its successor's filter,
    rebuilt from the ledger, takes the re-delivered ids for duplicates; the rows at
    those very positions are published again from the ledger, each with its index in
    its message; a duplicate from another position is not."""
    first = pipeline(executor, Published(executor))
    sent = messages(
        orjson.dumps(event("k-1")),
        b"not json",
        orjson.dumps([event("k-2", "globex"), event("k-3")]),
    )
    batch = first.prepare(sent)
    await first.write([batch])  # ... and the process is killed here

    published = Published(executor)
    successor = pipeline(executor, published)
    ids = await ledger_ids(executor)
    successor.dedupe.mark(hash_request_ids(ids), ingest_day(NOW))  # rebuilt from the ledger
    successor.unpublished = await executor.run(
        load_unpublished, executor.client, TOPIC, {0: (0, 100)}, NOW - timedelta(days=1)
    )
    duplicate = UsageMessage(orjson.dumps(event("k-1")), TOPIC, 0, 3)
    redelivered = successor.prepare([*sent, duplicate])
    assert redelivered.rows == []
    await successor.write([redelivered])
    await successor.publish([redelivered])
    [(by_tenant, _)] = published.costed
    positions = {
        e["request_id"]: (e["source_offset"], e["source_index"], Decimal(str(e["cost_usd"])))
        for rows in by_tenant.values()
        for e in rows
    }
    assert positions == {"k-1": (0, 0, COST), "k-2": (2, 0, COST), "k-3": (2, 1, COST)}
    assert successor.counters.republished == 3
    assert await ledger_ids(executor) == ["k-1", "k-2", "k-3"]  # nothing written twice
