"""ClickHouse through the worker that owns the embedded data dir.

chdb lets one process own a data path, so `spendstream dev --workers N` runs the
first worker as the owner and points the others at it with
`SPENDSTREAM_CLICKHOUSE_URL=spendstream+http://127.0.0.1:<port>`: their ledger
inserts go to the owner's `POST /v1/ledger/insert` as the Arrow batch the sink
built (same columns, same deduplication token, answered only once durable), and
their reads to its guarded `POST /v1/ledger/query`, both with the peer token.
Commands that write while a stack runs (`migrate`, `reprice`, `retention`) use the
same client: their statements go to `POST /v1/ledger/command`. A production
deployment points every worker at a ClickHouse server instead and needs none of this.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from streams.errors import SpendstreamError
from streams.ledger.connect import clickhouse_session
from streams.ledger.isolation import RowsRefused
from streams.ledger.remote import (
    ARROW_STREAM,
    QueryResult,
    RemoteQueryClient,
    embedded_stack,
    encode_query_request,
    ipc_bytes,
    read_ipc,
    refusal,
    require_data_dir,
)
from streams.settings import Settings

PEER_TABLES = ("usage_ledger", "dead_letters", "cost_corrections")


def decode_insert(body: bytes) -> tuple[str, pa.Table, dict[str, Any]]:
    """The owner's side: (table, Arrow batch, insert settings) of a peer's insert."""
    batch = read_ipc(body)
    metadata = batch.schema.metadata or {}
    table = metadata.get(b"table", b"").decode()
    if table not in PEER_TABLES:
        raise ValueError(f"table {table!r} is not writable by peers")
    settings = orjson.loads(metadata.get(b"settings", b"{}"))
    return table, batch.replace_schema_metadata(None), settings


class PeerClickHouseClient:
    """The subset of clickhouse-connect's client the worker uses, over the owner's API."""

    remote = True

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Content-Type": ARROW_STREAM}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self._reader = RemoteQueryClient(base_url, token, timeout, path="/v1/ledger/query")

    def insert_arrow(
        self, table: str, arrow_table: pa.Table, settings: dict[str, Any] | None = None
    ) -> None:
        metadata = {"table": table, "settings": orjson.dumps(settings or {})}
        body = ipc_bytes(arrow_table.replace_schema_metadata(metadata))
        response = self._http.post("/v1/ledger/insert", content=body)
        if response.status_code == 422:
            raise RowsRefused(response.text[:500])
        if response.status_code != 200:
            raise ConnectionError(
                f"owner worker refused the insert: {response.status_code} {response.text[:200]}"
            )

    def insert(
        self, table: str, data: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        """clickhouse-connect's row insert, as an Arrow batch typed like the table."""
        from streams.ledger.arrow import table_schema, to_arrow

        schema = table_schema(self, table, column_names)  # type: ignore[arg-type]
        rows = [dict(zip(column_names, row, strict=True)) for row in data]
        self.insert_arrow(table, to_arrow(rows, schema))

    def query(
        self, query: str, parameters: dict[str, Any] | None = None, settings: Any = None
    ) -> QueryResult:
        return self._reader.query(query, parameters)

    def query_column_block_stream(
        self, query: str, parameters: dict[str, Any] | None = None
    ) -> Any:
        return _OneBlock(self._reader.query(query, parameters).result_columns)

    def command(self, cmd: str, parameters: dict[str, Any] | None = None) -> None:
        body = encode_query_request(cmd, parameters)
        response = self._http.post("/v1/ledger/command", content=body)
        if response.status_code != 200:
            raise SpendstreamError(f"the worker refused the statement: {refusal(response)}")

    def close(self) -> None:
        self._http.close()
        self._reader.close()


class _OneBlock:
    def __init__(self, columns: list[list[Any]]) -> None:
        self.columns = columns

    def __enter__(self) -> list[list[list[Any]]]:
        return [self.columns] if self.columns and self.columns[0] else []

    def __exit__(self, *exc: object) -> None:
        return None


@contextmanager
def open_writer(settings: Settings, create: bool = False) -> Iterator[Client]:
    """The one way a command writes: through the running worker that owns the embedded
    data dir (inserts and statements on its ClickHouse session, authorized by the
    peer token it announces), else ClickHouse directly. `create`: a missing data dir
    is made (migrate), else it is an error."""
    stack = embedded_stack(settings)
    if stack is not None:
        if stack.peer_token is None:
            raise SpendstreamError(
                f"the worker at {stack.url} (pid {stack.pid}) owns {settings.data_dir} and "
                "accepts no writes (it has no SPENDSTREAM_PEER_TOKEN): stop it, or start it "
                "with spendstream dev"
            )
        peer = PeerClickHouseClient(stack.url, stack.peer_token)
        try:
            yield peer  # type: ignore[misc]
        finally:
            peer.close()
        return
    if not create and settings.resolved_clickhouse_url.startswith("chdb:"):
        require_data_dir(settings)
    with clickhouse_session(settings.resolved_clickhouse_url, settings.clickhouse_password) as ch:
        yield ch.client
