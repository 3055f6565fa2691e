"""Read access to the ledger while the worker runs, or without it.

In the embedded default the worker's process owns the chdb data dir, so readers
(`spendstream query`, the reports) go through the worker's read-only
`POST /v1/query` endpoint when it is up, and open the data dir directly when it
is not. Read-only is enforced by ClickHouse (`readonly=1`), not by parsing SQL.
The worker announces itself in `<data_dir>/worker.json` (pid and web port).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from streams.embedded.processes import port_open
from streams.errors import SpendstreamError
from streams.ledger.connect import clickhouse_session
from streams.settings import Settings

READ_ONLY = {"readonly": 1}
WORKER_FILE = "worker.json"


class QueryResultLike(Protocol):
    @property
    def column_names(self) -> Any: ...

    @property
    def result_rows(self) -> Any: ...


class QueryClient(Protocol):
    def query(
        self,
        query: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class RemoteResult:
    column_names: tuple[str, ...]
    column_types: tuple[str, ...]
    result_rows: list[tuple[Any, ...]]


def encode_result(column_names: Any, column_types: Any, rows: Any) -> bytes:
    return orjson.dumps(
        {"columns": list(column_names), "types": list(column_types), "rows": rows},
        default=str,
    )


_WRAPPERS = re.compile(r"^(Nullable|LowCardinality)\((.*)\)$")


def _decode(type_name: str, value: Any) -> Any:
    while match := _WRAPPERS.match(type_name):
        type_name = match.group(2)
    if value is None:
        return None
    if type_name.startswith("Decimal"):
        return Decimal(str(value))
    if type_name.startswith("DateTime"):
        return datetime.fromisoformat(str(value))
    if type_name.startswith("Date"):
        return date.fromisoformat(str(value))
    if type_name.startswith(("Int", "UInt")) and isinstance(value, str):
        return int(value)
    return value


def decode_result(body: bytes) -> RemoteResult:
    data = orjson.loads(body)
    types = tuple(data["types"])
    rows = [tuple(_decode(t, v) for t, v in zip(types, row, strict=True)) for row in data["rows"]]
    return RemoteResult(tuple(data["columns"]), types, rows)


class RemoteQueryClient:
    """A read-only client that runs queries in the worker that owns the data."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 120.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def query(
        self,
        query: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> RemoteResult:
        body = orjson.dumps({"sql": query, "parameters": parameters or {}}, default=str)
        response = self._http.post("/v1/query", content=body)
        if response.status_code != 200:
            raise SpendstreamError(f"query failed: {response.text.strip()[:300]}")
        return decode_result(response.content)

    def close(self) -> None:
        self._http.close()


def write_worker_file(data_dir: Path, web_port: int) -> Path:
    path = data_dir / WORKER_FILE
    path.write_text(orjson.dumps({"pid": os.getpid(), "web_port": web_port}).decode())
    return path


def running_worker_url(data_dir: Path) -> str | None:
    path = data_dir / WORKER_FILE
    try:
        info = orjson.loads(path.read_bytes())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    port = int(info["web_port"])
    return f"http://127.0.0.1:{port}" if port_open("127.0.0.1", port) else None


@contextmanager
def open_query_client(settings: Settings) -> Iterator[QueryClient]:
    """The running worker's endpoint if one owns the embedded data dir, else ClickHouse."""
    url = None
    if settings.resolved_clickhouse_url.startswith("chdb:"):
        url = running_worker_url(settings.data_dir)
    if url is not None:
        token = settings.analyst_token.get_secret_value() if settings.analyst_token else None
        remote = RemoteQueryClient(url, token)
        try:
            yield remote
        finally:
            remote.close()
        return
    with clickhouse_session(settings.resolved_clickhouse_url, settings.clickhouse_password) as ch:
        yield ch.client
