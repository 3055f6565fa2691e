from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from detectors.contract import ContractDetector, TenantBudget, month_bounds
from schemas.spend_config import TenantConfig

JUNE = datetime(2024, 6, 1, tzinfo=UTC)  # 30 days


def detector(**kwargs: object) -> ContractDetector:
    budgets = {
        "acme": TenantBudget(
            contracted_hourly_budget_usd=Decimal(50), monthly_budget_usd=Decimal(10_000)
        )
    }
    return ContractDetector(budgets, **kwargs)  # type: ignore[arg-type]


def names(findings: list) -> list[str]:
    return [f.detector for f in findings]


def test_unknown_tenant_and_unbudgeted_limits_are_ignored() -> None:
    d = ContractDetector({"hourly-only": TenantBudget(contracted_hourly_budget_usd=Decimal(5))})
    assert d.update("stranger", JUNE, Decimal(10**6), Decimal(10**6)) == []
    assert names(d.update("hourly-only", JUNE, Decimal(1), Decimal(10**6))) == []
    assert names(d.update("hourly-only", JUNE, Decimal(6), Decimal(10**6))) == ["contract_hourly"]


def test_hour_over_contract_is_one_incident_and_resolves() -> None:
    d = detector()
    ten = JUNE + timedelta(hours=10)
    assert d.update("acme", ten + timedelta(minutes=10), Decimal(40), Decimal(100)) == []
    [finding] = d.update("acme", ten + timedelta(minutes=40), Decimal(55), Decimal(115))
    assert finding.key == "tenant:acme"
    assert (finding.value, finding.threshold) == (Decimal(55), Decimal(50))
    assert finding.window_start == ten
    assert d.update("acme", ten + timedelta(minutes=50), Decimal(70), Decimal(130)) == []
    # Next hour: $20 in the first 20 minutes projects to $60/h, still over.
    eleven = ten + timedelta(hours=1)
    d.update("acme", eleven + timedelta(minutes=20), Decimal(20), Decimal(150))
    assert not d.is_resolved("acme", eleven + timedelta(minutes=20))
    assert d.close_cleared(eleven + timedelta(minutes=20)) == []
    # Quiet at 11:40: $22 so far projects to $33/h.
    d.update("acme", eleven + timedelta(minutes=40), Decimal(22), Decimal(152))
    assert d.is_resolved("acme", eleven + timedelta(minutes=40))
    assert [f.fingerprint for f in d.close_cleared(eleven + timedelta(minutes=40))] == [
        finding.fingerprint
    ]


def test_monthly_thresholds_fire_once_each_in_order() -> None:
    d = detector()
    fired = []
    for day in range(30):
        at = JUNE + timedelta(days=day, hours=23)
        fired += d.update("acme", at, Decimal(10), Decimal(400) * (day + 1))
    budget_findings = [f for f in fired if f.detector.endswith("pct")]
    assert names(budget_findings) == ["budget_50pct", "budget_80pct", "budget_100pct"]
    # The $12,000 pace was forecast once, on the first evening past 3 days.
    [forecast] = [f for f in fired if f.detector == "budget_forecast"]
    assert forecast.evidence["month_to_date_usd"] == Decimal(1600)
    assert [f.severity for f in budget_findings] == ["info", "warning", "critical"]
    # $400/day crosses 50 % on day 13 ($5,200), 80 % on day 20, 100 % on day 25.
    assert [f.evidence["month_to_date_usd"] for f in budget_findings] == [
        Decimal(5200),
        Decimal(8000),
        Decimal(10000),
    ]
    assert all(f.window_start == JUNE for f in budget_findings)


def test_several_thresholds_crossed_at_once_fire_only_the_highest() -> None:
    d = detector()
    at = JUNE + timedelta(days=29)  # late in the month: no forecast either
    assert names(d.update("acme", at, Decimal(1), Decimal(9_000))) == ["budget_80pct"]
    assert d.update("acme", at, Decimal(1), Decimal(9_100)) == []


def test_each_month_starts_afresh_and_late_events_of_an_old_month_are_ignored() -> None:
    d = detector()
    june = d.update("acme", JUNE + timedelta(days=20), Decimal(1), Decimal(6_000))
    july = d.update("acme", datetime(2024, 7, 25, tzinfo=UTC), Decimal(1), Decimal(6_000))
    assert names(june) == names(july) == ["budget_50pct"]
    assert june[0].fingerprint != july[0].fingerprint
    late = d.update("acme", JUNE + timedelta(days=29), Decimal(1), Decimal(9_999))
    assert late == []


def test_forecast_waits_for_the_minimum_elapsed_days() -> None:
    d = detector(forecast_min_days=5)
    # Day 1 at a pace of $3,000/day would project to $90,000: too early to say.
    assert d.update("acme", JUNE + timedelta(hours=20), Decimal(1), Decimal(2_500)) == []
    assert d.update("acme", JUNE + timedelta(days=4, hours=23), Decimal(1), Decimal(2_000)) == []
    # 6 days (20 % of June) at $400/day projects to $12,000 and crossing on June 26.
    [forecast] = d.update("acme", JUNE + timedelta(days=6), Decimal(1), Decimal(2_400))
    assert forecast.detector == "budget_forecast"
    assert forecast.value == Decimal("12000.00")
    assert forecast.evidence["forecast_crossing"] == "2024-06-26T00:00:00+00:00"
    assert d.update("acme", JUNE + timedelta(days=7), Decimal(1), Decimal(2_800)) == []


def test_no_forecast_for_a_pace_under_budget() -> None:
    d = detector()
    findings = []
    for day in range(1, 30):  # $300/day: $9,000 by month end
        findings += d.update("acme", JUNE + timedelta(days=day), Decimal(1), Decimal(300 * day))
    assert "budget_forecast" not in names(findings)
    assert names(findings) == ["budget_50pct", "budget_80pct"]


def test_no_forecast_once_the_budget_is_already_crossed() -> None:
    d = detector()
    at = JUNE + timedelta(days=10)
    assert names(d.update("acme", at, Decimal(1), Decimal(11_000))) == ["budget_100pct"]


def test_month_bounds_handle_december() -> None:
    start, end = month_bounds(datetime(2024, 12, 31, 23, 59))
    assert (start, end) == (datetime(2024, 12, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))


def test_rejects_non_positive_budgets() -> None:
    with pytest.raises(ValueError, match="acme"):
        ContractDetector({"acme": TenantBudget(monthly_budget_usd=Decimal(0))})


def test_forecast_can_be_switched_off() -> None:
    d = detector(forecast=False)
    assert d.update("acme", JUNE + timedelta(days=6), Decimal(1), Decimal(4_000)) == []


def test_accepts_the_config_models_as_budgets() -> None:
    tenants = {"acme": TenantConfig(contracted_hourly_budget_usd=Decimal(5))}
    d = ContractDetector(tenants)
    assert names(d.update("acme", JUNE, Decimal(6), Decimal(6))) == ["contract_hourly"]
