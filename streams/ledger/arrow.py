"""Row dicts → an Arrow table typed like the ClickHouse table it goes into.

clickhouse-connect converts Python values one by one when it serializes a native
insert (about 30 µs a ledger row, Decimals the dearest); pyarrow builds the same
columns in C, and ClickHouse reads Arrow directly. The Arrow types are the ones
ClickHouse itself gives the table's columns when it reads them (`query_table`), so
the batch always matches what the table declares, with no type mapping of our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pyarrow as pa
from clickhouse_connect.driver.client import Client

from streams.ledger.remote import DirectReader, Reader


def table_schema(client: Client, table: str, columns: Sequence[str]) -> pa.Schema:
    # A peer worker's client reads through the owner; a local one reads directly.
    reader = cast(Reader, client) if getattr(client, "remote", False) else DirectReader(client)
    schema = reader.query(f"SELECT {', '.join(columns)} FROM {table} LIMIT 0").table.schema
    return pa.schema([field.with_nullable(True) for field in schema])


def to_arrow(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    # The rows as one struct array: pyarrow walks the dicts in C++ (about half the cost
    # of a Python list per column), picking the schema's fields and ignoring the rest.
    return pa.Table.from_struct_array(pa.array(rows, type=pa.struct(list(schema))))
