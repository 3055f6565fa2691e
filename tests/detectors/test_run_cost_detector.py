from datetime import UTC, datetime, timedelta
from decimal import Decimal

from detectors.run_cost import RunCostDetector

T0 = datetime(2024, 5, 6, 10, tzinfo=UTC)


def test_per_workflow_threshold_wins_over_the_default() -> None:
    d = RunCostDetector(
        run_threshold_usd={"summarize": Decimal(40)}, default_run_threshold_usd=Decimal(5)
    )
    assert d.update("summarize", "r1", Decimal(30), T0, T0) is None
    assert d.update("translate", "r2", Decimal(6), T0, T0) is not None


def test_without_a_default_other_workflows_are_not_watched() -> None:
    d = RunCostDetector(run_threshold_usd={"summarize": Decimal(40)})
    assert d.update("translate", "r1", Decimal(10_000), T0, T0) is None
    assert d.score_one("translate", Decimal(10_000)) == 0.0


def test_reports_once_per_run_and_once_more_on_escalation() -> None:
    d = RunCostDetector(default_run_threshold_usd=Decimal(10), critical_factor=Decimal(3))
    costs = [Decimal(c) for c in ("4", "9", "11", "20", "29", "31", "80")]
    findings = []
    for i, cost in enumerate(costs):
        finding = d.update("agent", "run-7", cost, T0, T0 + timedelta(minutes=i))
        if finding is not None:
            findings.append(finding)
    assert [(f.severity, f.value) for f in findings] == [
        ("warning", Decimal(11)),
        ("critical", Decimal(31)),
    ]
    assert findings[0].fingerprint == findings[1].fingerprint
    assert findings[1].window_end == T0 + timedelta(minutes=5)
    assert findings[0].evidence["workflow_run_id"] == "run-7"


def test_runs_are_independent() -> None:
    d = RunCostDetector(default_run_threshold_usd=Decimal(10))
    first = d.update("agent", "run-1", Decimal(12), T0, T0)
    second = d.update("agent", "run-2", Decimal(12), T0, T0)
    assert first is not None and second is not None
    assert first.fingerprint != second.fingerprint


def test_remembers_a_bounded_number_of_runs() -> None:
    d = RunCostDetector(default_run_threshold_usd=Decimal(10), max_runs=2)
    for run in ("a", "b", "c"):
        assert d.update("agent", run, Decimal(12), T0, T0) is not None
    # "a" was forgotten to stay within max_runs, so it reports again.
    assert d.update("agent", "a", Decimal(13), T0, T0) is not None
    assert d.update("agent", "c", Decimal(13), T0, T0) is None
