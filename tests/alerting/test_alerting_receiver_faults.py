"""Receiver outage (reliability case 5): receivers that time out or fail TLS verification.

The real slack-sdk and pagerduty clients talk to real servers on 127.0.0.1. A
`SlowReceiver` accepts the connection and reads the whole request, then holds
the answer longer than the client waits (or never sends it). The delivery queue
must retry a timeout and deliver once the receiver answers again, or record it
as failed with the timeout as the reason, while `enqueue` and the other channels
carry on. A certificate that fails verification is a permanent failure,
recorded with the TLS error instead of retried for ever.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from slack_sdk.http_retry import FixedValueRetryIntervalCalculator

from detectors.finding import Finding
from streams.alerting.delivery import AlertDeliveryQueue, Backoff
from streams.alerting.lifecycle import alert_from_finding
from streams.alerting.notifier import Notifier
from streams.alerting.pagerduty import PagerDutyNotifier
from streams.alerting.router import AlertRouter
from streams.alerting.slack import SlackNotifier, default_retry_handlers

NOW = datetime(2025, 3, 4, 10, 50, tzinfo=UTC)
FAST = Backoff(initial=0.05, maximum=0.2, jitter=0)
CLIENT_TIMEOUT = 1  # seconds (the notifiers take whole seconds)
WEBHOOK_PATH = "/services/T000/B000/XsecretXwebhookX"
ROUTING_KEY = "R0UT1NGKEYSECRET0000000000000000"
CHANNEL = {"slack": "slack:warning", "pagerduty": "pagerduty:critical"}
DELIVERED = {"slack": 200, "pagerduty": 202}
# What each client raises when the receiver does not answer within the timeout.
TIMEOUT_REASON = {
    "slack": "TimeoutError: timed out",  # urllib
    "pagerduty": "ReadTimeout: The read operation timed out",  # httpx2, wrapped by pagerduty
}
CRITICAL_ROUTES = AlertRouter(
    {"warning": ["slack:warning"], "critical": ["pagerduty:critical", "slack:warning"]}
)


def slack_answer() -> web.Response:
    return web.Response(status=200, text="ok")


def pagerduty_answer() -> web.Response:
    return web.json_response({"status": "success", "message": "Event processed"}, status=202)


class SlowReceiver:
    """An HTTP(S) server on 127.0.0.1 that reads each request, then may not answer in time.

    The first `hang` requests (every request when `hang` is None) are held for
    `hold` seconds before the answer; later ones are answered at once. Held
    requests still pending at `stop()` are dropped with their connections.
    """

    def __init__(
        self,
        answer: Callable[[], web.Response],
        *,
        ssl_context: ssl.SSLContext | None,
        hang: int | None,
        hold: float,
    ) -> None:
        self.answer = answer
        self.ssl_context = ssl_context
        self.hang = hang
        self.hold = hold
        self.arrivals: list[float] = []  # time.monotonic() once the request was read
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()  # the receiver is up and reads the request; it just does not answer
        self.arrivals.append(time.monotonic())
        if self.hang is None or len(self.arrivals) <= self.hang:
            await asyncio.sleep(self.hold)
        return self.answer()

    async def start(self) -> SlowReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown timeout: stop() cancels held requests instead of waiting them out.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock, ssl_context=self.ssl_context).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._sock.close()


@pytest.fixture
async def slow_receivers(
    server_tls: ssl.SSLContext,
) -> AsyncIterator[Callable[..., Awaitable[SlowReceiver]]]:
    """`await slow_receivers("slack" | "pagerduty", hang=..., hold=..., tls=...)`: started.

    PagerDuty receivers speak HTTPS (the client accepts nothing else), Slack ones
    plain HTTP unless `tls=True`; both use the session's self-signed certificate.
    """
    made: list[SlowReceiver] = []

    async def make(
        kind: str, *, hang: int | None = None, hold: float = 60.0, tls: bool | None = None
    ) -> SlowReceiver:
        use_tls = kind == "pagerduty" if tls is None else tls
        answer = pagerduty_answer if kind == "pagerduty" else slack_answer
        receiver = SlowReceiver(
            answer, ssl_context=server_tls if use_tls else None, hang=hang, hold=hold
        )
        made.append(receiver)
        return await receiver.start()

    yield make
    for receiver in made:
        await receiver.stop()


def slack_notifier(base_url: str, **kwargs: Any) -> SlackNotifier:
    return SlackNotifier(
        webhook_url=SecretStr(base_url + WEBHOOK_PATH),
        retry_handlers=default_retry_handlers(interval=FixedValueRetryIntervalCalculator(0.05)),
        **kwargs,
    )


@pytest.fixture
def trusting_notifier(tls_files: tuple[Path, Path]) -> Callable[..., Notifier]:
    """A notifier of `kind` for `receiver`, trusting its self-signed certificate."""

    def make(kind: str, receiver: SlowReceiver, timeout: int = CLIENT_TIMEOUT) -> Notifier:
        trust = ssl.create_default_context(cafile=tls_files[0])
        if kind == "slack":
            return slack_notifier(receiver.base_url, timeout=timeout, ssl=trust)
        return PagerDutyNotifier(
            SecretStr(ROUTING_KEY), base_url=receiver.base_url, verify=trust, timeout=timeout
        )

    return make


def queue_for(kind: str, notifier: Notifier, recorder: Any, **kwargs: Any) -> AlertDeliveryQueue:
    router = AlertRouter({"critical": [CHANNEL[kind]]})
    return AlertDeliveryQueue(
        {CHANNEL[kind]: notifier}, router, recorder=recorder, backoff=FAST, **kwargs
    )


def assert_no_secret(recorder: Any) -> None:
    for delivery in recorder.deliveries:
        assert "XsecretXwebhookX" not in delivery.reason and ROUTING_KEY not in delivery.reason


@pytest.mark.parametrize("kind", ["slack", "pagerduty"])
async def test_a_timeout_is_retried_until_the_receiver_answers_in_time(
    kind: str,
    slow_receivers: Callable[..., Awaitable[SlowReceiver]],
    trusting_notifier: Callable[..., Notifier],
    recorder: Any,
    finding: Callable[..., Finding],
) -> None:
    # The first two requests are answered only after the client has given up.
    receiver = await slow_receivers(kind, hang=2, hold=CLIENT_TIMEOUT + 1.5)
    async with queue_for(kind, trusting_notifier(kind, receiver), recorder) as queue:
        assert queue.enqueue(alert_from_finding(finding(), now=NOW))
        await asyncio.wait_for(queue.join(), 15)
    assert len(receiver.arrivals) == 3  # timed out, timed out, answered: one delivery
    first, second, third = receiver.arrivals
    gaps = [second - first, third - second]
    assert all(gap >= 0.9 * CLIENT_TIMEOUT for gap in gaps), gaps  # each wait ran to the timeout
    assert recorder.outcomes() == [
        ("retrying", None),
        ("retrying", None),
        ("delivered", DELIVERED[kind]),
    ]
    assert [d.attempt for d in recorder.deliveries] == [1, 2, 3]
    for retried in recorder.deliveries[:2]:
        assert retried.reason.startswith(TIMEOUT_REASON[kind]), retried.reason
        assert retried.next_attempt_at is not None
    assert_no_secret(recorder)


@pytest.mark.parametrize("kind", ["slack", "pagerduty"])
async def test_a_receiver_that_never_answers_is_recorded_as_failed_with_the_timeout(
    kind: str,
    slow_receivers: Callable[..., Awaitable[SlowReceiver]],
    trusting_notifier: Callable[..., Notifier],
    recorder: Any,
    finding: Callable[..., Finding],
) -> None:
    receiver = await slow_receivers(kind, hang=None)  # reads every request, answers none
    notifier = trusting_notifier(kind, receiver)
    async with queue_for(kind, notifier, recorder, max_attempts=2) as queue:
        assert queue.enqueue(alert_from_finding(finding(), now=NOW))
        await asyncio.wait_for(queue.join(), 15)
    assert len(receiver.arrivals) == 2  # retried once, then given up at max_attempts
    assert recorder.outcomes() == [("retrying", None), ("failed", None)]
    retried, failed = recorder.deliveries
    assert retried.reason.startswith(TIMEOUT_REASON[kind]), retried.reason
    assert failed.reason.startswith(TIMEOUT_REASON[kind]), failed.reason
    assert failed.reason.endswith("(attempts exhausted)")
    assert failed.next_attempt_at is None
    assert_no_secret(recorder)


@pytest.mark.parametrize("kind", ["slack", "pagerduty"])
async def test_a_certificate_that_fails_verification_is_a_recorded_permanent_failure(
    kind: str,
    slow_receivers: Callable[..., Awaitable[SlowReceiver]],
    trusting_notifier: Callable[..., Notifier],
    recorder: Any,
    finding: Callable[..., Finding],
) -> None:
    receiver = await slow_receivers(kind, hang=0, tls=True)  # self-signed, answers at once
    # Verification on, as configured by default: nothing trusts the self-signed certificate.
    notifier: Notifier
    if kind == "slack":
        notifier = slack_notifier(receiver.base_url, timeout=CLIENT_TIMEOUT)
    else:
        notifier = PagerDutyNotifier(
            SecretStr(ROUTING_KEY), base_url=receiver.base_url, timeout=CLIENT_TIMEOUT
        )
    trigger = alert_from_finding(finding(), now=NOW)
    resolved = trigger.model_copy(update={"state": "resolved", "resolved_at": NOW})
    # The production default: transient failures are retried without limit.
    async with queue_for(kind, notifier, recorder, max_attempts=None) as queue:
        assert queue.enqueue(trigger) and queue.enqueue(resolved)
        # Both jobs end: the first is not retried for ever, holding back the second.
        await asyncio.wait_for(queue.join(), 10)
    assert receiver.arrivals == []  # no request got past the handshake
    # slack-sdk retries a connection error (urllib's URLError) once in-library; the
    # queue then gives up. pagerduty's client has no network retries.
    per_alert = [("retrying", None), ("failed", None)] if kind == "slack" else [("failed", None)]
    assert recorder.outcomes() == per_alert * 2
    actions = ["trigger"] * len(per_alert) + ["resolve"] * len(per_alert)
    assert [d.action for d in recorder.deliveries] == actions
    for delivery in recorder.deliveries:
        assert "CERTIFICATE_VERIFY_FAILED" in delivery.reason, delivery.reason
        assert "certificate verify failed" in delivery.reason
    assert_no_secret(recorder)
    # Control: the same receiver delivers to a client that trusts its certificate.
    attempts = await asyncio.to_thread(trusting_notifier(kind, receiver).send, trigger)
    assert [a.status_code for a in attempts] == [DELIVERED[kind]]
    assert len(receiver.arrivals) == 1


async def test_a_hanging_pagerduty_holds_back_neither_enqueue_nor_slack(
    slow_receivers: Callable[..., Awaitable[SlowReceiver]],
    receivers: Callable[..., Any],
    trusting_notifier: Callable[..., Notifier],
    recorder: Any,
    finding: Callable[..., Finding],
    wait_until: Callable[..., Any],
) -> None:
    pagerduty = await slow_receivers("pagerduty", hang=None)  # reads, never answers
    slack = await receivers("slack").start()
    notifiers = {
        # A long client timeout: PagerDuty is still hanging while Slack delivers.
        "pagerduty:critical": trusting_notifier("pagerduty", pagerduty, timeout=30),
        "slack:warning": slack_notifier(slack.base_url, timeout=CLIENT_TIMEOUT),
    }
    queue = AlertDeliveryQueue(notifiers, CRITICAL_ROUTES, recorder=recorder, backoff=FAST)
    await queue.start()
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    tick = asyncio.create_task(ticker())
    alerts = [alert_from_finding(finding(key=f"tenant:t{i}"), now=NOW) for i in range(3)]
    accepted = [queue.enqueue(alert) for alert in alerts]
    assert accepted == [True] * 3
    await wait_until(lambda: len(pagerduty.arrivals) == 1)  # the first trigger hangs
    await wait_until(lambda: recorder.outcomes("slack:warning") == [("delivered", 200)] * 3)
    # Slack got all three while PagerDuty's client is still waiting on its first answer.
    assert [r.body["text"].split(" spent")[0] for r in slack.requests] == [
        f"CRITICAL: tenant:t{i}" for i in range(3)
    ]
    assert len(pagerduty.arrivals) == 1
    assert recorder.outcomes("pagerduty:critical") == []
    assert queue.pending() == 3  # PagerDuty: one in flight, two queued behind it
    # The stream keeps enqueueing while PagerDuty hangs, and it does not wait.
    late = alert_from_finding(finding(key="tenant:late", severity="warning"), now=NOW)
    started = time.monotonic()
    assert queue.enqueue(late)
    assert time.monotonic() - started < 0.1
    await wait_until(lambda: len(slack.requests) == 4)
    await queue.stop(timeout=0.1)
    tick.cancel()
    assert max(lags) < 0.4, f"event loop stalled for {max(lags):.2f}s"
    # Nothing was lost silently: what PagerDuty never took is recorded as failed.
    assert [
        (d.fingerprint, d.outcome, d.reason)
        for d in recorder.deliveries
        if d.channel == "pagerduty:critical"
    ] == [(alert.fingerprint, "failed", "not delivered before shutdown") for alert in alerts]
