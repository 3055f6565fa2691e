"""Cost engine: catalog prices, overrides, effective dates, tiers, exact Decimal arithmetic.

Expected costs are computed by hand in the comments (USD per million tokens), and
the catalog numbers they rely on are asserted first, so a catalog update shows up
as a clear price change rather than as an arithmetic failure.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from genai_prices.types import ModelInfo

from schemas.pricing import PriceEntry, PricingFile
from streams.cost.catalog import (
    CatalogPrices,
    OverridePrices,
    PriceCatalog,
    UnitPrices,
)

AT = datetime(2025, 10, 1, 12, 0, tzinfo=UTC)
D = Decimal


def overrides(*entries: dict[str, Any], source: str = "override:test.yaml") -> OverridePrices:
    return OverridePrices(
        PricingFile(prices=[PriceEntry.model_validate(e) for e in entries]), source
    )


def prices_tuple(p: UnitPrices) -> tuple[Decimal, ...]:
    return (p.input, p.cached_input, p.cache_write, p.output, p.reasoning)


# --- catalog numbers -------------------------------------------------------------------


def test_catalog_gpt_4o_mini_prices(catalog: CatalogPrices) -> None:
    p = catalog.resolve("openai", "gpt-4o-mini", AT)
    assert p is not None
    # input 0.15, cached 0.075, output 0.60; no cache-write price, so it defaults to input.
    assert prices_tuple(p) == (D("0.15"), D("0.075"), D("0.15"), D("0.60"), D("0.60"))
    assert p.source.startswith("genai-prices ")
    assert p.tiers == ()


def test_catalog_claude_sonnet_4_5_prices_and_200k_tier(catalog: CatalogPrices) -> None:
    p = catalog.resolve("anthropic", "claude-sonnet-4-5", AT)
    assert p is not None
    assert prices_tuple(p) == (D(3), D("0.30"), D("3.75"), D(15), D(15))
    assert len(p.tiers) == 1
    start, tier = p.tiers[0]
    assert start == 200_000
    assert prices_tuple(tier) == (D(6), D("0.60"), D("7.50"), D("22.50"), D("22.50"))


# --- cost arithmetic against hand-computed values ------------------------------------------


def test_openai_style_usage_with_cache_reads(catalog: CatalogPrices) -> None:
    p = catalog.resolve("openai", "gpt-4o-mini", AT)
    assert p is not None
    cost = p.cost(input_tokens=10_000, cached_tokens=4_000, output_tokens=1_000)
    # (10,000 - 4,000) * 0.15 = 900; 4,000 * 0.075 = 300; 1,000 * 0.60 = 600  (per 1e6)
    assert cost.input == D("0.0009")
    assert cost.cached_input == D("0.0003")
    assert cost.cache_write == D(0)
    assert cost.output == D("0.0006")
    assert cost.reasoning == D(0)
    assert cost.total == D("0.0018")


def test_anthropic_style_usage_with_cache_writes(catalog: CatalogPrices) -> None:
    p = catalog.resolve("anthropic", "claude-sonnet-4-5", AT)
    assert p is not None
    cost = p.cost(
        input_tokens=150_000, cached_tokens=30_000, cache_write_tokens=20_000, output_tokens=2_000
    )
    # 100,000 * 3 = 300,000; 30,000 * 0.30 = 9,000; 20,000 * 3.75 = 75,000;
    # 2,000 * 15 = 30,000 → 414,000 / 1e6
    assert (cost.input, cost.cached_input, cost.cache_write, cost.output) == (
        D("0.3"),
        D("0.009"),
        D("0.075"),
        D("0.03"),
    )
    assert cost.total == D("0.414")


def test_tier_cliff_at_200k_input_tokens(catalog: CatalogPrices) -> None:
    p = catalog.resolve("anthropic", "claude-sonnet-4-5", AT)
    assert p is not None
    # 200,000 * 3 + 1,000 * 15 = 615,000 → base prices
    assert p.cost(input_tokens=200_000, output_tokens=1_000).total == D("0.615")
    # One token more and every token pays the tier: 200,001 * 6 + 1,000 * 22.5 = 1,222,506
    assert p.cost(input_tokens=200_001, output_tokens=1_000).total == D("1.222506")
    # Cache reads and output switch too: 100,001 * 6 + 100,000 * 0.6 + 1,000 * 22.5 = 682,506
    assert p.cost(input_tokens=200_001, cached_tokens=100_000, output_tokens=1_000).total == D(
        "0.682506"
    )
    assert p.for_input(200_000) is p
    assert p.for_input(200_001).input == D(6)


@pytest.mark.parametrize(
    ("model", "provider", "usage"),
    [
        (
            "gpt-4o-mini",
            "openai",
            {"input_tokens": 10_000, "cache_read_tokens": 4_000, "output_tokens": 1_000},
        ),
        (
            "claude-sonnet-4-5",
            "anthropic",
            {
                "input_tokens": 150_000,
                "cache_read_tokens": 30_000,
                "cache_write_tokens": 20_000,
                "output_tokens": 2_000,
            },
        ),
        (
            "claude-sonnet-4-5",
            "anthropic",
            {"input_tokens": 200_001, "cache_read_tokens": 100_000, "output_tokens": 1_000},
        ),
    ],
    ids=["openai-cache-read", "anthropic-cache-write", "anthropic-tier"],
)
def test_costs_agree_with_genai_prices_calc_price(
    catalog: CatalogPrices, model: str, provider: str, usage: dict[str, int]
) -> None:
    # An independent oracle: genai-prices' own (slow) calculation, same convention.
    expected = calc_price(
        Usage(**usage), model, provider_id=provider, genai_request_timestamp=AT
    ).total_price
    p = catalog.resolve(provider, model, AT)
    assert p is not None
    cost = p.cost(
        input_tokens=usage["input_tokens"],
        cached_tokens=usage.get("cache_read_tokens", 0),
        cache_write_tokens=usage.get("cache_write_tokens", 0),
        output_tokens=usage["output_tokens"],
    )
    assert cost.total == expected


def test_reasoning_model_with_distinct_reasoning_price() -> None:
    p = overrides(
        {"provider": "openai", "model": "o-private", "input": "2", "output": "8", "reasoning": "12"}
    ).resolve("openai", "o-private", AT)
    assert p is not None
    cost = p.cost(input_tokens=1_000, output_tokens=5_000, reasoning_tokens=4_000)
    # 1,000 * 2 = 2,000; (5,000 - 4,000) * 8 = 8,000; 4,000 * 12 = 48,000 → 58,000 / 1e6
    assert (cost.input, cost.output, cost.reasoning) == (D("0.002"), D("0.008"), D("0.048"))
    assert cost.total == D("0.058")


def test_cost_is_exact_with_18_decimal_places() -> None:
    p = UnitPrices(D("0.000001"), D("0.000001"), D("0.000001"), D("0.000001"), D("0.000001"), "t")
    cost = p.cost(input_tokens=1, output_tokens=3)
    # 1 token at 1e-6 USD per million tokens is 1e-12 USD: nothing may round away.
    assert cost.input == D("1E-12")
    assert cost.total == D("4E-12")
    assert isinstance(cost.total, Decimal)


def test_cost_of_maximum_tokens_at_a_high_price_is_exact() -> None:
    p = UnitPrices(D("123.456789"), D("1"), D("1"), D("987.654321"), D("1"), "t")
    cost = p.cost(input_tokens=10_000_000, output_tokens=10_000_000)
    assert cost.total == D("1234.56789") + D("9876.54321")


# --- overrides --------------------------------------------------------------------------


def test_override_wins_over_the_catalog(catalog: CatalogPrices) -> None:
    prices = PriceCatalog(
        overrides(
            {"provider": "openai", "model": "gpt-4o-mini", "input": "0.10", "output": "0.40"}
        ),
        catalog,
    )
    p = prices.resolve("openai", "gpt-4o-mini", AT)
    assert p is not None
    assert (p.input, p.output, p.source) == (D("0.10"), D("0.40"), "override:test.yaml")
    # Models the file does not name still come from the catalog.
    other = prices.resolve("openai", "gpt-4o", AT)
    assert other is not None
    assert other.source == catalog.source


def test_override_defaults_cached_and_cache_write_to_input_and_reasoning_to_output() -> None:
    p = overrides({"provider": "p", "model": "m", "input": "1.5", "output": "6"}).resolve(
        "p", "m", AT
    )
    assert p is not None
    assert prices_tuple(p) == (D("1.5"), D("1.5"), D("1.5"), D(6), D(6))
    cost = p.cost(
        input_tokens=1_000,
        cached_tokens=200,
        cache_write_tokens=300,
        output_tokens=100,
        reasoning_tokens=40,
    )
    # 500 * 1.5 + 200 * 1.5 + 300 * 1.5 + 60 * 6 + 40 * 6 = 1,500 + 600 = 2,100
    assert cost.total == D("0.0021")


def test_model_and_provider_match_case_insensitively_but_exactly(catalog: CatalogPrices) -> None:
    prices = PriceCatalog(
        overrides({"provider": "OpenAI", "model": "GPT-4o-Mini", "input": "0.1", "output": "0.4"}),
        catalog,
    )
    p = prices.resolve("openai", "gpt-4o-MINI", AT)
    assert p is not None
    assert p.source == "override:test.yaml"
    # A dated variant is a different model for the override: it falls to the catalog.
    dated = prices.resolve("openai", "gpt-4o-mini-2024-07-18", AT)
    assert dated is not None
    assert dated.source == catalog.source


def test_unknown_model_is_unpriced(catalog: CatalogPrices) -> None:
    prices = PriceCatalog(None, catalog)
    assert prices.resolve("openai", "no-such-model-xyz", AT) is None
    assert prices.resolve("no-such-provider", "gpt-4o-mini", AT) is None


# --- effective_from ---------------------------------------------------------------------

DATED = (
    # Listed out of order on purpose: the file's order must not matter.
    {
        "provider": "acme",
        "model": "negotiated",
        "effective_from": "2026-03-01",
        "input": "2",
        "output": "2",
    },
    {
        "provider": "acme",
        "model": "negotiated",
        "effective_from": "2026-01-01",
        "input": "1",
        "output": "1",
    },
    {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "effective_from": "2026-01-01",
        "input": "0.1",
        "output": "0.4",
    },
)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (datetime(2025, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC), None),
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), D(1)),
        (datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC), D(1)),
        (datetime(2026, 3, 1, 0, 0, tzinfo=UTC), D(2)),
        (datetime(2027, 1, 1, tzinfo=UTC), D(2)),
    ],
    ids=["day-before", "the-day", "last-day-of-first", "second-entry", "long-after"],
)
def test_effective_from_picks_the_latest_entry_not_after_the_event(
    catalog: CatalogPrices, at: datetime, expected: Decimal | None
) -> None:
    p = PriceCatalog(overrides(*DATED), catalog).resolve("acme", "negotiated", at)
    # Before any entry a private model has no price at all.
    assert (p.input if p else None) == expected


def test_event_before_any_entry_falls_back_to_the_catalog(catalog: CatalogPrices) -> None:
    prices = PriceCatalog(overrides(*DATED), catalog)
    before = prices.resolve("openai", "gpt-4o-mini", datetime(2025, 12, 31, 23, 59, tzinfo=UTC))
    on = prices.resolve("openai", "gpt-4o-mini", datetime(2026, 1, 1, tzinfo=UTC))
    assert before is not None and on is not None
    assert (before.input, before.source) == (D("0.15"), catalog.source)
    assert (on.input, on.source) == (D("0.1"), "override:test.yaml")


def test_entry_without_effective_from_applies_until_a_dated_one() -> None:
    table = overrides(
        {"provider": "p", "model": "m", "input": "5", "output": "5"},
        {
            "provider": "p",
            "model": "m",
            "effective_from": date(2026, 6, 1),
            "input": "4",
            "output": "4",
        },
    )
    early = table.resolve("p", "m", datetime(2000, 1, 1, tzinfo=UTC))
    late = table.resolve("p", "m", datetime(2026, 6, 1, tzinfo=UTC))
    assert early is not None and late is not None
    assert (early.input, late.input) == (D(5), D(4))


def test_price_catalog_load_reads_the_pricing_file(tmp_path: Path) -> None:
    path = tmp_path / "rates.yaml"
    path.write_text("prices:\n  - {provider: acme, model: private-1, input: 1.25, output: 5}\n")
    p = PriceCatalog.load(path).resolve("ACME", "Private-1", AT)
    assert p is not None
    assert (p.input, p.output, p.source) == (D("1.25"), D(5), "override:rates.yaml")


# --- the hot path -----------------------------------------------------------------------


def test_catalog_resolves_each_model_once_and_never_calls_calc_price(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = {"get_prices": 0, "calc_price": 0}
    original = ModelInfo.get_prices

    def counting_get_prices(self: ModelInfo, *args: Any, **kwargs: Any) -> Any:
        calls["get_prices"] += 1
        return original(self, *args, **kwargs)

    def forbidden_calc_price(self: ModelInfo, *args: Any, **kwargs: Any) -> Any:
        calls["calc_price"] += 1
        raise AssertionError("calc_price called in the hot path")

    monkeypatch.setattr(ModelInfo, "get_prices", counting_get_prices)
    monkeypatch.setattr(ModelInfo, "calc_price", forbidden_calc_price)
    prices = PriceCatalog(None, CatalogPrices())
    for i in range(1_000):
        p = prices.resolve("openai", "gpt-4o-mini", AT + timedelta(minutes=i))
        assert p is not None
        p.cost(input_tokens=1_000, output_tokens=100)
    assert calls == {"get_prices": 1, "calc_price": 0}
