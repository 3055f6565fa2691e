import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from detectors.online_anomaly import ALL_FEATURES, FEATURES, OnlineAnomalyDetector, RequestSample

AT = datetime(2024, 5, 6, 10, tzinfo=UTC)


def normal_request(rng: random.Random, scale: float = 1.0) -> RequestSample:
    tokens_in = int(rng.lognormvariate(7.3, 0.4) * scale)  # ~1,500
    tokens_out = int(rng.lognormvariate(5.7, 0.5) * scale)  # ~300
    cost = Decimal(tokens_in) * Decimal("0.0000025") + Decimal(tokens_out) * Decimal("0.00001")
    return RequestSample(cost, tokens_in, tokens_out, latency_ms=rng.lognormvariate(6.7, 0.3))


def trained(rng: random.Random, n: int = 2000, **kwargs: object) -> OnlineAnomalyDetector:
    detector = OnlineAnomalyDetector(**kwargs)  # type: ignore[arg-type]
    for _ in range(n):
        detector.learn_one("acme", normal_request(rng))
    return detector


RUNAWAY = RequestSample(Decimal("2.50"), input_tokens=120_000, output_tokens=30_000, latency_ms=900)
PRICIER_MODEL = RequestSample(Decimal("0.30"), input_tokens=1500, output_tokens=300, latency_ms=800)
TYPICAL = RequestSample(Decimal("0.0067"), input_tokens=1480, output_tokens=300, latency_ms=810)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outliers_score_above_the_threshold_and_a_normal_point_does_not(seed: int) -> None:
    detector = trained(random.Random(seed))
    threshold = detector.threshold("acme")
    assert threshold is not None and 0 < threshold < 1
    assert detector.score_one("acme", RUNAWAY) > threshold
    assert detector.score_one("acme", PRICIER_MODEL) > threshold  # 45x cost, same tokens
    assert detector.score_one("acme", TYPICAL) < threshold


def test_false_positive_rate_on_normal_traffic_is_near_one_minus_q() -> None:
    rng = random.Random(3)
    detector = trained(rng, quantile=0.999)
    threshold = detector.threshold("acme")
    assert threshold is not None
    flagged = sum(detector.score_one("acme", normal_request(rng)) >= threshold for _ in range(2000))
    assert flagged <= 10  # 0.5 %; the filter aims at 0.1 %


def test_grace_period_suppresses_findings_for_a_new_tenant() -> None:
    rng = random.Random(4)
    detector = trained(rng, n=600, grace_period=1000)
    assert detector.score_one("acme", RUNAWAY) > (detector.threshold("acme") or 1)
    assert detector.update("acme", AT, RUNAWAY) is None
    for _ in range(400):
        detector.learn_one("acme", normal_request(rng))
    assert detector.update("acme", AT, RUNAWAY) is not None


def test_at_most_one_finding_per_tenant_hour() -> None:
    detector = trained(random.Random(5))
    first = detector.update("acme", AT, RUNAWAY)
    assert first is not None
    assert first.window_start == AT and first.severity == "info"
    assert first.evidence["cost_usd"] == Decimal("2.50")
    assert detector.update("acme", AT + timedelta(minutes=30), RUNAWAY) is None
    next_hour = detector.update("acme", AT + timedelta(hours=1), RUNAWAY)
    assert next_hour is not None and next_hour.fingerprint != first.fingerprint


def test_tenants_have_their_own_models() -> None:
    rng = random.Random(6)
    detector = trained(rng)
    for _ in range(2000):
        detector.learn_one("bigco", normal_request(rng, scale=80))
    big_request = normal_request(rng, scale=80)
    assert detector.score_one("acme", big_request) > (detector.threshold("acme") or 1)
    assert detector.score_one("bigco", big_request) < (detector.threshold("bigco") or 0)


def test_state_is_bounded_by_max_tenants() -> None:
    rng = random.Random(7)
    detector = OnlineAnomalyDetector(max_tenants=2)
    for tenant in ("a", "b", "a", "c"):
        detector.learn_one(tenant, normal_request(rng))
    assert "b" not in detector  # least recently seen: evicted
    assert "a" in detector and "c" in detector


def test_checkpoint_restores_models_that_keep_learning_identically() -> None:
    rng = random.Random(8)
    original = trained(rng)
    copy = OnlineAnomalyDetector()
    copy.restore(original.checkpoint())
    assert copy.score_one("acme", RUNAWAY) == original.score_one("acme", RUNAWAY)
    more = [normal_request(rng) for _ in range(300)]
    for sample in more:
        original.learn_one("acme", sample)
        copy.learn_one("acme", sample)
    assert copy.threshold("acme") == original.threshold("acme")
    assert copy.update("acme", AT, RUNAWAY) is not None  # past its grace period too


def test_restore_rejects_foreign_or_mismatched_checkpoints() -> None:
    import pickle

    with pytest.raises(ValueError):
        OnlineAnomalyDetector().restore(pickle.dumps({"something": "else"}))
    data = OnlineAnomalyDetector(features=ALL_FEATURES).checkpoint()
    with pytest.raises(ValueError, match="features"):
        OnlineAnomalyDetector().restore(data)


def test_every_sample_sends_the_whole_feature_set() -> None:
    sparse = RequestSample(Decimal(0), input_tokens=0)
    assert list(sparse.features()) == list(FEATURES)
    assert list(sparse.features(ALL_FEATURES)) == list(ALL_FEATURES)
    assert all(value == 0.0 for value in sparse.features(ALL_FEATURES).values())
    with pytest.raises(ValueError):
        OnlineAnomalyDetector(features=("log_cost", "prompt_length"))
