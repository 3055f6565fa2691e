"""The Arrow mapping of ledger rows: types read from the table's own DDL, values kept
exact (Decimal, millisecond UTC times, maps, nulls) through chdb's `insert_arrow`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from schemas.ledger import LEDGER_COLUMNS
from schemas.usage_event import UsageEvent
from streams.cost.catalog import UnitPrices
from streams.cost.rows import SourcePosition, ledger_row
from streams.ledger.arrow import arrow_type, table_schema, to_arrow
from streams.ledger.connect import ClickHouseHandle

NOW = datetime.now(UTC).replace(microsecond=123_000)
PRICES = UnitPrices(
    Decimal("0.15"), Decimal("0.075"), Decimal("0.1875"), Decimal("0.6"), Decimal("0.6"),
    source="test",
)  # fmt: skip


@pytest.mark.parametrize(
    ("clickhouse", "arrow"),
    [
        ("String", pa.string()),
        ("LowCardinality(String)", pa.string()),
        ("UInt32", pa.uint32()),
        ("Nullable(UInt16)", pa.uint16()),
        ("Int64", pa.int64()),
        ("Decimal(38, 18)", pa.decimal128(38, 18)),
        ("Nullable(Decimal(38, 18))", pa.decimal128(38, 18)),
        ("Decimal(38, 12)", pa.decimal128(38, 12)),
        ("DateTime64(3, 'UTC')", pa.timestamp("ms", tz="UTC")),
        ("Map(String, String)", pa.map_(pa.string(), pa.string())),
    ],
)
def test_clickhouse_types_map_to_arrow(clickhouse: str, arrow: pa.DataType) -> None:
    assert arrow_type(clickhouse) == arrow


@pytest.mark.parametrize("clickhouse", ["DateTime", "Array(String)", "UUID", "Decimal(9, 2"])
def test_an_unmapped_type_is_an_error_that_names_it(clickhouse: str) -> None:
    with pytest.raises(ValueError, match="no Arrow type for ClickHouse type"):
        arrow_type(clickhouse)


def test_the_ledger_schema_is_the_tables_own(chdb_migrated: ClickHouseHandle) -> None:
    schema = table_schema(chdb_migrated.client, "usage_ledger", LEDGER_COLUMNS)
    assert schema.names == list(LEDGER_COLUMNS)
    assert schema.field("cost_usd").type == pa.decimal128(38, 18)
    assert schema.field("price_input_per_mtok").type == pa.decimal128(38, 12)
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("tags").type == pa.map_(pa.string(), pa.string())


def row(request_id: str, **fields: Any) -> dict[str, Any]:
    event = UsageEvent.model_validate(
        {
            "request_id": request_id,
            "timestamp": NOW.isoformat(),
            "tenant_id": "acme",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 12_345,
            "cached_tokens": 2_000,
            "output_tokens": 678,
            **fields,
        },
        context={"now": NOW},
    )
    return ledger_row(event, PRICES, SourcePosition("spendstream.usage", 3, 41), NOW)


def test_rows_round_trip_exactly_through_chdb(ledger_db: ClickHouseHandle) -> None:
    client = ledger_db.client
    rows = [
        row("arrow-1", tags={"team": "search", "tier": "gold"}, latency_ms=350),
        row("arrow-2", reported_cost_usd="0.001234567890123456"),
    ]
    table = to_arrow(rows, table_schema(client, "usage_ledger", LEDGER_COLUMNS))
    assert table.num_rows == 2 and table.column_names == list(LEDGER_COLUMNS)
    client.insert_arrow("usage_ledger", table)

    back = client.query(
        "SELECT request_id, timestamp, cost_usd, cost_input_usd, price_cache_write_per_mtok, "
        "tags, latency_ms, reported_cost_usd, source_partition, source_offset "
        "FROM usage_ledger ORDER BY request_id"
    ).result_rows
    expected = [
        (
            r["request_id"],
            r["timestamp"],
            r["cost_usd"],
            r["cost_input_usd"],
            r["price_cache_write_per_mtok"],
            r["tags"],
            r["latency_ms"],
            r["reported_cost_usd"],
            3,
            41,
        )
        for r in rows
    ]
    normalized = [
        (rid, ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts, *rest) for rid, ts, *rest in back
    ]
    assert normalized == expected
    assert all(isinstance(r[2], Decimal) for r in back)
