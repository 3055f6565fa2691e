"""Price context: the tier that served a call, batch processing and 1-hour cache
writes select their own prices.

The independent oracle is genai-prices' own `calc_price` with the same
`price_context` (about 170 µs a call, fine in a test, never in the hot path): the
cost engine's cached unit prices and Decimal arithmetic must give the same
amount, to the last digit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from genai_prices.types import ModelInfo

from schemas.pricing import PriceEntry, PricingFile
from schemas.usage_event import UsageEvent
from streams.cost.catalog import (
    STANDARD,
    CatalogPrices,
    OverridePrices,
    PriceCatalog,
    PriceContext,
)
from streams.cost.rows import SourcePosition, price_event

# After every variant's start date in the catalog snapshot (priority 2026-10-12,
# batch 2026-10-14).
AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
D = Decimal
POSITION = SourcePosition("spendstream.usage", 0, 1)

TOKENS = {"input_tokens": 120_000, "cached_tokens": 40_000, "output_tokens": 9_000}


def oracle(provider: str, model: str, context: dict[str, str], **tokens: int) -> Decimal:
    usage = Usage(
        input_tokens=tokens["input_tokens"],
        cache_read_tokens=tokens.get("cached_tokens", 0),
        cache_write_tokens=tokens.get("cache_write_tokens", 0),
        cache_write_1h_tokens=tokens.get("cache_write_1h_tokens", 0),
        output_tokens=tokens.get("output_tokens", 0),
    )
    return calc_price(
        usage, model, provider_id=provider, genai_request_timestamp=AT, price_context=context
    ).total_price


def engine(
    catalog: CatalogPrices, provider: str, model: str, context: PriceContext, **tokens: int
) -> Decimal:
    prices = PriceCatalog(None, catalog).resolve(provider, model, AT, context)
    assert prices is not None
    return prices.cost(
        tokens["input_tokens"],
        tokens.get("cached_tokens", 0),
        tokens.get("cache_write_tokens", 0),
        tokens.get("output_tokens", 0),
        0,
        tokens.get("cache_write_1h_tokens", 0),
    ).total


@pytest.mark.parametrize(
    ("model", "tier", "batch", "catalog_context"),
    [
        ("gpt-5", "flex", False, {"service_tier": "flex"}),
        ("gpt-5", "priority", False, {"service_tier": "priority"}),
        ("gpt-5", "", True, {"processing": "batch"}),
        ("gpt-4o", "priority", False, {"service_tier": "priority"}),
        ("gpt-4o", "", True, {"processing": "batch"}),
    ],
)
def test_flex_priority_and_batch_calls_cost_the_catalogs_variant(
    catalog: CatalogPrices, model: str, tier: str, batch: bool, catalog_context: dict[str, str]
) -> None:
    context = PriceContext.of(tier, batch)
    assert context.catalog() == catalog_context
    standard = engine(catalog, "openai", model, STANDARD, **TOKENS)
    variant = engine(catalog, "openai", model, context, **TOKENS)
    assert variant == oracle("openai", model, catalog_context, **TOKENS)
    assert standard == oracle("openai", model, {}, **TOKENS)
    # The variant is really another price: flex and batch are cheaper, priority dearer.
    assert (variant < standard) if (tier == "flex" or batch) else (variant > standard)


def test_gpt_5_flex_unit_prices_are_half_the_standard(catalog: CatalogPrices) -> None:
    standard = catalog.resolve("openai", "gpt-5", AT)
    flex = catalog.resolve("openai", "gpt-5", AT, PriceContext.of("flex", False))
    assert standard is not None and flex is not None
    assert (flex.input, flex.output) == (standard.input / 2, standard.output / 2)
    assert flex.source == f"{catalog.source} service_tier=flex"
    assert standard.source == catalog.source


def test_anthropic_batch_with_1h_cache_writes_matches_the_oracle(catalog: CatalogPrices) -> None:
    tokens = {
        "input_tokens": 30_000,
        "cached_tokens": 10_000,
        "cache_write_tokens": 8_000,
        "cache_write_1h_tokens": 3_000,
        "output_tokens": 2_000,
    }
    for context, catalog_context in (
        (STANDARD, {}),
        (PriceContext.of("", True), {"processing": "batch"}),
    ):
        got = engine(catalog, "anthropic", "claude-sonnet-4-5", context, **tokens)
        assert got == oracle("anthropic", "claude-sonnet-4-5", catalog_context, **tokens)


def test_1h_cache_writes_are_priced_apart_from_5m_writes(catalog: CatalogPrices) -> None:
    p = catalog.resolve("anthropic", "claude-sonnet-4-5", AT)
    assert p is not None
    # claude-sonnet-4-5: cache write 3.75, 1-hour cache write 6.00 per MTok.
    assert (p.cache_write, p.cache_write_1h_price) == (D("3.75"), D(6))
    cost = p.cost(input_tokens=1_000, cache_write_tokens=1_000, cache_write_1h_tokens=400)
    # 600 x 3.75 + 400 x 6 = 2250 + 2400 = 4650 per 1e6
    assert cost.cache_write == D("0.00465")
    assert cost.total == D("0.00465")


def test_a_tier_without_a_variant_is_the_standard_rate_and_says_so(
    catalog: CatalogPrices,
) -> None:
    # gpt-4o has no flex variant.
    flex = catalog.resolve("openai", "gpt-4o", AT, PriceContext.of("flex", False))
    standard = catalog.resolve("openai", "gpt-4o", AT)
    assert flex is not None and standard is not None
    assert (flex.input, flex.output) == (standard.input, standard.output)
    assert flex.source == f"{catalog.source} service_tier=flex (standard rate)"


def test_standard_tier_names_share_the_standard_price() -> None:
    for name in ("", "default", "standard", "auto", "STANDARD", "on_demand"):
        assert PriceContext.of(name, False) == STANDARD
    assert PriceContext.of("Priority", False).service_tier == "priority"


def test_resolution_is_cached_per_model_day_and_context(
    catalog: CatalogPrices, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"get_prices": 0}
    original = ModelInfo.get_prices

    def counting(self: ModelInfo, *args: Any, **kwargs: Any) -> Any:
        calls["get_prices"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ModelInfo, "get_prices", counting)
    fresh = CatalogPrices()
    flex = PriceContext.of("flex", False)
    for minute in range(0, 600, 7):  # ten hours of one day
        at = AT.replace(hour=minute // 60, minute=minute % 60)
        assert fresh.resolve("openai", "gpt-5", at, flex) is not None
        assert fresh.resolve("openai", "gpt-5", at) is not None
    # gpt-5's standard price never changes: one resolution; the flex variant starts
    # on a date, so it is resolved once for the day (standard and variant: 2 calls).
    assert calls["get_prices"] == 1 + 2
    fresh.resolve("openai", "gpt-5", AT.replace(day=3), flex)
    assert calls["get_prices"] == 1 + 2 + 2


def overrides(*entries: dict[str, Any]) -> OverridePrices:
    return OverridePrices(
        PricingFile(prices=[PriceEntry.model_validate(e) for e in entries]), "override:rates.yaml"
    )


def test_the_pricing_file_can_price_a_tier_and_batch_apart() -> None:
    table = overrides(
        {"provider": "acme", "model": "m", "input": "2", "output": "8"},
        {"provider": "acme", "model": "m", "service_tier": "flex", "input": "1", "output": "4"},
        {"provider": "acme", "model": "m", "batch": True, "input": "0.5", "output": "2"},
    )
    standard = table.resolve("acme", "m", AT)
    flex = table.resolve("acme", "m", AT, PriceContext.of("flex", False))
    batch = table.resolve("acme", "m", AT, PriceContext.of("", True))
    priority = table.resolve("acme", "m", AT, PriceContext.of("priority", False))
    assert standard is not None and flex is not None and batch is not None
    assert priority is not None
    assert (standard.input, flex.input, batch.input) == (D(2), D(1), D("0.5"))
    assert flex.source == "override:rates.yaml service_tier=flex"
    assert batch.source == "override:rates.yaml processing=batch"
    # No priority entry: the model's general entry prices it.
    assert (priority.input, priority.source) == (D(2), "override:rates.yaml")


def event(**fields: Any) -> UsageEvent:
    return UsageEvent.model_validate(
        {
            "request_id": "r1",
            "timestamp": AT.isoformat(),
            "tenant_id": "acme",
            "provider": "openai",
            "model": "gpt-5",
            **fields,
        },
        context={"now": AT},
    )


def test_the_ledger_row_records_the_context_and_its_price(catalog: CatalogPrices) -> None:
    row = price_event(
        PriceCatalog(None, catalog),
        event(**TOKENS, service_tier="flex"),
        POSITION,
        AT,
    )
    assert row["service_tier"] == "flex" and row["batch"] is False
    assert row["cost_usd"] == oracle("openai", "gpt-5", {"service_tier": "flex"}, **TOKENS)
    assert row["price_source"].endswith("service_tier=flex")

    anthropic = price_event(
        PriceCatalog(None, catalog),
        event(
            provider="anthropic",
            model="claude-sonnet-4-5",
            input_tokens=5_000,
            cache_write_tokens=2_000,
            cache_write_1h_tokens=500,
            output_tokens=100,
            batch=True,
        ),
        POSITION,
        AT,
    )
    # Batch 1-hour cache write: 3.00 per MTok (half of 6.00).
    assert anthropic["price_cache_write_1h_per_mtok"] == D(3)
    assert anthropic["cache_write_1h_tokens"] == 500 and anthropic["batch"] is True
    assert anthropic["cost_usd"] == oracle(
        "anthropic",
        "claude-sonnet-4-5",
        {"processing": "batch"},
        input_tokens=5_000,
        cache_write_tokens=2_000,
        cache_write_1h_tokens=500,
        output_tokens=100,
    )


def test_the_event_rejects_more_1h_writes_than_writes() -> None:
    with pytest.raises(ValueError, match="cache_write_1h_tokens exceeds cache_write_tokens"):
        event(input_tokens=10, cache_write_tokens=2, cache_write_1h_tokens=3)
