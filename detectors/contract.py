"""`ContractDetector`: a tenant's spend against its contract and monthly budget.

Feed it, for each costed event of a tenant (or on a timer):

- `update(tenant_id, at, hour_spend, month_spend) -> list[Finding]`, where
  `at` is the event time, `hour_spend` the total of the tenant's event-time
  hour containing `at`, and `month_spend` the total of its calendar month
  (UTC) containing `at`;
- `is_resolved(tenant_id, now)` / `close_cleared(now)` for the hourly condition.

Findings (key "tenant:<id>"):

- `contract_hourly`: the hour's spend exceeds the contracted hourly budget. One
  incident per episode, resolved as in `detectors.incidents`.
- `budget_50pct`, `budget_80pct`, `budget_100pct` (from `monthly_thresholds`):
  month to date crossed that fraction of the monthly budget; severity "info"
  below 80 %, "warning" from 80 %, "critical" from 100 %. Each fires once per
  calendar month; when several are crossed at once (a restart, a burst) only
  the highest fires, because the lower ones are already old news.
- `budget_forecast`: the month-to-date run rate, extended to the end of the
  month, crosses 100 %, while actual spend has not. Once per month, and only
  after `forecast_min_days` of the month have passed, so one busy first day
  does not project to a 30x overrun.

Monthly findings span the month (window = month), so their fingerprints are
stable across restarts; the edge's dedupe by fingerprint then also keeps a
restarted detector from paging twice. State is per configured tenant only.

`budgets` maps tenant id to anything with `contracted_hourly_budget_usd` and
`monthly_budget_usd` (`TenantBudget`, or `schemas.spend_config.TenantConfig`
as is); the other parameters are named as in `ContractParams`.

>>> from datetime import datetime, UTC
>>> from decimal import Decimal
>>> budget = TenantBudget(contracted_hourly_budget_usd=Decimal(50),
...                       monthly_budget_usd=Decimal(10_000))
>>> detector = ContractDetector({"acme": budget})
>>> at = datetime(2024, 6, 10, 12, 30, tzinfo=UTC)
>>> [f.detector for f in detector.update("acme", at, Decimal(20), Decimal(5_100))]
['budget_50pct', 'budget_forecast']
>>> [f.detector for f in detector.update("acme", at, Decimal(60), Decimal(5_140))]
['contract_hourly']
>>> detector.update("acme", at, Decimal(70), Decimal(5_150))
[]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from detectors.finding import Finding, Severity
from detectors.history import as_utc, epoch_hour, hour_start
from detectors.incidents import IncidentBook

DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
FORECAST = "budget_forecast"
_MICROSECOND = timedelta(microseconds=1)
_CENT = Decimal("0.01")


class Budget(Protocol):
    @property
    def contracted_hourly_budget_usd(self) -> Decimal | None: ...

    @property
    def monthly_budget_usd(self) -> Decimal | None: ...


@dataclass(frozen=True)
class TenantBudget:
    contracted_hourly_budget_usd: Decimal | None = None
    monthly_budget_usd: Decimal | None = None


@dataclass
class _Month:
    start: datetime
    fired: set[str] = field(default_factory=set)


def month_bounds(at: datetime) -> tuple[datetime, datetime]:
    """The first instant of the UTC calendar month containing `at`, and of the next."""
    start = as_utc(at).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def month_end_projection(spend: Decimal, at: datetime) -> tuple[Decimal, Decimal]:
    """Month-to-date `spend` at `at`, run on at the same rate to the end of the month
    (to the cent), and the fraction of the month elapsed. At the month's first
    instant nothing has elapsed: the projection is the spend itself.

    >>> from datetime import UTC
    >>> month_end_projection(Decimal(100), datetime(2024, 6, 16, tzinfo=UTC))
    (Decimal('200.00'), Decimal('0.5'))
    """
    start, end = month_bounds(at)
    so_far = as_utc(at) - start
    if so_far < _MICROSECOND:
        return spend.quantize(_CENT), Decimal(0)
    # Microsecond counts keep the fraction exact, so the projection stays Decimal.
    elapsed = Decimal(so_far // _MICROSECOND) / Decimal((end - start) // _MICROSECOND)
    return (spend / elapsed).quantize(_CENT), elapsed


class ContractDetector:
    """Hourly contract, monthly budget thresholds and month-end forecast, per tenant."""

    name = "contract_hourly"

    def __init__(
        self,
        budgets: Mapping[str, Budget],
        monthly_thresholds: Sequence[Decimal] = DEFAULT_THRESHOLDS,
        forecast: bool = True,
        forecast_min_days: int = 3,
        hourly_severity: Severity = "warning",
        forecast_severity: Severity = "warning",
        resolve_after: timedelta = timedelta(minutes=15),
    ) -> None:
        for tenant_id, budget in budgets.items():
            for amount in (budget.contracted_hourly_budget_usd, budget.monthly_budget_usd):
                if amount is not None and amount <= 0:
                    raise ValueError(f"budget of tenant {tenant_id!r} must be positive")
        self.budgets = budgets
        self.monthly_thresholds = tuple(sorted(monthly_thresholds))
        self.forecast = forecast
        self.forecast_min_days = forecast_min_days
        self.hourly_severity = hourly_severity
        self.forecast_severity = forecast_severity
        self.resolve_after = resolve_after
        self._months: dict[str, _Month] = {}
        self._latest_hour: dict[str, tuple[int, Decimal]] = {}
        self._incidents = IncidentBook(max_open=max(len(budgets), 1))

    def update(
        self, tenant_id: str, at: datetime, hour_spend: Decimal, month_spend: Decimal
    ) -> list[Finding]:
        budget = self.budgets.get(tenant_id)
        if budget is None:
            return []
        findings = []
        hourly_budget = budget.contracted_hourly_budget_usd
        if hourly_budget is not None:
            hourly = self._check_hour(tenant_id, epoch_hour(at), hour_spend, hourly_budget)
            if hourly is not None:
                findings.append(hourly)
        if budget.monthly_budget_usd is not None:
            findings.extend(
                self._check_month(tenant_id, at, month_spend, budget.monthly_budget_usd)
            )
        return findings

    def is_resolved(self, tenant_id: str, now: datetime) -> bool:
        """Whether the tenant has no open hourly incident, or it cleared at `now`."""
        return self._incidents.is_cleared(
            tenant_id,
            now,
            self.resolve_after,
            lambda h, fraction: self._still_breaching(tenant_id, h, fraction),
        )

    def close_cleared(self, now: datetime) -> list[Finding]:
        """Close the hourly incidents cleared at `now`; the last finding of each."""
        return self._incidents.close_cleared(now, self.resolve_after, self._still_breaching)

    def _still_breaching(self, tenant_id: str, h: int, elapsed_fraction: float) -> bool:
        budget = self.budgets.get(tenant_id)
        if budget is None or budget.contracted_hourly_budget_usd is None:
            return False
        latest = self._latest_hour.get(tenant_id)
        spend = latest[1] if latest is not None and latest[0] == h else Decimal(0)
        return spend / Decimal(elapsed_fraction) > budget.contracted_hourly_budget_usd

    def _check_hour(
        self, tenant_id: str, h: int, spend: Decimal, budget: Decimal
    ) -> Finding | None:
        latest = self._latest_hour.get(tenant_id)
        if latest is None or h >= latest[0]:
            self._latest_hour[tenant_id] = (h, spend)
        if spend <= budget:
            return None

        def make(start: int) -> Finding:
            return Finding(
                detector=self.name,
                key=f"tenant:{tenant_id}",
                window_start=hour_start(start),
                window_end=hour_start(h + 1),
                severity=self.hourly_severity,
                summary=(
                    f"tenant {tenant_id} spent ${spend:,.2f} in the hour from "
                    f"{hour_start(h):%Y-%m-%d %H:00} UTC, over its contracted ${budget:,.2f}/h"
                ),
                value=spend,
                threshold=budget,
                evidence={
                    "hour": hour_start(h).isoformat(),
                    "spend_usd": spend,
                    "hourly_budget_usd": budget,
                    "ratio": float(spend / budget),
                },
            )

        return self._incidents.breach(tenant_id, h, self.hourly_severity, make)

    def _check_month(
        self, tenant_id: str, at: datetime, spend: Decimal, budget: Decimal
    ) -> list[Finding]:
        start, end = month_bounds(at)
        month = self._months.get(tenant_id)
        if month is not None and start < month.start:
            return []  # a late event from a month already closed: its alerts are history
        if month is None or start > month.start:
            month = _Month(start)
            self._months[tenant_id] = month

        findings = []
        crossed = [f for f in self.monthly_thresholds if spend >= budget * f]
        new = [f for f in crossed if _threshold_name(f) not in month.fired]
        if new:
            fraction = new[-1]
            month.fired.update(_threshold_name(f) for f in crossed)
            findings.append(
                self._month_finding(
                    tenant_id,
                    _threshold_name(fraction),
                    _threshold_severity(fraction),
                    start,
                    end,
                    f"tenant {tenant_id} has spent ${spend:,.2f} this month, "
                    f"{spend / budget:.0%} of its ${budget:,.2f} budget",
                    spend,
                    budget * fraction,
                    {"month_to_date_usd": spend, "monthly_budget_usd": budget},
                )
            )
        if spend >= budget:
            month.fired.add(FORECAST)  # crossing is no longer a forecast
        forecast = self._forecast(tenant_id, at, spend, budget, month, end)
        if forecast is not None:
            findings.append(forecast)
        return findings

    def _forecast(
        self,
        tenant_id: str,
        at: datetime,
        spend: Decimal,
        budget: Decimal,
        month: _Month,
        end: datetime,
    ) -> Finding | None:
        so_far = as_utc(at) - month.start
        too_early = so_far < max(timedelta(days=self.forecast_min_days), _MICROSECOND)
        if not self.forecast or FORECAST in month.fired or too_early:
            return None
        projected, elapsed = month_end_projection(spend, at)
        if projected < budget:
            return None
        month.fired.add(FORECAST)
        crossing = month.start + so_far * float(budget / spend)
        return self._month_finding(
            tenant_id,
            FORECAST,
            self.forecast_severity,
            month.start,
            end,
            f"tenant {tenant_id} is on course to spend ${projected:,.2f} this month "
            f"against a ${budget:,.2f} budget, crossing it around {crossing:%Y-%m-%d}",
            projected,
            budget,
            {
                "month_to_date_usd": spend,
                "monthly_budget_usd": budget,
                "projected_usd": projected,
                "elapsed_fraction": float(elapsed),
                "forecast_crossing": crossing.isoformat(),
            },
        )

    def _month_finding(
        self,
        tenant_id: str,
        detector: str,
        severity: Severity,
        start: datetime,
        end: datetime,
        summary: str,
        value: Decimal,
        threshold: Decimal,
        evidence: dict[str, object],
    ) -> Finding:
        return Finding(
            detector=detector,
            key=f"tenant:{tenant_id}",
            window_start=start,
            window_end=end,
            severity=severity,
            summary=summary,
            value=value,
            threshold=threshold,
            evidence=evidence,
        )


def _threshold_name(fraction: Decimal) -> str:
    return f"budget_{fraction * 100:.0f}pct"


def _threshold_severity(fraction: Decimal) -> Severity:
    if fraction >= 1:
        return "critical"
    if fraction >= Decimal("0.8"):
        return "warning"
    return "info"
