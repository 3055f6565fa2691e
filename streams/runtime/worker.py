"""`spendstream worker`: the Faust worker, configured by `Settings` (environment)."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time

from streams.auth import ensure_tokens, usage_hint
from streams.cost.catalog import PriceCatalog
from streams.data_dir import use_private_umask
from streams.errors import SpendstreamError
from streams.ledger.opening import LedgerOpening
from streams.ports import port_free
from streams.settings import Settings

log = logging.getLogger(__name__)

# The worker allocates a dict per event and row by the hundred thousand a second, and
# keeps large long-lived tables: with the default (700, 10, 10) the cyclic collector
# runs every few hundred events and re-walks the young objects of every batch. Rarer
# young collections cost less per object and nothing here relies on prompt
# collection of cycles (bench/hot_path: about a third of the spend agent's CPU).
GC_THRESHOLDS = (50_000, 20, 20)


def run_worker(settings: Settings, loglevel: str = "warning") -> int:
    """Blocks until SIGTERM/SIGINT; returns the exit code. Failures before the
    stream starts raise `SpendstreamError` (one line at the CLI)."""
    imported = time.time()  # the start timeline of `/stats` (bench.cold_start)
    if settings.web_enabled and not port_free(settings.web_host, settings.web_port):
        # Faust would fail later, inside its web server's start, with a long traceback.
        raise SpendstreamError(
            f"port {settings.web_port} on {settings.web_host} is in use: stop what listens "
            "there or set SPENDSTREAM_WEB_PORT"
        )
    use_private_umask()
    tokens, generated = ensure_tokens(
        settings.data_dir, settings.analyst_token, settings.peer_token
    )
    settings = settings.model_copy(
        update={"analyst_token": tokens.analyst, "peer_token": tokens.peer}
    )
    catalog = PriceCatalog.load(settings.pricing_file)
    url = settings.resolved_clickhouse_url
    opening = LedgerOpening(url, settings.clickhouse_password) if url.startswith("chdb:") else None
    # Imported here, not at the top: the ledger opens and migrates meanwhile (seconds each).
    from streams.faust_ext.worker import StoppingWorker
    from streams.kafka.admin import ensure_topics, wait_for_broker
    from streams.kafka.topics import topic_specs
    from streams.runtime.app import build_app, changelog_topics
    from streams.spend.config import load_config

    modules_loaded = time.time()
    asyncio.run(wait_for_broker(settings.kafka_bootstrap))
    broker_answered = time.time()
    if generated:  # after the checks that fail a start in one line
        print(usage_hint(settings.data_dir), file=sys.stderr, flush=True)
    config = load_config(settings)
    app, resources = build_app(settings, catalog, config)
    resources.started = {
        "imported": imported,
        "modules_loaded": modules_loaded,
        "broker_answered": broker_answered,
        **resources.started,
    }
    resources.connect_in_background(opening)
    try:
        asyncio.run(
            ensure_topics(
                settings.kafka_bootstrap,
                topic_specs(settings, changelog_topics(app)),
                settings.replication_factor,
            )
        )
        resources.started["topics_ready"] = time.time()
        worker = StoppingWorker(
            app,
            loglevel=loglevel,
            quiet=True,
            redirect_stdouts=False,
            drain_seconds=settings.stop_drain_seconds,
        )
        if not sys.stdout.isatty():
            # Faust's start-up spinner writes cursor escape codes into worker.log.
            worker.spinner = None
        # Modules, the price catalog, River's models: never garbage, never walked again.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0
    finally:
        resources.close()
