from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from detectors.finding import Finding
from detectors.rolling_median import RollingMedianDetector

KEY = "tenant:acme"
MONDAY = datetime(2024, 5, 6, tzinfo=UTC)  # a Monday, 00:00 UTC


def hour(n: int) -> datetime:
    return MONDAY + timedelta(hours=n)


def run(
    detector: RollingMedianDetector, hours: int, spend: Callable[[int], Decimal], first: int = 0
) -> list[Finding]:
    """Feed each hour as three growing running totals, as the edge would."""
    findings = []
    for n in range(first, first + hours):
        total = spend(n)
        for part in (total / 3, total * 2 / 3, total):
            finding = detector.update(KEY, hour(n) + timedelta(minutes=50), part)
            if finding is not None:
                findings.append(finding)
    return findings


def flat(amount: str) -> Callable[[int], Decimal]:
    return lambda n: Decimal(amount)


def test_a_tenants_first_day_never_pages() -> None:
    detector = RollingMedianDetector()
    spend = {n: Decimal(2) for n in range(23)} | {5: Decimal(500)}
    assert run(detector, 23, spend.__getitem__) == []
    assert detector.score_one(KEY, hour(23), Decimal(500)) == 0.0


def test_pages_once_the_minimum_history_exists() -> None:
    detector = RollingMedianDetector()
    run(detector, 24, flat("2"))
    finding = detector.update(KEY, hour(24), Decimal(15))
    assert finding is not None
    assert finding.severity == "warning"
    assert finding.value == Decimal(15)
    assert finding.threshold == Decimal(10)
    assert finding.evidence["active_hours"] == 24
    assert finding.window_start == hour(24)
    assert finding.window_end == hour(25)


def test_tiny_spend_never_pages() -> None:
    detector = RollingMedianDetector()
    run(detector, 48, flat("0.02"))
    assert detector.update(KEY, hour(48), Decimal("0.11")) is None
    assert detector.update(KEY, hour(48), Decimal("0.90")) is None  # 45x, under $1
    # The score still says "unusual"; the floors are what keep it quiet.
    assert detector.score_one(KEY, hour(48), Decimal("0.90")) > 4
    # Above both floors ($1 spend, $0.20 baseline x 5) it does page.
    assert detector.update(KEY, hour(48), Decimal("2.00")) is not None


def test_weekend_dip_and_monday_return_do_not_page() -> None:
    detector = RollingMedianDetector()

    def weekly(n: int) -> Decimal:
        weekday = hour(n).weekday()
        return Decimal(2) if weekday >= 5 else Decimal(20)

    assert run(detector, 3 * 7 * 24, weekly) == []
    monday = 3 * 7 * 24
    assert hour(monday).weekday() == 0
    assert detector.update(KEY, hour(monday), Decimal(20)) is None
    # Still sensitive on that Monday.
    assert detector.update(KEY, hour(monday), Decimal(150)) is not None


def test_part_time_tenant_does_not_page_each_working_morning() -> None:
    # Busy Monday, Wednesday and Friday office hours, idle otherwise: with idle
    # hours counted as zero even the same-hour median is 0 and 09:00 would page.
    detector = RollingMedianDetector()

    def office(n: int) -> Decimal:
        t = hour(n)
        return Decimal(30) if t.weekday() in (0, 2, 4) and 9 <= t.hour < 18 else Decimal(0)

    assert run(detector, 3 * 7 * 24, office) == []


def test_daily_peak_is_its_own_baseline_but_an_odd_hour_spike_pages() -> None:
    detector = RollingMedianDetector()

    def diurnal(n: int) -> Decimal:
        return Decimal(20) if 9 <= hour(n).hour < 17 else Decimal(1)

    assert run(detector, 10 * 24, diurnal) == []
    ten_am, three_am = 10 * 24 + 10, 10 * 24 + 3
    assert detector.update(KEY, hour(ten_am), Decimal(30)) is None
    finding = detector.update(KEY, hour(three_am), Decimal(30))
    assert finding is not None
    assert finding.evidence["median_usd"] == Decimal(1)


def test_slow_steady_ramp_does_not_page() -> None:
    detector = RollingMedianDetector()
    daily_growth = Decimal("1.3")  # +30 % a day, compounding, for two weeks: 39x overall

    def ramp(n: int) -> Decimal:
        return Decimal(10) * daily_growth ** (Decimal(n) / 24)

    assert run(detector, 14 * 24, ramp) == []
    assert ramp(14 * 24) / ramp(0) > 39


def test_severity_escalates_once_within_one_incident() -> None:
    detector = RollingMedianDetector()
    run(detector, 48, flat("2"))
    spike = hour(48)
    warning = detector.update(KEY, spike, Decimal(12))
    assert warning is not None and warning.severity == "warning"
    assert detector.update(KEY, spike, Decimal(15)) is None
    critical = detector.update(KEY, spike, Decimal(25))
    assert critical is not None and critical.severity == "critical"
    assert critical.fingerprint == warning.fingerprint
    assert detector.update(KEY, spike, Decimal(40)) is None


def test_an_incident_spanning_hours_is_one_incident_until_it_clears() -> None:
    detector = RollingMedianDetector()
    run(detector, 48, flat("2"))
    first = detector.update(KEY, hour(48), Decimal(15))
    assert first is not None
    assert detector.update(KEY, hour(49), Decimal(15)) is None  # still the same incident
    # The loop is still running 20 minutes into hour 50: $8 so far projects to $24/h.
    assert not detector.is_resolved(KEY, hour(50) + timedelta(minutes=5))
    detector.update(KEY, hour(50) + timedelta(minutes=20), Decimal(8))
    assert detector.close_cleared(hour(50) + timedelta(minutes=20)) == []
    # It stopped: hour 50 ended at $9, hour 51 is quiet.
    detector.update(KEY, hour(50) + timedelta(minutes=59), Decimal(9))
    detector.update(KEY, hour(51) + timedelta(minutes=30), Decimal(1))
    assert detector.is_resolved(KEY, hour(51) + timedelta(minutes=30))
    closed = detector.close_cleared(hour(51) + timedelta(minutes=30))
    assert [f.fingerprint for f in closed] == [first.fingerprint]
    # A later spike is a new incident with a new fingerprint.
    again = detector.update(KEY, hour(53), Decimal(15))
    assert again is not None and again.fingerprint != first.fingerprint


def test_resolves_early_in_the_next_hour_only_after_resolve_after() -> None:
    detector = RollingMedianDetector(resolve_after=timedelta(minutes=15))
    run(detector, 48, flat("2"))
    detector.update(KEY, hour(48), Decimal(15))
    assert not detector.is_resolved(KEY, hour(48) + timedelta(minutes=59))
    assert not detector.is_resolved(KEY, hour(49) + timedelta(minutes=10))
    assert detector.is_resolved(KEY, hour(49) + timedelta(minutes=16))
    assert detector.is_resolved(KEY, hour(50))
    assert detector.is_resolved("tenant:unknown", hour(50))


def test_late_data_for_an_earlier_hour_updates_the_baseline() -> None:
    detector = RollingMedianDetector()
    run(detector, 48, flat("2"))
    assert detector.threshold(KEY, hour(48)) == Decimal(10)
    for n in range(48):  # a backfill doubles every past hour
        detector.learn_one(KEY, hour(n), Decimal(4))
    assert detector.threshold(KEY, hour(48)) == Decimal(20)


def test_baseline_uses_only_the_previous_seven_days() -> None:
    detector = RollingMedianDetector()
    run(detector, 7 * 24, flat("100"))
    run(detector, 7 * 24, flat("2"), first=7 * 24)
    baseline = detector.baseline(KEY, hour(14 * 24))
    assert baseline is not None
    assert baseline.active_hours == 168
    assert baseline.median == Decimal(2)


def test_state_is_bounded_by_max_keys() -> None:
    detector = RollingMedianDetector(max_keys=2, min_history_hours=1)
    for key in ("tenant:a", "tenant:b"):
        detector.learn_one(key, hour(0), Decimal(2))
    detector.learn_one("tenant:c", hour(0), Decimal(2))  # evicts tenant:a
    assert detector.baseline("tenant:a", hour(1)) is None
    assert detector.baseline("tenant:b", hour(1)) is not None
    assert detector.baseline("tenant:c", hour(1)) is not None


def test_a_smaller_total_for_an_hour_already_held_is_not_learned() -> None:
    # A bucket counted again from zero (a table reset) reports a partial total: the
    # history keeps the hour's larger total, so the baseline is not pulled down.
    detector = RollingMedianDetector()
    run(detector, 48, flat("2"))
    for n in range(48):
        assert detector.learn_one(KEY, hour(n), Decimal("0.10")) == Decimal(2)
    baseline = detector.baseline(KEY, hour(48))
    assert baseline is not None and baseline.median == Decimal(2)
    assert detector.update(KEY, hour(48), Decimal(4)) is None


def steady_history(detector: RollingMedianDetector, amount: str = "2.00") -> None:
    for n in range(48):
        detector.learn_one(KEY, hour(n), Decimal(amount))


def test_an_hour_on_course_to_breach_pages_early_as_a_warning() -> None:
    """8x the usual rate from the hour's start: $4.00 after 15 minutes (2x a usual hour
    already) projects to $16 > 5 x $2: paged a quarter of the way in, not at 38 minutes."""
    detector = RollingMedianDetector()
    steady_history(detector)
    at = hour(48) + timedelta(minutes=15)
    finding = detector.update(KEY, at, Decimal("4.00"))
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence["projected_usd"] == Decimal("16.00")
    assert finding.evidence["elapsed_minutes"] == 15.0
    assert finding.value == Decimal("4.00") and finding.threshold == Decimal("10.00")
    assert "on course for $16.00 (8.0x) at its rate over the first 15 minutes" in finding.summary
    # Critical still needs the spend itself over 10x.
    assert detector.update(KEY, at + timedelta(minutes=10), Decimal("12.00")) is None
    escalated = detector.update(KEY, at + timedelta(minutes=40), Decimal("20.01"))
    assert escalated is not None and escalated.severity == "critical"
    assert "projected_usd" not in escalated.evidence


def test_no_projection_from_a_small_sample() -> None:
    cases = [
        (9, "5.00"),  # 9 minutes in: too little of the hour, however fast it spends
        (10, "2.90"),  # a usual hour's work in the first 10 minutes (an hourly job): < 1.5x
        (40, "6.00"),  # 1.5 usual hours spent, at a rate that projects under 5x
    ]
    for minutes, spend in cases:
        detector = RollingMedianDetector()
        steady_history(detector)
        assert detector.update(KEY, hour(48) + timedelta(minutes=minutes), Decimal(spend)) is None


def test_no_projection_under_the_spend_floor() -> None:
    """A $0.30-an-hour key spending
    $0.90 in 10 minutes projects to $5.40, 18x, but $0.90 is under the $1 floor."""
    detector = RollingMedianDetector()
    steady_history(detector, "0.30")
    assert detector.update(KEY, hour(48) + timedelta(minutes=10), Decimal("0.90")) is None


def test_watch_from_is_where_a_total_or_its_projection_can_breach() -> None:
    detector = RollingMedianDetector()
    assert detector.watch_from(KEY, hour(48)) is None
    steady_history(detector)
    assert detector.watch_from(KEY, hour(48)) == Decimal("3.00")  # 1.5 x $2.00


def test_a_tenants_own_floor_covers_its_keys() -> None:
    """acme's own $50 floor: its $40 hour (20x) does not page, on the tenant or its
    workflow; another tenant's does, under the default $1."""
    detector = RollingMedianDetector(floors={"tenant:acme": Decimal(50)})
    keys = ("tenant:acme", "tenant:acme/workflow:summarize", "tenant:globex")
    for key in keys:
        for n in range(48):
            detector.learn_one(key, hour(n), Decimal("2.00"))
    at = hour(48) + timedelta(minutes=59)
    assert [detector.update(key, at, Decimal(40)) is not None for key in keys] == [
        False,
        False,
        True,
    ]
    assert detector.watch_from("tenant:acme/workflow:summarize", at) == Decimal(50)
