"""`spendstream worker`: the Faust worker, configured by `Settings` (environment)."""

from __future__ import annotations

import asyncio
import logging

import faust

from streams.alert_config import load_config
from streams.app import build_app, changelog_topics
from streams.broker import ensure_topics, wait_for_broker
from streams.pricing import PriceCatalog
from streams.settings import Settings
from streams.topics import topic_specs

log = logging.getLogger(__name__)


def run_worker(settings: Settings, loglevel: str = "warning") -> int:
    """Blocks until SIGTERM/SIGINT; returns the exit code. Failures before the
    stream starts raise `SpendstreamError` (one line at the CLI)."""
    catalog = PriceCatalog.load(settings.pricing_file)
    asyncio.run(wait_for_broker(settings.kafka_bootstrap))
    config = load_config(settings)
    app, runtime = build_app(settings, catalog, config)
    runtime.connect_in_background()
    try:
        asyncio.run(
            ensure_topics(
                settings.kafka_bootstrap,
                topic_specs(settings, changelog_topics(app)),
                settings.replication_factor,
            )
        )
        worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0
    finally:
        runtime.close()
