"""Fixtures for the alerting tests; helpers reach tests as fixtures, never by import.

The receivers are tests/helpers/receivers.py's, started in the test's event loop; the
notifiers run in threads (`asyncio.to_thread`), so the loop stays free to serve.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from detectors.finding import Finding, Severity
from schemas.alert import Alert, AlertDelivery
from streams.ledger.connect import ClickHouseHandle
from tests.helpers import waiting
from tests.helpers.receivers import (
    RECEIVER_KINDS,
    Receiver,
    self_signed_certificate,
    server_tls_context,
)

# Yesterday, on the hour: recent, because the raw ledger keeps 90 days (sql/040_retention.sql).
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)

# Shaped like RollingMedianDetector's evidence after SpikeCause.annotate() (a retry storm).
RUNAWAY_EVIDENCE: dict[str, Any] = {
    "hour": T0.isoformat(),
    "spend_usd": Decimal("412.50"),
    "baseline": Decimal("15.00"),
    "unit": "usd",
    "median_usd": Decimal("14.20"),
    "same_hour_median_usd": Decimal("15.00"),
    "active_hours": 168,
    "ratio": 27.5,
    "k": Decimal(5),
    "team_id": "search",
    "workflow_id": "summarize",
    "cause": "retry_storm",
    "cause_explanation": "requests per user 9.3x and retry rate 31x their usual",
    "cause_ratios": {"requests": 9.8, "users": 1.05, "requests_per_user": 9.33, "retry_rate": 31.0},
}


def make_finding(
    *,
    detector: str = "rolling_median",
    key: str = "tenant:acme",
    hour: int = 0,
    severity: Severity = "critical",
    value: str = "412.50",
    threshold: str = "75.00",
    evidence: dict[str, Any] | None = None,
) -> Finding:
    start = T0 + timedelta(hours=hour)
    return Finding(
        detector=detector,
        key=key,
        window_start=start,
        window_end=start + timedelta(hours=1),
        severity=severity,
        summary=f"{key} spent ${value} this hour, over its ${threshold} threshold",
        value=Decimal(value),
        threshold=Decimal(threshold),
        evidence=evidence if evidence is not None else dict(RUNAWAY_EVIDENCE),
    )


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server_tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    return server_tls_context(*tls_files)


@pytest.fixture
async def receivers(server_tls: ssl.SSLContext) -> AsyncIterator[Callable[..., Receiver]]:
    """`receivers("slack" | "slack_api" | "pagerduty")`: a receiver, not yet started.

    PagerDuty receivers speak HTTPS (the client accepts nothing else); call
    `await receiver.start()` to open it (a test may start it late: "receiver down").
    """
    made: list[Receiver] = []

    def make(kind: str) -> Receiver:
        tls = server_tls if kind == "pagerduty" else None
        receiver = Receiver(RECEIVER_KINDS[kind], ssl_context=tls)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        await receiver.stop()


@pytest.fixture
def finding() -> Callable[..., Finding]:
    return make_finding


class MemoryRecorder:
    """Keeps alert and delivery rows in lists (the ClickHouse writer has its own tests)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.deliveries: list[AlertDelivery] = []

    def add_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def add_delivery(self, delivery: AlertDelivery) -> None:
        self.deliveries.append(delivery)

    def outcomes(self, channel: str | None = None) -> list[tuple[str, int | None]]:
        return [
            (d.outcome, d.status_code)
            for d in self.deliveries
            if channel is None or d.channel == channel
        ]


@pytest.fixture
def recorder() -> MemoryRecorder:
    return MemoryRecorder()


@pytest.fixture
def clickhouse(chdb_migrated: ClickHouseHandle) -> ClickHouseHandle:
    for table in ("alerts", "alert_deliveries", "usage_ledger"):
        chdb_migrated.client.command(f"TRUNCATE TABLE IF EXISTS {table}")
    return chdb_migrated


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    return waiting.wait_until
