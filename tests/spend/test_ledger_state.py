"""Spend state rebuilt from the ledger: the rows ledgered before a log epoch, read back
with GROUP BY queries, plus this epoch's rows counted in-stream, give exactly what one
uninterrupted stream would hold (hourly buckets with every detector field, month
totals with estimates, open runs), on the real ClickHouse engine."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas.ledger import LEDGER_COLUMNS, LedgerRow
from streams.cost.rows import costed_event
from streams.ledger.arrow import table_schema, to_arrow
from streams.ledger.connect import ClickHouseHandle
from streams.spend.ledger_state import load_ledger_base
from streams.spend.tables import DAY, HOUR, SEP, SpendTables

NOW = datetime.now(UTC).replace(microsecond=0)
CUT = NOW - timedelta(minutes=30)  # the log epoch began here


def ledger_rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        status = rng.choice(["priced"] * 8 + ["estimated"])
        cost = Decimal(rng.randint(1, 10**9)) / Decimal(10**12)
        rows.append(
            LedgerRow(
                request_id=f"r{i}",
                timestamp=NOW - timedelta(minutes=rng.randint(0, 3 * 24 * 60)),
                tenant_id=rng.choice(["acme", "globex", "a|b"]),
                team_id=rng.choice(["search", "ads", ""]),
                user_id=rng.choice(["u1", "u2", "u3", ""]),
                workflow_id=rng.choice(["answer", "summarize", ""]),
                workflow_run_id=rng.choice(["", f"run-{i % 7}"]),
                provider="openai",
                model=rng.choice(["gpt-4o", "gpt-4o-mini"]),
                input_tokens=rng.randint(1, 5000),
                output_tokens=rng.randint(0, 500),
                request_count=rng.choice([1, 1, 2]),
                status_code=rng.choice([200, 200, 429, None]),
                retry_count=rng.choice([0, 0, 1]),
                cost_usd=cost if status == "priced" else Decimal(0),
                estimated_cost_usd=cost if status == "estimated" else Decimal(0),
                cost_status=status,
                source_partition=i % 2,
                source_offset=i,
                ingested_at=CUT - timedelta(minutes=5) if i < count // 2 else CUT + timedelta(1),
            ).model_dump()
        )
    return rows


def insert(handle: ClickHouseHandle, rows: list[dict[str, Any]]) -> None:
    schema = table_schema(handle.client, "usage_ledger", LEDGER_COLUMNS)
    handle.client.insert_arrow("usage_ledger", to_arrow(rows, schema))


def apply_all(tables: SpendTables, rows: list[dict[str, Any]]) -> list[Any]:
    runs = []
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for index, row in enumerate(rows):
        by_tenant.setdefault(row["tenant_id"], []).append(costed_event(row, index))
    for tenant, costed in by_tenant.items():
        runs += tables.apply(tenant, costed).runs
    return runs


def comparable(bucket: dict[str, Any]) -> dict[str, Any]:
    # `seen` (source positions) is the stream's own bookkeeping, not spend.
    return {
        **{field: value for field, value in bucket.items() if field != "seen"},
        "cost": Decimal(bucket["cost"]),
        "estimated": Decimal(bucket.get("estimated", 0)),
        "users": sorted(bucket.get("users", ())),
    }


def test_ledger_before_the_epoch_plus_the_stream_equals_one_uninterrupted_stream(
    ledger_db: ClickHouseHandle,
) -> None:
    rows = ledger_rows(600)
    before, during = rows[:300], rows[300:]
    # Every row is ledgered; the first half before the cut, one of them twice (a
    # re-inserted batch that FINAL collapses).
    insert(ledger_db, rows)
    insert(ledger_db, before[:1])

    uninterrupted = SpendTables({}, {}, {})
    apply_all(uninterrupted, before)
    for tenant in ("acme", "globex", "a|b"):  # as the agent does: runs idle 48 h go
        uninterrupted.expire(tenant, NOW)
    expected_runs = apply_all(uninterrupted, during)

    restarted = SpendTables({}, {}, {})
    restarted.set_base(load_ledger_base(ledger_db.client, CUT, NOW))
    runs = apply_all(restarted, during)

    expected = {key: comparable(bucket) for key, bucket in uninterrupted.hourly.items()}
    rebuilt = {key: comparable(bucket) for key, bucket in restarted.hourly_buckets()}
    assert rebuilt == expected
    # The rows' three days reach into the month before early on the 1st.
    months = (NOW, NOW - timedelta(days=3))
    for tenant in ("acme", "globex", "a|b"):
        for at in months:
            assert restarted.month(tenant, at) == uninterrupted.month(tenant, at)
    assert any(restarted.month("acme", at).cost > 0 for at in months)
    days = [key for key in uninterrupted.totals if key.rsplit(SEP, 1)[1].startswith("d")]
    # Every tenant-day the rows fall on (the oldest day may hold no row of a tenant
    # when the three days back begin late in the evening).
    tenant_days = {(row["tenant_id"], row["timestamp"].date()) for row in rows}
    assert len(days) == len(tenant_days) >= 9
    for key in days:
        tenant, _, _, day = key.rsplit(SEP, 3)  # a tenant may hold '|'
        at = datetime.fromtimestamp(int(day[1:]) * DAY, UTC)
        assert restarted.tenant_day(tenant, at) == uninterrupted.tenant_day(tenant, at)
    assert sorted(runs, key=str) == sorted(expected_runs, key=str)


def test_month_to_date_equals_the_ledger_sum_to_the_decimal(ledger_db: ClickHouseHandle) -> None:
    rows = ledger_rows(400, seed=11)
    insert(ledger_db, rows)
    tables = SpendTables({}, {}, {})
    tables.set_base(load_ledger_base(ledger_db.client, NOW + timedelta(days=1), NOW))
    month_start = NOW.replace(day=1, hour=0, minute=0, second=0)
    for tenant in ("acme", "globex", "a|b"):
        (cost,) = ledger_db.client.query(
            "SELECT sum(cost_usd) FROM usage_ledger FINAL "
            "WHERE tenant_id = %(t)s AND timestamp >= %(m)s",
            parameters={"t": tenant, "m": month_start.replace(tzinfo=None)},
        ).result_rows[0]
        assert tables.month(tenant, NOW).cost == Decimal(cost)


def test_every_rebuilt_total_equals_the_ledger_sum_to_the_decimal(
    ledger_db: ClickHouseHandle,
) -> None:
    # Every row before the log epoch: the in-stream state is the ledger's alone.
    insert(ledger_db, ledger_rows(500, seed=13))
    tables = SpendTables({}, {}, {})
    tables.set_base(load_ledger_base(ledger_db.client, NOW + timedelta(days=1), NOW))

    def ledger(column: str, period: str, extra: str = "") -> dict[tuple[Any, ...], Decimal]:
        rows = ledger_db.client.query(
            f"SELECT tenant_id, {column}, {period} AS p, sum(cost_usd) FROM usage_ledger FINAL "
            f"WHERE {column} != '' {extra} GROUP BY tenant_id, {column}, p"
        ).result_rows
        return {(t, v.replace(SEP, "/"), int(p)): Decimal(c) for t, v, p, c in rows}

    compared = 0
    for dim, column in (
        ("tenant", "tenant_id"),
        ("workflow", "workflow_id"),
        ("team", "team_id"),
        ("model", "model"),
    ):
        if dim == "tenant":  # the tables keep days of tenants only
            by_day = ledger(column, f"intDiv(toUnixTimestamp(timestamp), {DAY})")
            for (tenant, _, day), cost in by_day.items():
                at = datetime.fromtimestamp(day * DAY, UTC)
                assert tables.tenant_day(tenant, at).cost == cost, (tenant, day)
            compared += len(by_day)
        by_hour = ledger(column, f"intDiv(toUnixTimestamp(timestamp), {HOUR})")
        for (tenant, value, hour), cost in by_hour.items():
            at = datetime.fromtimestamp(hour * HOUR, UTC)
            assert Decimal(tables.hour_bucket(tenant, dim, value, at)["cost"]) == cost
        compared += len(by_hour)
    # A run's cost: its calls of the last 8 days, for runs seen in the last 48 h.
    runs = ledger_db.client.query(
        "SELECT tenant_id, workflow_id, workflow_run_id, sum(cost_usd) FROM usage_ledger FINAL "
        "WHERE workflow_run_id != '' AND timestamp >= %(since)s "
        "GROUP BY tenant_id, workflow_id, workflow_run_id HAVING max(timestamp) >= %(open)s",
        parameters={
            "since": (NOW - timedelta(days=8)).replace(tzinfo=None),
            "open": (NOW - timedelta(hours=48)).replace(tzinfo=None),
        },
    ).result_rows
    for tenant, workflow, run, cost in runs:
        held = tables.base.runs[SEP.join((tenant, "run", workflow, run))]
        assert held["cost"] == Decimal(cost)
    assert len(tables.base.runs) == len(runs)
    assert compared > 100 and runs
    (today,) = ledger_db.client.query(
        "SELECT sum(cost_usd) FROM usage_ledger FINAL WHERE tenant_id = 'a|b' "
        "AND toDate(timestamp, 'UTC') = toDate(%(now)s)",
        parameters={"now": NOW.replace(tzinfo=None)},
    ).result_rows[0]
    assert tables.tenant_day("a|b", NOW).cost == Decimal(today)


def test_an_empty_ledger_gives_an_empty_base(ledger_db: ClickHouseHandle) -> None:
    base = load_ledger_base(ledger_db.client, NOW, NOW)
    assert (base.hourly, base.months, base.days, base.runs) == ({}, {}, {}, {})
    assert SEP not in "acme"
