"""Row dicts → an Arrow table typed like the ClickHouse table it goes into.

clickhouse-connect converts Python values one by one when it serializes a native
insert (about 30 µs a ledger row, Decimals the dearest); pyarrow builds the same
columns in C, and ClickHouse reads Arrow directly. Types come from the table's own
DDL (`system.columns`), so the batch always matches what the table declares.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client

_SIMPLE = {
    "String": pa.string(),
    "Bool": pa.bool_(),
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
    "Int8": pa.int8(),
    "Int16": pa.int16(),
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "Float32": pa.float32(),
    "Float64": pa.float64(),
}
_DECIMAL = re.compile(r"^Decimal\((\d+), (\d+)\)$")


def arrow_type(clickhouse_type: str) -> pa.DataType:
    for wrapper in ("LowCardinality(", "Nullable("):
        if clickhouse_type.startswith(wrapper):
            return arrow_type(clickhouse_type[len(wrapper) : -1])
    if clickhouse_type in _SIMPLE:
        return _SIMPLE[clickhouse_type]
    if match := _DECIMAL.match(clickhouse_type):
        return pa.decimal128(int(match.group(1)), int(match.group(2)))
    if clickhouse_type.startswith("DateTime64(3"):
        return pa.timestamp("ms", tz="UTC")
    if clickhouse_type == "Map(String, String)":
        return pa.map_(pa.string(), pa.string())
    raise ValueError(f"no Arrow type for ClickHouse type {clickhouse_type}")


def table_schema(client: Client, table: str, columns: Sequence[str]) -> pa.Schema:
    rows = client.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
        "AND table = %(table)s",
        parameters={"table": table},
    ).result_rows
    types: dict[str, str] = {str(name): str(kind) for name, kind in rows}
    return pa.schema([(name, arrow_type(types[name])) for name in columns])


def to_arrow(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    # The rows as one struct array: pyarrow walks the dicts in C++ (about half the cost
    # of a Python list per column), picking the schema's fields and ignoring the rest.
    return pa.Table.from_struct_array(pa.array(rows, type=pa.struct(list(schema))))
