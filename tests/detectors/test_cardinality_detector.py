"""`CardinalityOverflowDetector`: one finding when a tenant's dimension first overflows
the spend tables' cap, cleared once its last overflowing hour is past retention."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import detectors.cardinality
from detectors import CardinalityOverflowDetector
from detectors.cardinality import OVERFLOW, overflow_key
from schemas.spend_config import CardinalityParams, SpendConfig

T0 = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
HOUR0 = T0.replace(minute=0)


def test_module_doctest_passes() -> None:
    result = doctest.testmod(detectors.cardinality)
    assert result.attempted > 0 and result.failed == 0


def test_the_first_overflow_reports_tenant_dimension_cap_and_bucket() -> None:
    detector = CardinalityOverflowDetector()
    finding = detector.update("acme", "workflow", T0, cap=1000, overflowed=3)
    assert finding is not None
    assert finding.detector == "cardinality_overflow"
    assert finding.key == "tenant:acme/workflow:__overflow__" == overflow_key("acme", "workflow")
    assert finding.severity == "warning"
    assert (finding.window_start, finding.window_end) == (HOUR0, HOUR0 + timedelta(hours=1))
    assert finding.fingerprint == f"cardinality_overflow|{finding.key}|{HOUR0.isoformat()}"
    assert (finding.value, finding.threshold) == (Decimal(1001), Decimal(1000))
    for part in ("tenant acme", "1,000 distinct workflow_id values", repr(OVERFLOW)):
        assert part in finding.summary
    assert "further new workflow_id values are counted under" in finding.summary
    assert finding.evidence == {
        "tenant_id": "acme",
        "dimension": "workflow",
        "field": "workflow_id",
        "max_values_per_dim": 1000,
        "overflow_bucket": OVERFLOW,
        "overflowed_requests_in_hour": 3,
        "resolves_after_hours": 8 * 24 + 1,
        "unit": "count",
    }


def test_later_overflows_of_the_same_tenant_and_dimension_report_nothing() -> None:
    detector = CardinalityOverflowDetector()
    assert detector.update("acme", "workflow", T0, 1000, 1) is not None
    for hours in (0, 1, 30, 100):
        at = T0 + timedelta(hours=hours)
        assert detector.update("acme", "workflow", at, 1000, 50) is None
    assert len(detector) == 1


def test_each_tenant_and_dimension_is_its_own_incident() -> None:
    detector = CardinalityOverflowDetector(severity="critical")
    keys = set()
    for tenant, dim in (("acme", "workflow"), ("acme", "team"), ("acme", "model"), ("b", "team")):
        finding = detector.update(tenant, dim, T0, 10, 1)
        assert finding is not None and finding.severity == "critical"
        keys.add(finding.key)
    assert len(keys) == len(detector) == 4
    model = detector.update("c", "model", T0, 10, 1)
    assert model is not None and "distinct model values" in model.summary


def test_it_clears_once_the_last_overflowing_hour_is_past_retention() -> None:
    detector = CardinalityOverflowDetector(retention_hours=5)
    finding = detector.update("acme", "workflow", T0, 10, 1)
    assert finding is not None
    last = T0 + timedelta(hours=3)
    assert detector.update("acme", "workflow", last, 10, 1) is None  # extends the incident
    # The spend tables drop an hourly key once its hour < now's hour - retention.
    boundary = HOUR0 + timedelta(hours=3 + 5)
    assert not detector.is_resolved(finding.key, boundary + timedelta(minutes=59))
    assert detector.close_cleared(boundary + timedelta(minutes=59)) == []
    assert detector.is_resolved(finding.key, boundary + timedelta(hours=1))
    assert detector.close_cleared(boundary + timedelta(hours=1)) == [finding]  # the opening one
    assert len(detector) == 0
    assert detector.close_cleared(boundary + timedelta(hours=2)) == []
    # After it cleared, a new overflow is a new incident (with its own window).
    again = detector.update("acme", "workflow", boundary + timedelta(hours=2), 10, 1)
    assert again is not None and again.fingerprint != finding.fingerprint


def test_an_unknown_key_is_resolved() -> None:
    assert CardinalityOverflowDetector().is_resolved("tenant:x/workflow:__overflow__", T0)


def test_open_incidents_are_bounded_by_max_keys() -> None:
    detector = CardinalityOverflowDetector(max_keys=3)
    for i in range(10):
        assert detector.update(f"t{i}", "workflow", T0, 10, 1) is not None
    assert len(detector) == 3
    # The oldest were forgotten (a forgotten incident is not open).
    assert detector.is_resolved(overflow_key("t0", "workflow"), T0)
    assert not detector.is_resolved(overflow_key("t9", "workflow"), T0)


def test_its_configuration_section_constructs_it() -> None:
    params = CardinalityParams(severity="critical", max_keys=7)
    detector = CardinalityOverflowDetector(**params.kwargs())
    assert (detector.severity, detector.max_keys) == ("critical", 7)
    default = SpendConfig().detectors.cardinality
    assert default.enabled and default.severity == "warning"
