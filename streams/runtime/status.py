"""`WorkerStatus`: the worker's counters for `GET /stats` and `GET /metrics`, read at
request time from the pieces that keep them (the hot path pays nothing for them)."""

from __future__ import annotations

import time
from typing import Any

import faust

from streams.faust_ext.progress import offset_lag, tables_ready
from streams.ingest.consumer import UsageConsumer
from streams.runtime.resources import WorkerResources
from streams.spend.state import SpendState


class WorkerStatus:
    def __init__(
        self,
        app: faust.App,
        resources: WorkerResources,
        spend: SpendState,
        consumer: UsageConsumer,
    ) -> None:
        self.app = app
        self.resources = resources
        self.spend = spend
        self.consumer = consumer
        # Messages behind the log end per (topic, partition), the last value seen: a
        # partition no longer read keeps its last lag.
        self.lag: dict[tuple[str, int], int] = {}

    def stats(self) -> dict[str, Any]:
        pipeline, spend = self.resources.pipeline, self.spend
        counters = pipeline.counters if pipeline else None
        dedupe = self.resources.dedupe
        return {
            "messages": counters.messages if counters else 0,
            "events": counters.events if counters else 0,
            "ledgered": counters.ledgered if counters else 0,
            "duplicates": counters.duplicates if counters else 0,
            # Ledgered before a stop, published again when re-delivered.
            "republished": counters.republished if counters else 0,
            "unpriced": counters.unpriced if counters else 0,
            "rollup_only": counters.rollup_only if counters else 0,
            "rollup_only_cost_usd": str(counters.rollup_only_cost_usd) if counters else "0",
            "dead_letters": dict(counters.dead_letters_by_reason) if counters else {},
            "dedupe_ids": len(dedupe),
            "dedupe_bytes": dedupe.nbytes,
            "healthy": self.resources.healthy,
            "alerts_triggered": spend.alerts_sent,
            "findings": spend.findings,
            "batch_failures": self.consumer.failures,
            "overflowed": spend.overflowed,
            "costed_rewinds": spend.rewinds,
            # On Kafka: costed rows whose ledger rows the base read already
            # (a partition's changelog began again; streams/spend/coverage.py).
            "costed_in_ledger_base": spend.in_ledger_base,
            # For `replay`: every ledgered row has reached the spend agent once
            # `spend_rows` >= `ledgered`, and its alerts are recorded at 0 pending.
            "spend_rows": spend.rows_seen,
            "alerts_pending": self.alerts_pending(),
            "state_restored_seconds": self.resources.state_restored_seconds,
            "limits_ready_seconds": self.resources.limits_ready_seconds,
            "started": self.started(),
        }

    def started(self) -> dict[str, float]:
        """Wall-clock moments (Unix seconds) of the worker's start: app built, ClickHouse
        open, migrated and ready, the spend state's restore begun, month totals in,
        tables recovered, state restored (bench.restart_limits reads the timeline)."""
        moments = self.resources.started
        if "tables_recovered" not in moments and tables_ready(self.app):
            moments["tables_recovered"] = time.time()  # first seen: as precise as the polls
        return dict(moments)

    def alerts_pending(self) -> int:
        """Alert states not yet delivered or not yet in the alerts table."""
        table = self.resources.alerts_table
        recorded = table.pending if table is not None else 0
        return recorded + self.spend.alerting.queue.pending()

    def assigned(self) -> list[str]:
        """The usage partitions this worker's ingest reads, as "topic:partition"."""
        return sorted(f"{tp.topic}:{tp.partition}" for tp in self.consumer.assignment())

    def refresh_lag(self) -> None:
        """Faust's consumer (costed topic, changelogs), then the ingest consumer."""
        self.lag.update(offset_lag(self.app))
        self.lag.update(self.consumer.lag)

    def dashboard_status(self) -> dict[str, Any]:
        """The counters, with the ingest consumer's lag, for the dashboard's "now" panel."""
        return {**self.stats(), "lag": dict(self.consumer.lag)}

    def metrics_snapshot(self) -> dict[str, Any]:
        counts = self.resources.delivery_counts
        snapshot = self.stats()
        snapshot["lag"] = dict(self.lag)
        snapshot["alerts"] = dict(counts.alerts)
        snapshot["deliveries"] = dict(counts.deliveries)
        return snapshot
