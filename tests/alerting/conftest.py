"""Fixtures for the alerting tests; helpers reach tests as fixtures, never by import.

Real HTTP(S) receivers on 127.0.0.1 for the real slack-sdk and pagerduty clients:

A `Receiver` is an aiohttp server in the test's event loop. It answers from a
script (status, headers, body) and then with the receiver's normal answer, and
records every request it gets (arrival time, path, headers, JSON body). The
notifiers run in threads (`asyncio.to_thread`), so the loop stays free to serve.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from detectors.finding import Finding, Severity
from schemas.alert import Alert, AlertDelivery
from streams.ledger.connect import ClickHouseHandle, apply_migrations, chdb_url_for, open_clickhouse

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


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class Receiver:
    """An HTTP(S) server on 127.0.0.1 that records requests and answers from a script."""

    def __init__(
        self, default: Callable[[Received], Reply], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.default = default
        self.ssl_context = ssl_context
        self.script: list[Reply] = []
        self.requests: list[Received] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def reply(self, status: int, headers: dict[str, str] | None = None, body: Any = None) -> None:
        self.script.append(Reply(status, headers or {}, body))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        received = Received(time.monotonic(), request.path, dict(request.headers), body)
        self.requests.append(received)
        reply = self.script.pop(0) if self.script else self.default(received)
        if isinstance(reply.body, dict | list):
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        return web.Response(status=reply.status, headers=reply.headers, text=reply.body or "")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_context, reuse_address=True
        )
        await site.start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def slack_webhook_ok(_: Received) -> Reply:
    return Reply(200, {"Content-Type": "text/plain"}, "ok")


def slack_api_ok(received: Received) -> Reply:
    channel = received.body.get("channel") if isinstance(received.body, dict) else None
    return Reply(200, {}, {"ok": True, "channel": channel, "ts": "1741082400.000100"})


def pagerduty_ok(received: Received) -> Reply:
    dedup_key = received.body.get("dedup_key") if isinstance(received.body, dict) else None
    return Reply(
        202, {}, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
    )


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.fail("the PagerDuty tests need the openssl CLI to make a self-signed certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def server_tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


RECEIVER_KINDS = {"slack": slack_webhook_ok, "slack_api": slack_api_ok, "pagerduty": pagerduty_ok}


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


@pytest.fixture(scope="module")
def _clickhouse_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHandle]:
    # Opening chdb costs seconds: one data path per test module, emptied between tests,
    # and closed after the module (chdb is one engine per process).
    handle = open_clickhouse(chdb_url_for(tmp_path_factory.mktemp("chdb")))
    apply_migrations(handle.client)
    yield handle
    handle.close()


@pytest.fixture
def clickhouse(_clickhouse_session: ClickHouseHandle) -> ClickHouseHandle:
    for table in ("alerts", "alert_deliveries", "usage_ledger"):
        _clickhouse_session.client.command(f"TRUNCATE TABLE IF EXISTS {table}")
    return _clickhouse_session


async def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    return _wait_until
