"""`detectors.decomposition`: a spend change split into volume, retries, model mix,
tokens per call, unit price and cache-hit parts that sum to the change to the cent."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.decomposition import FACTORS, NEW_SPEND, STOPPED, Usage, decompose

MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet")


@st.composite
def usage(draw: st.DrawFn) -> Usage:
    calls = draw(st.integers(1, 100_000))
    cost = Decimal(draw(st.integers(0, 10_000_000))) / 10_000
    discount = Decimal(draw(st.integers(0, 90))) / 100
    return Usage(
        calls=calls,
        retries=draw(st.integers(0, calls)),
        tokens=draw(st.integers(0, 10_000_000)),
        cost=cost,
        list_cost=(cost / (1 - discount)).quantize(Decimal("0.000001")),
    )


periods = st.dictionaries(st.sampled_from(MODELS), usage(), max_size=3)


@settings(max_examples=200, deadline=None)
@given(before=periods, after=periods)
def test_the_parts_sum_to_the_change_to_the_cent(
    before: dict[str, Usage], after: dict[str, Usage]
) -> None:
    parts = decompose(before, after)
    change = sum((u.cost for u in after.values()), Decimal(0)) - sum(
        (u.cost for u in before.values()), Decimal(0)
    )
    spent_before = sum((u.cost for u in before.values()), Decimal(0))
    spent_after = sum((u.cost for u in after.values()), Decimal(0))
    if spent_before == 0 and spent_after != 0:
        assert set(parts) == {NEW_SPEND}
    elif spent_after == 0 and spent_before != 0:
        assert set(parts) == {STOPPED}
    else:
        assert set(parts) == set(FACTORS)
    assert all(p == p.quantize(Decimal("0.01")) for p in parts.values())
    assert sum(parts.values()) == change.quantize(Decimal("0.01"))


def test_spend_from_nothing_is_one_new_spend_part_not_volume_and_model_mix() -> None:
    """A tenant with no spend in the earlier period: the whole change is new spend."""
    after = {
        "gpt-4o": Usage(calls=120, retries=20, tokens=90_000, cost=Decimal("3.104")),
        "gpt-4o-mini": Usage(calls=50, retries=0, tokens=40_000, cost=Decimal("0.20")),
    }
    assert decompose({}, after) == {NEW_SPEND: Decimal("3.30")}
    # Calls that cost nothing (all unpriced) are no spend either.
    free = {"gpt-4o": Usage(calls=10, retries=0, tokens=1_000, cost=Decimal(0))}
    assert decompose(free, after) == {NEW_SPEND: Decimal("3.30")}


def test_spend_gone_to_nothing_is_one_stopped_part() -> None:
    before = {"gpt-4o": Usage(calls=100, retries=0, tokens=50_000, cost=Decimal("2.00"))}
    assert decompose(before, {}) == {STOPPED: Decimal("-2.00")}


def test_no_spend_in_either_period_moves_nothing() -> None:
    assert decompose({}, {}) == dict.fromkeys(FACTORS, Decimal("0.00"))


def test_more_calls_of_the_same_kind_is_all_volume() -> None:
    before = {"gpt-4o": Usage(calls=100, retries=0, tokens=50_000, cost=Decimal("2.00"))}
    after = {"gpt-4o": Usage(calls=250, retries=0, tokens=125_000, cost=Decimal("5.00"))}
    assert decompose(before, after) == dict.fromkeys(FACTORS, Decimal("0.00")) | {
        "volume": Decimal("3.00")
    }


def test_a_runaway_retry_loop_is_retries() -> None:
    before = {"gpt-4o": Usage(calls=100, retries=0, tokens=50_000, cost=Decimal("2.00"))}
    after = {"gpt-4o": Usage(calls=400, retries=300, tokens=200_000, cost=Decimal("8.00"))}
    parts = decompose(before, after)
    assert parts["retries"] == Decimal("6.00")
    assert parts["volume"] == Decimal("0.00")


def test_a_model_substitution_is_model_mix_and_longer_prompts_are_tokens_per_call() -> None:
    mini = Usage(calls=100, retries=0, tokens=100_000, cost=Decimal("0.10"))
    big = Usage(calls=100, retries=0, tokens=100_000, cost=Decimal("2.50"))
    substituted = decompose({"gpt-4o-mini": mini}, {"gpt-4o": big})
    assert substituted["model_mix"] == Decimal("2.40")
    longer = Usage(calls=100, retries=0, tokens=400_000, cost=Decimal("0.40"))
    expanded = decompose({"gpt-4o-mini": mini}, {"gpt-4o-mini": longer})
    assert expanded["tokens_per_call"] == Decimal("0.30")


def test_a_lost_cache_is_the_cache_hit_rate_and_a_price_change_the_unit_price() -> None:
    cached = Usage(
        calls=100, retries=0, tokens=1_000_000, cost=Decimal("1.00"), list_cost=Decimal("4.00")
    )
    uncached = Usage(
        calls=100, retries=0, tokens=1_000_000, cost=Decimal("4.00"), list_cost=Decimal("4.00")
    )
    assert decompose({"m": cached}, {"m": uncached})["cache_hit_rate"] == Decimal("3.00")
    dearer = Usage(
        calls=100, retries=0, tokens=1_000_000, cost=Decimal("5.00"), list_cost=Decimal("5.00")
    )
    assert decompose({"m": uncached}, {"m": dearer})["unit_price"] == Decimal("1.00")
