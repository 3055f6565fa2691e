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

Poison isolation (see `streams.ledger.isolation`): only infrastructure failures are
retried. A failure that is the data's own splits the batch in halves, recursively,
until the rows at fault are alone; those become dead letters with ClickHouse's error
and the rest is ledgered. Batches spanning more months than one insert may create
partitions for are written in chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client

from schemas.ledger import DEAD_LETTER_COLUMNS, LEDGER_COLUMNS
from streams.ledger.arrow import table_schema, to_arrow
from streams.ledger.isolation import (
    first_line,
    is_data_error,
    month_of,
    partition_chunks,
    refused_dead_letter,
)
from streams.retrying import Backoff, until_done

log = logging.getLogger(__name__)
T = TypeVar("T")

INSERT_SETTINGS = {"deduplicate_blocks_in_dependent_materialized_views": 1}

# (index of a refused row in the batch written, ClickHouse's error) -> its dead letter.
RefusedLetter = Callable[[int, str], dict[str, Any]]


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
    refused: int = 0  # ledger rows ClickHouse refused for their data: dead letters
    unwritable_dead_letters: int = 0  # dead letters refused too: logged, not stored
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
        self,
        rows: Sequence[dict[str, Any]],
        dead_letters: Sequence[dict[str, Any]] = (),
        refused_letter: RefusedLetter | None = None,
    ) -> list[dict[str, Any]]:
        """Return only when every row is durable in ClickHouse, as a ledger row or, if
        ClickHouse refused it for its data, as a dead letter (returned)."""
        started = time.perf_counter()
        refused: list[tuple[int, str]] = []
        if rows:
            indexed = list(enumerate(rows))
            for chunk in partition_chunks(indexed, lambda pair: month_of("timestamp")(pair[1])):
                refused += await self._insert_isolating(self.ledger_table, LEDGER_COLUMNS, chunk)
        letter = refused_letter or _refused_letter(rows)
        isolated = [letter(index, error) for index, error in refused]
        letters = [*dead_letters, *isolated]
        if letters:
            indexed = list(enumerate(letters))
            for chunk in partition_chunks(indexed, lambda pair: month_of("received_at")(pair[1])):
                unwritable = await self._insert_isolating(
                    self.dead_letter_table, DEAD_LETTER_COLUMNS, chunk
                )
                for index, error in unwritable:
                    self.stats.unwritable_dead_letters += 1
                    letter_row = letters[index]
                    log.error(
                        "dead letter %s:%s:%s (%s) refused by ClickHouse: %s",
                        letter_row.get("topic"),
                        letter_row.get("partition"),
                        letter_row.get("offset"),
                        letter_row.get("reason"),
                        error,
                    )
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.rows += len(rows) - len(refused)
        self.stats.refused += len(refused)
        self.stats.dead_letters += len(letters)
        self.stats.last_batch_seconds = elapsed
        if self.on_batch is not None:
            self.on_batch(elapsed, len(rows) + len(dead_letters))
        return isolated

    async def _insert_isolating(
        self, table: str, columns: Sequence[str], indexed: list[tuple[int, dict[str, Any]]]
    ) -> list[tuple[int, str]]:
        """Insert; on a data error, halves until the rows at fault are alone. Returns
        (index, error) of each row ClickHouse refused."""
        rows = [row for _, row in indexed]
        error = await self._insert_until_durable(table, columns, rows, self._token(table, rows))
        if error is None:
            return []
        if len(indexed) == 1:
            log.warning("a row refused by %s is isolated: %s", table, error)
            return [(indexed[0][0], error)]
        middle = len(indexed) // 2
        return [
            *await self._insert_isolating(table, columns, indexed[:middle]),
            *await self._insert_isolating(table, columns, indexed[middle:]),
        ]

    def _token(self, table: str, rows: Sequence[dict[str, Any]]) -> str:
        if table == self.ledger_table:
            return dedup_token("ledger", [row["request_id"] for row in rows])
        keys = [
            f"{d['log_epoch']}|{d['topic']}|{d['partition']}|{d['offset']}|{d['element_index']}"
            for d in rows
        ]
        return dedup_token("dead", keys)

    async def _insert_until_durable(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[dict[str, Any]],
        token: str,
    ) -> str | None:
        """None once durable; the error if the rows themselves are at fault (a retry
        would fail the same way). Every other failure is retried: dropping rows is
        never an option."""
        settings = dict(INSERT_SETTINGS, insert_deduplication_token=token)
        refused: list[str] = []

        async def insert() -> None:
            try:
                await self.executor.run(self._insert, table, rows, columns, settings)
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                refused.append(first_line(exc))

        await until_done(insert, log, f"ledger write to {table}", self.backoff, self._failed)
        self.healthy = True
        return refused[0] if refused else None

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


def _refused_letter(rows: Sequence[dict[str, Any]]) -> RefusedLetter:
    # Without the pipeline's positions: the element's index in its message is unknown.
    return lambda index, error: refused_dead_letter(
        rows[index], error, log_epoch="ledger", element_index=-1
    )
