"""`BurnRateDetector`: a monthly budget burning so fast that it is gone before the month
ends, judged over two windows at once, as in SLO error-budget alerting.

Feed it each tenant's spend as it is counted (`update(tenant_id, at, cost,
month_spend, budget)`, `at` the event time, `cost` the spend counted at that
instant, `month_spend` the month's total so far). It keeps the tenant's spend per
event-time minute over the long window and computes two rates ending at `at`:

- the short window's (the last hour by default) and the long window's (6 hours);
- each as a burn factor: the rate over the even pace that spends exactly the
  budget in the month (budget / hours in the month).

It pages when both factors reach their threshold (14.4 for the hour and 6 for six
hours, the Google SRE Workbook's pair: 2 % of the budget in an hour, 5 % in six) and,
at the long window's rate, what is left of the budget is gone before the month ends.
The short window makes it fast, the long one keeps a single busy hour (a daily peak,
a batch job) from paging: both must agree. The message names both rates and the date
the budget runs out. One incident per tenant and month; "critical" when the budget is
gone within `critical_within`.

>>> from datetime import datetime, timedelta, UTC
>>> from decimal import Decimal
>>> detector = BurnRateDetector()
>>> start = datetime(2026, 11, 2, tzinfo=UTC)
>>> month = Decimal(0)
>>> found = []
>>> for minute in range(8 * 60):  # $3 a minute against a $3,000 month
...     month += Decimal(3)
...     at = start + timedelta(minutes=minute)
...     found.append(detector.update("acme", at, Decimal(3), month, Decimal(3000)))
>>> first = next(f for f in found if f is not None)
>>> print(first.summary)  # doctest: +NORMALIZE_WHITESPACE
acme burns its $3,000.00 budget for 2026-11 at $180.00/h over the last hour and
$180.00/h over the last 6 hours: at that rate it is gone by 2026-11-02 16:39 UTC
($1,083.00 spent by 2026-11-02 06:00 UTC)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from detectors.contract import month_bounds
from detectors.finding import Finding, Severity
from detectors.history import as_utc

MINUTE = timedelta(minutes=1)


@dataclass
class _Tenant:
    first_seen: datetime
    minutes: deque[tuple[datetime, Decimal]] = field(default_factory=deque)
    paged_month: str = ""
    paged_severity: Severity | None = None


def hours_in_month(at: datetime) -> int:
    start, end = month_bounds(at)
    return (end - start) // timedelta(hours=1)


def month_end(at: datetime) -> datetime:
    return month_bounds(at)[1]


class BurnRateDetector:
    name = "budget_burn_rate"

    def __init__(
        self,
        short_window: timedelta = timedelta(hours=1),
        long_window: timedelta = timedelta(hours=6),
        short_factor: Decimal = Decimal("14.4"),
        long_factor: Decimal = Decimal(6),
        critical_within: timedelta = timedelta(days=1),
        max_tenants: int = 10_000,
    ) -> None:
        if short_window >= long_window:
            raise ValueError("short_window must be shorter than long_window")
        self.short_window = short_window
        self.long_window = long_window
        self.short_factor = short_factor
        self.long_factor = long_factor
        self.critical_within = critical_within
        self.max_tenants = max_tenants
        self._tenants: dict[str, _Tenant] = {}

    def update(
        self, tenant_id: str, at: datetime, cost: Decimal, month_spend: Decimal, budget: Decimal
    ) -> Finding | None:
        """Count `cost` at `at`; a finding when the tenant's burn pages (once a month,
        again only to escalate to critical)."""
        at = as_utc(at)
        tenant = self._tenant(tenant_id, at)
        minute = at.replace(second=0, microsecond=0)
        minutes = tenant.minutes
        if minutes and minutes[-1][0] == minute:
            minutes[-1] = (minute, minutes[-1][1] + cost)
        elif not minutes or minutes[-1][0] < minute:
            minutes.append((minute, cost))
        else:  # a late event: into its own minute, order kept
            items = sorted([*minutes, (minute, cost)], key=lambda pair: pair[0])
            minutes.clear()
            minutes.extend(_merge_minutes(items))
        while minutes and minutes[0][0] <= at - self.long_window:
            minutes.popleft()
        if at - tenant.first_seen < self.long_window or budget <= 0:
            return None  # the long window is not yet full: a tenant's first hours
        short_spent = self._spent(minutes, at, self.short_window)
        long_spent = self._spent(minutes, at, self.long_window)
        short_rate = short_spent / Decimal(self.short_window / timedelta(hours=1))
        long_rate = long_spent / Decimal(self.long_window / timedelta(hours=1))
        even = budget / hours_in_month(at)
        if short_rate < self.short_factor * even or long_rate < self.long_factor * even:
            return None
        left = budget - month_spend
        gone_by = at + timedelta(hours=float(max(left, Decimal(0)) / long_rate))
        if gone_by >= month_end(at):
            return None
        severity: Severity = "critical" if gone_by - at <= self.critical_within else "warning"
        month = f"{at:%Y-%m}"
        if tenant.paged_month == month and (
            tenant.paged_severity == "critical" or severity == tenant.paged_severity
        ):
            return None
        tenant.paged_month, tenant.paged_severity = month, severity
        return self._finding(
            tenant_id, at, severity, (short_spent, long_spent), month_spend, budget, gone_by
        )

    def _tenant(self, tenant_id: str, at: datetime) -> _Tenant:
        tenant = self._tenants.pop(tenant_id, None)
        if tenant is None:
            tenant = _Tenant(first_seen=at)
            if len(self._tenants) >= self.max_tenants:
                self._tenants.pop(next(iter(self._tenants)))
        tenant.first_seen = min(tenant.first_seen, at)
        self._tenants[tenant_id] = tenant  # most recently updated last
        return tenant

    @staticmethod
    def _spent(
        minutes: deque[tuple[datetime, Decimal]], at: datetime, window: timedelta
    ) -> Decimal:
        """Dollars spent in the minutes in (at - window, at]."""
        return sum((cost for minute, cost in minutes if minute > at - window), Decimal(0))

    def _finding(
        self,
        tenant_id: str,
        at: datetime,
        severity: Severity,
        spent: tuple[Decimal, Decimal],
        month_spend: Decimal,
        budget: Decimal,
        gone_by: datetime,
    ) -> Finding:
        start = month_bounds(at)[0]
        short_rate = spent[0] / Decimal(self.short_window / timedelta(hours=1))
        long_rate = spent[1] / Decimal(self.long_window / timedelta(hours=1))
        short_label = _window_label(self.short_window)
        long_label = _window_label(self.long_window)
        return Finding(
            detector=self.name,
            key=f"tenant:{tenant_id}",
            window_start=start,
            window_end=month_end(at),
            severity=severity,
            summary=(
                f"{tenant_id} burns its ${budget:,.2f} budget for {at:%Y-%m} at "
                f"${short_rate:,.2f}/h over {short_label} and ${long_rate:,.2f}/h over "
                f"{long_label}: at that rate it is gone by {gone_by:%Y-%m-%d %H:%M} UTC "
                f"(${month_spend:,.2f} spent by {at:%Y-%m-%d %H:%M} UTC)"
            ),
            value=long_rate,
            threshold=self.long_factor * budget / hours_in_month(at),
            evidence={
                "tenant_id": tenant_id,
                "unit": "usd_per_hour",
                "as_of": at.isoformat(),
                "short_window_hours": self.short_window / timedelta(hours=1),
                "long_window_hours": self.long_window / timedelta(hours=1),
                "short_spend_usd": spent[0],
                "long_spend_usd": spent[1],
                "short_rate_usd_per_hour": short_rate,
                "long_rate_usd_per_hour": long_rate,
                "short_burn_factor": float(short_rate * hours_in_month(at) / budget),
                "long_burn_factor": float(long_rate * hours_in_month(at) / budget),
                "month_spend_usd": month_spend,
                "budget_usd": budget,
                "gone_by": gone_by.isoformat(),
            },
        )


def _merge_minutes(items: list[tuple[datetime, Decimal]]) -> list[tuple[datetime, Decimal]]:
    merged: list[tuple[datetime, Decimal]] = []
    for minute, cost in items:
        if merged and merged[-1][0] == minute:
            merged[-1] = (minute, merged[-1][1] + cost)
        else:
            merged.append((minute, cost))
    return merged


def _window_label(window: timedelta) -> str:
    hours = window / timedelta(hours=1)
    return "the last hour" if hours == 1 else f"the last {hours:g} hours"
