"""Unpriced spend as money in the stream: estimates count toward `/v1/limits` and the
budget detectors (or, configured to fail closed, make the tenant `unknown`), and a
model with no price carrying real traffic raises one alert. The spend tables,
monitor, lifecycle and delivery queue are the worker's own classes (as in
test_cardinality_alert.py); only the tables are plain dicts instead of Faust's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas.spend_config import SpendConfig
from streams.alerting.wiring import build_alerting
from streams.spend.monitor import SpendMonitor
from streams.spend.state import SpendState
from streams.spend.tables import SpendTables
from tests.spend.test_cardinality_alert import Recorded, feed, row

T0 = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
D = Decimal


def runtime(**sections: Any) -> tuple[SpendState, Recorded]:
    config = SpendConfig.model_validate(
        {
            "tenants": {"acme": {"monthly_budget_usd": 10}},
            **sections,
            "detectors": {"online": {"enabled": False}, **sections.get("detectors", {})},
        }
    )
    recorded = Recorded()
    alerting = build_alerting(config, embedded=True, recorder=recorded)
    return SpendState(config, SpendTables({}, {}, {}), SpendMonitor(config), alerting), recorded


def priced(offset: int, cost: str) -> dict[str, Any]:
    return row(offset, cost_usd=cost, cost_status="priced", estimated_cost_usd="0")


def estimated(offset: int, estimate: str, model: str = "gpt-9", **extra: Any) -> dict[str, Any]:
    return row(
        offset,
        model=model,
        provider="openai",
        cost_usd="0",
        cost_status="estimated",
        estimated_cost_usd=estimate,
        **extra,
    )


def test_limits_count_estimates_by_default() -> None:
    rt, _ = runtime()
    feed(rt, "acme", [priced(1, "5.00"), estimated(2, "2.50"), estimated(3, "1.00")], T0)
    limits = rt.limits("acme", T0)
    assert limits["month_to_date_usd"] == "5.00"  # known money
    assert (limits["estimated_usd"], limits["unpriced_requests"]) == ("3.50", 2)
    assert limits["estimates"] == "count"
    # 5.00 + 3.50 = 8.50 of a 10 budget: past 80 %, 1.50 left.
    assert (limits["status"], limits["remaining_usd"]) == ("warn", "1.50")


def test_limits_fail_closed_report_the_tenant_unknown() -> None:
    rt, _ = runtime(limits={"estimates": "unknown"})
    feed(rt, "acme", [priced(1, "1.00")], T0)
    assert rt.limits("acme", T0)["status"] == "ok"
    feed(rt, "acme", [estimated(2, "0.01")], T0)
    limits = rt.limits("acme", T0)
    assert (limits["status"], limits["remaining_usd"]) == ("unknown", None)
    assert (limits["month_to_date_usd"], limits["estimated_usd"]) == ("1.00", "0.01")
    # A call with no price and no estimate is unknown money too.
    other, _ = runtime(limits={"estimates": "unknown"})
    feed(other, "acme", [row(9, provider="x", cost_usd="0", cost_status="unpriced")], T0)
    assert other.limits("acme", T0)["status"] == "unknown"


def test_estimates_push_a_tenant_over_its_monthly_budget() -> None:
    rt, recorded = runtime()
    feed(rt, "acme", [priced(1, "6.00"), estimated(2, "4.50")], T0)
    assert rt.limits("acme", T0)["status"] == "over"
    budget = [a for a in recorded.alerts if a.detector == "budget_100pct"]
    assert len(budget) == 1, [a.detector for a in recorded.alerts]
    assert "10.50" in budget[0].summary


def test_a_model_without_a_price_alerts_once_when_it_carries_real_traffic() -> None:
    rt, recorded = runtime(detectors={"unpriced_model": {"min_requests": 5}})
    feed(rt, "acme", [estimated(i, "0.10", input_tokens=1000) for i in range(4)], T0)
    assert [a for a in recorded.alerts if a.detector == "unpriced_model"] == []
    feed(rt, "acme", [estimated(i, "0.10", input_tokens=1000) for i in range(4, 7)], T0)
    feed(rt, "acme", [estimated(i, "0.10") for i in range(7, 20)], T0)
    alerts = [a for a in recorded.alerts if a.detector == "unpriced_model"]
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert alert.key == "tenant:acme/model:gpt-9"
    # Its calls and tokens so far: the batch that crossed 5 calls holds 7.
    assert (alert.evidence["requests"], alert.evidence["input_tokens"]) == (7, 7000)
    assert alert.evidence["estimated_cost_usd"] == "0.70"
    assert "gpt-9 has no price" in alert.summary
    assert "cost_status != 'priced'" in alert.query
    # Priced traffic never alerts.
    feed(rt, "acme", [priced(100 + i, "0.01") for i in range(20)], T0 + timedelta(hours=1))
    assert len([a for a in recorded.alerts if a.detector == "unpriced_model"]) == 1
