"""Slack through the real slack-sdk against a receiver on 127.0.0.1: 200, 429, 5xx, 4xx."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr
from slack_sdk.http_retry import FixedValueRetryIntervalCalculator

from detectors.finding import Finding
from streams.alerting.delivery import AlertDeliveryQueue
from streams.alerting.lifecycle import alert_from_finding
from streams.alerting.router import AlertRouter
from streams.alerting.slack import SlackNotifier, default_retry_handlers
from streams.retrying import Backoff

NOW = datetime(2025, 3, 4, 10, 50, tzinfo=UTC)
WEBHOOK_PATH = "/services/T000/B000/XsecretXwebhookX"
FAST = Backoff(initial=0.05, maximum=0.2, jitter=0)


def webhook_notifier(base_url: str) -> SlackNotifier:
    return SlackNotifier(
        webhook_url=SecretStr(base_url + WEBHOOK_PATH),
        timeout=5,
        retry_handlers=default_retry_handlers(interval=FixedValueRetryIntervalCalculator(0.05)),
    )


def queue_for(notifier: SlackNotifier, recorder: Any) -> AlertDeliveryQueue:
    router = AlertRouter({"warning": ["slack:warning"], "critical": ["slack:warning"]})
    return AlertDeliveryQueue({"slack:warning": notifier}, router, recorder=recorder, backoff=FAST)


def texts(blocks: list[dict[str, Any]]) -> str:
    out = []
    for block in blocks:
        text = block.get("text")
        if isinstance(text, dict):
            out.append(text["text"])
        out += [field["text"] for field in block.get("fields", [])]
        out += [element["text"] for element in block.get("elements", [])]
    return "\n".join(out)


async def test_block_kit_message_says_what_who_how_much_cause_and_query(
    receivers: Callable[..., Any], recorder: Any, finding: Callable[..., Finding]
) -> None:
    receiver = await receivers("slack").start()
    alert = alert_from_finding(finding(), now=NOW)
    async with queue_for(webhook_notifier(receiver.base_url), recorder) as queue:
        assert queue.enqueue(alert)
        await queue.join()
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == WEBHOOK_PATH
    body = request.body
    assert body["text"].startswith("CRITICAL: tenant:acme spent $412.50 this hour")
    kinds = [block["type"] for block in body["blocks"]]
    assert kinds[0] == "header" and "section" in kinds and kinds[-1] == "context"
    shown = texts(body["blocks"])
    assert "CRITICAL · rolling_median · tenant:acme" in shown  # what
    assert "*Tenant*\nacme" in shown and "*Team*\nsearch" in shown  # who
    assert "*Workflow*\nsummarize" in shown
    assert "$412.50 (27.5x baseline)" in shown  # how much
    assert "baseline $15.00, threshold $75.00" in shown  # against what
    assert "*Likely cause:* Retry storm: requests per user 9.3x" in shown  # why
    assert "vs baseline: requests 9.8x, users 1.05x" in shown
    assert "median_usd: $14.20" in shown
    assert "```SELECT" in shown and "FROM usage_ledger FINAL" in shown  # the query
    assert alert.fingerprint in shown
    assert recorder.outcomes() == [("delivered", 200)]


async def test_resolve_message_says_resolved(
    receivers: Callable[..., Any], recorder: Any, finding: Callable[..., Finding]
) -> None:
    receiver = await receivers("slack").start()
    trigger = alert_from_finding(finding(), now=NOW)
    resolved = trigger.model_copy(update={"state": "resolved", "resolved_at": NOW})
    async with queue_for(webhook_notifier(receiver.base_url), recorder) as queue:
        queue.enqueue(trigger)
        queue.enqueue(resolved)
        await queue.join()
    first, second = (request.body for request in receiver.requests)
    assert first["text"].startswith("CRITICAL")
    assert second["text"].startswith("Resolved:")
    assert "RESOLVED · rolling_median · tenant:acme" in texts(second["blocks"])
    assert [(d.action, d.outcome) for d in recorder.deliveries] == [
        ("trigger", "delivered"),
        ("resolve", "delivered"),
    ]


async def test_429_is_retried_after_retry_after(
    receivers: Callable[..., Any], recorder: Any, finding: Callable[..., Finding]
) -> None:
    receiver = await receivers("slack").start()
    # The first 429 is retried by slack-sdk's RateLimitErrorRetryHandler, the second by
    # the delivery queue; both must wait at least Retry-After.
    receiver.reply(429, {"Retry-After": "1"}, "rate_limited")
    receiver.reply(429, {"Retry-After": "1"}, "rate_limited")
    async with queue_for(webhook_notifier(receiver.base_url), recorder) as queue:
        queue.enqueue(alert_from_finding(finding(), now=NOW))
        await queue.join()
    arrivals = [request.at for request in receiver.requests]
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 1.0
    assert arrivals[2] - arrivals[1] >= 1.0
    assert recorder.outcomes() == [("retrying", 429), ("retrying", 429), ("delivered", 200)]
    assert [d.attempt for d in recorder.deliveries] == [1, 2, 3]
    queued_retry = recorder.deliveries[1]
    assert queued_retry.next_attempt_at is not None
    assert (queued_retry.next_attempt_at - queued_retry.attempted_at).total_seconds() == 1.0


async def test_5xx_is_retried_until_delivered(
    receivers: Callable[..., Any], recorder: Any, finding: Callable[..., Finding]
) -> None:
    receiver = await receivers("slack").start()
    receiver.reply(500, body="internal_error")
    receiver.reply(503, body="service_unavailable")
    receiver.reply(502, body="bad gateway")
    async with queue_for(webhook_notifier(receiver.base_url), recorder) as queue:
        queue.enqueue(alert_from_finding(finding(), now=NOW))
        await queue.join()
    assert len(receiver.requests) == 4
    assert recorder.outcomes() == [
        ("retrying", 500),
        ("retrying", 503),
        ("retrying", 502),
        ("delivered", 200),
    ]
    assert recorder.deliveries[0].reason == "internal_error"


async def test_400_is_a_permanent_failure_not_retried(
    receivers: Callable[..., Any], recorder: Any, finding: Callable[..., Finding]
) -> None:
    receiver = await receivers("slack").start()
    receiver.reply(400, body="invalid_blocks")
    async with queue_for(webhook_notifier(receiver.base_url), recorder) as queue:
        queue.enqueue(alert_from_finding(finding(), now=NOW))
        await queue.join()
    assert len(receiver.requests) == 1
    assert recorder.outcomes() == [("failed", 400)]
    assert recorder.deliveries[0].reason == "invalid_blocks"


async def test_chat_post_message_with_token_and_channel(
    receivers: Callable[..., Any], recorder: Any, finding: Callable[..., Finding]
) -> None:
    receiver = await receivers("slack_api").start()
    notifier = SlackNotifier(
        token=SecretStr("xoxb-secret-token"),
        channel="#spend-oncall",
        api_base_url=receiver.base_url + "/api/",
        retry_handlers=default_retry_handlers(interval=FixedValueRetryIntervalCalculator(0.05)),
    )
    receiver.reply(200, body={"ok": False, "error": "internal_error"})
    async with queue_for(notifier, recorder) as queue:
        queue.enqueue(alert_from_finding(finding(), now=NOW))
        await queue.join()
    assert [r.path for r in receiver.requests] == ["/api/chat.postMessage"] * 2
    last = receiver.requests[-1]
    assert last.headers["Authorization"] == "Bearer xoxb-secret-token"
    assert last.body["channel"] == "#spend-oncall"
    assert "*Likely cause:* Retry storm" in texts(last.body["blocks"])
    assert recorder.outcomes() == [("retrying", 200), ("delivered", 200)]
    assert recorder.deliveries[0].reason == "internal_error"


async def test_webhook_url_never_reaches_logs_or_rows(
    receivers: Callable[..., Any],
    recorder: Any,
    finding: Callable[..., Finding],
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = await receivers("slack").start()
    receiver.reply(500, body="oops " + receiver.base_url + WEBHOOK_PATH)  # echoed by a proxy
    receiver.reply(404, body="no_service")
    caplog.set_level(logging.DEBUG)
    async with queue_for(webhook_notifier(receiver.base_url), recorder) as queue:
        queue.enqueue(alert_from_finding(finding(), now=NOW))
        await queue.join()
    assert recorder.outcomes() == [("retrying", 500), ("failed", 404)]
    assert caplog.records, "expected the failure to be logged"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    rows = "\n".join(d.model_dump_json() for d in recorder.deliveries)
    assert "XsecretXwebhookX" not in logged
    assert "XsecretXwebhookX" not in rows
