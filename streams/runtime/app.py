"""The Faust app: the ingest service, the spend agent, the worker's web pages.

`build_app(settings)` returns the app and its `WorkerRuntime` (ClickHouse handle,
sink, price catalog, de-duplication filter). Resources open when the ingest service
(`UsageConsumer`) starts, before it reads its first batch, and close after the worker
stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
import numpy as np
import orjson

from schemas.spend_config import SpendConfig
from streams.alerting.alerts_table import AlertsTableWriter, read_alerts
from streams.cost.catalog import PriceCatalog
from streams.dashboard import LedgerUnavailable, register_dashboard
from streams.faust_ext.app import SpendstreamApp
from streams.http_ingest import IngestHandler
from streams.http_ingest.body import BodyTooLarge, read_body
from streams.http_ingest.keys import IngestKeyStore
from streams.http_ingest.publisher import HttpIngestPublisher
from streams.ingest.consumer import UsageConsumer
from streams.ingest.dedupe import RequestIdFilter, hash_request_ids
from streams.ingest.pipeline import IngestPipeline, ingest_day
from streams.kafka.topics import APP_ID
from streams.ledger.connect import (
    ClickHouseHandle,
    apply_migrations,
    ensure_data_dir_free,
    open_clickhouse,
    open_session_client,
)
from streams.ledger.isolation import first_line, is_data_error
from streams.ledger.peer import decode_insert
from streams.ledger.query_guard import QueryLimits
from streams.ledger.query_service import QueryService
from streams.ledger.remote import ARROW_STREAM, decode_query_request, write_worker_file
from streams.ledger.sink import ClickHouseExecutor, ClickHouseLedgerSink
from streams.runtime.auth import RequestAuth, WorkerTokens, ensure_tokens
from streams.runtime.metrics import CONTENT_TYPE, DeliveryCounts, WorkerMetrics
from streams.settings import Settings
from streams.spend.agent import SpendRuntime, register_spend_agent
from streams.spend.ledger_state import load_ledger_base
from streams.spend.tables import LedgerBase

log = logging.getLogger(__name__)


COSTED_ROWS_PER_MESSAGE = 500
# Alert states read at start: monthly budget pages stay open for their month.
ALERTS_LOOKBACK = timedelta(days=40)
PRODUCER_REQUEST_TIMEOUT_SECONDS = 30.0
# A peer's ledger batch (5000 messages of up to 100 events, ~600 bytes a row as JSON).
PEER_INSERT_MAX_BYTES = 512 * 1024 * 1024


def json_bytes(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


@dataclass
class WorkerRuntime:
    """Everything the agents share; opened once per worker process."""

    settings: Settings
    catalog: PriceCatalog
    handle: ClickHouseHandle | None = None
    reader: Any = None  # a separate session for read-only queries (see open_session_client)
    queries: QueryService | None = None  # analyst and peer reads, on the reader session
    spend: SpendRuntime | None = None
    executor: ClickHouseExecutor | None = None
    sink: ClickHouseLedgerSink | None = None
    pipeline: IngestPipeline | None = None
    dedupe: RequestIdFilter = field(default_factory=RequestIdFilter)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    delivery_counts: DeliveryCounts = field(default_factory=DeliveryCounts)
    loaded_until: datetime | None = None
    _connecting: concurrent.futures.Future[list[str]] | None = None
    rebalanced_at: datetime | None = None
    state_restored_seconds: float | None = None
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    consumer: UsageConsumer = field(init=False)
    metrics: WorkerMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = WorkerMetrics(self.metrics_snapshot)

    def metrics_snapshot(self) -> dict[str, Any]:
        snapshot = self.stats()
        snapshot["lag"] = dict(self.lag)
        snapshot["alerts"] = dict(self.delivery_counts.alerts)
        snapshot["deliveries"] = dict(self.delivery_counts.deliveries)
        return snapshot

    def connect(self) -> list[str]:
        """Open ClickHouse and apply pending migrations, before Faust starts, so that a
        data dir in use or an unreachable server fails the command with one line."""
        self.handle = open_clickhouse(
            self.settings.resolved_clickhouse_url, self.settings.clickhouse_password
        )
        self.executor = ClickHouseExecutor(self.handle.client)
        if getattr(self.handle.client, "remote", False):
            self.reader = self.handle.client
            self._open_queries()
            self._make_sink()
            return []  # the owner worker applies migrations
        applied = apply_migrations(self.handle.client)
        self.reader = open_session_client(self.handle, self.settings.clickhouse_password)
        self._open_queries()
        self._make_sink()
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
            on_batch=self.metrics.observe_batch,
        )

    def connect_in_background(self) -> None:
        """Open ClickHouse and migrate on a thread while Faust starts and joins its
        group (seconds either way); the ingest service waits for it before its first batch."""
        url = self.settings.resolved_clickhouse_url
        if not url.startswith("chdb:"):
            self.connect()  # a server that does not answer fails the command in one line
            return
        ensure_data_dir_free(url)  # one clear line if another process owns it
        self._connecting = concurrent.futures.ThreadPoolExecutor(1).submit(self.connect)

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

    async def open(self, app: faust.App) -> IngestPipeline:
        async with self._lock:
            if self.pipeline is not None:
                return self.pipeline
            if self._connecting is not None:
                await asyncio.wrap_future(self._connecting)
            if self.executor is None:
                await asyncio.to_thread(self.connect)
            assert self.executor is not None and self.sink is not None
            self.dedupe = RequestIdFilter(self.settings.dedupe_horizon_days)
            loaded = await self.rebuild_dedupe()
            log.info("de-duplication filter rebuilt from the ledger: %d request ids", loaded)
            # Before this worker ledgers anything: every row of its epoch is then counted
            # by the stream, and every row before it by the base.
            await self.restore_spend_state()
            self.pipeline = IngestPipeline(
                self.catalog,
                self.dedupe,
                self.sink,
                log_epoch=self.settings.log_epoch,
                timestamp_floor=self.settings.timestamp_floor,
                publish_costed=lambda by_tenant: publish_costed(app, self.settings, by_tenant),
                publish_dead_letters=lambda letters: publish_dead_letters(
                    app, self.settings, letters
                ),
            )
            return self.pipeline

    async def restore_spend_state(self) -> None:
        """The spend tables' base from the ledger (rows ingested before this log epoch)
        and the incidents open at the last stop, from the alerts table."""
        spend = self.spend
        if spend is None or spend.state_ready.is_set():
            return
        assert self.executor is not None
        started = time.perf_counter()
        now = datetime.now(UTC)
        before = self.settings.log_epoch_started_at
        tables = spend.tables
        base = (
            LedgerBase()
            if before is None
            else await self.executor.run(
                load_ledger_base,
                self.reader,
                before,
                now,
                max_values_per_dim=tables.max_values_per_dim,
                run_retention=timedelta(hours=tables.run_retention_hours),
            )
        )
        alerts = await self.executor.run(read_alerts, self.reader, now - ALERTS_LOOKBACK)
        spend.restore(base, alerts, now)
        self.state_restored_seconds = time.perf_counter() - started
        log.info(
            "spend state rebuilt from the ledger in %.2f s: %d rows, %d hourly buckets, "
            "%d open runs; %d open incidents restored",
            self.state_restored_seconds,
            base.rows,
            len(base.hourly),
            len(base.runs),
            len(spend.restored),
        )

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

    def close(self) -> None:
        if self.spend is not None and self.spend.recorder is not None:
            self.spend.recorder.flush()  # the alert states of the last second
        worker_file = self.settings.data_dir / "worker.json"
        if self.handle is not None and self.handle.embedded:
            worker_file.unlink(missing_ok=True)
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

    def count_http_dead_letters(self, rows: list[dict[str, Any]]) -> None:
        if self.pipeline is not None:
            by_reason = self.pipeline.counters.dead_letters_by_reason
            for row in rows:
                by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + 1

    def stats(self) -> dict[str, Any]:
        counters = self.pipeline.counters if self.pipeline else None
        return {
            "messages": counters.messages if counters else 0,
            "events": counters.events if counters else 0,
            "ledgered": counters.ledgered if counters else 0,
            "duplicates": counters.duplicates if counters else 0,
            "unpriced": counters.unpriced if counters else 0,
            "dead_letters": dict(counters.dead_letters_by_reason) if counters else {},
            "dedupe_ids": len(self.dedupe),
            "dedupe_bytes": self.dedupe.nbytes,
            "healthy": self.healthy,
            "alerts_triggered": self.spend.alerts_sent if self.spend else 0,
            "findings": self.spend.findings if self.spend else 0,
            "batch_failures": self.consumer.failures,
            "overflowed": self.spend.overflowed if self.spend else {},
            "costed_rewinds": self.spend.rewinds if self.spend else 0,
            # For `replay`: every ledgered row has reached the spend agent once
            # `spend_rows` >= `ledgered`, and its alerts are recorded at 0 pending.
            "spend_rows": self.spend.rows_seen if self.spend else 0,
            "alerts_pending": self.alerts_pending,
            "state_restored_seconds": self.state_restored_seconds,
        }

    @property
    def alerts_pending(self) -> int:
        spend = self.spend
        if spend is None:
            return 0
        recorded = spend.recorder.pending if spend.recorder is not None else 0
        return recorded + spend.alerting.queue.pending()

    @property
    def healthy(self) -> bool:
        return self.sink is None or self.sink.healthy


def outage_hook(path: Path | None) -> Callable[[str], None] | None:
    if path is None:
        return None

    def fail_while_present(table: str) -> None:
        if path.exists():
            raise ConnectionError(f"injected ClickHouse outage ({path} exists)")

    return fail_while_present


def changelog_topics(app: faust.App) -> list[str]:
    return [table.changelog_topic.get_topic_name() for table in app.tables.values()]


async def publish_costed(
    app: faust.App, settings: Settings, by_tenant: dict[str, list[dict[str, Any]]]
) -> None:
    """Messages of up to COSTED_ROWS_PER_MESSAGE rows per tenant, keyed by tenant:
    downstream tables are per tenant. Small enough for any broker's message limit."""
    topic = app.topic(settings.costed_topic, value_serializer="raw", key_serializer="raw")
    pending = []
    for tenant, rows in by_tenant.items():
        for start in range(0, len(rows), COSTED_ROWS_PER_MESSAGE):
            chunk = rows[start : start + COSTED_ROWS_PER_MESSAGE]
            value = json_bytes(chunk)
            pending.append(await topic.send(key=tenant.encode(), value=value))
    await asyncio.gather(*pending)


async def publish_dead_letters(
    app: faust.App, settings: Settings, letters: list[dict[str, Any]]
) -> None:
    topic = app.topic(settings.dlq_topic, value_serializer="raw", key_serializer="raw")
    pending = [await topic.send(value=json_bytes(letter)) for letter in letters]
    await asyncio.gather(*pending)


def request_auth(settings: Settings) -> RequestAuth:
    """Configured tokens, else the data dir's (generated at the first start)."""
    tokens, _ = ensure_tokens(settings.data_dir, settings.analyst_token, settings.peer_token)
    return RequestAuth(
        WorkerTokens(analyst=tokens.analyst, peer=tokens.peer),
        IngestKeyStore(settings.keys_file or settings.data_dir / "ingest_keys.json"),
    )


def build_app(
    settings: Settings, catalog: PriceCatalog, config: SpendConfig | None = None
) -> tuple[faust.App, WorkerRuntime]:
    app = SpendstreamApp(
        APP_ID,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        # Tables keep JSON; every topic of ours sets raw bytes explicitly.
        value_serializer="json",
        key_serializer="json",
        consumer_auto_offset_reset="earliest",
        # The embedded broker answers JoinGroup after half the session timeout:
        # Faust's 60 s default would cost 30 s at every start.
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_seconds / 6),
        broker_rebalance_timeout=max(10.0, settings.session_timeout_seconds * 2),
        broker_commit_interval=0.5,
        stream_recovery_delay=0.0,
        # The spend agent's costed messages and the changelogs, in large fetches.
        broker_max_poll_records=10_000,
        stream_buffer_maxsize=20_000,
        # Changelog and costed messages by the thousand per batch: aiokafka's 16 KB
        # batches and zero linger made one produce request of each.
        producer_max_batch_size=1024 * 1024,
        producer_linger=0.005,
        # aiokafka keeps one produce request in flight per broker: a response that
        # never comes holds every costed publish and table write of the worker until
        # this timeout, 20 minutes by Faust's default. Kafka's own default is 30 s;
        # the ingest and the spend agent retry what times out.
        producer_request_timeout=PRODUCER_REQUEST_TIMEOUT_SECONDS,
        web_enabled=settings.web_enabled,
        # Faust's /table and /router views show table contents (per-tenant spend) to
        # anyone who reaches the port.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        datadir=str(settings.data_dir / "faust"),
    )
    runtime = WorkerRuntime(settings=settings, catalog=catalog)
    embedded = runtime.settings.resolved_clickhouse_url.startswith("chdb:")
    auth = request_auth(settings)
    runtime.spend = register_spend_agent(
        app, settings, config or SpendConfig(), embedded, may_read_limits=auth.may_read_limits
    )

    def wire_alerts_table() -> AlertsTableWriter | None:
        spend = runtime.spend
        if spend is None or runtime.executor is None or runtime.handle is None:
            return None
        if spend.recorder is None:
            spend.recorder = AlertsTableWriter(runtime.handle.client)
            runtime.delivery_counts.inner = spend.recorder
            spend.alerting.queue.recorder = runtime.delivery_counts
        return spend.recorder

    async def wire_before_first_list() -> None:
        # Ingest runs ahead of table recovery, so the agent may raise alerts in its
        # first second: the table must be recording by then (the timer would be late).
        if await runtime.connected():
            wire_alerts_table()

    runtime.spend.before_first_list = wire_before_first_list

    @app.timer(1.0)
    async def flush_alert_rows() -> None:
        # Also wires the table if ClickHouse was not reachable before the first list.
        recorder = wire_alerts_table()
        if recorder is not None and recorder.pending and runtime.executor is not None:
            await runtime.executor.run(recorder.flush)

    def on_assigned() -> None:
        if runtime.loaded_until is not None:
            runtime.rebalanced_at = datetime.now(UTC)

    runtime.consumer = UsageConsumer(
        settings,
        open_pipeline=lambda: runtime.open(app),
        before_batch=runtime.refresh_dedupe_if_rebalanced,
        on_assigned=on_assigned,
    )
    app.ingest = runtime.consumer

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        sink = runtime.sink
        body = {
            "status": "ok" if runtime.healthy else "degraded",
            "ledger_rows_written": sink.stats.rows if sink else 0,
            "dead_letters_written": sink.stats.dead_letters if sink else 0,
            "sink_failures": sink.stats.failures if sink else 0,
            "sink_last_error": sink.stats.last_error if sink else "",
        }
        return web.json(body, status=200 if runtime.healthy else 503)

    key_store = (
        IngestKeyStore(settings.keys_file or settings.data_dir / "ingest_keys.json")
        if settings.ingest_keys_required
        else None
    )
    ingest_handler = IngestHandler(
        HttpIngestPublisher(app, settings, runtime.connected_sink, runtime.count_http_dead_letters),
        key_store,
        max_body_bytes=settings.http_max_body_bytes,
    )

    @app.page("/v1/events")
    class EventsView(faust.web.View):
        async def post(self, request: Any) -> Any:
            return await ingest_handler.handle_events(request)

    @app.page("/v1/traces")
    class TracesView(faust.web.View):
        async def post(self, request: Any) -> Any:
            return await ingest_handler.handle_traces(request)

    async def owner_refusal(view: Any, request: Any) -> Any:
        """Why this worker does not take a write (no peer token, not the data dir's
        owner), or None."""
        if not auth.is_peer(request):
            return view.error(401, "peer token required")
        await runtime.connected()
        if runtime.executor is None or runtime.handle is None or runtime.handle.remote:
            return view.error(503, "not the owner of the data dir")
        return None

    @app.page("/v1/ledger/insert")
    class PeerInsertView(faust.web.View):
        """Inserts from peer workers of `dev --workers N` and from commands that write
        while this worker owns the embedded data dir (`reprice`)."""

        async def post(self, request: Any) -> Any:
            refused = await owner_refusal(self, request)
            if refused is not None:
                return refused
            try:
                # A peer's batch outgrows aiohttp's 1 MiB default: read it with our bound.
                body = await read_body(request, PEER_INSERT_MAX_BYTES)
                table, batch, insert_settings = decode_insert(body)
            except BodyTooLarge as exc:
                return self.error(413, str(exc))
            except (ValueError, KeyError) as exc:
                return self.error(400, str(exc))
            handle, executor = runtime.handle, runtime.executor
            assert handle is not None and executor is not None  # owner_refusal saw them
            try:
                await executor.run(
                    handle.client.insert_arrow, table, batch, settings=insert_settings
                )
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                # The peer's sink isolates the rows at fault instead of retrying.
                return self.error(422, first_line(exc))
            return self.json({"inserted": batch.num_rows})

    @app.page("/v1/ledger/command")
    class PeerCommandView(faust.web.View):
        """A statement (DDL, ALTER, INSERT … VALUES) from a command that writes while this
        worker owns the embedded data dir (`migrate`, `retention --raw-days`), on the
        writer's session. The peer token is the data dir's key: whoever holds it could
        open the data dir itself with the stack stopped."""

        async def post(self, request: Any) -> Any:
            refused = await owner_refusal(self, request)
            if refused is not None:
                return refused
            try:
                sql, parameters = decode_query_request(await request.read(), ARROW_STREAM)
            except (ValueError, KeyError, TypeError) as exc:
                return self.error(400, f"bad command request: {exc}")
            handle, executor = runtime.handle, runtime.executor
            assert handle is not None and executor is not None  # owner_refusal saw them
            try:
                await executor.run(handle.client.command, sql, parameters or None)
            except Exception as exc:
                return self.error(400, str(exc).strip().splitlines()[0][:500])
            return self.json({"done": True})

    async def answer_query(view: faust.web.View, request: Any) -> Any:
        if not await runtime.connected() or runtime.queries is None:
            return view.error(503, "ClickHouse is not connected")
        answer = await runtime.queries.answer(
            await request.read(),
            request.headers.get("Content-Type", ""),
            request.headers.get("Accept", ""),
        )
        return view.bytes(answer.body, content_type=answer.content_type, status=answer.status)

    @app.page("/v1/query")
    class QueryView(faust.web.View):
        """Analyst SQL (one guarded SELECT) while this worker owns the embedded data dir."""

        async def post(self, request: Any) -> Any:
            if not auth.is_analyst(request):
                return self.error(401, "analyst token required: Authorization: Bearer <token>")
            return await answer_query(self, request)

    @app.page("/v1/ledger/query")
    class PeerQueryView(faust.web.View):
        """The reads of peer workers of `dev --workers N`, with the peer token."""

        async def post(self, request: Any) -> Any:
            if not auth.is_peer(request):
                return self.error(401, "peer token required")
            return await answer_query(self, request)

    async def read_ledger(query: Callable[[Any], Any]) -> Any:
        """The read path of the dashboard: the reader session, on the readers' thread
        (never the ledger writer's)."""
        if not await runtime.connected() or runtime.queries is None:
            raise LedgerUnavailable
        return await runtime.queries.run(query)

    def dashboard_status() -> dict[str, Any]:
        return {**runtime.stats(), "lag": dict(runtime.consumer.lag)}

    register_dashboard(
        app, read_ledger, dashboard_status, config or SpendConfig(), auth.tokens.analyst
    )

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        monitor = app.monitor
        for tp, end in (monitor.tp_end_offsets or {}).items():
            committed = (monitor.tp_committed_offsets or {}).get(tp, 0)
            runtime.lag[(tp.topic, tp.partition)] = max(0, end - committed)
        runtime.lag.update(runtime.consumer.lag)
        return web.bytes(runtime.metrics.render(), content_type=CONTENT_TYPE)

    @app.page("/stats")
    async def stats(web: Any, request: Any) -> Any:
        body = runtime.stats()
        body["assigned"] = sorted(
            f"{tp.topic}:{tp.partition}" for tp in runtime.consumer.assignment()
        )
        return web.json(body)

    return app, runtime
