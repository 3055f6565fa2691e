"""Coverage on Kafka (streams/spend/coverage.py): each costed partition's base holds its
tenants' ledger rows ingested before its mark, its stream the rest; together they give
each tenant's ledger totals to the Decimal, whatever the marks, on the real ClickHouse
engine."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
from aiokafka.partitioner import DefaultPartitioner

from streams.cost.rows import costed_event
from streams.ledger.connect import ClickHouseHandle
from streams.spend.coverage import Coverage, costed_partition, millis
from streams.spend.ledger_state import load_covered_base
from streams.spend.tables import SEP, SpendTables, key_tenant
from tests.spend.test_ledger_state import CUT, NOW, insert, ledger_rows

PARTITIONS = 4
TENANTS = ("acme", "globex", "a|b", "initech", "umbrella")


def test_a_tenant_s_partition_is_the_producer_s() -> None:
    partitioner = DefaultPartitioner()
    every = list(range(PARTITIONS))
    for tenant in (*TENANTS, "", "ü-tenant", "x" * 300):
        expected = partitioner(tenant.encode(), every, every)
        assert costed_partition(tenant, PARTITIONS) == expected


def test_rows_below_the_mark_are_the_base_s_and_the_rest_are_counted() -> None:
    mark = datetime(2026, 12, 7, 8, 0, 0, 500_000, tzinfo=UTC)
    coverage = Coverage({1: millis(mark)})
    rows = [
        {"request_id": "before", "ingested_at": (mark - timedelta(milliseconds=1)).isoformat()},
        {"request_id": "at", "ingested_at": mark.isoformat()},
        {"request_id": "naive", "ingested_at": "2026-12-07T07:59:00"},  # UTC, as ClickHouse
        {"request_id": "after", "ingested_at": mark + timedelta(seconds=1)},
        {"request_id": "unknown"},  # published before costed events carried it
    ]
    kept, skipped = coverage.counted_rows(1, rows)
    assert [r["request_id"] for r in kept] == ["at", "after", "unknown"]
    assert skipped == 2
    # A partition with no mark (the embedded broker's epochs) counts everything.
    assert coverage.counted_rows(2, rows) == (rows, 0)


def test_millis_are_exact_integers() -> None:
    at = datetime(2026, 12, 7, 8, 0, 0, 999_000, tzinfo=UTC)
    assert millis(at) == 1_796_630_400_999
    assert millis(at.isoformat()) == millis(at)


def test_key_tenant_reads_every_table_s_keys() -> None:
    tables = SpendTables({}, {}, {})
    row = ledger_rows(1)[0]
    row.update(tenant_id="a|b", team_id="month", workflow_id="w|1", workflow_run_id="run|7")
    row = costed_event(row, 0)
    tables.apply("a|b", [row])
    for name in ("hourly", "totals", "runs"):
        keys = list(getattr(tables, name))
        assert keys, name
        assert {key_tenant(name, key) for key in keys} == {"a|b"}, (name, keys)


def test_each_partition_s_base_and_stream_give_the_ledger_s_totals(
    ledger_db: ClickHouseHandle,
) -> None:
    rng = random.Random(11)
    rows = ledger_rows(800)
    for row in rows:
        row["tenant_id"] = rng.choice(TENANTS)
        # Around the marks, to the millisecond (the ledger's precision).
        row["ingested_at"] = CUT + timedelta(milliseconds=rng.randint(-3_600_000, 3_600_000))
    # One row exactly at a mark: the stream's, not the base's.
    acme = costed_partition("acme", PARTITIONS)
    marks = {p: millis(CUT) + (p - 1) * 600_000 for p in range(PARTITIONS)}
    rows[0]["tenant_id"] = "acme"
    rows[0]["ingested_at"] = CUT + timedelta(milliseconds=marks[acme] - millis(CUT))
    insert(ledger_db, rows)
    coverage = Coverage(marks)
    assert len(coverage.groups()) == PARTITIONS

    tables = SpendTables({}, {}, {})
    tables.set_base(load_covered_base(ledger_db.client, coverage, PARTITIONS, NOW))
    skipped = 0
    for index, row in enumerate(rows):
        tenant = row["tenant_id"]
        # As the costed topic carries it: JSON, ingested_at as text.
        event = orjson.loads(orjson.dumps(costed_event(row, index), default=str))
        kept, in_base = coverage.counted_rows(costed_partition(tenant, PARTITIONS), [event])
        skipped += in_base
        if kept:
            tables.apply(tenant, kept)
    assert 0 < skipped < len(rows)

    month_start = NOW.replace(day=1, hour=0, minute=0, second=0, tzinfo=None)
    for tenant in TENANTS:
        expected = ledger_db.client.query(
            "SELECT sum(cost_usd) FROM usage_ledger FINAL WHERE tenant_id = {t:String} "
            "AND timestamp >= {m:DateTime64(3)}",
            parameters={"t": tenant, "m": month_start},
        ).result_rows[0][0]
        assert tables.month(tenant, NOW).cost == Decimal(expected), tenant
    # Tenants of partitions the coverage does not name are not in the base.
    only = Coverage({acme: marks[acme]})
    base = load_covered_base(ledger_db.client, only, PARTITIONS, NOW)
    assert {key.split(SEP, 1)[0] for key in base.months} == {"acme"}
