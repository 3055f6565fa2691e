"""Unpriced spend as money: a call to a model with no price is estimated from its
closest priced relative (or a configured fallback), kept apart from known cost."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from genai_prices import Usage, calc_price

from schemas.ledger import LedgerRow
from schemas.usage_event import UsageEvent
from streams.cost.catalog import CatalogPrices, PriceCatalog
from streams.cost.estimates import closest, family
from streams.cost.rows import SourcePosition, price_event

AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
POSITION = SourcePosition("spendstream.usage", 0, 7)
D = Decimal


def event(**fields: Any) -> UsageEvent:
    return UsageEvent.model_validate(
        {
            "request_id": "r-est",
            "timestamp": AT.isoformat(),
            "tenant_id": "acme",
            "input_tokens": 20_000,
            "cached_tokens": 5_000,
            "output_tokens": 3_000,
            **fields,
        },
        context={"now": AT},
    )


def test_family_and_closest_by_name() -> None:
    assert family("claude-sonnet-9-20310101") == "claude-sonnet"
    assert family("4o") == ""
    models = ["claude-sonnet-4-5", "claude-sonnet-5-5", "claude-opus-5", "claude-haiku-5-5"]
    assert closest("claude-sonnet-9", models) == "claude-sonnet-5-5"
    assert closest("claude-haiku-9", models) == "claude-haiku-5-5"
    assert closest("gemini-9-flash", ["gemini-3.8-flash-tts", "gemini-3.8-flash"]) == (
        "gemini-3.8-flash"
    )
    # No model of the family: no estimate from the catalog.
    assert closest("mistral-huge-9", models) is None


def test_an_unknown_model_is_estimated_as_its_closest_priced_relative(
    catalog: CatalogPrices,
) -> None:
    row = price_event(
        PriceCatalog(None, catalog),
        event(provider="anthropic", model="claude-sonnet-9"),
        POSITION,
        AT,
    )
    assert row["cost_status"] == "estimated"
    assert row["cost_usd"] == D(0)  # known money only
    assert row["price_source"] == ""
    assert row["estimate_source"] == f"estimate:anthropic/claude-sonnet-5-5 {catalog.source}"
    # Independent: genai-prices' own calc_price for the model the estimate names.
    expected = calc_price(
        Usage(input_tokens=20_000, cache_read_tokens=5_000, output_tokens=3_000),
        "claude-sonnet-5-5",
        provider_id="anthropic",
        genai_request_timestamp=AT,
    ).total_price
    assert row["estimated_cost_usd"] == expected > 0
    assert LedgerRow.model_validate(row).cost_status == "estimated"


def test_the_estimate_is_priced_in_the_calls_own_context(catalog: CatalogPrices) -> None:
    prices = PriceCatalog(None, catalog)
    standard = price_event(prices, event(provider="openai", model="gpt-9-mini"), POSITION, AT)
    flex = price_event(
        prices, event(provider="openai", model="gpt-9-mini", service_tier="flex"), POSITION, AT
    )
    assert standard["estimate_source"].startswith("estimate:openai/gpt-")
    substitute = standard["estimate_source"].split()[0].split("/")[1]
    expected = calc_price(
        Usage(input_tokens=20_000, cache_read_tokens=5_000, output_tokens=3_000),
        substitute,
        provider_id="openai",
        genai_request_timestamp=AT,
        price_context={"service_tier": "flex"},
    ).total_price
    assert flex["estimated_cost_usd"] == expected < standard["estimated_cost_usd"]
    assert flex["estimate_source"].endswith("service_tier=flex")


def test_a_configured_fallback_estimates_a_provider_the_catalog_lacks(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rates.yaml"
    path.write_text(
        "prices:\n"
        "  - {provider: acme, model: house-large, input: 4, output: 16}\n"
        "estimate_fallbacks:\n"
        "  '*': {provider: acme, model: house-large}\n"
    )
    row = price_event(
        PriceCatalog.load(path),
        event(provider="inhouse", model="llm-v9", cached_tokens=0),
        POSITION,
        AT,
    )
    # 20,000 x 4 + 3,000 x 16 = 80,000 + 48,000 per 1e6
    assert (row["cost_status"], row["estimated_cost_usd"]) == ("estimated", D("0.128"))
    assert row["estimate_source"] == "estimate:acme/house-large override:rates.yaml"


def test_with_no_relative_and_no_fallback_the_call_stays_unpriced(
    catalog: CatalogPrices,
) -> None:
    row = price_event(
        PriceCatalog(None, catalog), event(provider="inhouse", model="llm-v9"), POSITION, AT
    )
    assert (row["cost_status"], row["estimated_cost_usd"], row["estimate_source"]) == (
        "unpriced",
        D(0),
        "",
    )


def test_module_doctests_pass() -> None:
    import doctest

    import streams.cost.estimates

    result = doctest.testmod(streams.cost.estimates)
    assert result.attempted > 0 and result.failed == 0
