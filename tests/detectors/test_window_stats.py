from decimal import Decimal

from detectors.stats import WindowStats


def test_median_of_leaves_out_idle_hours() -> None:
    busy = [WindowStats(cost=Decimal(c), requests=100) for c in ("10", "12", "14")]
    idle = [WindowStats() for _ in range(10)]
    typical = WindowStats.median_of(busy + idle)
    assert typical.cost == Decimal(12)
    assert typical.requests == 100


def test_median_of_no_activity_is_empty() -> None:
    assert WindowStats.median_of([WindowStats(), WindowStats()]) == WindowStats()


def test_median_is_robust_to_an_earlier_incident() -> None:
    hours = [WindowStats(cost=Decimal(1), requests=100, retries=1)] * 20
    hours += [WindowStats(cost=Decimal(50), requests=5000, retries=4000)] * 3
    typical = WindowStats.median_of(hours)
    assert (typical.cost, typical.requests, typical.retries) == (Decimal(1), 100, 1)


def test_model_mix_is_summed_and_rates_derive_from_counts() -> None:
    a = WindowStats(requests=10, retries=2, errors=1, distinct_users=5, model_mix={"m1": 10})
    b = WindowStats(requests=10, model_mix={"m1": 5, "m2": 5})
    assert WindowStats.median_of([a, b]).model_mix == {"m1": 15, "m2": 5}
    assert (a.retry_rate, a.error_rate, a.requests_per_user) == (0.2, 0.1, 2.0)
    assert b.requests_per_user is None
    assert WindowStats().retry_rate == 0.0
