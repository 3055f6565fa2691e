"""Why spend moved, in dollars: a change against a baseline split into additive parts.

Spend is written as a product of factors, per model m:

    cost_m = calls x retry_factor x share_m x tokens_per_call_m x unit_price_m x cache_factor_m

- `volume`: first-attempt calls (calls that are not retries);
- `retries`: all calls / first-attempt calls;
- `model_mix`: model m's share of all calls;
- `tokens_per_call`: tokens / calls of model m;
- `unit_price`: the cost at list price (as if no token were a cache read) / tokens;
- `cache_hit_rate`: cost / cost at list price (below 1 when cache reads are cheaper).

The change between two periods is split with the Shapley decomposition of index
decomposition analysis (Ang, Liu & Chung, "A generalized Fisher index approach to
energy decomposition analysis", Energy Economics 26 (2004); the "Shapley/Sun"
method): each factor's part is its average marginal effect over every order in which
the factors can move from their baseline to their current values. Unlike the
logarithmic mean Divisia index (LMDI) it needs no special case for a model that is
new or gone (a zero factor), and its parts sum exactly to the change. The arithmetic
is exact (fractions); the parts are then rounded to cents so that they sum to the
change rounded to the cent (largest remainder).

A factor that is undefined in one period (the tokens per call of a model not used
then) takes the other period's value, so it moves nothing and the whole effect of the
model's arrival or departure is `model_mix`. A model whose calls carry no tokens
counts one notional token per call, so that its price still multiplies out.

A change from or to no spend at all is not split: splitting $0 -> $X into volume and
model mix says nothing a person can use. It is one part, `new_spend` (no spend in the
earlier period) or `stopped` (no spend in the later one), equal to the change.

>>> from decimal import Decimal
>>> before = {"gpt-4o": Usage(calls=100, retries=0, tokens=100_000, cost=Decimal("1.00"))}
>>> after = {"gpt-4o": Usage(calls=300, retries=0, tokens=300_000, cost=Decimal("3.00"))}
>>> parts = decompose(before, after)
>>> parts["volume"], sum(parts.values())
(Decimal('2.00'), Decimal('2.00'))
>>> decompose({}, after)
{'new_spend': Decimal('3.00')}
>>> decompose(before, {})
{'stopped': Decimal('-1.00')}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from itertools import combinations
from math import factorial

FACTORS = ("volume", "retries", "model_mix", "tokens_per_call", "unit_price", "cache_hit_rate")
# The single part of a change from no spend (new_spend) or to none (stopped).
NEW_SPEND, STOPPED = "new_spend", "stopped"
CENT = Decimal("0.01")
ZERO = Decimal(0)


@dataclass(frozen=True)
class Usage:
    """One model's totals over one period."""

    # Counts may be fractions: a baseline is often a mean of several periods.
    calls: int | Fraction  # every call, retries included
    retries: int | Fraction  # calls that were retries of an earlier call
    tokens: int | Fraction  # input + output tokens
    cost: Decimal
    list_cost: Decimal | None = None  # the cost at list price, no cache discount; None: = cost


def decompose(before: Mapping[str, Usage], after: Mapping[str, Usage]) -> dict[str, Decimal]:
    """Each factor's part of the change in total cost, in dollars, summing to the change
    (rounded to the cent); {NEW_SPEND: change} or {STOPPED: change} when one of the
    periods has no spend."""
    spent_before, spent_after = _cost(before), _cost(after)
    if spent_before != spent_after and ZERO in (spent_before, spent_after):
        only = NEW_SPEND if spent_before == ZERO else STOPPED
        return {only: (spent_after - spent_before).quantize(CENT, rounding=ROUND_HALF_EVEN)}
    old, new = _factors(before, after), _factors(after, before)
    n = len(FACTORS)
    totals = _totals(old, new)
    exact: dict[str, Fraction] = {}
    for k, factor in enumerate(FACTORS):
        others = [i for i in range(n) if i != k]
        part = Fraction(0)
        for size in range(n):
            weight = Fraction(factorial(size) * factorial(n - size - 1), factorial(n))
            for moved in map(frozenset, combinations(others, size)):
                part += weight * (totals[moved | {k}] - totals[moved])
        exact[factor] = part
    return _to_cents(exact, spent_after - spent_before)


def _cost(usage: Mapping[str, Usage]) -> Decimal:
    return sum((u.cost for u in usage.values()), ZERO)


# Per period: (volume, retry factor, {model: (share, tokens per call, unit price, cache)}).
_Factors = tuple[Fraction, Fraction, dict[str, tuple[Fraction, Fraction, Fraction, Fraction]]]


def _factors(period: Mapping[str, Usage], other: Mapping[str, Usage]) -> _Factors:
    calls = sum(u.calls for u in period.values())
    first = calls - sum(u.retries for u in period.values())
    volume, retry = (
        (Fraction(first), Fraction(calls, first)) if first > 0 else (Fraction(calls), Fraction(1))
    )
    models: dict[str, tuple[Fraction, Fraction, Fraction, Fraction]] = {}
    for model in sorted({*period, *other}):
        own = _per_call(period.get(model))
        fallback = _per_call(other.get(model)) or (Fraction(1), Fraction(0), Fraction(1))
        share = Fraction(period[model].calls, calls) if model in period and calls else Fraction(0)
        tokens, price, cache = own if own is not None else fallback
        models[model] = (share, tokens, price, cache)
    return volume, retry, models


def _per_call(usage: Usage | None) -> tuple[Fraction, Fraction, Fraction] | None:
    """(tokens per call, unit price, cache factor) of a model used in the period."""
    if usage is None or usage.calls == 0:
        return None
    tokens = usage.tokens if usage.tokens > 0 else usage.calls
    list_cost = Fraction(usage.list_cost if usage.list_cost is not None else usage.cost)
    cost = Fraction(usage.cost)
    cache = cost / list_cost if list_cost else Fraction(1)
    price = list_cost / tokens if list_cost else cost / tokens
    return Fraction(tokens, usage.calls), price, cache


def _totals(old: _Factors, new: _Factors) -> dict[frozenset[int], Fraction]:
    """Total cost for each set of factors (indexes into FACTORS) moved to their new
    values, the others at their old ones: all 2^n of them, each needed by every factor.
    The sum over models depends on the model factors only, so it is made once for each
    of their subsets and then scaled by volume and retries."""

    def pick(i: int, moved: frozenset[int], a: Fraction, b: Fraction) -> Fraction:
        return b if i in moved else a

    model_factors = range(2, len(FACTORS))
    model_sums: dict[frozenset[int], Fraction] = {}
    for size in range(len(model_factors) + 1):
        for moved in map(frozenset, combinations(model_factors, size)):
            total = Fraction(0)
            for model, (s0, t0, p0, c0) in old[2].items():
                s1, t1, p1, c1 = new[2][model]
                total += (
                    pick(2, moved, s0, s1)
                    * pick(3, moved, t0, t1)
                    * pick(4, moved, p0, p1)
                    * pick(5, moved, c0, c1)
                )
            model_sums[moved] = total
    totals = {}
    for size in range(3):
        for scale in map(frozenset, combinations((0, 1), size)):
            factor = pick(0, scale, old[0], new[0]) * pick(1, scale, old[1], new[1])
            for moved, total in model_sums.items():
                totals[scale | moved] = factor * total
    return totals


def _to_cents(exact: Mapping[str, Fraction], change: Decimal) -> dict[str, Decimal]:
    """Round each part to the cent; the parts furthest from their rounding absorb the
    cents by which the rounded parts miss the change rounded to the cent."""
    target = change.quantize(CENT, rounding=ROUND_HALF_EVEN)
    rounded = {k: _decimal(v).quantize(CENT, rounding=ROUND_HALF_EVEN) for k, v in exact.items()}
    missing = int((target - sum(rounded.values())) / CENT)
    step = CENT if missing > 0 else -CENT
    # The part whose exact value lies furthest in the direction of the missing cents.
    order = sorted(
        exact,
        key=lambda k: (exact[k] - Fraction(rounded[k])) * (1 if missing > 0 else -1),
        reverse=True,
    )
    for i in range(abs(missing)):
        rounded[order[i % len(order)]] += step
    return rounded


def _decimal(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)
