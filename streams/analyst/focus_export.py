"""FOCUS 1.2 export of one month of charges (view `focus_charges`) to CSV or Parquet.

Column types follow the ClickHouse view: Decimal stays decimal (Parquet
decimal128, CSV plain digits), DateTime becomes a UTC timestamp (CSV ISO 8601
with Z), Tags becomes a JSON object, as the FOCUS key-value format asks.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from clickhouse_connect.driver.client import Client

from streams.analyst.periods import Period
from streams.errors import ConfigError

_DECIMAL = re.compile(r"Decimal\((\d+), (\d+)\)")


def query_focus(
    client: Client, month: Period
) -> tuple[list[str], list[str], Sequence[Sequence[Any]]]:
    """Column names, ClickHouse type names and rows of the month's FOCUS charges."""
    result = client.query(
        "SELECT * FROM focus_charges "
        "WHERE ChargePeriodStart >= {start:DateTime('UTC')} "
        "AND ChargePeriodStart < {end:DateTime('UTC')} "
        "ORDER BY ChargePeriodStart, SubAccountId, SkuId, SkuMeter, ChargeClass NULLS FIRST, "
        "toString(Tags)",
        parameters={
            "start": datetime.combine(month.start, datetime.min.time(), UTC),
            "end": datetime.combine(month.end_exclusive, datetime.min.time(), UTC),
        },
    )
    # A ClickHouse type object, or already its name when the result came over the wire.
    types = [getattr(column_type, "name", str(column_type)) for column_type in result.column_types]
    return list(result.column_names), types, result.result_rows


def export_focus(client: Client, month: Period, out: Path) -> int:
    """Write the month's charges to `out` (.csv or .parquet); return the row count."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out}: use a .csv or .parquet file name")
    names, types, rows = query_focus(client, month)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        _write_csv(out, names, types, rows)
    else:
        _write_parquet(out, names, types, rows)
    return len(rows)


def _base_type(type_name: str) -> str:
    for wrapper in ("Nullable(", "LowCardinality("):
        if type_name.startswith(wrapper):
            return _base_type(type_name[len(wrapper) : -1])
    return type_name


def arrow_type(type_name: str) -> pa.DataType:
    base = _base_type(type_name)
    decimal = _DECIMAL.fullmatch(base)
    if decimal:
        return pa.decimal128(int(decimal[1]), int(decimal[2]))
    if base.startswith("DateTime"):
        return pa.timestamp("ms", tz="UTC")  # Parquet has no seconds unit
    if base.startswith(("UInt", "Int")):
        return pa.int64()
    return pa.string()  # String, and Map (Tags) as its JSON text


def _cell(value: Any, type_name: str) -> Any:
    if value is None:
        return None
    base = _base_type(type_name)
    if base.startswith("Map"):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # the view's DateTimes are all UTC
    return value


def _write_parquet(
    out: Path, names: list[str], types: list[str], rows: Sequence[Sequence[Any]]
) -> None:
    schema = pa.schema(
        [pa.field(name, arrow_type(t)) for name, t in zip(names, types, strict=True)]
    )
    columns = [
        pa.array([_cell(row[i], types[i]) for row in rows], type=schema.field(i).type)
        for i in range(len(names))
    ]
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), out)


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        precision = "milliseconds" if value.microsecond else "seconds"
        return value.astimezone(UTC).isoformat(timespec=precision).replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _write_csv(
    out: Path, names: list[str], types: list[str], rows: Sequence[Sequence[Any]]
) -> None:
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in rows:
            writer.writerow(_csv_text(_cell(value, t)) for value, t in zip(row, types, strict=True))
