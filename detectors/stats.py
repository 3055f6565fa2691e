"""`WindowStats`: one key's totals over one window, as the spend tables keep them.

The streaming edge fills one per event-time hour and key (tenant, workflow,
team, (tenant, model)) from its hourly buckets; `RetryStormDetector` and
`SpikeCauseClassifier` read them. `WindowStats.median_of(hours)` makes the
baseline "typical hour" out of past hours: a per-field median, robust to an
earlier incident inside the baseline period.

>>> from decimal import Decimal
>>> hours = [WindowStats(cost=Decimal(c), requests=r, retries=t, model_mix={"gpt-4o": r})
...          for c, r, t in [("1.00", 100, 1), ("1.20", 120, 2), ("9.00", 900, 90)]]
>>> typical = WindowStats.median_of(hours)
>>> typical.cost, typical.requests, typical.retries, typical.model_mix
(Decimal('1.20'), 120, 2, {'gpt-4o': 1120})
>>> typical.retry_rate
0.016666666666666666
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class WindowStats:
    """Totals of one key over one window.

    Counts are floats so that a baseline (a median of hours) can hold fractions;
    a real window's counts are whole numbers. `retries` counts retry attempts
    (calls with `retry_of` set or a `retry_count`); `errors` counts calls that
    failed (status >= 400); `model_mix` maps model -> requests (only the shares
    are used, so a baseline may sum it over hours).
    """

    cost: Decimal = Decimal(0)
    requests: float = 0
    distinct_users: float = 0
    input_tokens: float = 0
    output_tokens: float = 0
    retries: float = 0
    errors: float = 0
    model_mix: Mapping[str, float] = field(default_factory=dict)

    @property
    def retry_rate(self) -> float:
        return self.retries / self.requests if self.requests else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def requests_per_user(self) -> float | None:
        """None when the window has no user ids (producers may not send `user_id`)."""
        return self.requests / self.distinct_users if self.distinct_users else None

    @classmethod
    def median_of(cls, windows: Iterable[WindowStats]) -> WindowStats:
        """The per-field median of the windows that had requests; empty if none did.

        Idle hours are left out so that a business-hours key's baseline is a
        typical working hour, not zero.
        """
        active = [w for w in windows if w.requests > 0]
        if not active:
            return cls()
        mix: dict[str, float] = {}
        for w in active:
            for model, requests in w.model_mix.items():
                mix[model] = mix.get(model, 0) + requests
        return cls(
            cost=statistics.median(w.cost for w in active),
            requests=statistics.median(w.requests for w in active),
            distinct_users=statistics.median(w.distinct_users for w in active),
            input_tokens=statistics.median(w.input_tokens for w in active),
            output_tokens=statistics.median(w.output_tokens for w in active),
            retries=statistics.median(w.retries for w in active),
            errors=statistics.median(w.errors for w in active),
            model_mix=mix,
        )
