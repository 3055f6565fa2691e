"""FOCUS 1.2 export of one month of charges (view `focus_charges`) to CSV or Parquet.

Column types are the ones ClickHouse gives the view's columns as Arrow: Decimal
stays decimal (Parquet decimal128, CSV plain digits), DateTime a UTC timestamp
(CSV ISO 8601 with Z); Tags becomes a JSON object, as the FOCUS key-value format asks.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streams.analyst.periods import Period
from streams.errors import ConfigError
from streams.ledger.remote import Reader, python_rows


def query_focus(client: Reader, month: Period) -> pa.Table:
    """The month's FOCUS charges, typed as the view declares them."""
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
    return _tags_as_json(result.table)


def export_focus(client: Reader, month: Period, out: Path) -> int:
    """Write the month's charges to `out` (.csv or .parquet); return the row count."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out}: use a .csv or .parquet file name")
    charges = query_focus(client, month)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        _write_csv(out, charges)
    else:
        pq.write_table(charges, out)
    return charges.num_rows


def _tags_as_json(table: pa.Table) -> pa.Table:
    """Map columns (Tags) as JSON objects, the FOCUS key-value format."""
    for index, field in enumerate(table.schema):
        if pa.types.is_map(field.type):
            text = [
                None if tags is None else json.dumps(tags, sort_keys=True, ensure_ascii=False)
                for tags in table.column(index).to_pylist(maps_as_pydicts="strict")
            ]
            table = table.set_column(index, field.name, pa.array(text, pa.string()))
    return table


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        precision = "milliseconds" if value.microsecond else "seconds"
        return value.astimezone(UTC).isoformat(timespec=precision).replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _write_csv(out: Path, charges: pa.Table) -> None:
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(charges.column_names)
        for row in python_rows(charges):
            writer.writerow(_csv_text(value) for value in row)
