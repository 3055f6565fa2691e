"""The delivery queue: never blocks the stream, never loses an alert to a receiver outage."""

from __future__ import annotations

import asyncio
import io
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from slack_sdk.http_retry import FixedValueRetryIntervalCalculator

from detectors.finding import Finding
from schemas.alert import Alert, AlertDelivery
from streams.alerting.console import ConsoleNotifier
from streams.alerting.delivery import AlertDeliveryQueue, Backoff
from streams.alerting.lifecycle import alert_from_finding
from streams.alerting.notifier import SendAttempt, redact
from streams.alerting.pagerduty import PagerDutyNotifier
from streams.alerting.router import AlertRouter
from streams.alerting.slack import SlackNotifier, default_retry_handlers

NOW = datetime(2025, 3, 4, 10, 50, tzinfo=UTC)
FAST = Backoff(initial=0.05, maximum=0.2, jitter=0)
CRITICAL_ROUTES = AlertRouter(
    {"warning": ["slack:warning"], "critical": ["pagerduty:critical", "slack:warning"]}
)


class GatedNotifier:
    """Blocks in send() until released: a receiver that hangs."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[Alert] = []

    def send(self, alert: Alert) -> list[SendAttempt]:
        self.release.wait(10)
        self.sent.append(alert)
        return [SendAttempt(True, 200, "ok", datetime.now(UTC))]


class BrokenRecorder:
    def add_alert(self, alert: Alert) -> None:
        raise RuntimeError("clickhouse is down")

    def add_delivery(self, delivery: AlertDelivery) -> None:
        raise RuntimeError("clickhouse is down")


def test_backoff_grows_caps_and_yields_to_retry_after() -> None:
    backoff = Backoff(initial=1, maximum=10, factor=2, jitter=0)
    assert [backoff.delay(n, None) for n in range(1, 6)] == [1, 2, 4, 8, 10]
    assert backoff.delay(5, retry_after=42.0) == 42.0
    assert backoff.delay(1, retry_after=99999.0) == backoff.max_retry_after
    jittered = Backoff(initial=1, maximum=10, jitter=0.1)
    assert all(0.9 <= jittered.delay(1, None) <= 1.1 for _ in range(50))


async def test_enqueue_never_blocks_and_records_overflow_as_failed(
    recorder: Any, finding: Callable[..., Finding]
) -> None:
    notifier = GatedNotifier()
    router = AlertRouter({"warning": ["slack:warning"]})
    queue = AlertDeliveryQueue({"slack:warning": notifier}, router, recorder=recorder, maxsize=2)
    await queue.start()
    alerts = [
        alert_from_finding(finding(key=f"tenant:t{i}", severity="warning"), now=NOW)
        for i in range(5)
    ]
    accepted = []
    started = time.monotonic()
    for alert in alerts:
        accepted.append(queue.enqueue(alert))
        await asyncio.sleep(0)  # let the worker take the first job
    assert time.monotonic() - started < 0.5
    # One in flight (blocked in the notifier), two queued, two refused.
    assert accepted == [True, True, True, False, False]
    refused = [d for d in recorder.deliveries if d.outcome == "failed"]
    assert [d.fingerprint for d in refused] == [alerts[3].fingerprint, alerts[4].fingerprint]
    assert all(d.reason.startswith("delivery queue full (2 pending") for d in refused)
    assert len(recorder.alerts) == 5  # every alert is a row, delivered or not
    notifier.release.set()
    await queue.join()
    await queue.stop()
    assert [a.fingerprint for a in notifier.sent] == [a.fingerprint for a in alerts[:3]]


async def test_enqueue_never_raises(finding: Callable[..., Finding]) -> None:
    router = AlertRouter({"critical": ["pagerduty:critical"]})
    queue = AlertDeliveryQueue({}, router, recorder=BrokenRecorder())
    alert = alert_from_finding(finding(), now=NOW)
    assert queue.enqueue(alert) is False  # no notifier for the channel, recorder failing
    assert queue.enqueue(None) is False  # type: ignore[arg-type]


async def test_slack_receiver_down_then_up_gets_the_alert_once(
    receivers: Callable[..., Any],
    recorder: Any,
    finding: Callable[..., Finding],
    wait_until: Callable[..., Any],
) -> None:
    receiver = receivers("slack")  # not started: connection refused
    notifier = SlackNotifier(
        webhook_url=SecretStr(receiver.base_url + "/services/T/B/down"),
        timeout=2,
        retry_handlers=default_retry_handlers(interval=FixedValueRetryIntervalCalculator(0.02)),
    )
    router = AlertRouter({"warning": ["slack:warning"]})
    queue = AlertDeliveryQueue({"slack:warning": notifier}, router, recorder=recorder, backoff=FAST)
    await queue.start()
    assert queue.enqueue(alert_from_finding(finding(severity="warning"), now=NOW))
    await wait_until(lambda: len(recorder.deliveries) >= 6)
    assert {d.outcome for d in recorder.deliveries} == {"retrying"}
    assert all(d.status_code is None for d in recorder.deliveries)
    assert "Connection refused" in recorder.deliveries[-1].reason
    await receiver.start()
    await asyncio.wait_for(queue.join(), 5)
    await queue.stop()
    assert len(receiver.requests) == 1
    assert recorder.deliveries[-1].outcome == "delivered"
    assert [d.attempt for d in recorder.deliveries] == list(range(1, len(recorder.deliveries) + 1))


async def test_pagerduty_down_then_up_delivers_without_holding_back_slack(
    receivers: Callable[..., Any],
    recorder: Any,
    finding: Callable[..., Finding],
    tls_files: tuple[Path, Path],
    wait_until: Callable[..., Any],
) -> None:
    pagerduty = receivers("pagerduty")  # down
    slack = await receivers("slack").start()
    notifiers = {
        "pagerduty:critical": PagerDutyNotifier(
            SecretStr("R0UT1NG"),
            base_url=pagerduty.base_url,
            verify=ssl.create_default_context(cafile=tls_files[0]),
            timeout=2,
        ),
        "slack:warning": SlackNotifier(webhook_url=SecretStr(slack.base_url + "/services/T/B/x")),
    }
    queue = AlertDeliveryQueue(notifiers, CRITICAL_ROUTES, recorder=recorder, backoff=FAST)
    await queue.start()
    trigger = alert_from_finding(finding(), now=NOW)
    resolved = trigger.model_copy(update={"state": "resolved", "resolved_at": NOW})
    queue.enqueue(trigger)
    queue.enqueue(resolved)
    # Slack has both messages while PagerDuty is still refusing connections.
    await wait_until(lambda: len(slack.requests) == 2)
    await wait_until(lambda: len(recorder.outcomes("pagerduty:critical")) >= 4)
    assert set(recorder.outcomes("pagerduty:critical")) == {("retrying", None)}
    await pagerduty.start()
    await asyncio.wait_for(queue.join(), 5)
    await queue.stop()
    # Exactly one trigger then one resolve, in that order, once the receiver is back.
    assert [r.body["event_action"] for r in pagerduty.requests] == ["trigger", "resolve"]
    delivered = [
        (d.action, d.outcome)
        for d in recorder.deliveries
        if d.channel == "pagerduty:critical" and d.outcome == "delivered"
    ]
    assert delivered == [("trigger", "delivered"), ("resolve", "delivered")]


async def test_a_crashing_notifier_does_not_stop_its_channel(
    recorder: Any, finding: Callable[..., Finding]
) -> None:
    class Flaky:
        calls = 0

        def send(self, alert: Alert) -> list[SendAttempt]:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ValueError("bug")
            return [SendAttempt(True, 200, "ok", datetime.now(UTC))]

    router = AlertRouter({"warning": ["slack:warning"]})
    async with AlertDeliveryQueue({"slack:warning": Flaky()}, router, recorder=recorder) as queue:
        queue.enqueue(alert_from_finding(finding(key="tenant:a", severity="warning"), now=NOW))
        queue.enqueue(alert_from_finding(finding(key="tenant:b", severity="warning"), now=NOW))
        await queue.join()
    assert [(d.outcome, d.reason) for d in recorder.deliveries] == [
        ("failed", "notifier crashed"),
        ("delivered", "ok"),
    ]


async def test_stop_records_what_could_not_be_delivered(
    recorder: Any, finding: Callable[..., Finding]
) -> None:
    notifier = GatedNotifier()
    router = AlertRouter({"warning": ["slack:warning"]})
    queue = AlertDeliveryQueue({"slack:warning": notifier}, router, recorder=recorder)
    await queue.start()
    for i in range(3):
        queue.enqueue(alert_from_finding(finding(key=f"tenant:t{i}", severity="warning"), now=NOW))
    await asyncio.sleep(0.05)
    await queue.stop(timeout=0.1)
    notifier.release.set()
    assert [(d.outcome, d.reason) for d in recorder.deliveries] == [
        ("failed", "not delivered before shutdown")
    ] * 3


async def test_console_prints_one_line_per_alert(finding: Callable[..., Finding]) -> None:
    stream = io.StringIO()
    router = AlertRouter({}, console=True)
    async with AlertDeliveryQueue({"console": ConsoleNotifier(stream)}, router) as queue:
        queue.enqueue(alert_from_finding(finding(), now=NOW))
        await queue.join()
    line = stream.getvalue()
    assert line.startswith("[CRITICAL] rolling_median tenant:acme: ")
    assert "cause: Retry storm" in line and line.count("\n") == 1


@pytest.mark.parametrize(
    "error",
    [
        "POST https://hooks.slack.test/services/T0/B0/HOOKSECRET9b1d failed",
        "404 for url /services/T0/B0/HOOKSECRET9b1d",
        "bad path services%2FT0%2FB0%2FHOOKSECRET9b1d",
        "https%3A%2F%2Fhooks.slack.test%2Fservices%2FT0%2FB0%2FHOOKSECRET9b1d",
        "token HOOKSECRET9b1d rejected",
    ],
)
def test_a_webhook_secret_is_redacted_in_any_form(error: str) -> None:
    text = redact(error, "https://hooks.slack.test/services/T0/B0/HOOKSECRET9b1d")
    assert "HOOKSECRET9b1d" not in text
    assert "***" in text
