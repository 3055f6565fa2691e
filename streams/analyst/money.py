"""Money arithmetic for reports: exact Decimal sums, rounding to cents, display.

Rounding a set of amounts to cents one by one does not add up to the rounded
total. `allocate_cents` rounds the total once (half up) and hands the cents out
by largest remainder, so the charged amounts always sum to the rounded total and
each is within one cent of its exact amount.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal(0)


def to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def allocate_cents(amounts: Sequence[Decimal]) -> list[Decimal]:
    """Cent amounts for `amounts` (in order) that sum to `to_cents(sum(amounts))`.

    >>> allocate_cents([Decimal("1.005"), Decimal("1.005"), Decimal("1.005")])
    [Decimal('1.01'), Decimal('1.01'), Decimal('1.00')]
    >>> sum(allocate_cents([Decimal("0.333")] * 3))
    Decimal('1.00')
    """
    floors = [amount.quantize(CENT, rounding=ROUND_FLOOR) for amount in amounts]
    remainders = [amount - floor for amount, floor in zip(amounts, floors, strict=True)]
    missing = int((to_cents(sum(amounts, ZERO)) - sum(floors, ZERO)) / CENT)
    # Largest remainder first; ties go to the earlier entry so the result is stable.
    order = sorted(range(len(amounts)), key=lambda i: (-remainders[i], i))
    for index in order[:missing]:
        floors[index] += CENT
    return floors


def exact(amount: Decimal) -> str:
    """The full amount without trailing zeros, but always with cents."""
    text = format(amount.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def usd(amount: Decimal) -> str:
    return f"${to_cents(amount):,.2f}"


def percent_change(current: Decimal, previous: Decimal) -> str:
    if previous == 0:
        return "new" if current else "–"
    change = (current - previous) / previous * 100
    return f"{change:+.1f}%"
