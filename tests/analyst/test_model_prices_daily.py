"""model_prices_daily keeps each model's standard unit prices: a call priced at a
variant (flex, batch) does not stand for the model's price in the weekly review."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from clickhouse_connect.driver.client import Client

from schemas.ledger import LEDGER_COLUMNS
from schemas.usage_event import UsageEvent
from streams.cost.catalog import STANDARD_TIERS, CatalogPrices, PriceCatalog
from streams.cost.rows import SourcePosition, price_event
from tests.helpers.retention import keep_rows_of

SQL = Path(__file__).resolve().parents[2] / "sql" / "043_model_prices_standard.sql"


def test_the_view_names_the_catalogs_standard_tiers() -> None:
    listed = re.search(r"IN \(([^)]*)\)", SQL.read_text())
    assert listed is not None
    assert {name.strip().strip("'") for name in listed.group(1).split(",")} == STANDARD_TIERS


def test_a_later_flex_call_does_not_become_the_models_price(
    ch: Client, catalog: CatalogPrices
) -> None:
    at = datetime(2026, 11, 2, 9, tzinfo=UTC)
    prices = PriceCatalog(None, catalog)
    rows = []
    for request_id, offset, tier in (("std", 0, ""), ("flex", 60, "flex")):
        when = at + timedelta(minutes=offset)
        event = UsageEvent.model_validate(
            {
                "request_id": request_id,
                "timestamp": when.isoformat(),
                "tenant_id": "acme",
                "provider": "openai",
                "model": "gpt-5",
                "input_tokens": 100,
                "service_tier": tier,
            },
            context={"now": when},
        )
        row = price_event(prices, event, SourcePosition("spendstream.usage", 0, 0), when)
        rows.append([row[c] for c in LEDGER_COLUMNS])
    keep_rows_of(ch, [{"timestamp": at}])  # a fixed date, kept past the raw TTL
    ch.insert("usage_ledger", rows, column_names=list(LEDGER_COLUMNS))
    standard = prices.resolve("openai", "gpt-5", at)
    assert standard is not None
    latest = ch.query(
        "SELECT max(latest).1, max(latest).2.1 FROM model_prices_daily WHERE model = 'gpt-5'"
    ).result_rows
    assert latest == [(at.replace(tzinfo=None), standard.input)]
    assert standard.input == Decimal("1.25")
