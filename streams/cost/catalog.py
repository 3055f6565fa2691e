"""Price catalog and cost engine: overrides from a pricing file win over genai-prices.

Resolution is cached per (provider, model) and, only for the few catalog models
whose price depends on the time of day, per (provider, model, minute): the hot
path never calls `genai_prices.calc_price` (about 170 µs a call). The arithmetic
is the formula of ARCHITECTURE.md in exact Decimal:

    cost = (input - cached - cache_write) * p_input + cached * p_cached_input
         + cache_write * p_cache_write + (output - reasoning) * p_output
         + reasoning * p_reasoning

Tiered catalog prices use the catalog's "cliff" rule: once a request's input
tokens exceed a tier's start, every token of that request pays the tier's rate.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.pricing import PriceEntry, PricingFile
from streams.errors import ConfigError

MTOK = Decimal(1_000_000)
ZERO = Decimal(0)


@dataclass(frozen=True)
class CostBreakdown:
    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal
    reasoning: Decimal

    @property
    def total(self) -> Decimal:
        return self.input + self.cached_input + self.cache_write + self.output + self.reasoning


ZERO_COST = CostBreakdown(ZERO, ZERO, ZERO, ZERO, ZERO)


@dataclass(frozen=True)
class UnitPrices:
    """USD per million tokens for each token class, and where they came from.

    `tiers` holds (input-token threshold, prices) for catalog models with tiered
    prices, ascending; the base prices apply up to the first threshold.

    >>> p = UnitPrices(Decimal("2.50"), Decimal("1.25"), Decimal("2.50"),
    ...                Decimal("10"), Decimal("10"), source="example")
    >>> p.cost(input_tokens=1_000, cached_tokens=400, output_tokens=200).total
    Decimal('0.00400000')
    """

    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal
    reasoning: Decimal
    source: str
    tiers: tuple[tuple[int, UnitPrices], ...] = field(default=(), compare=False)
    _per_token: tuple[Decimal, ...] = field(default=(), init=False, repr=False, compare=False)

    def for_input(self, input_tokens: int) -> UnitPrices:
        applicable = self
        for start, prices in self.tiers:
            if input_tokens > start:
                applicable = prices
        return applicable

    def __post_init__(self) -> None:
        # Per-token prices, computed once: the hot path multiplies integers by them.
        # Prices have at most 12 decimals and 7 integer digits, tokens at most 8
        # digits, so every product fits the default 28-digit context exactly.
        object.__setattr__(
            self,
            "_per_token",
            tuple(
                price / MTOK
                for price in (
                    self.input,
                    self.cached_input,
                    self.cache_write,
                    self.output,
                    self.reasoning,
                )
            ),
        )

    def cost(
        self,
        input_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
        output_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> CostBreakdown:
        p_input, p_cached, p_write, p_output, p_reasoning = self.for_input(input_tokens)._per_token
        return CostBreakdown(
            (input_tokens - cached_tokens - cache_write_tokens) * p_input,
            cached_tokens * p_cached,
            cache_write_tokens * p_write,
            (output_tokens - reasoning_tokens) * p_output,
            reasoning_tokens * p_reasoning,
        )


def load_pricing_file(path: Path) -> PricingFile:
    """Read and validate a pricing file; any problem is one ConfigError line."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"pricing file not found: {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"pricing file {path} is not readable YAML: {first_line}") from None
    try:
        return PricingFile.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(f"pricing file {path}: {where}: {first['msg']}") from None


def _entry_prices(entry: PriceEntry, source: str) -> UnitPrices:
    return UnitPrices(
        input=entry.input,
        cached_input=entry.cached_input if entry.cached_input is not None else entry.input,
        cache_write=entry.cache_write if entry.cache_write is not None else entry.input,
        output=entry.output,
        reasoning=entry.reasoning if entry.reasoning is not None else entry.output,
        source=source,
    )


class OverridePrices:
    """The pricing file's entries, by (provider, model), ordered by `effective_from`."""

    def __init__(self, pricing: PricingFile, source: str) -> None:
        grouped: dict[tuple[str, str], list[tuple[date, UnitPrices]]] = {}
        for entry in pricing.prices:
            key = (entry.provider.lower(), entry.model.lower())
            start = entry.effective_from or date.min
            grouped.setdefault(key, []).append((start, _entry_prices(entry, source)))
        self._entries = {
            key: sorted(items, key=lambda item: item[0]) for key, items in grouped.items()
        }

    def resolve(self, provider: str, model: str, at: datetime) -> UnitPrices | None:
        entries = self._entries.get((provider, model))
        if not entries:
            return None
        index = bisect.bisect_right([start for start, _ in entries], at.date())
        return entries[index - 1][1] if index else None


class CatalogPrices:
    """Public prices from genai-prices, resolved once per model (per minute if conditional)."""

    def __init__(self, cache_size: int = 65_536) -> None:
        from genai_prices.data_snapshot import get_snapshot

        self._snapshot = get_snapshot()
        self.source = f"genai-prices {version('genai-prices')}"
        self._models: dict[tuple[str, str], Any] = {}
        self._cache: OrderedDict[tuple[str, str, datetime | None], UnitPrices | None] = (
            OrderedDict()
        )
        self._cache_size = cache_size

    def resolve(self, provider: str, model: str, at: datetime) -> UnitPrices | None:
        model_info = self._model_info(provider, model)
        if model_info is None:
            return None
        conditional = not hasattr(model_info.prices, "input_mtok")  # a list of conditional prices
        key = (provider, model, at.replace(second=0, microsecond=0) if conditional else None)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        prices = self._unit_prices(model_info.get_prices(at.astimezone(UTC)))
        self._cache[key] = prices
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return prices

    def _model_info(self, provider: str, model: str) -> Any:
        key = (provider, model)
        if key not in self._models:
            try:
                self._models[key] = self._snapshot.find_provider_model(model, None, provider, None)[
                    1
                ]
            except LookupError:
                self._models[key] = None
        return self._models[key]

    def _unit_prices(self, model_price: Any) -> UnitPrices | None:
        fields = {
            "input": getattr(model_price, "input_mtok", None),
            "cached_input": getattr(model_price, "cache_read_mtok", None),
            "cache_write": getattr(model_price, "cache_write_mtok", None),
            "output": getattr(model_price, "output_mtok", None),
        }
        if fields["input"] is None or fields["output"] is None:
            return None  # e.g. priced per image or per second: not a token model
        thresholds = sorted(
            {
                tier.start
                for price in fields.values()
                if price is not None
                for tier in getattr(price, "tiers", ())
            }
        )

        def at_level(threshold: int | None) -> UnitPrices:
            def pick(price: Any, fallback: Decimal | None = None) -> Decimal:
                if price is None:
                    return fallback if fallback is not None else ZERO
                if not hasattr(price, "tiers"):
                    return Decimal(price)
                chosen = price.base
                for tier in price.tiers:
                    if threshold is not None and tier.start <= threshold:
                        chosen = tier.price
                return Decimal(chosen)

            p_input = pick(fields["input"])
            p_output = pick(fields["output"])
            return UnitPrices(
                input=p_input,
                cached_input=pick(fields["cached_input"], p_input),
                cache_write=pick(fields["cache_write"], p_input),
                output=p_output,
                reasoning=p_output,
                source=self.source,
            )

        base = at_level(None)
        if not thresholds:
            return base
        return UnitPrices(
            base.input,
            base.cached_input,
            base.cache_write,
            base.output,
            base.reasoning,
            source=self.source,
            tiers=tuple((start, at_level(start)) for start in thresholds),
        )


class PriceCatalog:
    """Overrides first, then the public catalog. Provider and model match case-insensitively."""

    def __init__(
        self, overrides: OverridePrices | None = None, catalog: CatalogPrices | None = None
    ):
        self.overrides = overrides
        self.catalog = catalog if catalog is not None else CatalogPrices()

    @classmethod
    def load(cls, pricing_file: Path | None = None) -> PriceCatalog:
        overrides = None
        if pricing_file is not None:
            overrides = OverridePrices(
                load_pricing_file(pricing_file), f"override:{pricing_file.name}"
            )
        return cls(overrides)

    def resolve(self, provider: str, model: str, at: datetime) -> UnitPrices | None:
        provider, model = provider.lower(), model.lower()
        if self.overrides is not None:
            prices = self.overrides.resolve(provider, model, at)
            if prices is not None:
                return prices
        return self.catalog.resolve(provider, model, at)
