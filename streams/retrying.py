"""Retrying with backoff: `Backoff`, the schedule (alert delivery, the ledger sink and
the worker's broker writes share it), and `until_done`, which repeats an idempotent
step until it succeeds. The worker's writes are never dropped: a failed insert,
publish or table flush is tried again, and the offsets behind it stay uncommitted
until it succeeds."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter; a receiver's Retry-After overrides it.

    >>> Backoff(initial=1, maximum=8, jitter=0).delay(4, retry_after=None)
    8
    >>> Backoff(initial=1, maximum=8, jitter=0).delay(1, retry_after=30.0)
    30.0
    """

    initial: float = 1.0
    maximum: float = 300.0
    factor: float = 2.0
    jitter: float = 0.1  # +/- this fraction, so retries from many workers spread out
    max_retry_after: float = 3600.0  # a Retry-After beyond this is treated as this

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        base = min(self.maximum, self.initial * self.factor ** max(failures - 1, 0))
        if not self.jitter:
            return base
        return base * (1 + random.uniform(-self.jitter, self.jitter))


BROKER_WRITES = Backoff(initial=0.5, maximum=10.0, jitter=0)


async def until_done(
    step: Callable[[], Awaitable[object]],
    log: logging.Logger,
    what: str,
    backoff: Backoff = BROKER_WRITES,
    on_failure: Callable[[Exception], None] | None = None,
) -> None:
    """Each failure is a warning; the first of a run carries its traceback (an outage
    retried for minutes would otherwise repeat it every few seconds)."""
    failures = 0
    while True:
        try:
            await step()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if on_failure is not None:
                on_failure(exc)
            delay = backoff.delay(failures)
            log.warning(
                "%s failed (%s: %s); retrying in %.1fs",
                what,
                type(exc).__name__,
                str(exc)[:200],
                delay,
                exc_info=failures == 1,
            )
            await asyncio.sleep(delay)
