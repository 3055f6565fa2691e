from datetime import UTC, datetime, timedelta
from decimal import Decimal

from detectors.retry_storm import RetryStormDetector
from detectors.stats import WindowStats

KEY = "workflow:triage"
MONDAY = datetime(2024, 5, 6, tzinfo=UTC)
NORMAL = WindowStats(cost=Decimal(4), requests=400, distinct_users=100, retries=4, errors=2)


def hour(n: int) -> datetime:
    return MONDAY + timedelta(hours=n)


def with_history(hours: int = 48, **kwargs: float) -> RetryStormDetector:
    detector = RetryStormDetector(**kwargs)  # type: ignore[arg-type]
    for n in range(hours):
        assert detector.update(KEY, hour(n), NORMAL) is None
    return detector


def test_first_day_never_pages() -> None:
    detector = RetryStormDetector()
    for n in range(23):
        assert detector.update(KEY, hour(n), NORMAL) is None
    storm = WindowStats(
        cost=Decimal(40), requests=4000, distinct_users=100, retries=3000, errors=900
    )
    assert detector.update(KEY, hour(23), storm) is None
    assert detector.baseline(KEY, hour(23)) is None


def test_adoption_and_weekend_dip_keep_rates_and_do_not_page() -> None:
    detector = with_history()
    grown = WindowStats(cost=Decimal(20), requests=2000, distinct_users=500, retries=20, errors=10)
    quiet = WindowStats(cost=Decimal(0), requests=40, distinct_users=10, retries=1, errors=0)
    assert detector.update(KEY, hour(48), grown) is None
    assert detector.update(KEY, hour(49), quiet) is None


def test_retry_surge_pages_with_counts() -> None:
    detector = with_history()
    finding = detector.update(
        KEY, hour(48), WindowStats(cost=Decimal(4), requests=400, distinct_users=100, retries=60)
    )
    assert finding is not None
    assert list(finding.evidence["tripped"]) == ["retry_rate"]
    assert finding.evidence["tripped"]["retry_rate"] == 15.0
    assert finding.value == 60  # retries observed
    assert finding.threshold == 12  # 3 x the 1 % baseline rate x 400 requests


def test_error_surge_pages() -> None:
    detector = with_history()
    finding = detector.update(
        KEY, hour(48), WindowStats(cost=Decimal(4), requests=400, distinct_users=100, errors=80)
    )
    assert finding is not None
    assert list(finding.evidence["tripped"]) == ["error_rate"]


def test_requests_rising_faster_than_users_pages() -> None:
    detector = with_history()
    loop = WindowStats(cost=Decimal(20), requests=2000, distinct_users=100, retries=20, errors=10)
    finding = detector.update(KEY, hour(48), loop)
    assert finding is not None
    assert finding.evidence["tripped"] == {"requests_per_user": 5.0}


def test_a_few_retries_are_not_a_storm_even_at_a_high_rate() -> None:
    detector = with_history()
    small = WindowStats(cost=Decimal(0), requests=50, distinct_users=10, retries=15, errors=15)
    assert detector.score_one(KEY, hour(48), small) > 3
    assert detector.update(KEY, hour(48), small) is None


def test_without_user_ids_only_rates_count() -> None:
    detector = RetryStormDetector()
    anonymous = WindowStats(cost=Decimal(4), requests=400, retries=4)
    for n in range(48):
        detector.update(KEY, hour(n), anonymous)
    assert (
        detector.update(KEY, hour(48), WindowStats(cost=Decimal(40), requests=4000, retries=40))
        is None
    )
    assert "requests_per_user" not in detector.signals(KEY, hour(48), anonymous)


def test_one_incident_until_cleared() -> None:
    detector = with_history()
    storm = WindowStats(cost=Decimal(4), requests=400, distinct_users=100, retries=200)
    first = detector.update(KEY, hour(48), storm)
    assert first is not None
    assert detector.update(KEY, hour(49), storm) is None
    # 20 minutes into hour 50 the storm runs on: 70 retries in 140 requests.
    running = WindowStats(cost=Decimal(1), requests=140, distinct_users=40, retries=70)
    detector.update(KEY, hour(50) + timedelta(minutes=20), running)
    assert not detector.is_resolved(KEY, hour(50) + timedelta(minutes=20))
    closed = detector.close_cleared(hour(52))
    assert [f.fingerprint for f in closed] == [first.fingerprint]


def test_calm_next_hour_resolves_after_resolve_after() -> None:
    detector = with_history()
    detector.update(
        KEY, hour(48), WindowStats(cost=Decimal(4), requests=400, distinct_users=100, retries=200)
    )
    calm = WindowStats(cost=Decimal(1), requests=130, distinct_users=33, retries=1)
    detector.update(KEY, hour(49) + timedelta(minutes=20), calm)
    assert not detector.is_resolved(KEY, hour(49) + timedelta(minutes=10))
    assert detector.is_resolved(KEY, hour(49) + timedelta(minutes=20))


def test_an_hour_below_the_spend_floor_never_pages() -> None:
    # The case: a workflow spending about $0.10 an hour, calling 3.5x as often.
    detector = RetryStormDetector(spend_floor_usd=Decimal(1))
    for n in range(48):
        detector.update(KEY, hour(n), WindowStats(cost=Decimal("0.10"), requests=400, retries=4))
    storm = WindowStats(cost=Decimal("0.35"), requests=1400, distinct_users=0, retries=700)
    assert detector.update(KEY, hour(48), storm) is None
    dear = WindowStats(cost=Decimal("3.50"), requests=1400, distinct_users=0, retries=700)
    assert detector.update(KEY, hour(48), dear) is not None


def test_a_tenants_own_floor_covers_its_workflows() -> None:
    key = "tenant:acme/workflow:triage"
    detector = RetryStormDetector(floors={"tenant:acme": Decimal(10)})
    for n in range(48):
        detector.update(key, hour(n), WindowStats(cost=Decimal("1.00"), requests=400, retries=4))
    storm = WindowStats(cost=Decimal("3.50"), requests=1400, distinct_users=0, retries=700)
    assert detector.update(key, hour(48), storm) is None  # $3.50 is under acme's $10
    dear = WindowStats(cost=Decimal("12.00"), requests=1400, distinct_users=0, retries=700)
    assert detector.update(key, hour(48), dear) is not None


def test_a_genuine_adoption_over_busy_days_and_quiet_nights_is_not_a_storm() -> None:
    """Busy hours of 15 calls by 5 users, quiet hours of one call by one user: the
    median hour's requests over its median users read as 1 call per user, so 6x the
    users and their calls (120 calls, 30 users: 4 per user) looked 4x. The period's
    requests per user, pooled, is about 2.6: the adoption is 1.5x, not a storm; a loop
    of the same 5 users calling 8x as often still is."""
    detector = RetryStormDetector()
    for n in range(7 * 24):
        busy = 8 <= n % 24 < 19
        stats = WindowStats(
            cost=Decimal("2.85") if busy else Decimal("0.19"),
            requests=15 if busy else 1,
            distinct_users=5 if busy else 1,
        )
        detector.learn_one(KEY, hour(n), stats)
    at = hour(7 * 24 + 14)
    adoption = WindowStats(cost=Decimal("22.80"), requests=120, distinct_users=30)
    assert detector.update(KEY, at, adoption) is None
    loop = WindowStats(cost=Decimal("22.80"), requests=120, distinct_users=5)
    finding = detector.update(KEY, at + timedelta(hours=1), loop)
    assert finding is not None and "requests_per_user" in finding.evidence["tripped"]
    assert 2 < finding.evidence["baseline_requests_per_user"] < 3  # busy hours' calls weigh


STORM = WindowStats(cost=Decimal(4), requests=400, distinct_users=100, retries=60)


def test_an_acknowledged_storm_is_the_new_normal_and_a_bigger_one_still_pages() -> None:
    detector = with_history()
    assert detector.update(KEY, hour(48), STORM) is not None  # 15x the retry rate
    detector.set_acknowledged(KEY, hour(48), hour(48))
    # The same rate the next hours is the usual now: no breach, and the incident clears.
    assert detector.signals(KEY, hour(49), STORM)["retry_rate"] == 1.0
    assert detector.update(KEY, hour(49), STORM) is None
    assert detector.is_resolved(KEY, hour(49) + timedelta(minutes=20))
    assert detector.close_cleared(hour(49) + timedelta(minutes=20)) != []
    assert detector.update(KEY, hour(50), STORM) is None
    # Three times the acknowledged rate opens a new incident, against the new normal.
    bigger = WindowStats(cost=Decimal(4), requests=400, distinct_users=100, retries=180)
    finding = detector.update(KEY, hour(51), bigger)
    assert finding is not None and finding.evidence["acknowledged"] is True
    assert finding.evidence["baseline_retry_rate"] == 0.15
    assert finding.evidence["tripped"] == {"retry_rate": 3.0}
    # Without the acknowledgement, the same storm an hour later still breaches.
    control = with_history()
    control.update(KEY, hour(48), STORM)
    assert control.signals(KEY, hour(49), STORM)["retry_rate"] == 15.0
    control.update(KEY, hour(49), STORM)
    assert not control.is_resolved(KEY, hour(49) + timedelta(minutes=20))


def test_an_acknowledged_amplification_rebases_requests_per_user() -> None:
    detector = with_history()
    looping = WindowStats(cost=Decimal(16), requests=1600, distinct_users=100, retries=16)
    assert detector.update(KEY, hour(48), looping) is not None  # 4x requests per user
    detector.set_acknowledged(KEY, hour(48), hour(48))
    assert detector.signals(KEY, hour(49), looping)["requests_per_user"] == 1.0
    worse = WindowStats(cost=Decimal(48), requests=4800, distinct_users=100, retries=48)
    assert detector.signals(KEY, hour(49), worse)["requests_per_user"] == 3.0


def test_an_acknowledgement_restored_before_the_history_takes_effect_once_learned() -> None:
    # At a restart the acknowledgements are read before the detectors learn the hours.
    detector = RetryStormDetector()
    detector.set_acknowledged(KEY, hour(48), hour(48))
    for n in range(48):
        detector.learn_one(KEY, hour(n), NORMAL)
    detector.learn_one(KEY, hour(48), STORM)
    assert detector.update(KEY, hour(49), STORM) is None
    assert detector.signals(KEY, hour(49), STORM)["retry_rate"] == 1.0
