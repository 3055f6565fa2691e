"""The Arrow mapping of ledger rows: the schema is the one ClickHouse gives the table's
columns, and values stay exact (Decimal, millisecond UTC times, maps, nulls) through
chdb's `insert_arrow`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa

from schemas.ledger import LEDGER_COLUMNS
from schemas.usage_event import UsageEvent
from streams.cost.catalog import UnitPrices
from streams.cost.rows import SourcePosition, ledger_row
from streams.ledger.arrow import table_schema, to_arrow
from streams.ledger.connect import ClickHouseHandle

NOW = datetime.now(UTC).replace(microsecond=123_000)
PRICES = UnitPrices(
    Decimal("0.15"), Decimal("0.075"), Decimal("0.1875"), Decimal("0.6"), Decimal("0.6"),
    source="test",
)  # fmt: skip


def test_the_ledger_schema_is_the_tables_own(chdb_migrated: ClickHouseHandle) -> None:
    schema = table_schema(chdb_migrated.client, "usage_ledger", LEDGER_COLUMNS)
    assert schema.names == list(LEDGER_COLUMNS)
    assert schema.field("cost_usd").type == pa.decimal128(38, 18)
    assert schema.field("price_input_per_mtok").type == pa.decimal128(38, 12)
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    tags = schema.field("tags").type
    assert pa.types.is_map(tags) and (tags.key_type, tags.item_type) == (pa.string(), pa.string())


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
