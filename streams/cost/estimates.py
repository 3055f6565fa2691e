"""Estimates for calls to models with no price: unpriced spend is still money.

A call whose model has no price (no override, not in the catalog) is priced as
the closest priced model of the same provider and family, or as a configured
fallback, and ledgered with `cost_status = 'estimated'`: the estimate goes to
`estimated_cost_usd`, never to `cost_usd`, so known and estimated money stay
apart. Re-pricing replaces it with a correction once the model has a price.

The family of a model is its name up to the first digit ("claude-sonnet-9" ->
"claude-sonnet", "gpt-9o-mini" -> "gpt"). Among the provider's priced models of
that family (catalog and pricing file), the closest shares the most name tokens
(split on '-', '.', '_', ':'), then has the fewest words it does not share
("gemini-9-flash" is nearer "gemini-3.8-flash" than "gemini-3.8-flash-tts"),
then the longest common prefix; a remaining tie goes to the last in name order
(usually the newest version).

>>> family("claude-sonnet-9-20300101"), family("gpt-9o-mini"), family("o9")
('claude-sonnet', 'gpt', 'o')
>>> closest("gpt-9o-mini", ["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "o3"])
'gpt-4o-mini'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the catalog builds its estimator: no import cycle at run time
    from streams.cost.catalog import PriceCatalog, PriceContext, UnitPrices

_TOKEN_SPLIT = re.compile(r"[-._:/]")
_FAMILY = re.compile(r"^[^0-9]*")
ANY_PROVIDER = "*"


def family(model: str) -> str:
    return _FAMILY.match(model.lower()).group(0).rstrip("-._:/")  # type: ignore[union-attr]


def _tokens(model: str) -> set[str]:
    return {token for token in _TOKEN_SPLIT.split(model.lower()) if token}


def _shared_prefix(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def closest(model: str, candidates: Iterable[str]) -> str | None:
    """The candidate of `model`'s family nearest to it by name (see module doc)."""
    wanted, tokens = family(model), _tokens(model)
    same_family = [c for c in candidates if c != model and family(c) == wanted and wanted]
    if not same_family:
        return None
    return max(
        same_family,
        key=lambda c: (
            len(tokens & _tokens(c)),
            -len({t for t in _tokens(c) - tokens if not t.isdigit()}),
            _shared_prefix(model.lower(), c.lower()),
            c,
        ),
    )


class Estimator:
    """Chooses, once per (provider, model), the priced model an unpriced one is
    estimated as; prices come from the catalog's own per-(period, context) cache."""

    def __init__(
        self, catalog: PriceCatalog, fallbacks: Mapping[str, tuple[str, str]] | None = None
    ) -> None:
        self.catalog = catalog
        self.fallbacks = {key.lower(): value for key, value in (fallbacks or {}).items()}
        self._chosen: dict[tuple[str, str], tuple[str, str] | None] = {}

    def estimate(
        self, provider: str, model: str, at: datetime, context: PriceContext
    ) -> UnitPrices | None:
        provider, model = provider.lower(), model.lower()
        key = (provider, model)
        if key not in self._chosen:
            self._chosen[key] = self._choose(provider, model, at)
        chosen = self._chosen[key]
        if chosen is None:
            return None
        prices = self.catalog.resolve(*chosen, at, context)
        if prices is None:
            return None
        return replace(prices, source=f"estimate:{chosen[0]}/{chosen[1]} {prices.source}")

    def _choose(self, provider: str, model: str, at: datetime) -> tuple[str, str] | None:
        candidates = [
            name
            for name in self.catalog.model_names(provider)
            if self.catalog.resolve(provider, name, at) is not None
        ]
        near = closest(model, candidates)
        if near is not None:
            return (provider, near)
        fallback = self.fallbacks.get(provider) or self.fallbacks.get(ANY_PROVIDER)
        if fallback is not None and self.catalog.resolve(*fallback, at) is not None:
            return (fallback[0].lower(), fallback[1].lower())
        return None
