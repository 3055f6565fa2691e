"""One reader: the values a query gives directly, over the worker's wire format, and
from clickhouse-connect's own decoder are the same, for the types that broke JSON."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from streams.ledger.arrow import table_schema, to_arrow
from streams.ledger.connect import ClickHouseHandle, open_session_client
from streams.ledger.peer import decode_insert
from streams.ledger.remote import (
    ARROW_STREAM,
    DirectReader,
    QueryResult,
    decode_query_request,
    encode_query_request,
    encode_query_response,
    ipc_bytes,
    python_rows,
    query_table,
    read_ipc,
)
from tests.ledger.test_sink import dead_letters, rows

D = Decimal

TRICKY = """
SELECT
    toDecimal128('12345678901234567890.123456789012345678', 18) AS money,
    (toDecimal128('2.5', 18), toDecimal64('3', 4)) AS money_pair,
    [(toDecimal32('1.10', 2), 'x')] AS pairs,
    {start:DateTime('UTC')} AS start,
    toDateTime64('2026-12-01 10:00:00.123', 3, 'UTC') AS at_ms,
    toStartOfHour(toDateTime64('2026-12-01 10:30:00', 3, 'UTC')) AS hour,
    toDate('2026-12-01') AS day,
    CAST(NULL AS Nullable(Decimal(38, 18))) AS no_money,
    CAST(NULL AS Nullable(DateTime('UTC'))) AS no_time,
    map('team', 'search', 'env', 'prod') AS tags,
    map('k', toDecimal64('1.25', 2)) AS priced,
    {names:Array(String)} AS names,
    {day:Date} AS given_day,
    {amount:Decimal(38, 18)} AS given_amount,
    toLowCardinality('lc') AS low,
    toUInt64(18446744073709551615) AS big,
    true AS flag,
    CAST((1, 'x'), 'Tuple(a UInt8, b String)') AS named
"""
PARAMETERS: dict[str, Any] = {
    "start": datetime(2026, 12, 1, tzinfo=UTC),
    "names": ["a", "b'quote"],
    "day": date(2026, 11, 30),
    "amount": D("0.000000075"),
}
EXPECTED = {
    "money": D("12345678901234567890.123456789012345678"),
    "money_pair": (D("2.5"), D("3")),
    "pairs": [(D("1.10"), "x")],
    "start": datetime(2026, 12, 1, tzinfo=UTC),
    "at_ms": datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=UTC),
    "hour": datetime(2026, 12, 1, 10, tzinfo=UTC),
    "day": date(2026, 12, 1),
    "no_money": None,
    "no_time": None,
    "tags": {"team": "search", "env": "prod"},
    "priced": {"k": D("1.25")},
    "names": ["a", "b'quote"],
    "given_day": date(2026, 11, 30),
    "given_amount": D("0.000000075"),
    "low": "lc",
    "big": 18446744073709551615,
    "flag": True,
    "named": {"a": 1, "b": "x"},
}


def through_the_worker(handle: ClickHouseHandle, sql: str, parameters: dict[str, Any]) -> Any:
    """What the worker's view and RemoteQueryClient do, without the HTTP hop."""
    request = encode_query_request(sql, parameters)
    sql_read, parameters_read = decode_query_request(request, ARROW_STREAM)
    # The worker reads on a session of its own: on chdb, readonly=1 sticks to a session.
    reader = open_session_client(handle)
    try:
        table = query_table(reader, sql_read, parameters_read, {"readonly": 1})
    finally:
        reader.close()
    body, content_type = encode_query_response(table, f"{ARROW_STREAM}, application/json")
    assert content_type == ARROW_STREAM
    return QueryResult(read_ipc(body))


def test_tricky_types_are_the_same_through_the_worker_as_directly(
    chdb_migrated: ClickHouseHandle,
) -> None:
    direct = DirectReader(chdb_migrated.client).query(TRICKY, PARAMETERS)
    remote = through_the_worker(chdb_migrated, TRICKY, PARAMETERS)
    assert remote.column_names == direct.column_names == tuple(EXPECTED)
    assert remote.result_rows == direct.result_rows == [tuple(EXPECTED.values())]
    # Equal is not enough for money: the types must be exact too.
    (row,) = remote.result_rows
    assert all(
        type(value) is type(EXPECTED[name]) for name, value in zip(EXPECTED, row, strict=True)
    )
    assert all(type(value) is Decimal for value in row[1])


def test_the_values_are_clickhouse_connects_own_but_for_utc_being_said(
    chdb_migrated: ClickHouseHandle,
) -> None:
    native = chdb_migrated.client.query(TRICKY, parameters=PARAMETERS)
    (ours,) = DirectReader(chdb_migrated.client).query(TRICKY, PARAMETERS).result_rows
    for name, mine, theirs in zip(native.column_names, ours, native.result_rows[0], strict=True):
        if isinstance(mine, datetime):  # clickhouse-connect gives naive UTC datetimes
            mine = mine.replace(tzinfo=None)
        assert mine == theirs, name


def test_parameters_keep_their_python_types_on_the_wire() -> None:
    sql, parameters = decode_query_request(
        encode_query_request("SELECT 1", PARAMETERS), ARROW_STREAM
    )
    assert sql == "SELECT 1"
    assert parameters == PARAMETERS
    assert [type(v) for v in parameters.values()] == [type(v) for v in PARAMETERS.values()]
    assert decode_query_request(encode_query_request("SELECT 2", None), ARROW_STREAM) == (
        "SELECT 2",
        {},
    )


def test_a_caller_by_hand_sends_and_gets_json(chdb_migrated: ClickHouseHandle) -> None:
    body = orjson.dumps(
        {"sql": "SELECT {x:Decimal(38, 18)} AS x, [1, 2] AS a", "parameters": {"x": "1.5"}}
    )
    sql, parameters = decode_query_request(body, "application/json")
    table = query_table(chdb_migrated.client, sql, parameters)
    payload, content_type = encode_query_response(table, "*/*")
    assert content_type == "application/json"
    assert json.loads(payload) == {
        "columns": ["x", "a"],
        "types": ["decimal128(38, 18)", "list<element: uint8 not null>"],
        "rows": [["1.500000000000000000", [1, 2]]],
    }


def test_an_empty_result_keeps_its_columns(chdb_migrated: ClickHouseHandle) -> None:
    result = through_the_worker(
        chdb_migrated, "SELECT request_id, cost_usd FROM usage_ledger WHERE 0", {}
    )
    assert result.column_names == ("request_id", "cost_usd")
    assert result.result_rows == []
    assert python_rows(result.table) == []


def test_a_peer_insert_lands_with_its_exact_values(ledger_db: ClickHouseHandle) -> None:
    client = ledger_db.client
    for table, batch, columns in [
        ("usage_ledger", rows("peer"), ("request_id", "timestamp", "cost_usd", "tags")),
        ("dead_letters", dead_letters("peer"), ("offset", "reason", "element_index")),
    ]:
        schema = table_schema(client, table, list(batch[0]))
        sent = to_arrow(batch, schema)
        settings = {"insert_deduplication_token": f"peer-{table}"}
        body = ipc_bytes(
            sent.replace_schema_metadata({"table": table, "settings": orjson.dumps(settings)})
        )
        name, received, insert_settings = decode_insert(body)
        assert (name, insert_settings) == (table, settings)
        client.insert_arrow(name, received, settings=insert_settings)
        stored = DirectReader(client).query(
            f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}"
        )
        expected = sorted(tuple(row[c] for c in columns) for row in batch)
        assert stored.result_rows == expected


def test_a_peer_cannot_write_other_tables() -> None:
    import pyarrow as pa

    body = ipc_bytes(pa.table({"a": [1]}).replace_schema_metadata({"table": "alerts"}))
    with pytest.raises(ValueError, match="not writable by peers"):
        decode_insert(body)
