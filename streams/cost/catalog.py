"""Price catalog and cost engine: overrides from a pricing file win over genai-prices.

Resolution is cached per (provider, model, period, price context): the hot path
never calls `genai_prices.calc_price` (about 170 µs a call). The period is None
for a model whose prices never change, the UTC day for prices with start dates,
and the minute for the few catalog prices that depend on the time of day. The
price context (`PriceContext`: the service tier that served the call, batch or
not) selects the catalog's price variant, e.g. flex or batch at half price.

The arithmetic is the formula of docs/architecture.md ("Cost") in exact Decimal, with 1-hour
cache writes (part of the cache writes) at their own rate:

    cost = (input - cached - cache_write) * p_input + cached * p_cached_input
         + (cache_write - cache_write_1h) * p_cache_write
         + cache_write_1h * p_cache_write_1h
         + (output - reasoning) * p_output + reasoning * p_reasoning

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
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.pricing import PriceEntry, PricingFile
from schemas.yaml_file import load_yaml
from streams.cost.estimates import Estimator
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

# Tier names that mean the standard price: the catalog has no variant for them
# (or an empty one), so they share the standard cache entry.
STANDARD_TIERS = frozenset({"", "default", "standard", "auto", "on_demand"})


class PriceContext(NamedTuple):
    """What selects a price variant: the tier that served the call and batch or not.

    >>> PriceContext.of("Flex", batch=False).label()
    'service_tier=flex'
    >>> PriceContext.of("standard", batch=True).catalog()
    {'processing': 'batch'}
    """

    service_tier: str = ""
    batch: bool = False

    @classmethod
    def of(cls, service_tier: str, batch: bool) -> PriceContext:
        tier = service_tier.strip().lower()
        return cls("" if tier in STANDARD_TIERS else tier, batch)

    def catalog(self) -> dict[str, str]:
        """The genai-prices `price_context` mapping."""
        context = {"service_tier": self.service_tier} if self.service_tier else {}
        if self.batch:
            context["processing"] = "batch"
        return context

    def label(self) -> str:
        """How the context reads in `price_source`: '' for the standard price."""
        return " ".join(f"{key}={value}" for key, value in self.catalog().items())


STANDARD = PriceContext()


@dataclass(frozen=True)
class UnitPrices:
    """USD per million tokens for each token class, and where they came from.

    `cache_write_1h` prices 1-hour cache writes; None means the cache-write price.
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
    cache_write_1h: Decimal | None = None
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
                    self.cache_write_1h_price,
                )
            ),
        )

    @property
    def cache_write_1h_price(self) -> Decimal:
        return self.cache_write if self.cache_write_1h is None else self.cache_write_1h

    def cost(
        self,
        input_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
        output_tokens: int = 0,
        reasoning_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
    ) -> CostBreakdown:
        p_input, p_cached, p_write, p_output, p_reasoning, p_write_1h = self.for_input(
            input_tokens
        )._per_token
        return CostBreakdown(
            (input_tokens - cached_tokens - cache_write_tokens) * p_input,
            cached_tokens * p_cached,
            (cache_write_tokens - cache_write_1h_tokens) * p_write
            + cache_write_1h_tokens * p_write_1h
            if cache_write_1h_tokens
            else cache_write_tokens * p_write,
            (output_tokens - reasoning_tokens) * p_output,
            reasoning_tokens * p_reasoning,
        )


def load_pricing_file(path: Path) -> PricingFile:
    """Read and validate a pricing file; any problem is one ConfigError line."""
    return read_yaml_model(path, PricingFile, "pricing file")


Model = TypeVar("Model", bound=BaseModel)


def read_yaml_model(path: Path, model: type[Model], what: str) -> Model:
    """A YAML file validated as `model`; any problem is one ConfigError line naming
    `what` and, for a validation error, the field."""
    try:
        raw = load_yaml(path.read_text(), f"{what} {path}")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(f"{what} {path}: {where}: {first['msg']}") from None


def _entry_prices(entry: PriceEntry, source: str) -> UnitPrices:
    cache_write = entry.cache_write if entry.cache_write is not None else entry.input
    return UnitPrices(
        input=entry.input,
        cached_input=entry.cached_input if entry.cached_input is not None else entry.input,
        cache_write=cache_write,
        output=entry.output,
        reasoning=entry.reasoning if entry.reasoning is not None else entry.output,
        source=source,
        cache_write_1h=entry.cache_write_1h,
    )


def _with_context(source: str, context: PriceContext) -> str:
    label = context.label()
    return f"{source} {label}" if label else source


class OverridePrices:
    """The pricing file's entries, by (provider, model, price context), ordered by
    `effective_from`. An entry without `service_tier`/`batch` prices every call of
    its model; one with them prices only calls in that context, and wins there."""

    def __init__(self, pricing: PricingFile, source: str) -> None:
        grouped: dict[tuple[str, str, PriceContext], list[tuple[date, UnitPrices]]] = {}
        for entry in pricing.prices:
            context = PriceContext.of(entry.service_tier or "", entry.batch)
            key = (entry.provider.lower(), entry.model.lower(), context)
            start = entry.effective_from or date.min
            prices = _entry_prices(entry, _with_context(source, context))
            grouped.setdefault(key, []).append((start, prices))
        self._entries = {
            key: sorted(items, key=lambda item: item[0]) for key, items in grouped.items()
        }

    def resolve(
        self, provider: str, model: str, at: datetime, context: PriceContext = STANDARD
    ) -> UnitPrices | None:
        found = self._latest(self._entries.get((provider, model, context)), at)
        if found is None and context != STANDARD:
            found = self._latest(self._entries.get((provider, model, STANDARD)), at)
        return found

    def model_names(self, provider: str) -> list[str]:
        return sorted({model for p, model, _ in self._entries if p == provider})

    @staticmethod
    def _latest(entries: list[tuple[date, UnitPrices]] | None, at: datetime) -> UnitPrices | None:
        if not entries:
            return None
        index = bisect.bisect_right([start for start, _ in entries], at.date())
        return entries[index - 1][1] if index else None


class CatalogPrices:
    """Public prices from genai-prices, resolved once per (model, period, context)."""

    def __init__(self, cache_size: int = 65_536) -> None:
        from genai_prices.data_snapshot import get_snapshot

        self._snapshot = get_snapshot()
        self.source = f"genai-prices {version('genai-prices')}"
        self._models: dict[tuple[str, str], _CatalogModel | None] = {}
        self._cache: OrderedDict[
            tuple[str, str, date | datetime | None, PriceContext], UnitPrices | None
        ] = OrderedDict()
        self._cache_size = cache_size

    def resolve(
        self, provider: str, model: str, at: datetime, context: PriceContext = STANDARD
    ) -> UnitPrices | None:
        found = self._model_info(provider, model)
        if found is None:
            return None
        key = (provider, model, found.period(at, context), context)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        prices = self._resolve(found.info, at.astimezone(UTC), context)
        self._cache[key] = prices
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return prices

    def model_names(self, provider: str) -> list[str]:
        for candidate in self._snapshot.providers:
            if candidate.id == provider:
                return [model.id for model in candidate.models]
        return []

    def _resolve(self, model_info: Any, at: datetime, context: PriceContext) -> UnitPrices | None:
        standard = model_info.get_prices(at)
        if context == STANDARD:
            return self._unit_prices(standard, self.source)
        variant = model_info.get_prices(at, context.catalog())
        source = _with_context(self.source, context)
        if variant == standard:
            # No variant for this context (or an empty one): the standard rate,
            # and price_source says so.
            source = f"{source} (standard rate)"
        return self._unit_prices(variant, source)

    def _model_info(self, provider: str, model: str) -> _CatalogModel | None:
        key = (provider, model)
        if key not in self._models:
            try:
                info = self._snapshot.find_provider_model(model, None, provider, None)[1]
            except LookupError:
                self._models[key] = None
            else:
                self._models[key] = _CatalogModel(info)
        return self._models[key]

    @staticmethod
    def _unit_prices(model_price: Any, source: str) -> UnitPrices | None:
        fields = {
            "input": getattr(model_price, "input_mtok", None),
            "cached_input": getattr(model_price, "cache_read_mtok", None),
            "cache_write": getattr(model_price, "cache_write_mtok", None),
            "cache_write_1h": getattr(model_price, "cache_write_1h_mtok", None),
            "output": getattr(model_price, "output_mtok", None),
            "reasoning": getattr(model_price, "output_reasoning_mtok", None),
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
            p_write = pick(fields["cache_write"], p_input)
            return UnitPrices(
                input=p_input,
                cached_input=pick(fields["cached_input"], p_input),
                cache_write=p_write,
                output=p_output,
                reasoning=pick(fields["reasoning"], p_output),
                source=source,
                cache_write_1h=pick(fields["cache_write_1h"], p_write),
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
            source=source,
            cache_write_1h=base.cache_write_1h,
            tiers=tuple((start, at_level(start)) for start in thresholds),
        )


class _CatalogModel:
    """A catalog model and how finely its price can change over time: never, by
    UTC day (start dates), or by minute (time-of-day prices). The variants'
    constraints count only when a context is asked for."""

    def __init__(self, info: Any) -> None:
        self.info = info
        conditional = info.prices if isinstance(info.prices, list) else []
        self._standard = self._granularity([price.constraint for price in conditional])
        self._variants = self._granularity(
            [price.constraint for price in conditional]
            + [variant.constraint for variant in info.price_variants or ()]
        )

    @staticmethod
    def _granularity(constraints: list[Any]) -> str | None:
        kinds = {type(c).__name__ for c in constraints if c is not None}
        if "TimeOfDateConstraint" in kinds:
            return "minute"
        return "day" if kinds else None

    def period(self, at: datetime, context: PriceContext) -> date | datetime | None:
        granularity = self._standard if context == STANDARD else self._variants
        if granularity == "minute":
            return at.replace(second=0, microsecond=0)
        if granularity == "day":
            return at.astimezone(UTC).date()
        return None


class PriceCatalog:
    """Overrides first, then the public catalog. Provider and model match case-insensitively.

    `estimate` prices a model neither knows as its closest priced relative (or a
    configured fallback): see `streams.cost.estimates`.
    """

    def __init__(
        self,
        overrides: OverridePrices | None = None,
        catalog: CatalogPrices | None = None,
        estimate_fallbacks: dict[str, tuple[str, str]] | None = None,
    ):
        self.overrides = overrides
        self.catalog = catalog if catalog is not None else CatalogPrices()
        self.estimator = Estimator(self, estimate_fallbacks)

    @classmethod
    def load(cls, pricing_file: Path | None = None) -> PriceCatalog:
        if pricing_file is None:
            return cls()
        pricing = load_pricing_file(pricing_file)
        fallbacks = {
            provider: (ref.provider, ref.model)
            for provider, ref in pricing.estimate_fallbacks.items()
        }
        return cls(OverridePrices(pricing, f"override:{pricing_file.name}"), None, fallbacks)

    def model_names(self, provider: str) -> list[str]:
        """Every model the overrides and the catalog know for `provider`."""
        provider = provider.lower()
        names = self.catalog.model_names(provider)
        if self.overrides is not None:
            names = sorted({*names, *self.overrides.model_names(provider)})
        return names

    def estimate(
        self, provider: str, model: str, at: datetime, context: PriceContext = STANDARD
    ) -> UnitPrices | None:
        return self.estimator.estimate(provider, model, at, context)

    def resolve(
        self, provider: str, model: str, at: datetime, context: PriceContext = STANDARD
    ) -> UnitPrices | None:
        provider, model = provider.lower(), model.lower()
        if self.overrides is not None:
            prices = self.overrides.resolve(provider, model, at, context)
            if prices is not None:
                return prices
        return self.catalog.resolve(provider, model, at, context)
