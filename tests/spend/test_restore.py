"""A worker restarted from the ledger and the alerts table: a budget threshold paged
before the restart is not paged again, the next one is, month-to-date counts the
ledger's base, and an incident open at the restart that no detector holds any more
resolves (once, under its own fingerprint) after the restart's grace."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from detectors.finding import Finding
from streams.alerting.lifecycle import alert_from_finding
from streams.spend.incidents import RESTORED_GRACE
from streams.spend.tables import LedgerBase
from tests.spend.test_cardinality_alert import feed
from tests.spend.test_unpriced_spend import T0, priced, runtime

D = Decimal


def month_base(cost: str) -> LedgerBase:
    key = f"acme|month|{T0:%Y-%m}"
    return LedgerBase(months={key: {"cost": D(cost), "estimated": D(0), "unpriced": 0}})


def states(alerts: list[Any]) -> list[tuple[str, str]]:
    return [(alert.detector, alert.state) for alert in alerts]


def test_a_threshold_paged_before_the_restart_is_not_paged_again() -> None:
    before, paged = runtime()
    feed(before, "acme", [priced(1, "6.00")], T0)
    assert states(paged.alerts) == [("budget_50pct", "triggered")]

    after, recorded = runtime()
    after.restore(month_base("6.00"), paged.alerts, T0 + timedelta(minutes=1))
    feed(after, "acme", [priced(2, "0.10")], T0 + timedelta(minutes=2))
    assert recorded.alerts == []  # 6.10 of 10: the 50 % incident is the one open
    assert after.limits("acme", T0)["month_to_date_usd"] == "6.10"
    feed(after, "acme", [priced(3, "4.00")], T0 + timedelta(minutes=3))
    assert states(recorded.alerts) == [("budget_100pct", "triggered")]


def test_an_incident_open_at_the_restart_that_no_detector_holds_resolves_once() -> None:
    finding = Finding(
        "rolling_median",
        "tenant:acme",
        T0 - timedelta(hours=3),
        T0 - timedelta(hours=2),
        "warning",
        "spend 6x the usual",
        D(60),
        D(50),
        {"tenant_id": "acme"},
    )
    open_alert = alert_from_finding(finding, now=T0 - timedelta(hours=2))
    rt, recorded = runtime()
    rt.restore(LedgerBase(), [open_alert], T0)
    rt.resolve_cleared(T0 + RESTORED_GRACE / 2)
    assert recorded.alerts == []  # the detectors have not seen this hour's calls yet
    rt.resolve_cleared(T0 + RESTORED_GRACE)
    rt.resolve_cleared(T0 + 2 * RESTORED_GRACE)
    assert [(a.fingerprint, a.state) for a in recorded.alerts] == [
        (open_alert.fingerprint, "resolved")
    ]
