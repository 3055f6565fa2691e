"""The detectors' parameters are named as in the spend configuration file, so the
edge can pass each section straight through."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from detectors import (
    ContractDetector,
    OnlineAnomalyDetector,
    RetryStormDetector,
    RollingMedianDetector,
    RunCostDetector,
    WindowStats,
)
from schemas import spend_config as config


def test_rolling_median_takes_its_section_as_is() -> None:
    params = config.RollingMedianParams(k=Decimal(4), lookback_days=3)
    detector = RollingMedianDetector(**params.model_dump())
    assert (detector.k, detector.lookback_days) == (Decimal(4), 3)


def test_contract_takes_its_section_and_the_tenants_as_is() -> None:
    tenants = {"acme": config.TenantConfig(monthly_budget_usd=Decimal(100))}
    params = config.ContractParams(forecast_min_days=5)
    detector = ContractDetector(tenants, **params.model_dump())
    assert detector.forecast_min_days == 5


def test_run_cost_takes_the_workflows_section_as_is() -> None:
    workflows = config.WorkflowsConfig(run_threshold_usd={"summarize": Decimal(40)})
    detector = RunCostDetector(**workflows.model_dump())
    assert detector.threshold_for("summarize") == Decimal(40)
    assert detector.threshold_for("other") == workflows.default_run_threshold_usd


def test_retry_storm_and_online_take_their_sections_except_edge_settings() -> None:
    # window_minutes (hourly windows here), enabled and checkpoint_interval_seconds
    # are for the edge, not the detectors.
    retry = config.RetryStormParams().model_dump(exclude={"window_minutes"})
    storm_detector = RetryStormDetector(**retry)
    start = datetime(2024, 5, 6, tzinfo=UTC)
    for h in range(24):
        storm_detector.learn_one(
            "workflow:w",
            start + timedelta(hours=h),
            WindowStats(cost=Decimal(4), requests=400, distinct_users=400),
        )
    storm = WindowStats(cost=Decimal(4), requests=400, distinct_users=400, retries=200)
    assert storm_detector.update("workflow:w", start + timedelta(hours=24), storm) is not None
    online = config.OnlineParams().model_dump(exclude={"enabled", "checkpoint_interval_seconds"})
    assert OnlineAnomalyDetector(**online).quantile == online["quantile"]
