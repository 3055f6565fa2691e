"""Alert delivery off the hot path: per-channel asyncio queues with retry and backoff.

`enqueue(alert)` is what the stream calls: it never blocks and never raises. It
records the alert row and puts one job per routed channel on that channel's
bounded queue. One worker per channel takes jobs in order (so a resolve never
overtakes its trigger) and calls the blocking notifier in a thread.

Retry policy, per job: a delivered attempt ends it; a permanent failure (a 4xx
other than 408/425/429, or a receiver certificate that fails TLS verification)
ends it as `failed`; anything else (connection refused, timeout, 429, 5xx) is
retried after `Retry-After` when the receiver sent one, else after exponential
backoff with jitter, capped. Transient failures are retried until delivered
(or `max_attempts`, unlimited by default): a receiver that is down delays its
alerts, it does not lose them, and because each channel has its own worker, a
dead PagerDuty does not hold back Slack.

Overflow policy: each channel queue holds `maxsize` jobs. When it is full the
new job is not queued; an `alert_deliveries` row with outcome `failed` and
reason "delivery queue full" is recorded and an error is logged. We refuse the
newest rather than evict the oldest because the oldest jobs are the triggers
whose resolves may be behind them; the lifecycle's one-page-per-incident rule
means a full queue takes `maxsize` distinct incidents, not one noisy one.

Jobs still queued when `stop()` gives up are recorded as failed ("not delivered
before shutdown") so the table shows every alert that was not delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from schemas.alert import Alert, AlertDelivery, DeliveryOutcome
from streams.alerting.notifier import Clock, Notifier, SendAttempt, utc_now
from streams.alerting.router import AlertRouter
from streams.retrying import Backoff

log = logging.getLogger(__name__)


class DeliveryRecorder(Protocol):
    """Where alert and attempt rows go (`AlertsTableWriter`); both calls must not block."""

    def add_alert(self, alert: Alert) -> None: ...

    def add_delivery(self, delivery: AlertDelivery) -> None: ...


@dataclass
class _Job:
    alert: Alert
    channel: str
    attempts: int = 0
    failures: int = 0


class AlertDeliveryQueue:
    """Delivers alerts to the notifiers their severity routes to.

    `notifiers` maps channel name (see `router`) to a notifier. Use as
    `await queue.start()` ... `queue.enqueue(alert)` ... `await queue.stop()`,
    or `async with queue:`.
    """

    def __init__(
        self,
        notifiers: Mapping[str, Notifier],
        router: AlertRouter,
        *,
        recorder: DeliveryRecorder | None = None,
        maxsize: int = 1000,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.notifiers = dict(notifiers)
        self.router = router
        self.recorder = recorder
        self.maxsize = maxsize
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.clock = clock
        self._queues: dict[str, asyncio.Queue[_Job]] = {
            channel: asyncio.Queue(maxsize) for channel in self.notifiers
        }
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight: dict[str, _Job] = {}

    async def __aenter__(self) -> AlertDeliveryQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def enqueue(self, alert: Alert) -> bool:
        """Queue one alert state for its channels; False if any channel refused it. A
        snoozed state is only recorded: the operator asked for no page."""
        try:
            self._record_alert(alert)
            if alert.state == "snoozed":
                return True
            accepted = True
            for channel in self.router.channels_for(alert):
                accepted = self._put(alert, channel) and accepted
            return accepted
        except Exception:
            log.exception("enqueue of alert %s failed", getattr(alert, "fingerprint", "?"))
            return False

    def _put(self, alert: Alert, channel: str) -> bool:
        queue = self._queues.get(channel)
        if queue is None:
            self._record(alert, channel, 0, "failed", None, f"no notifier for channel {channel}")
            log.error("alert %s routed to %s, which has no notifier", alert.fingerprint, channel)
            return False
        try:
            queue.put_nowait(_Job(alert, channel))
        except asyncio.QueueFull:
            reason = f"delivery queue full ({queue.qsize()} pending on {channel})"
            self._record(alert, channel, 0, "failed", None, reason)
            log.error("alert %s not delivered to %s: %s", alert.fingerprint, channel, reason)
            return False
        return True

    async def start(self) -> None:
        if self._workers:
            return
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._work(channel), name=f"alert-delivery:{channel}")
            for channel in self._queues
        ]

    async def join(self) -> None:
        """Wait until every queued job has been delivered or has failed."""
        await asyncio.gather(*(queue.join() for queue in self._queues.values()))

    async def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to `timeout` s, then record the rest as failed."""
        if self._workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.join(), timeout)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        leftovers = list(self._in_flight.values())
        self._in_flight.clear()
        for queue in self._queues.values():
            while not queue.empty():
                leftovers.append(queue.get_nowait())
                queue.task_done()
        for job in leftovers:
            self._record(
                job.alert,
                job.channel,
                job.attempts,
                "failed",
                None,
                "not delivered before shutdown",
            )

    def pending(self) -> int:
        return sum(queue.qsize() for queue in self._queues.values()) + len(self._in_flight)

    async def _work(self, channel: str) -> None:
        queue = self._queues[channel]
        notifier = self.notifiers[channel]
        while True:
            job = await queue.get()
            self._in_flight[channel] = job
            try:
                await self._deliver(job, notifier)
            except asyncio.CancelledError:
                raise  # stop() records the in-flight job
            except Exception:
                # A bug in a notifier must not kill the channel's worker.
                log.exception("delivering %s to %s crashed", job.alert.fingerprint, channel)
                self._record(job.alert, channel, job.attempts, "failed", None, "notifier crashed")
            self._in_flight.pop(channel, None)
            queue.task_done()

    async def _deliver(self, job: _Job, notifier: Notifier) -> None:
        while True:
            # Blocking clients (urllib, pagerduty's time.sleep retries) stay off the loop.
            attempts = await asyncio.to_thread(notifier.send, job.alert)
            if not attempts:
                attempts = [SendAttempt(False, None, "notifier returned no attempt", self.clock())]
            for retried in attempts[:-1]:
                job.attempts += 1
                self._record_attempt(job, retried, "retrying", None)
            final = attempts[-1]
            job.attempts += 1
            if final.ok:
                self._record_attempt(job, final, "delivered", None)
                return
            if final.permanent:
                self._record_attempt(job, final, "failed", None)
                return
            job.failures += 1
            if self.max_attempts is not None and job.attempts >= self.max_attempts:
                self._record_attempt(job, final, "failed", None, suffix=" (attempts exhausted)")
                return
            delay = self.backoff.delay(job.failures, final.retry_after)
            self._record_attempt(job, final, "retrying", delay)
            await asyncio.sleep(delay)

    def _record_attempt(
        self,
        job: _Job,
        attempt: SendAttempt,
        outcome: DeliveryOutcome,
        delay: float | None,
        suffix: str = "",
    ) -> None:
        next_at = attempt.at + timedelta(seconds=delay) if delay is not None else None
        self._emit(
            AlertDelivery(
                fingerprint=job.alert.fingerprint,
                channel=job.channel,
                action=job.alert.action,
                attempt=job.attempts,
                outcome=outcome,
                status_code=attempt.status_code,
                reason=attempt.reason + suffix,
                next_attempt_at=next_at,
                attempted_at=attempt.at,
            )
        )

    def _record(
        self,
        alert: Alert,
        channel: str,
        attempt: int,
        outcome: DeliveryOutcome,
        status: int | None,
        reason: str,
    ) -> None:
        self._emit(
            AlertDelivery(
                fingerprint=alert.fingerprint,
                channel=channel,
                action=alert.action,
                attempt=attempt,
                outcome=outcome,
                status_code=status,
                reason=reason,
                attempted_at=self.clock(),
            )
        )

    def _emit(self, delivery: AlertDelivery) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.add_delivery(delivery)
        except Exception:
            log.exception("recording delivery of %s failed", delivery.fingerprint)

    def _record_alert(self, alert: Alert) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.add_alert(alert)
        except Exception:
            log.exception("recording alert %s failed", alert.fingerprint)
