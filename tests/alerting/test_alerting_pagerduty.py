"""PagerDuty through the real pagerduty.EventsApiV2Client against an HTTPS receiver."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pagerduty
import pytest
from pydantic import SecretStr

from detectors.finding import Finding
from schemas.spend_config import parse_spend_config
from streams.alerting.delivery import AlertDeliveryQueue, Backoff
from streams.alerting.lifecycle import AlertLifecycle
from streams.alerting.pagerduty import PagerDutyNotifier
from streams.alerting.router import AlertRouter

NOW = datetime(2025, 3, 4, 10, 50, tzinfo=UTC)
ROUTING_KEY = "R0UT1NGKEYSECRET0000000000000000"
FAST = Backoff(initial=0.05, maximum=0.2, jitter=0)


def notifier_for(base_url: str, cert: Path, **kwargs: Any) -> PagerDutyNotifier:
    # Verify against the receiver's self-signed certificate: TLS is really checked.
    return PagerDutyNotifier(
        SecretStr(ROUTING_KEY),
        base_url=base_url,
        verify=ssl.create_default_context(cafile=cert),
        timeout=5,
        **kwargs,
    )


def queue_for(notifier: PagerDutyNotifier, recorder: Any) -> AlertDeliveryQueue:
    router = AlertRouter({"critical": ["pagerduty:critical"]})
    return AlertDeliveryQueue(
        {"pagerduty:critical": notifier}, router, recorder=recorder, backoff=FAST
    )


async def test_trigger_then_resolve_with_the_same_dedup_key(
    receivers: Callable[..., Any],
    recorder: Any,
    finding: Callable[..., Finding],
    tls_files: tuple[Path, Path],
) -> None:
    receiver = await receivers("pagerduty").start()
    life = AlertLifecycle(cooldown=timedelta(hours=1))
    trigger = life.observe(finding(hour=0), now=NOW)
    assert trigger is not None
    assert life.observe(finding(hour=1), now=NOW + timedelta(hours=1)) is None  # no second page
    resolved = life.clear(finding(hour=1).fingerprint, now=NOW + timedelta(hours=2))
    assert resolved is not None
    async with queue_for(notifier_for(receiver.base_url, tls_files[0]), recorder) as queue:
        queue.enqueue(trigger)
        queue.enqueue(resolved)
        await queue.join()

    assert [r.path for r in receiver.requests] == ["/v2/enqueue", "/v2/enqueue"]
    sent_trigger, sent_resolve = (r.body for r in receiver.requests)
    assert sent_trigger["event_action"] == "trigger"
    assert sent_resolve["event_action"] == "resolve"
    assert sent_trigger["dedup_key"] == sent_resolve["dedup_key"] == trigger.fingerprint
    assert sent_trigger["routing_key"] == ROUTING_KEY
    payload = sent_trigger["payload"]
    assert payload["severity"] == "critical"
    assert payload["source"] == "spendstream/acme"
    assert payload["component"] == "rolling_median"
    assert payload["class"] == "Retry storm"
    details = payload["custom_details"]
    # custom_details carries the evidence (Decimals as exact strings) and the alert's figures.
    assert details["median_usd"] == "14.20"
    assert details["active_hours"] == 168
    assert details["cause_ratios"]["requests_per_user"] == 9.33
    assert details["cause"] == "retry_storm"
    assert details["value"] == "412.50" and details["threshold"] == "75.00"
    assert details["baseline"] == "15.00"
    assert "FROM usage_ledger FINAL" in details["query"]
    assert [(d.action, d.outcome, d.status_code) for d in recorder.deliveries] == [
        ("trigger", "delivered", 202),
        ("resolve", "delivered", 202),
    ]


async def test_5xx_is_retried_by_the_queue(
    receivers: Callable[..., Any],
    recorder: Any,
    finding: Callable[..., Finding],
    tls_files: tuple[Path, Path],
) -> None:
    receiver = await receivers("pagerduty").start()
    receiver.reply(500, body={"status": "error"})
    receiver.reply(503, body={"status": "error"})
    life = AlertLifecycle()
    async with queue_for(notifier_for(receiver.base_url, tls_files[0]), recorder) as queue:
        queue.enqueue(life.observe(finding(), now=NOW))  # type: ignore[arg-type]
        await queue.join()
    assert len(receiver.requests) == 3
    assert recorder.outcomes() == [("retrying", 500), ("retrying", 503), ("delivered", 202)]


async def test_429_honours_retry_after_without_blocking_the_event_loop(
    receivers: Callable[..., Any],
    recorder: Any,
    finding: Callable[..., Finding],
    tls_files: tuple[Path, Path],
) -> None:
    receiver = await receivers("pagerduty").start()
    receiver.reply(429, {"Retry-After": "1"}, {"status": "throttle"})
    receiver.reply(429, {"Retry-After": "1"}, {"status": "throttle"})
    # pagerduty's own 429 retry sleeps (time.sleep) 0.5 s in the worker thread.
    notifier = notifier_for(receiver.base_url, tls_files[0], rate_limit_sleep=0.5)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    tick = asyncio.create_task(ticker())
    async with queue_for(notifier, recorder) as queue:
        queue.enqueue(AlertLifecycle().observe(finding(), now=NOW))  # type: ignore[arg-type]
        await queue.join()
    tick.cancel()
    arrivals = [r.at for r in receiver.requests]
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 0.5  # the library's single capped retry
    assert arrivals[2] - arrivals[1] >= 1.0  # the queue honours Retry-After
    assert recorder.outcomes() == [("retrying", 429), ("retrying", 429), ("delivered", 202)]
    assert max(lags) < 0.4, f"event loop stalled for {max(lags):.2f}s"


async def test_bad_request_is_a_permanent_failure(
    receivers: Callable[..., Any],
    recorder: Any,
    finding: Callable[..., Finding],
    tls_files: tuple[Path, Path],
) -> None:
    receiver = await receivers("pagerduty").start()
    receiver.reply(400, body={"status": "invalid event", "errors": ["'payload' is missing"]})
    async with queue_for(notifier_for(receiver.base_url, tls_files[0]), recorder) as queue:
        queue.enqueue(AlertLifecycle().observe(finding(), now=NOW))  # type: ignore[arg-type]
        await queue.join()
    assert len(receiver.requests) == 1
    assert recorder.outcomes() == [("failed", 400)]
    assert "invalid event" in recorder.deliveries[0].reason
    assert ROUTING_KEY not in recorder.deliveries[0].reason


async def test_configured_target_with_tls_verification_off(
    receivers: Callable[..., Any], recorder: Any, finding: Callable[..., Finding]
) -> None:
    receiver = await receivers("pagerduty").start()
    config = parse_spend_config(
        {
            "routing": {
                "critical": {
                    "pagerduty": {
                        "routing_key": ROUTING_KEY,
                        "base_url": receiver.base_url,
                        "verify_tls": False,
                    }
                }
            }
        }
    )
    assert config.routing.critical.pagerduty is not None
    notifier = PagerDutyNotifier.from_target(config.routing.critical.pagerduty)
    async with queue_for(notifier, recorder) as queue:
        queue.enqueue(AlertLifecycle().observe(finding(), now=NOW))  # type: ignore[arg-type]
        await queue.join()
    assert recorder.outcomes() == [("delivered", 202)]


def test_the_client_refuses_a_plain_http_base_url() -> None:
    with pytest.raises(pagerduty.UrlError):
        PagerDutyNotifier(SecretStr(ROUTING_KEY), base_url="http://127.0.0.1:9")
