"""`WorkerResources`: what one worker process owns, opened once and closed at exit.

The ClickHouse handle and its read-only session, the executor every ClickHouse call
runs on, the ledger sink, the de-duplication filter (rebuilt from the ledger), the
ingest pipeline, the alerts table writer and the delivery counts. They open when the
ingest service (`UsageConsumer`) starts, before it reads its first batch, and close
after the worker stops. Every change to them is a method here: nothing outside
writes their fields.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from streams.alerting.acknowledgements import (
    Acknowledgement,
    read_acknowledgements,
    write_acknowledgements,
)
from streams.alerting.alerts_table import AlertsTableWriter, read_alerts
from streams.analyst.retention import raw_retention_of
from streams.cost.catalog import PriceCatalog
from streams.ingest.dedupe import RequestIdFilter, hash_request_ids
from streams.ingest.pipeline import CostedPublisher, DeadLetterPublisher, IngestPipeline, ingest_day
from streams.ledger.connect import (
    ClickHouseHandle,
    ensure_data_dir_free,
    open_clickhouse,
    open_session_client,
)
from streams.ledger.migrations import apply_migrations
from streams.ledger.opening import LedgerOpening
from streams.ledger.peer import PeerClickHouseClient
from streams.ledger.query_guard import QueryLimits
from streams.ledger.query_service import QueryService
from streams.ledger.remote import write_peer_file, write_worker_file
from streams.ledger.sink import ClickHouseExecutor, ClickHouseLedgerSink
from streams.retrying import until_done
from streams.runtime.drain import UsageBacklog
from streams.runtime.metrics import DeliveryCounts
from streams.settings import Settings
from streams.spend.coverage import Coverage
from streams.spend.ledger_state import LedgerQueries, load_covered_base
from streams.spend.state import SpendState
from streams.spend.tables import LedgerBase

# How long the de-duplication rebuild waits for the month totals (see open_pipeline).
LIMITS_FIRST_SECONDS = 10.0
# How often a fresh coverage mark's wait for the ingest group says how far it is.
BACKLOG_POLL_SECONDS = 0.2
BACKLOG_REPORT_SECONDS = 10.0
log = logging.getLogger(__name__)

# Alert states read at start: monthly budget pages stay open for their month.
ALERTS_LOOKBACK = timedelta(days=40)
# The URL scheme `spendstream dev --workers N` gives its peer workers: ClickHouse
# through the worker that owns the embedded data dir (streams/ledger/peer.py).
PEER_SCHEME = "spendstream+http"


def open_ledger(url: str, settings: Settings) -> ClickHouseHandle:
    """ClickHouse for this worker: its own (chdb, a server), or the owner worker's."""
    parsed = urlparse(url)
    if parsed.scheme == PEER_SCHEME:
        password = settings.clickhouse_password
        token = password.get_secret_value() if password else None
        peer = PeerClickHouseClient(f"http://{parsed.netloc}", token)
        return ClickHouseHandle(client=peer, url=url)  # type: ignore[arg-type]
    return open_clickhouse(url, settings.clickhouse_password)


def outage_hook(path: Path | None) -> Callable[[str], None] | None:
    if path is None:
        return None

    def fail_while_present(table: str) -> None:
        if path.exists():
            raise ConnectionError(f"injected ClickHouse outage ({path} exists)")

    return fail_while_present


class WorkerResources:
    def __init__(
        self,
        settings: Settings,
        catalog: PriceCatalog,
        on_sink_batch: Callable[[float, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.on_sink_batch = on_sink_batch
        self.handle: ClickHouseHandle | None = None
        self.peer_file: Path | None = None  # a peer's announcement (streams/ledger/remote.py)
        self.reader: Any = None  # a separate session for read-only queries
        self.queries: QueryService | None = None  # analyst and peer reads, on the reader
        self.executor: ClickHouseExecutor | None = None
        self.sink: ClickHouseLedgerSink | None = None
        self.pipeline: IngestPipeline | None = None
        self.dedupe = RequestIdFilter()
        self.delivery_counts = DeliveryCounts()
        self.alerts_table: AlertsTableWriter | None = None
        self.loaded_until: datetime | None = None
        self.rebalanced_at: datetime | None = None
        self.state_restored_seconds: float | None = None
        self.limits_ready_seconds: float | None = None
        # Wall-clock moments of the start, for `/stats` and bench.restart_limits.
        self.started: dict[str, float] = {"app_built": time.time()}
        self._restoring: asyncio.Future[None] | None = None
        self._connecting: concurrent.futures.Future[list[str]] | None = None
        self._lock = asyncio.Lock()

    @property
    def embedded(self) -> bool:
        """The ledger is chdb in a data dir (this worker's, or the owner's of its peers)."""
        return self.settings.resolved_clickhouse_url.startswith("chdb:")

    def connect(self, opening: LedgerOpening | None = None) -> list[str]:
        """Open ClickHouse and apply pending migrations, before Faust starts, so that a
        data dir in use or an unreachable server fails the command with one line; or
        take the embedded ledger `opening` opened and migrated."""
        if opening is not None:
            self.handle, applied = opening.result()
            self.started.update(opening.started)
        else:
            self.handle = open_ledger(self.settings.resolved_clickhouse_url, self.settings)
        self.executor = ClickHouseExecutor(self.handle.client)
        if self.handle.remote:
            self.reader = self.handle.client
            self._open_queries()
            self._make_sink()
            if self.settings.web_enabled:
                self.peer_file = write_peer_file(self.settings.data_dir, self.settings.web_port)
            return []  # the owner worker applies migrations
        if opening is None:
            self.started["clickhouse_open"] = time.time()
            applied = apply_migrations(self.handle.client)
            self.started["migrated"] = time.time()
        self.reader = open_session_client(self.handle, self.settings.clickhouse_password)
        self._open_queries()
        self._make_sink()
        self.started["clickhouse_ready"] = time.time()
        if self.handle.embedded and self.settings.web_enabled:
            peer_token = self.settings.peer_token
            write_worker_file(
                self.settings.data_dir,
                self.settings.web_port,
                self.settings.kafka_bootstrap,
                peer_token.get_secret_value() if peer_token else None,
            )
        return applied

    def _open_queries(self) -> None:
        settings = self.settings
        limits = QueryLimits(
            max_seconds=settings.query_max_seconds,
            max_memory_bytes=settings.query_max_memory_bytes,
            max_result_rows=settings.query_max_result_rows,
            max_threads=settings.query_max_threads,
        )
        self.queries = QueryService(self.reader, limits)
        self.queries.load_objects()

    def _make_sink(self) -> None:
        assert self.executor is not None
        self.sink = ClickHouseLedgerSink(
            self.executor,
            write_hook=outage_hook(self.settings.fault_sink_outage_file),
            on_batch=self.on_sink_batch,
        )

    def connect_in_background(self, opening: LedgerOpening | None = None) -> None:
        """Open ClickHouse and migrate on a thread while Faust starts and joins its
        group (seconds either way); the ingest service waits for it before its first
        batch. `opening`: the embedded ledger, already being opened and migrated."""
        url = self.settings.resolved_clickhouse_url
        if not url.startswith("chdb:"):
            self.connect()  # a server that does not answer fails the command in one line
            return
        if opening is None:
            ensure_data_dir_free(url)  # one clear line if another process owns it
        self._connecting = concurrent.futures.ThreadPoolExecutor(1).submit(self.connect, opening)

    async def connected(self) -> bool:
        """Wait for the background connect (if any); True once ClickHouse is usable."""
        if self._connecting is not None:
            try:
                await asyncio.wrap_future(self._connecting)
            except Exception:
                return False
        return self.executor is not None and self.reader is not None

    async def connected_sink(self) -> ClickHouseLedgerSink | None:
        return self.sink if await self.connected() else None

    @property
    def owns_ledger(self) -> bool:
        """Connected to ClickHouse itself, not through an owner worker."""
        return self.executor is not None and self.handle is not None and not self.handle.remote

    async def open_pipeline(
        self,
        publish_costed: CostedPublisher,
        publish_dead_letters: DeadLetterPublisher,
        spend: SpendState,
    ) -> IngestPipeline:
        """The ingest pipeline, once: ClickHouse connected, the de-duplication filter
        rebuilt from the ledger and the spend state restored first."""
        async with self._lock:
            if self.pipeline is not None:
                return self.pipeline
            if self._connecting is not None:
                await asyncio.wrap_future(self._connecting)
            if self.executor is None:
                await asyncio.to_thread(self.connect)
            assert self.executor is not None and self.sink is not None
            self.dedupe = RequestIdFilter(self.settings.dedupe_horizon_days)
            self.start_restoring_spend_state(spend)
            # The month totals first, alone: the filter's rebuild reads every request id
            # of the horizon (millions) and would share the two cores with the month
            # query that `/v1/limits` waits for (3 s instead of 0.3 s under load). Ingest
            # waits that much longer; bounded, should ClickHouse fail the restore.
            if self.settings.in_memory_broker:  # on Kafka the base waits for ingest instead
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(spend.limits_ready.wait(), LIMITS_FIRST_SECONDS)
            loaded = await self.rebuild_dedupe()
            log.info("de-duplication filter rebuilt from the ledger: %d request ids", loaded)
            assert self.handle is not None
            raw_retention = await self.executor.run(raw_retention_of, self.handle.client)
            self.pipeline = IngestPipeline(
                self.catalog,
                self.dedupe,
                self.sink,
                log_epoch=self.settings.log_epoch,
                timestamp_floor=self.settings.timestamp_floor,
                raw_retention=raw_retention,
                publish_costed=publish_costed,
                publish_dead_letters=publish_dead_letters,
            )
            self.started["pipeline_open"] = time.time()
            return self.pipeline

    def start_restoring_spend_state(self, spend: SpendState) -> None:
        """Once per worker, beside ingest: the base holds only rows ingested before this
        log epoch began, so it does not matter what this worker ledgers meanwhile."""
        if self._restoring is None:
            # Retried while ClickHouse fails: nothing is counted until it is done.
            self._restoring = asyncio.ensure_future(
                until_done(
                    partial(self.restore_spend_state, spend),
                    log,
                    "spend state rebuild from the ledger",
                )
            )

    async def restore_spend_state(self, spend: SpendState) -> None:
        """The spend tables' base from the ledger (rows ingested before this log epoch)
        and the incidents open at the last stop, from the alerts table. Month totals
        first: `/v1/limits` answers exactly once they are in, while the hourly buckets
        the detectors need (the larger part) are still being read."""
        if spend.state_ready.is_set():
            return
        assert self.executor is not None and self.handle is not None
        # On the writer's session and thread, as the de-duplication rebuild: the reader
        # session belongs to the query service's thread.
        client = self.handle.client
        started = time.perf_counter()
        self.started["restore"] = time.time()
        now = datetime.now(UTC)
        before = self.settings.log_epoch_started_at
        tables = spend.tables
        base = LedgerBase()
        if before is not None:
            queries = LedgerQueries(client, before, now)
            await self.executor.run(queries.months, base)
            spend.months_restored(base)
            self.limits_ready_seconds = time.perf_counter() - started
            self.started["months_in"] = time.time()
            await self.executor.run(
                queries.hours_and_runs,
                base,
                tables.max_values_per_dim,
                timedelta(hours=tables.run_retention_hours),
                tables.daily_retention_days,
            )
        alerts = await self.executor.run(read_alerts, client, now - ALERTS_LOOKBACK)
        acks = await self.executor.run(read_acknowledgements, client)
        spend.restore(base, alerts, now, acks)
        self.state_restored_seconds = time.perf_counter() - started
        self.started["state_restored"] = time.time()
        log.info(
            "spend state rebuilt from the ledger in %.2f s (month totals in %.2f s): %d rows, "
            "%d hourly buckets, %d daily totals, %d open runs; %d open incidents restored",
            self.state_restored_seconds,
            self.limits_ready_seconds or 0.0,
            base.rows,
            len(base.hourly),
            len(base.days),
            len(base.runs),
            len(spend.incidents.restored),
        )
        if acks:
            log.info("%d alert acknowledgements and snoozes restored", len(acks))

    async def covered_base(self, spend: SpendState, coverage: Coverage, fresh: bool) -> LedgerBase:
        """On Kafka: the base of the costed partitions `coverage` names, each one's
        tenants' rows ingested before its mark (streams/spend/coverage.py). After a mark
        written just now (`fresh`), first every usage message the log holds now is
        ledgered or dead-lettered (the ingest group commits only after the ledger
        write): a row priced before the mark but not yet in ClickHouse would be in
        neither the base nor the stream, which skips its costed event."""
        if not await self.connected():
            raise ConnectionError("ClickHouse is not connected")
        assert self.executor is not None and self.handle is not None
        started = time.perf_counter()
        if fresh:
            await self.wait_ingest_committed()
        tables = spend.tables
        base = await self.executor.run(
            partial(
                load_covered_base,
                self.handle.client,
                coverage,
                self.settings.topic_partitions,
                datetime.now(UTC),
                max_values_per_dim=tables.max_values_per_dim,
                run_retention=timedelta(hours=tables.run_retention_hours),
                daily_retention_days=tables.daily_retention_days,
            )
        )
        self.limits_ready_seconds = time.perf_counter() - started
        self.started["months_in"] = time.time()
        return base

    async def wait_ingest_committed(self) -> None:
        """Until the ingest group has committed every usage message in the log now."""
        backlog = UsageBacklog(self.settings.kafka_bootstrap, self.settings.usage_topic)
        try:
            left = await backlog.start()
            said = time.monotonic()
            while left:
                if time.monotonic() - said >= BACKLOG_REPORT_SECONDS:
                    log.info("spend state rebuild waits for %d usage messages to be ledgered", left)
                    said = time.monotonic()
                await asyncio.sleep(BACKLOG_POLL_SECONDS)
                left = await backlog.left()
        finally:
            await backlog.stop()

    def on_partitions_assigned(self) -> None:
        """The ingest group rebalanced: the next batch first refreshes the filter."""
        self.started.setdefault("usage_assigned", time.time())
        if self.loaded_until is not None:
            self.rebalanced_at = datetime.now(UTC)

    async def refresh_dedupe_if_rebalanced(self) -> None:
        """After a rebalance, learn the ids other workers ledgered since our last load:
        a partition we take over may re-deliver them."""
        if self.rebalanced_at is None:
            return
        since, self.rebalanced_at = self.loaded_until, None
        loaded = await self.rebuild_dedupe(since)
        log.info("de-duplication filter refreshed after a rebalance: %d ids", loaded)

    async def rebuild_dedupe(self, since: datetime | None = None) -> int:
        """Load the ids ledgered within the horizon: the durable half of de-duplication."""
        assert self.executor is not None and self.handle is not None
        started = datetime.now(UTC)
        horizon = started - timedelta(days=self.settings.dedupe_horizon_days + 1)
        # A margin for clock skew and inserts in flight at the previous load.
        since = max(horizon, since - timedelta(minutes=1)) if since else horizon
        client = self.handle.client

        def load() -> int:
            total = 0
            with client.query_column_block_stream(
                "SELECT request_id, toUInt32(toRelativeDayNum(ingested_at)) FROM usage_ledger "
                "WHERE ingested_at >= fromUnixTimestamp64Milli({since_ms:Int64})",
                parameters={"since_ms": int(since.timestamp() * 1000)},
            ) as blocks:
                for request_ids, days in blocks:
                    hashes = hash_request_ids(request_ids)
                    day_of = np.asarray(days, dtype=np.int64)
                    fresh = self.dedupe.new_mask(hashes)  # a refresh overlaps what we hold
                    for day in np.unique(day_of[fresh]):
                        self.dedupe.mark(hashes[fresh & (day_of == day)], int(day))
                    total += int(fresh.sum())
            return total

        loaded = await self.executor.run(load)
        self.dedupe.expire(ingest_day(datetime.now(UTC)))
        self.loaded_until = started
        return loaded

    async def record_acknowledgements(self, acks: list[Acknowledgement]) -> None:
        """Into `alert_acknowledgements`, on the writer's session (raises on failure)."""
        assert self.executor is not None and self.handle is not None
        await self.executor.run(write_acknowledgements, self.handle.client, acks)

    def open_alerts_table(self) -> AlertsTableWriter | None:
        """The alerts table writer once ClickHouse is connected (None before), behind
        the delivery counts."""
        if self.alerts_table is None and self.executor is not None and self.handle is not None:
            self.alerts_table = AlertsTableWriter(self.handle.client)
            self.delivery_counts.inner = self.alerts_table
        return self.alerts_table

    async def flush_alert_rows(self) -> None:
        if (
            self.alerts_table is not None
            and self.alerts_table.pending
            and self.executor is not None
        ):
            await self.executor.run(self.alerts_table.flush)

    async def insert_from_peer(
        self, table: str, batch: pa.Table, insert_settings: dict[str, Any]
    ) -> None:
        """A peer worker's ledger batch, into this worker's ClickHouse (`owns_ledger`)."""
        assert self.executor is not None and self.handle is not None
        await self.executor.run(
            self.handle.client.insert_arrow, table, batch, settings=insert_settings
        )

    async def command_from_peer(self, sql: str, parameters: dict[str, Any] | None) -> None:
        """A statement from a command that writes through this worker, on the writer's
        session (`owns_ledger`)."""
        assert self.executor is not None and self.handle is not None
        await self.executor.run(self.handle.client.command, sql, parameters)

    def count_http_dead_letters(self, rows: list[dict[str, Any]]) -> None:
        if self.pipeline is not None:
            by_reason = self.pipeline.counters.dead_letters_by_reason
            for row in rows:
                by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + 1

    @property
    def healthy(self) -> bool:
        return self.sink is None or self.sink.healthy

    def close(self) -> None:
        if self.alerts_table is not None:
            self.alerts_table.flush()  # the alert states of the last second
        worker_file = self.settings.data_dir / "worker.json"
        if self.handle is not None and self.handle.embedded:
            worker_file.unlink(missing_ok=True)
        if self.peer_file is not None:
            self.peer_file.unlink(missing_ok=True)
        if self.executor is not None:
            self.executor.shutdown()
        if self.queries is not None:
            self.queries.shutdown()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.handle is not None:
            self.handle.close()
            self.handle = None
