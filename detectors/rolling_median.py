"""`RollingMedianDetector`: an hour's spend for a key far above that key's usual hour.

Feed it the running total of each event-time hourly spend bucket:

- `update(key, hour, spend) -> Finding | None` records the bucket and reports a
  finding when an incident opens or escalates (see `detectors.incidents`);
- `learn_one(key, hour, spend)` only records (use it to reload history at start);
- `score_one(key, hour, spend) -> float` is spend / baseline (0 without history);
- `is_resolved(key, now)` / `close_cleared(now)` tell when the condition cleared.

`key` is any string the edge chooses ("tenant:acme", "workflow:summarize",
"team:search", "tenant_model:acme/gpt-4o"); `hour` is any instant inside the
event-time hour, best the newest event time counted in the total (a finding
carries it as `as_of`, so the figures can be recomputed from the ledger up to
that instant); `spend` is the bucket's total so far (set, not added, so a
re-delivered total is harmless).

The condition: spend > k x baseline, where the baseline is the larger of

- the median hourly spend over the previous `lookback_days` (7), and
- the median of the same hour of day over that period,

counting only hours that had spend. Idle hours are left out because a key used
during business hours is idle most of the week: with zeros counted its median
is 0 and every working hour would page. The same-hour-of-day median keeps a
daily peak (the 09:00 rush, the 02:00 batch job) from paging every day, since
the peak is its own baseline; a spike at an unusual time still pages.

Guards, so that pages are rare and right: nothing pages before the key has
`min_history_hours` active hours of baseline (a tenant's first day); an hour
below `spend_floor_usd` (or the key's own in `floors`) never pages and the baseline is at least
`min_baseline_usd` (so $0.02 -> $0.11 never pages). A slow ramp does not page
because the median trails the current level by only half the window (+30 % a
day is 2.5x after 3.5 days, under k). A weekend dip does not page: lower spend
never pages, and Monday is compared with a median dominated by weekdays.

Severity: "warning" above k x baseline, "critical" above critical_k x baseline.

Early pages: a spike starting on the hour at 6x crosses 5x only 50 minutes in, so the
hour is also judged at its projection, the spend so far at the rate so far
(spend / elapsed fraction of the hour). With guards against a small sample: only once
`project_after` (10 minutes) of the hour has passed and the spend so far is already
at least `project_min_ratio` (1.5) x baseline, i.e. the hour has spent more than one
and a half usual hours (an hourly job that front-loads a usual hour's work does not
page) and above the spend floor. A projected page is a warning; critical needs the
spend itself above critical_k x baseline. Its evidence says so (`projected_usd`).

State: at most `max_keys` keys (least recently updated evicted), each with at
most `lookback_days + 1` days of hourly buckets (8 by default).

The parameters `k`, `lookback_days`, `spend_floor_usd` and `min_history_hours`
are named as in `schemas.spend_config.RollingMedianParams`.

>>> from datetime import datetime, timedelta, UTC
>>> from decimal import Decimal
>>> detector = RollingMedianDetector()
>>> start = datetime(2024, 5, 6, tzinfo=UTC)
>>> for h in range(48):
...     _ = detector.learn_one("tenant:acme", start + timedelta(hours=h), Decimal("2.00"))
>>> spike = start + timedelta(hours=48)
>>> detector.update("tenant:acme", spike, Decimal("9.00")) is None   # 4.5x: below k=5
True
>>> finding = detector.update("tenant:acme", spike, Decimal("30.00"))  # 15x
>>> finding.severity, finding.threshold, finding.fingerprint
('critical', Decimal('10.00'), 'rolling_median|tenant:acme|2024-05-08T00:00:00+00:00')
>>> detector.is_resolved("tenant:acme", spike + timedelta(minutes=30))
False
>>> [f.fingerprint for f in detector.close_cleared(spike + timedelta(hours=2))]
['rolling_median|tenant:acme|2024-05-08T00:00:00+00:00']
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from detectors.finding import Finding, Severity
from detectors.history import HourlyHistory, as_utc, epoch_hour, floor_of, hour_start
from detectors.incidents import IncidentBook

HOUR_SECONDS = Decimal(3600)


@dataclass(frozen=True)
class Baseline:
    median: Decimal  # median spend of the active hours in the baseline period
    same_hour_median: Decimal  # the same, over the hours with the same hour of day
    active_hours: int
    # The hourly spend an operator acknowledged as the new normal (0 without one).
    acknowledged: Decimal = Decimal(0)

    @property
    def level(self) -> Decimal:
        return max(self.median, self.same_hour_median, self.acknowledged)


class RollingMedianDetector:
    """Current-hour spend versus the key's rolling median hourly spend."""

    name = "rolling_median"

    def __init__(
        self,
        k: Decimal = Decimal(5),
        critical_k: Decimal = Decimal(10),
        lookback_days: int = 7,
        spend_floor_usd: Decimal = Decimal(1),
        min_baseline_usd: Decimal = Decimal("0.20"),
        min_history_hours: int = 24,
        max_keys: int = 10_000,
        resolve_after: timedelta = timedelta(minutes=15),
        project_after: timedelta = timedelta(minutes=10),
        project_min_ratio: Decimal = Decimal("1.5"),
        floors: Mapping[str, Decimal] | None = None,
    ) -> None:
        self.k = k
        self.critical_k = critical_k
        self.lookback_days = lookback_days
        self.spend_floor_usd = spend_floor_usd
        self.min_baseline_usd = min_baseline_usd
        self.min_history_hours = min_history_hours
        self.max_keys = max_keys
        self.resolve_after = resolve_after
        self.project_after = project_after
        self.project_min_ratio = project_min_ratio
        self.floors = dict(floors or {})
        # One extra day beyond the baseline, so late events for yesterday's
        # hours can still be judged against their own full baseline.
        self._lookback_hours = lookback_days * 24
        self._history: HourlyHistory[Decimal] = HourlyHistory(self._lookback_hours + 24, max_keys)
        # Per key, the baseline of its newest hour: every event of an hour needs
        # it, and it only changes when an earlier hour's bucket changes.
        self._baselines: dict[str, tuple[int, Baseline]] = {}
        self._incidents = IncidentBook(max_keys)
        # key -> (first epoch hour, end epoch hour, level) of an acknowledged new normal
        self._acknowledged: dict[str, tuple[int, int, Decimal]] = {}

    def learn_one(self, key: str, hour: datetime, spend: Decimal) -> Decimal:
        """Record `spend` as the total of `key`'s bucket for the hour containing `hour`;
        returns the total held.

        An hour's total only grows: a smaller one than the total already held is a
        bucket counted again from zero (a table reset by a rebalance, or expired
        between two lists of the hour), not less spend, and the larger is kept. A
        partial total learned as the hour's spend made the baseline far too low."""
        h = epoch_hour(hour)
        held = self._history.get(key, h)
        if held is not None and held > spend:
            spend = held
        evicted = self._history.put(key, h, spend)
        if evicted is not None:
            self._baselines.pop(evicted, None)
            self._incidents.pop(evicted)
        cached = self._baselines.get(key)
        if cached is not None and h < cached[0]:
            del self._baselines[key]
        return spend

    def level_since(self, key: str, since: datetime) -> Decimal | None:
        """The highest hourly spend of `key` from the hour of `since` on (None without
        any): what an operator acknowledges as its new normal (`set_acknowledged`)."""
        h = epoch_hour(since)
        spends = [spend for _, spend in self._history.between(key, h, h + self._lookback_hours)]
        return max(spends) if spends else None

    def set_acknowledged(self, key: str, since: datetime, level: Decimal) -> None:
        """An operator says `level` is `key`'s new normal hourly spend: from the hour of
        `since` on, for the lookback (by then the rolling median has caught up), its
        baseline is at least `level`: the same shift does not page again, k times it
        still does."""
        h = epoch_hour(since)
        self._acknowledged[key] = (h, h + self._lookback_hours, level)
        self._baselines.pop(key, None)

    def keys_under(self, key: str) -> list[str]:
        """`key` and its sub-keys held ('tenant:acme' and 'tenant:acme/workflow:x')."""
        return [k for k in self._history if k == key or k.startswith(key + "/")]

    def baseline(self, key: str, hour: datetime) -> Baseline | None:
        """The baseline for the hour containing `hour`; None before `min_history_hours`."""
        return self._baseline(key, epoch_hour(hour))

    def threshold(self, key: str, hour: datetime) -> Decimal | None:
        """The spend above which the hour containing `hour` breaches; None without history."""
        baseline = self._baseline(key, epoch_hour(hour))
        return None if baseline is None else self.k * self._level(baseline)

    def watch_from(self, key: str, hour: datetime) -> Decimal | None:
        """The spend so far from which the hour containing `hour` may breach, at its
        total or its projection (an hour's total only grows: below this at its last
        call, it breached at none of them); None without history."""
        baseline = self._baseline(key, epoch_hour(hour))
        if baseline is None:
            return None
        level = self._level(baseline)
        floor = floor_of(self.floors, key, self.spend_floor_usd)
        return max(floor, min(self.k, self.project_min_ratio) * level)

    def score_one(self, key: str, hour: datetime, spend: Decimal) -> float:
        """Spend divided by the baseline: above `k` is anomalous. 0.0 without history."""
        baseline = self._baseline(key, epoch_hour(hour))
        if baseline is None:
            return 0.0
        return float(spend / self._level(baseline))

    def update(self, key: str, hour: datetime, spend: Decimal) -> Finding | None:
        """Record the bucket, then report a finding if an incident opens or escalates."""
        spend = self.learn_one(key, hour, spend)
        h = epoch_hour(hour)
        baseline = self._baseline(key, h)
        floor = floor_of(self.floors, key, self.spend_floor_usd)
        severity = self._severity(spend, baseline, floor)
        projected = None
        if severity is None and baseline is not None:
            projected = self._projection(spend, baseline, as_utc(hour) - hour_start(h), floor)
            severity = None if projected is None else "warning"
        if severity is None or baseline is None:
            return None
        return self._incidents.breach(
            key,
            h,
            severity,
            lambda start: self._finding(
                key, start, as_utc(hour), spend, baseline, severity, projected
            ),
        )

    def _projection(
        self, spend: Decimal, baseline: Baseline, elapsed: timedelta, floor: Decimal
    ) -> Decimal | None:
        """The hour's spend at the rate so far, if that breaches and the sample is large
        enough to say so (see the module's "Early pages"); else None."""
        level = self._level(baseline)
        if elapsed < self.project_after or spend < floor or spend < self.project_min_ratio * level:
            return None
        projected = spend * HOUR_SECONDS / Decimal(elapsed.total_seconds())
        return projected if projected > self.k * level else None

    def is_resolved(self, key: str, now: datetime) -> bool:
        """Whether `key` has no open incident or its condition has cleared at `now`.

        `now` is the stream's current time: wall clock when live, the newest
        event time when replaying.
        """
        return self._incidents.is_cleared(
            key,
            now,
            self.resolve_after,
            lambda h, fraction: self._still_breaching(key, h, fraction),
        )

    def close_cleared(self, now: datetime) -> list[Finding]:
        """Close the incidents cleared at `now`; each one's last finding, to resolve its alert."""
        return self._incidents.close_cleared(now, self.resolve_after, self._still_breaching)

    def _still_breaching(self, key: str, h: int, elapsed_fraction: float) -> bool:
        spend = self._history.get(key, h) or Decimal(0)
        projected = spend / Decimal(elapsed_fraction)
        floor = floor_of(self.floors, key, self.spend_floor_usd)
        return self._severity(projected, self._baseline(key, h), floor) is not None

    def _level(self, baseline: Baseline) -> Decimal:
        return max(baseline.level, self.min_baseline_usd)

    def _severity(
        self, spend: Decimal, baseline: Baseline | None, floor: Decimal
    ) -> Severity | None:
        if baseline is None or spend < floor:
            return None
        level = self._level(baseline)
        if spend > self.critical_k * level:
            return "critical"
        if spend > self.k * level:
            return "warning"
        return None

    def _baseline(self, key: str, h: int) -> Baseline | None:
        cached = self._baselines.get(key)
        if cached is not None and cached[0] == h:
            baseline: Baseline | None = cached[1]
        else:
            baseline = self._compute_baseline(key, h)
            if baseline is not None and (cached is None or h >= cached[0]):
                self._baselines[key] = (h, baseline)
        if baseline is None or baseline.active_hours < self.min_history_hours:
            return None
        acknowledged = self._acknowledged.get(key)
        if acknowledged is not None and acknowledged[0] <= h < acknowledged[1]:
            return replace(baseline, acknowledged=acknowledged[2])
        return baseline

    def _compute_baseline(self, key: str, h: int) -> Baseline | None:
        past = [
            (hour, spend)
            for hour, spend in self._history.between(key, h - self._lookback_hours, h)
            if spend > 0
        ]
        if not past:
            return None
        same_hour = [spend for hour, spend in past if hour % 24 == h % 24]
        return Baseline(
            median=statistics.median(spend for _, spend in past),
            same_hour_median=statistics.median(same_hour) if same_hour else Decimal(0),
            active_hours=len(past),
        )

    def _finding(
        self,
        key: str,
        start: int,
        as_of: datetime,
        spend: Decimal,
        baseline: Baseline,
        severity: Severity,
        projected: Decimal | None = None,
    ) -> Finding:
        h = epoch_hour(as_of)
        level = self._level(baseline)
        ratio = spend / level
        elapsed = as_of - hour_start(h)
        on_course = (
            ""
            if projected is None
            else f", on course for ${projected:,.2f} ({projected / level:.1f}x) at its rate "
            f"over the first {elapsed.total_seconds() / 60:.0f} minutes"
        )
        evidence: dict[str, object] = {}
        if baseline.acknowledged:
            evidence["acknowledged_usd"] = baseline.acknowledged
        if projected is not None:
            evidence = {
                **evidence,
                "projected_usd": projected.quantize(Decimal("0.01")),
                "elapsed_minutes": round(elapsed.total_seconds() / 60, 1),
            }
        return Finding(
            detector=self.name,
            key=key,
            window_start=hour_start(start),
            window_end=hour_start(h + 1),
            severity=severity,
            summary=(
                f"{key} spent ${spend:,.2f} in the hour from {hour_start(h):%Y-%m-%d %H:00} UTC, "
                f"{ratio:.1f}x its usual hourly ${level:,.2f}{on_course}"
            ),
            value=spend,
            threshold=self.k * level,
            evidence={
                "hour": hour_start(h).isoformat(),
                # The instant the edge passed: the newest event time counted in `spend`.
                "as_of": as_of.isoformat(),
                "spend_usd": spend,
                "baseline": level,
                "unit": "usd",
                "median_usd": baseline.median,
                "same_hour_median_usd": baseline.same_hour_median,
                "active_hours": baseline.active_hours,
                "ratio": float(ratio),
                "k": self.k,
                **evidence,
            },
        )
