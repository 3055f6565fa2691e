from decimal import Decimal

import pytest

from detectors.spike_cause import SpikeCauseClassifier, mix_shift
from detectors.stats import WindowStats

BASELINE = WindowStats(
    cost=Decimal(10),
    requests=1000,
    distinct_users=100,
    input_tokens=1_000_000,
    output_tokens=200_000,
    retries=10,
    errors=5,
    model_mix={"gpt-4o-mini": 1000},
)


def window(**changes: object) -> WindowStats:
    fields = {**BASELINE.__dict__, **changes}
    return WindowStats(**fields)


classify = SpikeCauseClassifier().classify


def test_model_substitution() -> None:
    result = classify(
        window(cost=Decimal(80), model_mix={"gpt-4o": 900, "gpt-4o-mini": 100}), BASELINE
    )
    assert result.cause == "model_substitution"
    assert result.ratios["cost_per_token"] == pytest.approx(8.0)
    assert result.ratios["tokens_per_request"] == pytest.approx(1.0)
    assert result.ratios["model_mix_shift"] == pytest.approx(0.9)


def test_unit_cost_up_without_a_model_change_is_not_a_substitution() -> None:
    result = classify(window(cost=Decimal(80)), BASELINE)
    assert result.cause == "unexplained"
    assert "cost per token 8.0x" in result.explanation


def test_prompt_expansion() -> None:
    result = classify(window(cost=Decimal(35), input_tokens=4_000_000), BASELINE)
    assert result.cause == "prompt_expansion"
    assert result.ratios["input_tokens_per_request"] == pytest.approx(4.0)


def test_retry_storm_same_users_many_more_calls() -> None:
    storm = window(
        cost=Decimal(60),
        requests=6000,
        input_tokens=6_000_000,
        output_tokens=1_200_000,
        retries=3000,
        errors=900,
    )
    result = classify(storm, BASELINE)
    assert result.cause == "retry_storm"
    assert result.ratios["requests_per_user"] == pytest.approx(6.0)
    assert "retries 1.0% -> 50.0%" in result.explanation


def test_genuine_adoption() -> None:
    grown = window(
        cost=Decimal(40),
        requests=4000,
        distinct_users=380,
        input_tokens=4_000_000,
        output_tokens=800_000,
        model_mix={"gpt-4o-mini": 4000},
    )
    result = classify(grown, BASELINE)
    assert result.cause == "genuine_adoption"
    assert result.ratios["users"] == pytest.approx(3.8)
    assert result.ratios["cost_per_request"] == pytest.approx(1.0)


def test_without_user_ids_requests_growth_needs_a_retry_surge() -> None:
    base = window(distinct_users=0)
    more = window(
        cost=Decimal(50),
        requests=5000,
        distinct_users=0,
        input_tokens=5_000_000,
        output_tokens=1_000_000,
    )
    assert classify(more, base).cause == "unexplained"
    retried = window(
        cost=Decimal(50),
        requests=5000,
        distinct_users=0,
        input_tokens=5_000_000,
        output_tokens=1_000_000,
        retries=2500,
    )
    assert classify(retried, base).cause == "retry_storm"


def test_the_largest_factor_wins() -> None:
    # Prompts doubled, and the same users call 6x as often, half of it retries: the
    # calls explain more.
    both = window(
        cost=Decimal(120),
        requests=6000,
        input_tokens=12_000_000,
        output_tokens=1_200_000,
        retries=3000,
    )
    result = classify(both, BASELINE)
    assert result.cause == "retry_storm"
    assert result.ratios["tokens_per_request"] == pytest.approx(13.2 / 1.2 / 6)


def test_more_calls_per_user_without_retries_or_errors_is_not_a_retry_storm() -> None:
    # The case: "retry_storm" while the evidence read retries 0.0% -> 0.0%.
    base = window(retries=0, errors=0)
    busier = window(cost=Decimal(40), requests=4000, retries=0, errors=0)
    result = classify(busier, base)
    assert result.cause == "unexplained"
    assert result.ratios["requests_per_user"] == pytest.approx(4.0)
    assert "requests per user 4.0x" in result.explanation


def test_no_baseline_is_unknown() -> None:
    result = classify(window(cost=Decimal(100)), WindowStats())
    assert (result.cause, result.ratios) == ("unexplained", {})


def test_mix_shift_is_total_variation_distance() -> None:
    assert mix_shift({"a": 10}, {"a": 3}) == 0.0
    assert mix_shift({"a": 1}, {"b": 1}) == 1.0
    assert mix_shift({"a": 50, "b": 50}, {"a": 100}) == 0.5
    assert mix_shift({}, {"a": 1}) == 0.0


def test_annotate_puts_the_cause_in_the_findings_evidence() -> None:
    from datetime import UTC, datetime

    from detectors.finding import Finding

    t0 = datetime(2024, 5, 6, 10, tzinfo=UTC)
    finding = Finding(
        "rolling_median",
        "tenant:acme",
        t0,
        t0,
        "critical",
        "spend up",
        Decimal(60),
        Decimal(10),
        {"baseline": Decimal(2)},
    )
    cause = classify(window(cost=Decimal(35), input_tokens=4_000_000), BASELINE)
    annotated = cause.annotate(finding)
    assert annotated.evidence["cause"] == "prompt_expansion"
    assert annotated.evidence["baseline"] == Decimal(2)
    assert annotated.evidence["cause_ratios"]["input_tokens_per_request"] == pytest.approx(4.0)
    assert annotated.fingerprint == finding.fingerprint
    assert "cause" not in finding.evidence
