"""`spendstream query`: read-only SQL on chdb, printed as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from streams.cli.query import format_rows, run_query
from streams.ledger.connect import ClickHouseHandle
from streams.ledger.remote import DirectReader

COLUMNS = ["tenant_id", "cost_usd", "day", "at", "latency_ms"]
ROWS: list[tuple[Any, ...]] = [
    (
        "acme",
        Decimal("0.001800000000000000"),
        date(2026, 3, 4),
        datetime(2026, 3, 4, 10, 0, tzinfo=UTC),
        None,
    ),
    (
        "globex, inc",
        Decimal("12345678901234567890.123456789012345678"),
        date(2026, 3, 5),
        datetime(2026, 3, 5, 0, 0, 1, tzinfo=UTC),
        250,
    ),
]


def test_json_is_one_array_of_objects_with_decimals_as_exact_strings() -> None:
    text = format_rows(COLUMNS, ROWS, "json")
    parsed = json.loads(text)
    assert parsed == [
        {
            "tenant_id": "acme",
            "cost_usd": "0.001800000000000000",
            "day": "2026-03-04",
            "at": "2026-03-04T10:00:00+00:00",
            "latency_ms": None,
        },
        {
            "tenant_id": "globex, inc",
            "cost_usd": "12345678901234567890.123456789012345678",
            "day": "2026-03-05",
            "at": "2026-03-05T00:00:01+00:00",
            "latency_ms": 250,
        },
    ]
    assert "\n" not in text


def test_json_of_no_rows_is_an_empty_array() -> None:
    assert format_rows(COLUMNS, [], "json") == "[]"


def test_csv_has_a_header_quotes_commas_and_prints_null_as_empty() -> None:
    text = format_rows(COLUMNS, ROWS, "csv")
    assert list(csv.reader(io.StringIO(text))) == [
        COLUMNS,
        ["acme", "0.001800000000000000", "2026-03-04", "2026-03-04T10:00:00+00:00", ""],
        [
            "globex, inc",
            "12345678901234567890.123456789012345678",
            "2026-03-05",
            "2026-03-05T00:00:01+00:00",
            "250",
        ],
    ]
    assert not text.endswith("\n")


def test_table_aligns_columns_under_a_header_rule() -> None:
    lines = format_rows(["name", "n"], [("a", 1), ("longer", 22)], "table").splitlines()
    assert lines == [
        "name     n",
        "------  --",
        "a        1",
        "longer  22",
    ]


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_money_prints_in_fixed_point_even_when_zero_or_tiny(fmt: str) -> None:
    # Exactly what chdb returns for Decimal(38, 18) zero and 7.5e-8 (one cached
    # gpt-4o-mini token): Decimal('0E-18') and Decimal('7.5000000000E-8').
    text = format_rows(["zero", "tiny"], [(Decimal("0E-18"), Decimal("7.5000000000E-8"))], fmt)
    assert "E-" not in text
    assert "0.000000000000000000" in text
    assert "0.000000075000000000" in text


@pytest.fixture
def db(ledger_db: ClickHouseHandle) -> Iterator[ClickHouseHandle]:
    ledger_db.client.command(
        "INSERT INTO usage_ledger (request_id, timestamp, tenant_id, provider, model, "
        "input_tokens, cost_usd, cost_status, ingested_at) VALUES "
        "('q-1', now64(3), 'acme', 'openai', 'gpt-4o-mini', 10, 0.000123, 'priced', now64(3))"
    )
    yield ledger_db


@pytest.fixture
def reader(db: ClickHouseHandle) -> Iterator[DirectReader]:
    # A client of its own per test: on chdb a refused INSERT leaves its client
    # read-only for good (see test_a_refused_write_leaves_the_client_usable), and
    # that must not leak into the fixtures that write.
    client = clickhouse_connect.get_client(dsn=db.url)
    yield DirectReader(client)
    client.close()


def test_run_query_returns_columns_and_rows_with_decimals(reader: DirectReader) -> None:
    columns, rows = run_query(
        reader, "SELECT tenant_id, cost_usd, input_tokens FROM usage_ledger FINAL"
    )
    assert columns == ["tenant_id", "cost_usd", "input_tokens"]
    assert rows == [("acme", Decimal("0.000123"), 10)]
    assert json.loads(format_rows(columns, rows, "json")) == [
        {"tenant_id": "acme", "cost_usd": "0.000123000000000000", "input_tokens": 10}
    ]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO usage_ledger (request_id, tenant_id) VALUES ('q-2', 'evil')",
        "CREATE TABLE sneaky (a Int32) ENGINE = Memory",
        "DROP TABLE usage_ledger",
        "TRUNCATE TABLE usage_ledger",
        "SELECT 1 SETTINGS readonly = 0",
    ],
    ids=["insert", "create", "drop", "truncate", "settings-escape"],
)
def test_run_query_is_read_only(db: ClickHouseHandle, reader: DirectReader, sql: str) -> None:
    with pytest.raises(DatabaseError, match="readonly"):
        run_query(reader, sql)
    assert db.client.query("SELECT count() FROM usage_ledger").result_rows == [(1,)]
    assert not db.client.query("EXISTS TABLE sneaky").result_rows[0][0]


def test_a_refused_write_on_the_reader_session_leaves_the_writer_usable(
    db: ClickHouseHandle,
) -> None:
    # On chdb a refused query's readonly=1 sticks to its session, so the worker
    # answers queries from a session of its own (open_session_client).
    from streams.ledger.connect import open_session_client

    reader = open_session_client(db)
    try:
        with pytest.raises(DatabaseError, match="readonly"):
            run_query(
                DirectReader(reader),
                "INSERT INTO usage_ledger (request_id, tenant_id) VALUES ('q-3', 'x')",
            )
    finally:
        reader.close()
    db.client.command("CREATE TABLE IF NOT EXISTS after_refusal (a Int32) ENGINE = Memory")
    assert db.client.query("EXISTS TABLE after_refusal").result_rows[0][0]
