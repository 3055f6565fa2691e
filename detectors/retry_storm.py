"""`RetryStormDetector`: retries, errors or requests per user surge for a workflow.

Feed it each key's event-time hourly `WindowStats` (running totals):

- `update(key, hour, stats) -> Finding | None` records the hour and reports a
  finding when an incident opens (see `detectors.incidents`);
- `learn_one(key, hour, stats)` only records (reload at start);
- `signals(key, hour, stats)` / `score_one(...)` give the ratios to baseline;
- `baseline(key, hour) -> WindowStats | None`, the typical hour it compares
  with (also what `SpikeCauseClassifier` needs);
- `is_resolved(key, now)` / `close_cleared(now)`;
- `set_acknowledged(key, since, at)`: an operator's new normal (see the method).

The baseline is the per-field median of the key's active hours over the
previous `lookback_days` (7), after at least `min_history_hours` of them.
The signals compare rates, not counts, so growth in traffic (more users, more
requests, proportionally more retries) is not a storm:

- `retry_rate`: retries per request / the baseline's (at least `rate_floor`)
  >= `surge_factor`, with at least `min_retries` retries in the hour;
- `error_rate`: the same for errors, with at least `min_errors`;
- `requests_per_user`: requests per distinct user / the baseline period's (its
  requests over its hours' users, pooled) >= `amplification`, with at least
  `min_requests` requests. A loop or a retry
  storm multiplies requests while the users stay the same. Skipped when the
  key has no user ids.

State: at most `max_keys` keys, each with `lookback_days + 1` days of hourly
stats. Windows are event-time hours, the edge's bucket size; there is no
shorter window (`RetryStormParams.window_minutes` has no counterpart here):
rates are compared as the hour fills, so a storm trips within minutes.

>>> from datetime import datetime, timedelta, UTC
>>> detector = RetryStormDetector()
>>> start = datetime(2024, 5, 6, tzinfo=UTC)
>>> for h in range(48):
...     detector.learn_one("workflow:triage", start + timedelta(hours=h),
...         WindowStats(cost=Decimal(4), requests=400, distinct_users=100, retries=4, errors=2))
>>> now = start + timedelta(hours=48)
>>> busy = WindowStats(cost=Decimal(12), requests=1200, distinct_users=300, retries=12, errors=6)
>>> detector.update("workflow:triage", now, busy) is None   # 3x adoption, same rates
True
>>> storm = WindowStats(cost=Decimal(24), requests=2400, distinct_users=100, retries=900, errors=40)
>>> finding = detector.update("workflow:triage", now, storm)
>>> sorted(finding.evidence["tripped"])
['requests_per_user', 'retry_rate']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from detectors.finding import Finding, Severity
from detectors.history import HourlyHistory, epoch_hour, floor_of, hour_start
from detectors.incidents import IncidentBook
from detectors.stats import WindowStats


@dataclass(frozen=True)
class Usual:
    """The rates an hour is compared with: the baseline's, or higher ones an operator
    acknowledged as the new normal."""

    retry_rate: float
    error_rate: float
    requests_per_user: float | None


class RetryStormDetector:
    """Per-key retry, error and request-amplification surges against the baseline."""

    name = "retry_storm"

    def __init__(
        self,
        surge_factor: float | Decimal = 3.0,
        amplification: float | Decimal = 3.0,
        min_retries: float = 20,
        min_errors: float = 20,
        min_requests: float = 100,
        rate_floor: float = 0.01,
        spend_floor_usd: Decimal = Decimal(1),
        lookback_days: int = 7,
        min_history_hours: int = 24,
        max_keys: int = 2_000,
        severity: Severity = "warning",
        resolve_after: timedelta = timedelta(minutes=15),
        floors: Mapping[str, Decimal] | None = None,
    ) -> None:
        # Ratios are floats; the config file gives Decimals.
        self.surge_factor = float(surge_factor)
        self.amplification = float(amplification)
        self.min_retries = min_retries
        self.min_errors = min_errors
        self.min_requests = min_requests
        self.rate_floor = rate_floor
        self.spend_floor_usd = spend_floor_usd
        self.lookback_days = lookback_days
        self.min_history_hours = min_history_hours
        self.max_keys = max_keys
        self.severity = severity
        self.resolve_after = resolve_after
        self.floors = dict(floors or {})
        self._lookback_hours = lookback_days * 24
        self._history: HourlyHistory[WindowStats] = HourlyHistory(
            self._lookback_hours + 24, max_keys
        )
        # Per key, (hour, active hours, baseline, requests per user) of its newest hour;
        # see RollingMedianDetector.
        self._baselines: dict[str, tuple[int, int, WindowStats, float | None]] = {}
        self._incidents = IncidentBook(max_keys)
        # key -> (first epoch hour, end epoch hour, last hour of the acknowledged level,
        # its rates once the history holds them) of an acknowledged new normal
        self._acknowledged: dict[str, tuple[int, int, int, Usual | None]] = {}

    def set_acknowledged(self, key: str, since: datetime, at: datetime) -> None:
        """An operator says the rates `key` reached from the hour of `since` to the hour
        of `at` are its new normal: from the hour of `since` on, for the lookback, its
        usual retry rate, error rate and requests per user are at least the highest of
        those hours', so the same storm does not page again and k times it still does.
        The rates are read from the history when first needed: at a restart it is
        learned after the acknowledgements are restored."""
        h = epoch_hour(since)
        self._acknowledged[key] = (h, h + self._lookback_hours, epoch_hour(at), None)

    def learn_one(self, key: str, hour: datetime, stats: WindowStats) -> None:
        h = epoch_hour(hour)
        evicted = self._history.put(key, h, stats)
        if evicted is not None:
            self._baselines.pop(evicted, None)
            self._incidents.pop(evicted)
        cached = self._baselines.get(key)
        if cached is not None and h < cached[0]:
            del self._baselines[key]

    def baseline(self, key: str, hour: datetime) -> WindowStats | None:
        """The typical hour before the hour containing `hour`; None without enough history."""
        return self._baseline(key, epoch_hour(hour))

    def signals(self, key: str, hour: datetime, stats: WindowStats) -> dict[str, float]:
        """Each signal's ratio to the baseline (no minimum counts applied)."""
        h = epoch_hour(hour)
        baseline = self._baseline(key, h)
        return {} if baseline is None else self._ratios(stats, self._usual(key, h, baseline))

    def score_one(self, key: str, hour: datetime, stats: WindowStats) -> float:
        return max(self.signals(key, hour, stats).values(), default=0.0)

    def update(self, key: str, hour: datetime, stats: WindowStats) -> Finding | None:
        self.learn_one(key, hour, stats)
        h = epoch_hour(hour)
        baseline = self._baseline(key, h)
        # The dollars at stake: an hour spending less than the floor never pages,
        # whatever its ratios (a $0.10-an-hour workflow calling 3.5x as often).
        if baseline is None or stats.cost < floor_of(self.floors, key, self.spend_floor_usd):
            return None
        usual = self._usual(key, h, baseline)
        tripped = self._tripped(stats, usual, count_scale=1.0)
        if not tripped:
            return None
        return self._incidents.breach(
            key,
            h,
            self.severity,
            lambda start: self._finding(key, start, h, stats, baseline, usual, tripped),
        )

    def is_resolved(self, key: str, now: datetime) -> bool:
        return self._incidents.is_cleared(
            key,
            now,
            self.resolve_after,
            lambda h, fraction: self._still_breaching(key, h, fraction),
        )

    def close_cleared(self, now: datetime) -> list[Finding]:
        return self._incidents.close_cleared(now, self.resolve_after, self._still_breaching)

    def _still_breaching(self, key: str, h: int, elapsed_fraction: float) -> bool:
        stats = self._history.get(key, h)
        baseline = self._baseline(key, h)
        if stats is None or baseline is None:
            return False
        # Rates need no projection; the minimum counts shrink with the part of
        # the hour elapsed, so a storm still running early in the hour counts.
        usual = self._usual(key, h, baseline)
        return bool(self._tripped(stats, usual, count_scale=elapsed_fraction))

    def _usual(self, key: str, h: int, baseline: WindowStats) -> Usual:
        """The rates hour `h` is compared with: the baseline period's, each raised to an
        acknowledged new normal in force at `h`."""
        usual = Usual(baseline.retry_rate, baseline.error_rate, self._usual_rpu(key, h))
        acked = self._acknowledged_rates(key, h)
        if acked is None:
            return usual
        rpus = [r for r in (usual.requests_per_user, acked.requests_per_user) if r is not None]
        return Usual(
            max(usual.retry_rate, acked.retry_rate),
            max(usual.error_rate, acked.error_rate),
            max(rpus) if rpus else None,
        )

    def _acknowledged_rates(self, key: str, h: int) -> Usual | None:
        acknowledged = self._acknowledged.get(key)
        if acknowledged is None or not acknowledged[0] <= h < acknowledged[1]:
            return None
        first, end, last, rates = acknowledged
        if rates is None:
            hours = [s for _, s in self._history.between(key, first, last + 1) if s.requests > 0]
            if not hours:
                return None  # not learned yet
            rpus = [rpu for s in hours if (rpu := s.requests_per_user) is not None]
            rates = Usual(
                max(s.retry_rate for s in hours),
                max(s.error_rate for s in hours),
                max(rpus) if rpus else None,
            )
            self._acknowledged[key] = (first, end, last, rates)
        return rates

    def _ratios(self, stats: WindowStats, usual: Usual) -> dict[str, float]:
        ratios = {
            "retry_rate": stats.retry_rate / max(usual.retry_rate, self.rate_floor),
            "error_rate": stats.error_rate / max(usual.error_rate, self.rate_floor),
        }
        rpu = stats.requests_per_user
        if rpu is not None and usual.requests_per_user:
            ratios["requests_per_user"] = rpu / usual.requests_per_user
        return ratios

    def _tripped(self, stats: WindowStats, usual: Usual, count_scale: float) -> dict[str, float]:
        ratios = self._ratios(stats, usual)
        tripped = {}
        if (
            stats.retries >= self.min_retries * count_scale
            and ratios["retry_rate"] >= self.surge_factor
        ):
            tripped["retry_rate"] = ratios["retry_rate"]
        if (
            stats.errors >= self.min_errors * count_scale
            and ratios["error_rate"] >= self.surge_factor
        ):
            tripped["error_rate"] = ratios["error_rate"]
        amplification = ratios.get("requests_per_user", 0.0)
        if (
            stats.requests >= self.min_requests * count_scale
            and amplification >= self.amplification
        ):
            tripped["requests_per_user"] = amplification
        return tripped

    def _baseline(self, key: str, h: int) -> WindowStats | None:
        active, baseline, _ = self._period(key, h)
        return baseline if active >= self.min_history_hours else None

    def _usual_rpu(self, key: str, h: int) -> float | None:
        return self._period(key, h)[2]

    def _period(self, key: str, h: int) -> tuple[int, WindowStats, float | None]:
        """(active hours, the median hour, requests per user) of the baseline period.

        Requests per user is the period's requests over the sum of each hour's users,
        not the median hour's requests over its median users: the two medians come from
        different hours (a quiet hour's one call by one user, a busy hour's users), and
        their ratio made a busy hour of ordinary growth read as users calling 4x as
        often (a genuine adoption paged as a retry storm)."""
        cached = self._baselines.get(key)
        if cached is not None and cached[0] == h:
            return cached[1], cached[2], cached[3]
        past = [s for _, s in self._history.between(key, h - self._lookback_hours, h)]
        active = [s for s in past if s.requests > 0]
        baseline = WindowStats.median_of(active)
        users = sum(s.distinct_users for s in active)
        rpu = sum(s.requests for s in active) / users if users else None
        if cached is None or h >= cached[0]:
            self._baselines[key] = (h, len(active), baseline, rpu)
        return len(active), baseline, rpu

    def _finding(
        self,
        key: str,
        start: int,
        h: int,
        stats: WindowStats,
        baseline: WindowStats,
        rates: Usual,
        tripped: dict[str, float],
    ) -> Finding:
        # The headline is the strongest signal; all tripped ones go in evidence.
        # value, baseline and threshold are counts of the headline's measure:
        # observed, what the baseline rate predicts, and where it trips.
        signal, ratio = max(tripped.items(), key=lambda item: item[1])
        if signal == "requests_per_user":
            value = stats.requests
            usual = (rates.requests_per_user or 0.0) * stats.distinct_users
            factor = self.amplification
            what = f"{stats.requests:.0f} requests from {stats.distinct_users:.0f} users"
        elif signal == "retry_rate":
            value = stats.retries
            usual = max(rates.retry_rate, self.rate_floor) * stats.requests
            factor = self.surge_factor
            what = f"{stats.retries:.0f} retries in {stats.requests:.0f} requests"
        else:
            value = stats.errors
            usual = max(rates.error_rate, self.rate_floor) * stats.requests
            factor = self.surge_factor
            what = f"{stats.errors:.0f} errors in {stats.requests:.0f} requests"
        return Finding(
            detector=self.name,
            key=key,
            window_start=hour_start(start),
            window_end=hour_start(h + 1),
            severity=self.severity,
            summary=(
                f"{key}: {what} in the hour from {hour_start(h):%Y-%m-%d %H:00} UTC, "
                f"{signal.replace('_', ' ')} {ratio:.1f}x its usual"
            ),
            value=Decimal(round(value)),
            threshold=Decimal(round(factor * usual)),
            evidence={
                "hour": hour_start(h).isoformat(),
                "baseline": Decimal(round(usual)),
                "unit": "count",
                "tripped": tripped,
                "requests": stats.requests,
                "distinct_users": stats.distinct_users,
                "retries": stats.retries,
                "errors": stats.errors,
                "baseline_requests": baseline.requests,
                "baseline_distinct_users": baseline.distinct_users,
                "baseline_requests_per_user": rates.requests_per_user,
                "baseline_retry_rate": rates.retry_rate,
                "baseline_error_rate": rates.error_rate,
                **({"acknowledged": True} if self._acknowledged_rates(key, h) else {}),
            },
        )
