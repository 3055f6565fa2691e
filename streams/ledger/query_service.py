"""`QueryService`: runs analyst and peer reads for the worker that owns the data.

A request is the SQL and its parameters (Arrow from our client, JSON by hand: see
`streams.ledger.remote`). The SQL is bound exactly as
clickhouse-connect binds it, the bound text must pass the `QueryGuard`, and the query
runs under `QueryLimits` on the reader session, on a thread of its own: chdb releases
the GIL while it executes and lets a second session read while the ledger writer's
session inserts (measured: inserts took 4-23 ms during a 6 s analyst query), so a
slow query never holds ingest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import pyarrow as pa
from clickhouse_connect.driver.binding import bind_query

from streams.ledger.query_guard import QueryGuard, QueryLimits, QueryRefused
from streams.ledger.remote import decode_query_request, encode_query_response, query_table

T = TypeVar("T")

LEDGER_OBJECTS_SQL = "SELECT name FROM system.tables WHERE database = currentDatabase()"


@dataclass(frozen=True)
class QueryAnswer:
    status: int
    body: bytes
    content_type: str = "application/json"


def _error(status: int, message: str) -> QueryAnswer:
    return QueryAnswer(status, orjson.dumps({"error": message}))


class QueryService:
    def __init__(self, client: Any, limits: QueryLimits | None = None) -> None:
        self.client = client
        self.limits = limits or QueryLimits()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-read")
        self.guard = QueryGuard(())

    def load_objects(self) -> None:
        """The ledger's tables and views, the only objects queries may read (blocking)."""
        rows = self.client.query(LEDGER_OBJECTS_SQL).result_rows
        self.guard = QueryGuard(str(row[0]) for row in rows)

    async def answer(self, body: bytes, content_type: str = "", accept: str = "") -> QueryAnswer:
        try:
            sql, parameters = decode_query_request(body, content_type)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return _error(400, 'expected {"sql": "...", "parameters": {...}} (JSON or Arrow)')
        except pa.ArrowException as exc:
            return _error(400, f"bad Arrow request: {str(exc)[:200]}")
        try:
            bound, _ = bind_query(sql, parameters or None)
            self.guard.check(bound if isinstance(bound, str) else bound.decode())
        except QueryRefused as exc:
            return _error(400, f"refused: {exc}")
        except Exception as exc:  # a parameter clickhouse-connect cannot bind
            return _error(400, f"bad parameters: {str(exc)[:200]}")
        try:
            table = await self.run(
                lambda client: query_table(client, sql, parameters or None, self.limits.settings())
            )
        except Exception as exc:
            return _error(400, str(exc).strip().splitlines()[0][:500] if str(exc) else "failed")
        payload, response_type = encode_query_response(table, accept)
        return QueryAnswer(200, payload, response_type)

    async def run(self, read: Callable[[Any], T]) -> T:
        """`read(client)` on the readers' thread (the dashboard's trusted reads too)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, read, self.client)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
