"""ClickHouse through the worker that owns the embedded data dir.

chdb lets one process own a data path, so `spendstream dev --workers N` runs the
first worker as the owner and points the others at it with
`SPENDSTREAM_CLICKHOUSE_URL=spendstream+http://127.0.0.1:<port>`: their ledger
inserts go to the owner's `POST /v1/ledger/insert` (same columns, same
deduplication token, answered only once durable) and their reads to its
read-only `POST /v1/query`. A production deployment points every worker at a
ClickHouse server instead and needs none of this.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
from pydantic import BaseModel

from schemas.ledger import DeadLetterRow, LedgerRow
from streams.ledger.remote import RemoteQueryClient

PEER_TABLES: dict[str, type[BaseModel]] = {
    "usage_ledger": LedgerRow,
    "dead_letters": DeadLetterRow,
}


def _converter(annotation: Any) -> Callable[[Any], Any]:
    text = str(annotation)
    if "Decimal" in text:
        return lambda v: None if v is None else Decimal(str(v))
    if "datetime" in text:
        return lambda v: None if v is None else datetime.fromisoformat(str(v))
    return lambda v: v


def column_converters(table: str) -> dict[str, Callable[[Any], Any]]:
    model = PEER_TABLES[table]
    hints = typing.get_type_hints(model)
    return {name: _converter(hints[name]) for name in model.model_fields}


def decode_insert(body: bytes) -> tuple[str, list[str], list[list[Any]], dict[str, Any]]:
    """The owner's side: a peer's column-oriented insert, with Python types restored."""
    request = orjson.loads(body)
    table = request["table"]
    if table not in PEER_TABLES:
        raise ValueError(f"table {table!r} is not writable by peers")
    converters = column_converters(table)
    columns = list(request["columns"])
    data = [
        [converters[c](v) for v in values]
        for c, values in zip(columns, request["data"], strict=True)
    ]
    return table, columns, data, dict(request.get("settings") or {})


class PeerClickHouseClient:
    """The subset of clickhouse-connect's client the worker uses, over the owner's API."""

    remote = True

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self._reader = RemoteQueryClient(base_url, token, timeout)

    def insert(
        self,
        table: str,
        data: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        column_oriented: bool = True,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if not column_oriented:
            data = [list(column) for column in zip(*data, strict=True)]
        body = orjson.dumps(
            {
                "table": table,
                "columns": list(column_names),
                "data": data,
                "settings": settings or {},
            },
            default=str,
        )
        response = self._http.post("/v1/ledger/insert", content=body)
        if response.status_code != 200:
            raise ConnectionError(
                f"owner worker refused the insert: {response.status_code} {response.text[:200]}"
            )

    def query(
        self, query: str, parameters: dict[str, Any] | None = None, settings: Any = None
    ) -> Any:
        return self._reader.query(query, parameters)

    def query_column_block_stream(
        self, query: str, parameters: dict[str, Any] | None = None
    ) -> Any:
        result = self._reader.query(query, parameters)
        columns = (
            [list(c) for c in zip(*result.result_rows, strict=True)] if result.result_rows else []
        )
        return _OneBlock(columns)

    def command(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("schema changes are applied by the owner worker")

    def close(self) -> None:
        self._http.close()
        self._reader.close()


class _OneBlock:
    def __init__(self, columns: list[list[Any]]) -> None:
        self.columns = columns

    def __enter__(self) -> list[list[list[Any]]]:
        return [self.columns] if self.columns else []

    def __exit__(self, *exc: object) -> None:
        return None
