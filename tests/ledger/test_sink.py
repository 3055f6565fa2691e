"""ClickHouseLedgerSink on embedded chdb: durable, idempotent, retried until it lands."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from schemas.ledger import DeadLetterRow
from schemas.usage_event import UsageEvent
from streams.cost.catalog import UnitPrices
from streams.cost.rows import SourcePosition, ledger_row
from streams.ledger.connect import ClickHouseHandle
from streams.ledger.isolation import REFUSED_REASON, is_data_error
from streams.ledger.sink import ClickHouseExecutor, ClickHouseLedgerSink
from tests.helpers.waiting import wait_until

D = Decimal
# Recent on purpose: the view-fed tables have TTLs, and rows dated months ago
# would be dropped on insert.
NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.replace(hour=0, minute=0, second=0)
PRICES = UnitPrices(D("0.15"), D("0.075"), D("0.15"), D("0.6"), D("0.6"), source="test")


def rows(prefix: str, n: int = 3) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        event = UsageEvent.model_validate(
            {
                "request_id": f"{prefix}-{i}",
                "timestamp": TODAY.isoformat(),
                "tenant_id": "acme",
                "provider": "openai",
                "model": "gpt-4o-mini",
                "input_tokens": 10_000,
                "cached_tokens": 4_000,
                "output_tokens": 1_000 + i,
            },
            context={"now": NOW},
        )
        out.append(ledger_row(event, PRICES, SourcePosition("spendstream.usage", 0, i), NOW))
    return out


def dead_letters(prefix: str) -> list[dict[str, Any]]:
    return [
        DeadLetterRow(
            log_epoch=prefix,
            topic="spendstream.usage",
            partition=1,
            offset=10 + i,
            element_index=i - 1,
            reason=reason,
            message=f"{reason} message",
            raw_payload=f'{{"bad": {i}}}',
            payload_bytes=10,
            request_id=f"{prefix}-dl-{i}",
            received_at=NOW,
        ).model_dump()
        for i, reason in enumerate(("malformed_json", "missing_field"))
    ]


@pytest.fixture
async def executor(ledger_db: ClickHouseHandle) -> AsyncIterator[ClickHouseExecutor]:
    pool = ClickHouseExecutor(ledger_db.client)
    yield pool
    pool.shutdown()


async def scalar(executor: ClickHouseExecutor, sql: str) -> Any:
    # Queried on the executor's thread: chdb calls stay on one thread, in order.
    result = await executor.run(executor.client.query, sql)
    return result.result_rows[0][0]


async def test_rows_are_durable_with_exact_decimals(executor: ClickHouseExecutor) -> None:
    batch = rows("durable")
    sink = ClickHouseLedgerSink(executor)
    await sink.write(batch)
    stored = await executor.run(
        executor.client.query,
        "SELECT request_id, cost_usd, cost_cached_input_usd, price_cached_input_per_mtok, "
        "cost_status, latency_ms, tags FROM usage_ledger ORDER BY request_id",
    )
    # 6,000 * 0.15 + 4,000 * 0.075 + (1,000 + i) * 0.6, per million tokens
    assert stored.result_rows == [
        (
            f"durable-{i}",
            D("0.0018") + D("0.0000006") * i,
            D("0.0003"),
            D("0.075"),
            "priced",
            None,
            {},
        )
        for i in range(3)
    ]
    assert (sink.stats.batches, sink.stats.rows, sink.stats.failures) == (1, 3, 0)
    assert sink.healthy


async def test_writing_the_same_batch_twice_leaves_one_copy(executor: ClickHouseExecutor) -> None:
    batch = rows("twice")
    sink = ClickHouseLedgerSink(executor)
    await sink.write(batch)
    await sink.write(batch)
    # Without FINAL: the re-insert must not land at all, not merely collapse later.
    assert await scalar(executor, "SELECT count() FROM usage_ledger") == 3
    # Nor may the materialized views see it a second time.
    assert await scalar(executor, "SELECT sum(ledger_rows) FROM ledger_day_check") == 3


async def test_a_different_batch_is_not_mistaken_for_a_repeat(executor: ClickHouseExecutor) -> None:
    sink = ClickHouseLedgerSink(executor)
    await sink.write(rows("distinct-a", 2))
    await sink.write(rows("distinct-b", 2))
    await sink.write(rows("distinct-a", 1))  # a subset: another block, collapsed by FINAL
    assert await scalar(executor, "SELECT count() FROM usage_ledger") == 5
    assert await scalar(executor, "SELECT count() FROM usage_ledger FINAL") == 4


async def test_dead_letters_are_written_once(executor: ClickHouseExecutor) -> None:
    sink = ClickHouseLedgerSink(executor)
    letters = dead_letters("dl")
    await sink.write([], letters)
    await sink.write([], letters)
    stored = await executor.run(
        executor.client.query,
        "SELECT offset, element_index, reason, raw_payload, request_id FROM dead_letters "
        "ORDER BY offset",
    )
    assert stored.result_rows == [
        (10, -1, "malformed_json", '{"bad": 0}', "dl-dl-0"),
        (11, 0, "missing_field", '{"bad": 1}', "dl-dl-1"),
    ]
    assert await scalar(executor, "SELECT count() FROM usage_ledger") == 0
    assert sink.stats.dead_letters == 4


async def test_failing_writes_are_retried_until_durable(executor: ClickHouseExecutor) -> None:
    attempts: list[tuple[float, bool]] = []
    sink: ClickHouseLedgerSink

    def hook(table: str) -> None:
        attempts.append((time.monotonic(), sink.healthy))
        if len(attempts) <= 3:
            raise ConnectionError(f"{table} unreachable")

    sink = ClickHouseLedgerSink(executor, backoff_initial=0.02, backoff_max=1.0, write_hook=hook)
    await sink.write(rows("retried"))
    assert len(attempts) == 4
    # Healthy before the first failure, unhealthy while failing, healthy once durable.
    assert [healthy for _, healthy in attempts] == [True, False, False, False]
    assert sink.healthy
    assert sink.stats.failures == 3
    assert sink.stats.last_error == "ConnectionError: usage_ledger unreachable"
    assert await scalar(executor, "SELECT count() FROM usage_ledger") == 3
    # Exponential backoff: at least 0.02, 0.04, 0.08 s between attempts.
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(attempts)]
    assert [gap >= floor for gap, floor in zip(gaps, (0.02, 0.04, 0.08), strict=True)] == [True] * 3


async def test_write_does_not_return_during_an_outage(executor: ClickHouseExecutor) -> None:
    outage = threading.Event()
    outage.set()

    def hook(table: str) -> None:
        if outage.is_set():
            raise TimeoutError("ClickHouse down")

    sink = ClickHouseLedgerSink(executor, backoff_initial=0.01, backoff_max=0.02, write_hook=hook)
    task = asyncio.create_task(sink.write(rows("outage")))
    await wait_until(lambda: sink.stats.failures >= 3)
    assert not task.done()
    assert not sink.healthy
    assert await scalar(executor, "SELECT count() FROM usage_ledger") == 0
    outage.clear()
    await asyncio.wait_for(task, timeout=10)
    assert sink.healthy
    assert await scalar(executor, "SELECT count() FROM usage_ledger") == 3


async def test_a_real_clickhouse_error_is_retried_until_the_table_is_back(
    executor: ClickHouseExecutor,
) -> None:
    """Not a hook: the ledger table is detached, so ClickHouse itself refuses the insert
    (UNKNOWN_TABLE); the write waits, retrying, and lands once the table is attached."""
    sink = ClickHouseLedgerSink(executor, backoff_initial=0.01, backoff_max=0.05)
    await sink.write(rows("before"))  # the Arrow schema is read while the table exists
    await executor.run(executor.client.command, "DETACH TABLE usage_ledger")
    try:
        task = asyncio.create_task(sink.write(rows("during")))
        await wait_until(lambda: sink.stats.failures >= 3)
        assert not task.done()
        assert not sink.healthy
        # ClickHouse's own error, through clickhouse-connect and chdb.
        assert sink.stats.last_error.startswith("DatabaseError: Code: 60."), sink.stats.last_error
        assert "(UNKNOWN_TABLE)" in sink.stats.last_error
    finally:
        await executor.run(executor.client.command, "ATTACH TABLE usage_ledger")
    await asyncio.wait_for(task, timeout=10)
    assert sink.healthy
    assert await scalar(executor, "SELECT count() FROM usage_ledger") == 6
    assert await scalar(executor, "SELECT uniqExact(request_id) FROM usage_ledger") == 6


# -- poison isolation: a row ClickHouse refuses for its data is dead-lettered with the
# error and the rest ledgered; more months than one insert may hold go in chunks; an
# infrastructure failure is still retried.


def months_back(count: int) -> list[datetime]:
    now = datetime.now(UTC)
    out = []
    year, month = now.year, now.month
    for _ in range(count):
        out.append(datetime(year, month, 1, 12, tzinfo=UTC))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


async def test_an_over_precise_decimal_is_isolated_and_the_rest_ledgered(
    executor: ClickHouseExecutor,
) -> None:
    batch = rows("precise", 40)
    # What a float cost carries when no validation rounded it: 21 decimal places.
    batch[17] = dict(batch[17], reported_cost_usd=Decimal("7.750000000000001E-05"))
    sink = ClickHouseLedgerSink(executor)
    refused = await sink.write(batch)
    assert [letter["request_id"] for letter in refused] == ["precise-17"]
    assert refused[0]["reason"] == REFUSED_REASON
    assert "Rescaling Decimal" in refused[0]["message"]
    assert await scalar(executor, "SELECT count() FROM usage_ledger") == 39
    stored = await executor.run(
        executor.client.query,
        "SELECT request_id, reason, message FROM dead_letters",
    )
    assert [(r[0], r[1]) for r in stored.result_rows] == [("precise-17", REFUSED_REASON)]
    assert (sink.stats.rows, sink.stats.refused, sink.stats.failures) == (39, 1, 0)
    assert sink.healthy


async def test_101_months_in_one_batch_are_written_in_chunks(
    executor: ClickHouseExecutor,
) -> None:
    batch = [
        dict(row, timestamp=moment, tenant_id="months")
        for row, moment in zip(rows("months", 101), months_back(101), strict=True)
    ]
    sink = ClickHouseLedgerSink(executor)
    assert await sink.write(batch) == []
    assert (sink.stats.rows, sink.stats.refused, sink.stats.failures) == (101, 0, 0)
    # The raw ledger drops rows older than its 90-day TTL as they land; the daily
    # rollup keeps every month.
    months = await scalar(
        executor,
        "SELECT uniqExact(toStartOfMonth(day)) FROM tenant_daily_state WHERE tenant_id = 'months'",
    )
    assert months == 101


async def test_an_outage_is_retried_not_isolated(executor: ClickHouseExecutor) -> None:
    attempts: list[str] = []

    def down_twice(table: str) -> None:
        attempts.append(table)
        if len(attempts) <= 2:
            raise ConnectionError("ClickHouse is down")

    sink = ClickHouseLedgerSink(executor, backoff_initial=0.01, write_hook=down_twice)
    assert await sink.write(rows("outage", 5)) == []
    assert await scalar(executor, "SELECT count() FROM usage_ledger") == 5
    assert (sink.stats.failures, sink.stats.refused) == (2, 0)


def test_only_the_datas_own_failures_are_data_errors() -> None:
    class ClickHouseError(Exception):
        def __init__(self, code: int, text: str) -> None:
            super().__init__(f"Code: {code}. DB::Exception: {text}")
            self.code = code

    data: list[Exception] = [
        pa.ArrowInvalid("Rescaling Decimal value would cause data loss"),
        ClickHouseError(252, "Too many partitions for single INSERT block (more than 100)"),
        ClickHouseError(407, "Decimal math overflow"),
        ClickHouseError(53, "Type mismatch"),
    ]
    infrastructure: list[Any] = [
        ConnectionError("refused"),
        TimeoutError(),
        ClickHouseError(252, "Too many parts (300). Merges are processing slower"),
        ClickHouseError(241, "Memory limit exceeded"),
        ClickHouseError(242, "Table is in readonly mode"),
        RuntimeError("anything else"),
    ]
    assert all(is_data_error(exc) for exc in data)
    assert not any(is_data_error(exc) for exc in infrastructure)
