"""ledger_row / price_event: a validated event becomes one priced (or unpriced) ledger row."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from schemas.ledger import LEDGER_COLUMNS, LedgerRow
from schemas.pricing import PriceEntry, PricingFile
from schemas.usage_event import UsageEvent
from streams.cost.catalog import CatalogPrices, OverridePrices, PriceCatalog
from streams.cost.rows import SourcePosition, ledger_row, price_event

D = Decimal
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
INGESTED = datetime(2026, 3, 4, 12, 0, 5, tzinfo=UTC)
POSITION = SourcePosition("spendstream.usage", 3, 4242)
COMPUTED_MONEY = tuple(
    c for c in LEDGER_COLUMNS if c.endswith(("_usd", "_per_mtok")) and c != "reported_cost_usd"
)


def usage(**fields: Any) -> UsageEvent:
    data: dict[str, Any] = {
        "request_id": "req-1",
        "timestamp": "2026-03-04T10:00:00Z",
        "tenant_id": "acme",
        "team_id": "search",
        "workflow_id": "summarize",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 10_000,
        "cached_tokens": 4_000,
        "output_tokens": 1_000,
        "reported_cost_usd": "0.0018",
        "tags": {"env": "prod"},
    }
    data.update(fields)
    return UsageEvent.model_validate(data, context={"now": NOW})


def override_catalog(catalog: CatalogPrices, *entries: dict[str, Any]) -> PriceCatalog:
    pricing = PricingFile(prices=[PriceEntry.model_validate(e) for e in entries])
    return PriceCatalog(OverridePrices(pricing, "override:prices.yaml"), catalog)


def test_row_has_exactly_the_ledger_columns_and_validates_as_a_ledger_row(
    catalog: CatalogPrices,
) -> None:
    row = price_event(PriceCatalog(None, catalog), usage(), POSITION, INGESTED)
    assert set(row) == set(LEDGER_COLUMNS)
    assert LedgerRow.model_validate(row).model_dump() == row


def test_priced_row_records_components_total_unit_prices_and_source(
    catalog: CatalogPrices,
) -> None:
    row = price_event(PriceCatalog(None, catalog), usage(), POSITION, INGESTED)
    # gpt-4o-mini: 6,000 * 0.15 + 4,000 * 0.075 + 1,000 * 0.60 = 1,800 / 1e6
    assert row["cost_status"] == "priced"
    assert (
        row["cost_input_usd"],
        row["cost_cached_input_usd"],
        row["cost_cache_write_usd"],
        row["cost_output_usd"],
        row["cost_reasoning_usd"],
    ) == (D("0.0009"), D("0.0003"), D(0), D("0.0006"), D(0))
    assert row["cost_usd"] == D("0.0018")
    assert (
        row["price_input_per_mtok"],
        row["price_cached_input_per_mtok"],
        row["price_cache_write_per_mtok"],
        row["price_output_per_mtok"],
        row["price_reasoning_per_mtok"],
    ) == (D("0.15"), D("0.075"), D("0.15"), D("0.6"), D("0.6"))
    assert row["price_source"] == catalog.source
    assert len(COMPUTED_MONEY) == 13
    assert all(isinstance(row[c], Decimal) for c in COMPUTED_MONEY)


def test_row_copies_event_dimensions_and_source_position(catalog: CatalogPrices) -> None:
    row = price_event(PriceCatalog(None, catalog), usage(), POSITION, INGESTED)
    assert row["request_id"] == "req-1"
    assert row["timestamp"] == datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    assert (row["tenant_id"], row["team_id"], row["workflow_id"]) == ("acme", "search", "summarize")
    assert (row["input_tokens"], row["cached_tokens"], row["output_tokens"]) == (
        10_000,
        4_000,
        1_000,
    )
    assert row["reported_cost_usd"] == D("0.0018")
    assert row["tags"] == {"env": "prod"}
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
        "spendstream.usage",
        3,
        4242,
    )
    assert row["ingested_at"] == INGESTED


def test_reported_cost_is_kept_but_never_used_as_the_cost(catalog: CatalogPrices) -> None:
    row = price_event(
        PriceCatalog(None, catalog), usage(reported_cost_usd="99"), POSITION, INGESTED
    )
    assert row["reported_cost_usd"] == D(99)
    assert row["cost_usd"] == D("0.0018")


def test_unknown_model_is_ledgered_unpriced_with_zero_cost(catalog: CatalogPrices) -> None:
    event = usage(model="in-house-llm-v9", provider="acme-internal")
    row = price_event(PriceCatalog(None, catalog), event, POSITION, INGESTED)
    assert row["cost_status"] == "unpriced"
    assert row["cost_usd"] == D(0)
    assert {c: row[c] for c in COMPUTED_MONEY} == dict.fromkeys(COMPUTED_MONEY, D(0))
    assert row["price_source"] == ""
    # The usage itself is kept, so the row can be re-priced when a price appears.
    assert (row["input_tokens"], row["output_tokens"]) == (10_000, 1_000)
    assert LedgerRow.model_validate(row).cost_status == "unpriced"


def test_ledger_row_without_prices_is_unpriced() -> None:
    row = ledger_row(usage(), None, POSITION, INGESTED)
    assert (row["cost_status"], row["cost_usd"]) == ("unpriced", D(0))


def test_override_is_used_and_named_in_the_row(catalog: CatalogPrices) -> None:
    prices = override_catalog(
        catalog,
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input": "0.1",
            "cached_input": "0.01",
            "output": "0.4",
        },
    )
    row = price_event(prices, usage(), POSITION, INGESTED)
    # 6,000 * 0.1 + 4,000 * 0.01 + 1,000 * 0.4 = 600 + 40 + 400 = 1,040
    assert row["cost_usd"] == D("0.00104")
    assert row["price_source"] == "override:prices.yaml"
    assert row["price_input_per_mtok"] == D("0.1")


def test_prices_are_resolved_at_the_event_timestamp(catalog: CatalogPrices) -> None:
    prices = override_catalog(
        catalog,
        {
            "provider": "acme",
            "model": "private",
            "effective_from": "2026-03-04",
            "input": "2",
            "output": "2",
        },
        {
            "provider": "acme",
            "model": "private",
            "effective_from": "2026-03-01",
            "input": "1",
            "output": "1",
        },
    )
    before = usage(provider="acme", model="private", timestamp="2026-03-03T23:59:59Z")
    on = usage(provider="acme", model="private", timestamp="2026-03-04T00:00:00Z")
    # 11,000 tokens at 1 or at 2 USD per million
    assert price_event(prices, before, POSITION, INGESTED)["cost_usd"] == D("0.011")
    assert price_event(prices, on, POSITION, INGESTED)["cost_usd"] == D("0.022")


def test_tiered_row_records_the_tier_prices_it_used(catalog: CatalogPrices) -> None:
    event = usage(
        provider="anthropic",
        model="claude-sonnet-4-5",
        input_tokens=200_001,
        cached_tokens=0,
        output_tokens=1_000,
    )
    row = price_event(PriceCatalog(None, catalog), event, POSITION, INGESTED)
    assert (row["price_input_per_mtok"], row["price_output_per_mtok"]) == (D(6), D("22.5"))
    # 200,001 * 6 + 1,000 * 22.5 = 1,222,506
    assert row["cost_usd"] == D("1.222506")
    assert row["cost_usd"] == sum(
        row[c]
        for c in (
            "cost_input_usd",
            "cost_cached_input_usd",
            "cost_cache_write_usd",
            "cost_output_usd",
            "cost_reasoning_usd",
        )
    )


def test_every_event_field_becomes_a_ledger_column() -> None:
    # ledger_row copies the validated event's __dict__: its fields must be the
    # event part of the ledger's columns, no more and no less.
    from schemas.ledger import LEDGER_COLUMNS
    from schemas.usage_event import UsageEvent
    from streams.cost.rows import _EVENT_FIELDS

    assert set(UsageEvent.model_fields) == set(_EVENT_FIELDS)
    assert set(_EVENT_FIELDS) <= set(LEDGER_COLUMNS)
