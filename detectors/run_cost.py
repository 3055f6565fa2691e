"""`RunCostDetector`: one workflow run's cost exceeds its workflow's threshold.

Feed it the running total of a `workflow_run_id`:

- `update(workflow_id, run_id, cost, started_at, last_seen) -> Finding | None`
  where `cost` is the run's total so far, `started_at` its first event time
  and `last_seen` its newest;
- `score_one(workflow_id, cost) -> float` is cost / threshold (0 without one).

The threshold is `run_threshold_usd[workflow_id]`, else
`default_run_threshold_usd` (None: other workflows are not watched); the
names are those of `schemas.spend_config.WorkflowsConfig`.
Each run reports once when it crosses the threshold ("warning") and once more
if it crosses `critical_factor` x the threshold ("critical"), with the same
fingerprint (key "workflow:<id>/run:<run id>", window from the first report's
`started_at`) so the edge updates one incident instead of opening two. A run's
cost never falls, so there is no resolve: the incident ends when a human
acknowledges it. Remembers at most `max_runs` reported runs (oldest forgotten).

>>> from datetime import datetime, UTC
>>> from decimal import Decimal
>>> detector = RunCostDetector(run_threshold_usd={"summarize": Decimal(10)},
...                            default_run_threshold_usd=Decimal(25))
>>> t0 = datetime(2024, 5, 6, 10, tzinfo=UTC)
>>> detector.update("summarize", "run-1", Decimal("9.50"), t0, t0) is None
True
>>> finding = detector.update("summarize", "run-1", Decimal("12.00"), t0, t0)
>>> finding.severity, finding.key
('warning', 'workflow:summarize/run:run-1')
>>> detector.update("summarize", "run-1", Decimal("15.00"), t0, t0) is None  # reported
True
>>> detector.update("summarize", "run-1", Decimal("40.00"), t0, t0).severity
'critical'
>>> detector.score_one("translate", Decimal(50))  # the default threshold
2.0
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from detectors.finding import Finding, Severity
from detectors.history import as_utc
from detectors.incidents import SEVERITY_RANK


class RunCostDetector:
    """Per-run cost against a per-workflow threshold."""

    name = "run_cost"

    def __init__(
        self,
        run_threshold_usd: Mapping[str, Decimal] | None = None,
        default_run_threshold_usd: Decimal | None = None,
        critical_factor: Decimal = Decimal(3),
        max_runs: int = 100_000,
    ) -> None:
        self.run_threshold_usd = dict(run_threshold_usd or {})
        self.default_run_threshold_usd = default_run_threshold_usd
        self.critical_factor = critical_factor
        self.max_runs = max_runs
        # run id -> (severity reported, window_start of the first report)
        self._reported: OrderedDict[str, tuple[Severity, datetime]] = OrderedDict()

    def threshold_for(self, workflow_id: str) -> Decimal | None:
        return self.run_threshold_usd.get(workflow_id, self.default_run_threshold_usd)

    def score_one(self, workflow_id: str, cost: Decimal) -> float:
        threshold = self.threshold_for(workflow_id)
        return float(cost / threshold) if threshold else 0.0

    def update(
        self,
        workflow_id: str,
        run_id: str,
        cost: Decimal,
        started_at: datetime,
        last_seen: datetime,
    ) -> Finding | None:
        threshold = self.threshold_for(workflow_id)
        if threshold is None or cost <= threshold:
            return None
        severity: Severity = "critical" if cost > threshold * self.critical_factor else "warning"
        reported = self._reported.get(run_id)
        if reported is not None and SEVERITY_RANK[severity] <= SEVERITY_RANK[reported[0]]:
            return None
        window_start = reported[1] if reported is not None else as_utc(started_at)
        self._reported[run_id] = (severity, window_start)
        self._reported.move_to_end(run_id)
        if len(self._reported) > self.max_runs:
            self._reported.popitem(last=False)
        return Finding(
            detector=self.name,
            key=f"workflow:{workflow_id}/run:{run_id}",
            window_start=window_start,
            window_end=as_utc(last_seen),
            severity=severity,
            summary=(
                f"run {run_id} of workflow {workflow_id} has cost ${cost:,.2f}, "
                f"over its ${threshold:,.2f} threshold"
            ),
            value=cost,
            threshold=threshold,
            evidence={
                "workflow_id": workflow_id,
                "workflow_run_id": run_id,
                "cost_usd": cost,
                "threshold_usd": threshold,
                "ratio": float(cost / threshold),
                "unit": "usd",
            },
        )
