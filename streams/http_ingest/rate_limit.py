"""Per-key token buckets: `rate` requests per second on average, bursts of
up to `burst` requests.

Requests are counted, not events: one request already carries up to
`max_events_per_request` events, and the cost that needs bounding is the
per-request work (authentication, parsing, a publish round trip).

>>> now = [0.0]
>>> limiter = RateLimiter(rate=1.0, burst=2, clock=lambda: now[0])
>>> [limiter.acquire("k") for _ in range(3)]
[0.0, 0.0, 1.0]
>>> now[0] = 1.0
>>> limiter.acquire("k")
0.0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        # One bucket per key id: bounded by the number of keys issued.
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0.0 if allowed, else the seconds until
        the next token (the request is refused and takes nothing)."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate
