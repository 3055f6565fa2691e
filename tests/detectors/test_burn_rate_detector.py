"""`BurnRateDetector`: a monthly budget gone before the month ends at both the last
hour's and the last six hours' rate pages; one window alone does not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from detectors.burn_rate import BurnRateDetector
from detectors.finding import Finding

START = datetime(2026, 11, 2, tzinfo=UTC)
BUDGET = Decimal(3000)  # $100 a day, about $4.17 an hour at an even pace


def feed(
    detector: BurnRateDetector, minutes: int, per_minute: Callable[[int], Decimal]
) -> list[Finding]:
    month, found = Decimal(0), []
    for m in range(minutes):
        cost = per_minute(m)
        month += cost
        finding = detector.update("acme", START + timedelta(minutes=m), cost, month, BUDGET)
        if finding is not None:
            found.append(finding)
    return found


def test_an_even_pace_never_pages() -> None:
    assert feed(BurnRateDetector(), 3 * 24 * 60, lambda m: Decimal("0.07")) == []


def test_one_busy_hour_alone_does_not_page() -> None:
    # An hour at 30x the even pace (a daily batch job) in otherwise even days: the six
    # hours' rate stays under 6x, so the two windows disagree.
    def batch(m: int) -> Decimal:
        return Decimal("2.10") if (m // 60) % 24 == 2 else Decimal("0.05")

    assert feed(BurnRateDetector(), 3 * 24 * 60, batch) == []


def test_a_runaway_burn_pages_once_both_windows_agree_and_names_the_date() -> None:
    def runaway(m: int) -> Decimal:
        return Decimal("0.07") if m < 12 * 60 else Decimal("2.00")  # $120/h from noon

    found = feed(BurnRateDetector(), 24 * 60, runaway)
    assert [f.severity for f in found] == ["warning", "critical"]
    first = found[0]
    assert first.detector == "budget_burn_rate"
    assert first.key == "tenant:acme"
    # The long window (6 h at 6x = $25/h) agrees 75 minutes into the burn.
    assert START + timedelta(hours=12) < datetime.fromisoformat(first.evidence["as_of"])
    assert datetime.fromisoformat(first.evidence["as_of"]) <= START + timedelta(
        hours=13, minutes=30
    )
    assert first.evidence["short_burn_factor"] >= 14.4
    assert first.evidence["long_burn_factor"] >= 6
    assert "gone by 2026-11-" in first.summary
    assert "over the last hour" in first.summary and "over the last 6 hours" in first.summary


def test_a_tenants_first_hours_never_page() -> None:
    assert feed(BurnRateDetector(), 5 * 60, lambda m: Decimal(5)) == []
