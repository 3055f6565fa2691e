"""Read access to ClickHouse: one reader, the same Python values direct or through the worker.

In the embedded default the worker's process owns the chdb data dir, so readers
(`spendstream query`, the reports) go through the worker's read-only
`POST /v1/query` endpoint when it is up, and open the data dir directly when it
is not. Either way the rows are read the same way: ClickHouse writes the result
as a columnar file, pyarrow reads it with its types (Decimal, DateTime, Nullable,
Map, Array, Tuple), and `python_rows` turns the columns into Python values. Between
processes the result travels as an Arrow IPC stream, and the query parameters as
a one-row Arrow table, so nothing is rebuilt from text on the other side.
The worker runs only a guarded SELECT (streams/ledger/query_guard.py) and only
with the analyst token, which these clients read from `<data_dir>/tokens.json` unless
one is configured. The worker announces itself in `<data_dir>/worker.json` (pid, web
port, broker, peer token); commands that write go through it too
(`streams.ledger.peer.open_writer`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from clickhouse_connect.driver.client import Client

from streams.auth import analyst_token_for
from streams.errors import ConfigError, SpendstreamError
from streams.ledger.connect import clickhouse_session
from streams.ports import port_open
from streams.settings import Settings, chdb_url_for

READ_ONLY = {"readonly": 1}
WORKER_FILE = "worker.json"
# The peers of `dev --workers N` (they write through the owner) announce themselves here,
# one `<pid>.json` each, so a command can read every worker's counters.
PEERS_DIR = "peers"
ARROW_STREAM = "application/vnd.apache.arrow.stream"

# ClickHouse's Parquet writer keeps DateTime a timestamp and Enum its name (its Arrow
# writer sends them as bare uint32 and int8 codes); uncompressed, it costs what Arrow does.
PARQUET_OUTPUT = {
    "output_format_parquet_compression_method": "none",
    "output_format_parquet_write_bloom_filter": 0,
    "output_format_parquet_write_page_index": 0,
    "output_format_parquet_string_as_string": 1,
}


@dataclass(frozen=True)
class QueryResult:
    """A result as Arrow columns, with the row view clickhouse-connect's results have."""

    table: pa.Table

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(self.table.column_names)

    @property
    def result_columns(self) -> list[list[Any]]:
        return [_python_values(column) for column in self.table.columns]

    @property
    def result_rows(self) -> list[tuple[Any, ...]]:
        return python_rows(self.table)


class Reader(Protocol):
    """What the read-only commands need: the direct reader and the worker's client."""

    def query(
        self,
        query: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> QueryResult: ...


def query_table(
    client: Client,
    query: str,
    parameters: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> pa.Table:
    """Run `query` with clickhouse-connect's parameter binding; the result as Arrow."""
    raw = client.raw_query(query, parameters, {**PARQUET_OUTPUT, **(settings or {})}, "Parquet")
    if not raw:  # a statement with no result set
        return pa.table({})
    return pq.read_table(pa.BufferReader(raw))


def python_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return list(zip(*(_python_values(column) for column in table.columns), strict=True))


def _python_values(column: pa.ChunkedArray) -> list[Any]:
    kind = column.type
    # Two fast paths for pyarrow's slowest conversions (numbers for 200,000 rows):
    # a UTC timestamp makes a zoneinfo datetime per value (3.3 s; numpy's naive
    # datetimes given UTC: 0.5 s), a decimal a Decimal from its digits (0.75 s; 0.4 s).
    if pa.types.is_timestamp(kind) and kind.tz == "UTC" and kind.unit != "ns":
        naive = column.cast(pa.timestamp(kind.unit)).to_numpy(zero_copy_only=False)
        return [
            None if value is None else value.replace(tzinfo=UTC) for value in naive.astype(object)
        ]
    if pa.types.is_decimal(kind):
        return [
            None if text is None else Decimal(text) for text in column.cast(pa.string()).to_pylist()
        ]
    values = column.to_pylist(maps_as_pydicts="strict")
    if _has_positional_struct(column.type):
        return [_tuples(value, column.type) for value in values]
    return values


def _is_positional(struct: pa.StructType) -> bool:
    # An unnamed ClickHouse Tuple arrives as a struct with fields "1", "2", ...
    return [field.name for field in struct] == [str(i) for i in range(1, struct.num_fields + 1)]


def _has_positional_struct(kind: pa.DataType) -> bool:
    if pa.types.is_struct(kind):
        return _is_positional(kind) or any(_has_positional_struct(f.type) for f in kind)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _has_positional_struct(kind.value_type)
    if pa.types.is_map(kind):
        return _has_positional_struct(kind.item_type)
    return False


def _tuples(value: Any, kind: pa.DataType) -> Any:
    """Unnamed tuples back to Python tuples, as clickhouse-connect returns them."""
    if value is None:
        return None
    if pa.types.is_struct(kind):
        fields = {field.name: _tuples(value[field.name], field.type) for field in kind}
        return tuple(fields.values()) if _is_positional(kind) else fields
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return [_tuples(item, kind.value_type) for item in value]
    if pa.types.is_map(kind):
        return {key: _tuples(item, kind.item_type) for key, item in value.items()}
    return value


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def read_ipc(body: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.BufferReader(body)).read_all()


def encode_query_request(query: str, parameters: dict[str, Any] | None) -> bytes:
    """The SQL in the schema's metadata, each parameter a typed column of one row."""
    values = pa.Table.from_pylist([parameters]) if parameters else pa.table({})
    return ipc_bytes(values.replace_schema_metadata({"sql": query}))


def decode_query_request(body: bytes, content_type: str) -> tuple[str, dict[str, Any]]:
    """(SQL, parameters) of a `/v1/query` body: Arrow from our client, or JSON by hand
    (`{"sql": ..., "parameters": {...}}`, parameters as JSON values)."""
    if content_type.startswith(ARROW_STREAM):
        table = read_ipc(body)
        sql = (table.schema.metadata or {}).get(b"sql")
        if sql is None:
            raise ValueError("the Arrow request carries no sql in its schema metadata")
        rows = table.to_pylist()
        return sql.decode(), rows[0] if rows else {}
    request = orjson.loads(body)
    return str(request["sql"]), dict(request.get("parameters") or {})


def encode_query_response(table: pa.Table, accept: str) -> tuple[bytes, str]:
    """Arrow IPC when the caller accepts it; else JSON (Decimals as exact strings)."""
    if ARROW_STREAM in accept:
        return ipc_bytes(table), ARROW_STREAM
    body = {
        "columns": table.column_names,
        "types": [str(field.type) for field in table.schema],
        "rows": python_rows(table),
    }
    return orjson.dumps(body, default=str), "application/json"


class DirectReader:
    """Reads through a clickhouse-connect client in this process."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def query(
        self,
        query: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> QueryResult:
        return QueryResult(query_table(self.client, query, parameters, settings))


def refusal(response: httpx.Response) -> str:
    """The worker's one-line reason (`{"error": ...}`), else the start of its answer."""
    try:
        reason = str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        reason = response.text
    lines = reason.strip().splitlines()
    return f"{lines[0][:300] if lines else ''} (HTTP {response.status_code})"


class RemoteQueryClient:
    """Reads through the worker that owns the data (it guards and bounds the query)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 120.0,
        path: str = "/v1/query",
    ) -> None:
        headers = {"Content-Type": ARROW_STREAM, "Accept": ARROW_STREAM}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self._path = path

    def query(
        self,
        query: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> QueryResult:
        response = self._http.post(self._path, content=encode_query_request(query, parameters))
        if response.status_code != 200:
            raise SpendstreamError(f"query failed: {refusal(response)}")
        return QueryResult(read_ipc(response.content))

    def close(self) -> None:
        self._http.close()


@dataclass(frozen=True)
class RunningStack:
    """What a running worker announces in `<data_dir>/worker.json`: where its web API and
    its broker answer, and the peer token that lets a command write through it."""

    pid: int
    web_port: int
    broker: str
    peer_token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"


def write_worker_file(
    data_dir: Path, web_port: int, broker: str, peer_token: str | None = None
) -> Path:
    """Readable by its owner only: it holds the peer token (the data dir's key anyway)."""
    path = data_dir / WORKER_FILE
    info = {"pid": os.getpid(), "web_port": web_port, "broker": broker, "peer_token": peer_token}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(info))
    return path


def write_peer_file(data_dir: Path, web_port: int) -> Path:
    """A peer worker's announcement: its pid and web port (no secret)."""
    peers = data_dir / PEERS_DIR
    peers.mkdir(mode=0o700, exist_ok=True)
    path = peers / f"{os.getpid()}.json"
    path.write_bytes(orjson.dumps({"pid": os.getpid(), "web_port": web_port}))
    return path


def peer_urls(data_dir: Path) -> list[str]:
    """The web APIs of the owner's peers alive and answering (a killed peer leaves its
    file); read only by what needs every worker, not by each command's `running_stack`."""
    urls = []
    for path in sorted((data_dir / PEERS_DIR).glob("*.json")):
        try:
            info = orjson.loads(path.read_bytes())
            os.kill(int(info["pid"]), 0)
            port = int(info["web_port"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if port_open("127.0.0.1", port):
            urls.append(f"http://127.0.0.1:{port}")
    return urls


def running_stack(data_dir: Path) -> RunningStack | None:
    """The worker that owns this data dir, if it is alive and answers on its port."""
    path = data_dir / WORKER_FILE
    try:
        info = orjson.loads(path.read_bytes())
        os.kill(int(info["pid"]), 0)
        stack = RunningStack(
            int(info["pid"]), int(info["web_port"]), str(info["broker"]), info.get("peer_token")
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stack if port_open("127.0.0.1", stack.web_port) else None


def running_worker_url(data_dir: Path) -> str | None:
    stack = running_stack(data_dir)
    return stack.url if stack is not None else None


def embedded_stack(settings: Settings) -> RunningStack | None:
    if not settings.resolved_clickhouse_url.startswith("chdb:"):
        return None
    return running_stack(settings.data_dir)


@contextmanager
def open_reader(settings: Settings) -> Iterator[Reader]:
    """The one way a command reads: through the running worker if one owns the embedded
    data dir, else ClickHouse directly (the data dir, or the configured server)."""
    url = settings.resolved_clickhouse_url
    stack = embedded_stack(settings)
    if stack is not None:
        token = analyst_token_for(settings.data_dir, settings.analyst_token)
        remote = RemoteQueryClient(stack.url, token)
        try:
            yield remote
        finally:
            remote.close()
        return
    if url.startswith("chdb:"):
        require_data_dir(settings)
    with clickhouse_session(url, settings.clickhouse_password) as handle:
        yield DirectReader(handle.client)


def require_data_dir(settings: Settings) -> None:
    """Opening a missing chdb path would create an empty database and report zeros."""
    url = settings.resolved_clickhouse_url
    if url == chdb_url_for(settings.data_dir) and not (settings.data_dir / "clickhouse").is_dir():
        raise ConfigError(
            f"no ClickHouse data in {settings.data_dir}: pass --data-dir "
            "or set SPENDSTREAM_CLICKHOUSE_URL"
        )
