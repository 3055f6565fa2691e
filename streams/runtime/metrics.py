"""Prometheus metrics for `GET /metrics`.

Counters the pipeline already keeps (events, duplicates, dead letters, alerts) are
read at scrape time by a collector, so the hot path pays nothing for them; sink
batch latency and size are histograms observed once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.alert import Alert, AlertDelivery

CONTENT_TYPE = "text/plain; version=0.0.4"


class DeliveryCounts:
    """A `DeliveryRecorder` that counts alerts by state and deliveries by outcome,
    and passes everything on to the next recorder (the alerts table)."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.alerts: dict[str, int] = {}
        self.deliveries: dict[tuple[str, str], int] = {}

    def add_alert(self, alert: Alert) -> None:
        self.alerts[alert.state] = self.alerts.get(alert.state, 0) + 1
        if self.inner is not None:
            self.inner.add_alert(alert)

    def add_delivery(self, delivery: AlertDelivery) -> None:
        key = (delivery.channel, delivery.outcome)
        self.deliveries[key] = self.deliveries.get(key, 0) + 1
        if self.inner is not None:
            self.inner.add_delivery(delivery)


class PipelineCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        s = self.snapshot()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"spendstream_{name}", doc, value=value)

        yield counter("events_in", "Usage events decoded from messages.", s["events"])
        yield counter("events_ledgered", "Ledger rows written.", s["ledgered"])
        yield counter("duplicates", "Events dropped as already seen.", s["duplicates"])
        dead = CounterMetricFamily(
            "spendstream_dead_letters", "Rejected messages or elements.", labels=["reason"]
        )
        for reason, count in sorted(s["dead_letters"].items()):
            dead.add_metric([reason], count)
        yield dead
        lag = GaugeMetricFamily(
            "spendstream_consumer_lag",
            "Messages behind the log end.",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(s["lag"].items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag
        alerts = CounterMetricFamily(
            "spendstream_alerts", "Alert states sent for delivery.", labels=["state"]
        )
        for state, count in sorted(s["alerts"].items()):
            alerts.add_metric([state], count)
        yield alerts
        deliveries = CounterMetricFamily(
            "spendstream_alert_deliveries",
            "Alert delivery attempts by channel and outcome.",
            labels=["channel", "outcome"],
        )
        for (channel, outcome), count in sorted(s["deliveries"].items()):
            deliveries.add_metric([channel, outcome], count)
        yield deliveries
        overflowed = CounterMetricFamily(
            "spendstream_cardinality_overflowed",
            "Rows counted under a tenant's overflow bucket, by dimension.",
            labels=["dimension"],
        )
        for dimension, count in sorted(s.get("overflowed", {}).items()):
            overflowed.add_metric([dimension], count)
        yield overflowed


class WorkerMetrics:
    """The worker's registry: sink batch histograms, observed as batches are written,
    and the pipeline's counters once `collect` names where to read them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sink_batch_seconds = Histogram(
            "spendstream_sink_batch_seconds",
            "Time to make one batch durable in ClickHouse.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.sink_batch_rows = Histogram(
            "spendstream_sink_batch_rows",
            "Rows per ClickHouse batch.",
            registry=self.registry,
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000),
        )

    def collect(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Read the pipeline's counters from `snapshot()` at each scrape."""
        self.registry.register(PipelineCollector(snapshot))

    def observe_batch(self, seconds: float, rows: int) -> None:
        self.sink_batch_seconds.observe(seconds)
        self.sink_batch_rows.observe(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
