"""The worker's Faust app, composed: the ingest service, the spend agent, the web views.

`build_app(settings, catalog, config)` returns the app and its `WorkerResources`
(streams/runtime/resources.py), which the caller connects before the worker starts
and closes after it stops. Composition only: each piece it wires has its own module.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import faust

from schemas.spend_config import SpendConfig
from streams.alerting.acknowledgements import AckLinks
from streams.auth import RequestAuth, WorkerTokens, ensure_tokens
from streams.cost.catalog import PriceCatalog
from streams.dashboard import LedgerUnavailable, register_dashboard
from streams.faust_ext.app import SpendstreamApp
from streams.http_ingest import IngestHandler
from streams.http_ingest.keys import IngestKeyStore
from streams.http_ingest.publisher import HttpIngestPublisher
from streams.ingest.consumer import UsageConsumer
from streams.ingest.pipeline import IngestPipeline
from streams.ingest.publishing import publish_costed, publish_dead_letters
from streams.kafka.topics import APP_ID
from streams.runtime.alert_views import register_alert_views
from streams.runtime.drain import ShutdownDrain
from streams.runtime.faust_config import faust_app_options
from streams.runtime.metrics import WorkerMetrics
from streams.runtime.resources import WorkerResources
from streams.runtime.status import WorkerStatus
from streams.runtime.views import register_views
from streams.settings import Settings
from streams.spend.agent import register_spend_agent

ALERT_ROWS_FLUSH_SECONDS = 1.0


def request_auth(settings: Settings) -> RequestAuth:
    """Configured tokens, else the data dir's (generated at the first start)."""
    tokens, _ = ensure_tokens(settings.data_dir, settings.analyst_token, settings.peer_token)
    return RequestAuth(
        WorkerTokens(analyst=tokens.analyst, peer=tokens.peer, alert_link=tokens.alert_link),
        IngestKeyStore(settings.keys_file or settings.data_dir / "ingest_keys.json"),
    )


def changelog_topics(app: faust.App) -> list[str]:
    return [table.changelog_topic.get_topic_name() for table in app.tables.values()]


def build_app(
    settings: Settings, catalog: PriceCatalog, config: SpendConfig | None = None
) -> tuple[faust.App, WorkerResources]:
    app = SpendstreamApp(APP_ID, **faust_app_options(settings))
    metrics = WorkerMetrics()
    resources = WorkerResources(settings, catalog, on_sink_batch=metrics.observe_batch)

    def wire_alerts_table() -> None:
        # Alert states and deliveries are counted, and written to the alerts table,
        # from the moment ClickHouse is connected.
        if resources.open_alerts_table() is not None:
            spend.record_deliveries(resources.delivery_counts)

    async def wire_before_first_list() -> None:
        # Ingest runs ahead of table recovery, so the agent may raise alerts in its
        # first second: the table must be recording by then (the timer would be late).
        if await resources.connected():
            wire_alerts_table()
            resources.start_restoring_spend_state(spend)

    auth = request_auth(settings)
    spend = register_spend_agent(
        app,
        settings,
        config or SpendConfig(),
        resources.embedded,
        before_first_list=wire_before_first_list,
        may_read_limits=auth.may_read_limits,
        ack_links=AckLinks(
            settings.public_url or f"http://{settings.web_host}:{settings.web_port}",
            auth.tokens.alert_link,
        ),
        covered_base=lambda coverage, fresh: resources.covered_base(spend, coverage, fresh),
    )

    @app.timer(ALERT_ROWS_FLUSH_SECONDS)
    async def flush_alert_rows() -> None:
        # Also wires the table if ClickHouse was not reachable before the first list.
        wire_alerts_table()
        await resources.flush_alert_rows()

    async def open_pipeline() -> IngestPipeline:
        return await resources.open_pipeline(
            partial(publish_costed, app, settings),
            partial(publish_dead_letters, app, settings),
            spend,
        )

    consumer = UsageConsumer(
        settings,
        open_pipeline=open_pipeline,
        before_batch=resources.refresh_dedupe_if_rebalanced,
        on_assigned=resources.on_partitions_assigned,
    )
    app.ingest = consumer

    status = WorkerStatus(app, resources, spend, consumer)
    metrics.collect(status.metrics_snapshot)
    key_store = (
        IngestKeyStore(settings.keys_file or settings.data_dir / "ingest_keys.json")
        if settings.ingest_keys_required
        else None
    )
    ingest_handler = IngestHandler(
        HttpIngestPublisher(
            app, settings, resources.connected_sink, resources.count_http_dead_letters
        ),
        key_store,
        max_body_bytes=settings.http_max_body_bytes,
        body_read_seconds=settings.http_body_timeout_seconds,
        wait_ledgered=consumer.wait_ledgered,
        default_ack=settings.resolved_http_default_ack,
    )
    register_views(app, auth, resources, ingest_handler, status, metrics)
    register_alert_views(app, auth, resources, spend)
    app.drain = ShutdownDrain(settings, consumer, ingest_handler, lambda: resources.healthy)

    async def read_ledger(query: Callable[[Any], Any]) -> Any:
        """The read path of the dashboard: the reader session, on the readers' thread
        (never the ledger writer's)."""
        if not await resources.connected() or resources.queries is None:
            raise LedgerUnavailable
        return await resources.queries.run(query)

    register_dashboard(
        app, read_ledger, status.dashboard_status, config or SpendConfig(), auth.tokens.analyst
    )
    return app, resources
