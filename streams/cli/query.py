"""`spendstream query`: read-only SQL against the ledger, as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from streams.analyst.tables import text_table
from streams.ledger.remote import Reader

# Enforced by ClickHouse itself, not by parsing the SQL: readonly=1 refuses writes
# and settings changes alike.
READ_ONLY_SETTINGS = {"readonly": 1}


def run_query(client: Reader, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    result = client.query(sql, settings=READ_ONLY_SETTINGS)
    return list(result.column_names), [tuple(row) for row in result.result_rows]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def format_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    if fmt == "json":
        objects = [
            {name: _json_value(value) for name, value in zip(columns, row, strict=True)}
            for row in rows
        ]
        return orjson.dumps(objects, default=str).decode()
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_text(v) for v in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    return text_table(columns, [[_text(v) for v in row] for row in rows], empty=None)
