"""`ClickHouseLedgerSink`: durable, idempotent batch writes of ledger and dead-letter rows.

The ingest service awaits `write()` before it commits its batch's offsets,
so a row is acknowledged to Kafka only once ClickHouse holds it. A failing write is
retried with capped exponential backoff for as long as it takes: the agent stops
taking new messages meanwhile (backpressure), nothing is dropped, and `healthy`
turns False so the health endpoint reports degraded.

Batches go in as Arrow tables typed as ClickHouse reads the table (`streams/ledger/arrow.py`),
to the owner worker too when this one is its peer.
Idempotence: each insert carries an `insert_deduplication_token` derived from the
rows it holds, so re-inserting the same batch (a retry after a timeout that did in
fact land) changes nothing, in the table or in any materialized view fed by it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from schemas.ledger import DEAD_LETTER_COLUMNS, LEDGER_COLUMNS
from streams.ledger.arrow import table_schema, to_arrow
from streams.retrying import Backoff, until_done

log = logging.getLogger(__name__)
T = TypeVar("T")

INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}


def dedup_token(kind: str, keys: Sequence[str]) -> str:
    digest = hashlib.sha256("\x1f".join(keys).encode()).hexdigest()
    return f"{kind}-{len(keys)}-{digest}"


class ClickHouseExecutor:
    """Runs blocking clickhouse-connect calls on one dedicated thread.

    chdb is an in-process engine and the sync client is the only one it supports;
    one thread keeps every call ordered and off the event loop."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class SinkStats:
    batches: int = 0
    rows: int = 0
    dead_letters: int = 0
    failures: int = 0
    last_error: str = ""
    last_batch_seconds: float = 0.0


class ClickHouseLedgerSink:
    def __init__(
        self,
        executor: ClickHouseExecutor,
        *,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        ledger_table: str = "usage_ledger",
        dead_letter_table: str = "dead_letters",
        write_hook: Callable[[str], None] | None = None,
        on_batch: Callable[[float, int], None] | None = None,
    ) -> None:
        self.executor = executor
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max, jitter=0)
        self.ledger_table = ledger_table
        self.dead_letter_table = dead_letter_table
        # Fault injection for the reliability suite: raises to simulate an outage.
        self.write_hook = write_hook
        self.on_batch = on_batch
        self.healthy = True
        self.stats = SinkStats()
        self._schemas: dict[str, Any] = {}

    async def write(
        self, rows: Sequence[dict[str, Any]], dead_letters: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Return only when every row is durable in ClickHouse."""
        started = time.perf_counter()
        if rows:
            token = dedup_token("ledger", [row["request_id"] for row in rows])
            await self._insert_until_durable(self.ledger_table, LEDGER_COLUMNS, rows, token)
        if dead_letters:
            keys = [
                f"{d['log_epoch']}|{d['topic']}|{d['partition']}|{d['offset']}|{d['element_index']}"
                for d in dead_letters
            ]
            token = dedup_token("dead", keys)
            await self._insert_until_durable(
                self.dead_letter_table, DEAD_LETTER_COLUMNS, dead_letters, token
            )
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.rows += len(rows)
        self.stats.dead_letters += len(dead_letters)
        self.stats.last_batch_seconds = elapsed
        if self.on_batch is not None:
            self.on_batch(elapsed, len(rows) + len(dead_letters))

    async def _insert_until_durable(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[dict[str, Any]],
        token: str,
    ) -> None:
        settings = dict(INSERT_SETTINGS, insert_deduplication_token=token)
        insert = partial(self.executor.run, self._insert, table, rows, columns, settings)
        # Every failure is retried: dropping rows is never an option.
        await until_done(insert, log, f"ledger write to {table}", self.backoff, self._failed)
        self.healthy = True

    def _failed(self, exc: Exception) -> None:
        self.healthy = False
        self.stats.failures += 1
        self.stats.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"

    def _insert(
        self,
        table: str,
        rows: Sequence[dict[str, Any]],
        columns: Sequence[str],
        settings: dict[str, Any],
    ) -> None:
        if self.write_hook is not None:
            self.write_hook(table)
        client = self.executor.client
        if table not in self._schemas:
            self._schemas[table] = table_schema(client, table, columns)
        client.insert_arrow(table, to_arrow(rows, self._schemas[table]), settings=settings)
