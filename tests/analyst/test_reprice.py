"""Re-pricing writes correction rows, never rewrites the ledger, and every view,
report and export shows the corrected totals."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from schemas.ledger import CORRECTION_COLUMNS, LEDGER_COLUMNS, CostCorrectionRow
from schemas.usage_event import UsageEvent
from streams.analyst.chargeback import build_chargeback, render
from streams.analyst.focus_export import query_focus
from streams.analyst.periods import Period, date_range, iso_week, month
from streams.analyst.reprice import reprice
from streams.analyst.weekly_render import render_markdown
from streams.analyst.weekly_review import build_weekly_review
from streams.cost.catalog import CatalogPrices, PriceCatalog
from streams.cost.rows import SourcePosition, price_event
from streams.ledger.remote import DirectReader
from tests.analyst import ledger_data as data
from tests.helpers.retention import keep_rows_of

D = Decimal
NEW_PRICES = data.NEW_PRICES
ALL_DAYS = date_range(str(data.FIRST_DAY), str(data.LAST_DAY))


Events = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def ingest_and_reprice(ch: Client, tmp_path: Path) -> Events:
    """The ledger as ingested, re-priced under NEW_PRICES: (old events, new events)."""
    events = data.make_events()
    data.insert(ch, events, token="batch-1")
    catalog = PriceCatalog.load(data.pricing_file(tmp_path, NEW_PRICES))
    now = datetime(2026, 11, 23, 9, tzinfo=UTC)
    result = reprice(ch, catalog, ALL_DAYS, reason="gpt-4o price change", now=now)
    new_events = [data.price(dict(event), NEW_PRICES) for event in events]
    changed = [
        old
        for old, new in zip(events, new_events, strict=True)
        if old["cost_usd"] != new["cost_usd"]
    ]
    assert result.corrections == len(changed) > 0
    assert result.newly_priced == sum(1 for e in events if e["cost_status"] == "unpriced") > 0
    assert result.delta_usd == sum((n["cost_usd"] for n in new_events), D(0)) - sum(
        (e["cost_usd"] for e in events), D(0)
    )
    return events, new_events


@pytest.fixture(scope="module")
def repriced(module_ch: Client, tmp_path_factory: pytest.TempPathFactory) -> Events:
    # Shared by the tests below, which only read (or, re-running, must write nothing).
    return ingest_and_reprice(module_ch, tmp_path_factory.mktemp("pricing"))


def month_total(events: list[dict[str, Any]], period: Period) -> Decimal:
    return sum(
        (e["cost_usd"] for e in events if period.start <= e["timestamp"].date() <= period.end),
        D(0),
    )


def test_corrections_net_to_the_new_totals_in_every_view(
    module_ch: Client, repriced: Events
) -> None:
    ch = module_ch
    _, new_events = repriced
    for view, key in (
        ("tenant_daily", lambda e: (e["timestamp"].date(), e["tenant_id"])),
        ("model_daily", lambda e: (e["timestamp"].date(), e["provider"], e["model"])),
        ("workflow_daily", lambda e: (e["timestamp"].date(), e["tenant_id"], e["workflow_id"])),
    ):
        expected = {k: v["cost_usd"] for k, v in data.group(new_events, key).items()}
        columns = {
            "tenant_daily": "day, tenant_id",
            "model_daily": "day, provider, model",
            "workflow_daily": "day, tenant_id, workflow_id",
        }[view]
        rows = ch.query(f"SELECT {columns}, sum(cost_usd) FROM {view} GROUP BY ALL").result_rows
        assert {tuple(row[:-1]): row[-1] for row in rows} == expected, view
    per_day = {
        k[0]: v["cost_usd"]
        for k, v in data.group(new_events, lambda e: (e["timestamp"].date(),)).items()
    }
    for view in (
        "tenant_hourly", "team_daily", "user_daily", "feature_daily",
        "spend_daily", "workflow_run_daily",
    ):  # fmt: skip
        day = "toDate(hour)" if view == "tenant_hourly" else "day"
        rows = ch.query(f"SELECT {day} AS d, sum(cost_usd) FROM {view} GROUP BY d").result_rows
        assert dict(rows) == per_day, view


def test_ledger_rows_stay_as_they_were(module_ch: Client, repriced: Events) -> None:
    ch = module_ch
    events, _ = repriced
    rows = ch.query("SELECT request_id, cost_usd, cost_status FROM usage_ledger FINAL").result_rows
    assert {r: (cost, status) for r, cost, status in rows} == {
        e["request_id"]: (e["cost_usd"], e["cost_status"]) for e in events
    }


def test_corrections_are_an_audit_trail(module_ch: Client, repriced: Events) -> None:
    ch = module_ch
    events, new_events = repriced
    by_id = {e["request_id"]: (e, n) for e, n in zip(events, new_events, strict=True)}
    rows = ch.query(
        "SELECT request_id, old_cost_usd, new_cost_usd, delta_cost_usd, old_cost_status, "
        "new_cost_status, new_price_output_per_mtok, reason, corrected_at FROM cost_corrections"
    ).result_rows
    # One correction row per event whose cost changed, and no other.
    changed = [e["request_id"] for e, n in zip(events, new_events, strict=True) if e != n]
    changed = [rid for rid in changed if by_id[rid][0]["cost_usd"] != by_id[rid][1]["cost_usd"]]
    assert sorted(row[0] for row in rows) == sorted(changed) and changed
    for request_id, old, new, delta, old_status, new_status, output_price, reason, at in rows:
        before, after = by_id[request_id]
        assert (old, new, delta) == (before["cost_usd"], after["cost_usd"], new - old)
        assert (old_status, new_status) == (before["cost_status"], "priced")
        assert output_price == after["price_output_per_mtok"]
        assert reason == "gpt-4o price change"
        assert at == datetime(2026, 11, 23, 9)


def test_each_correction_is_a_row_of_the_model_in_its_column_order(
    module_ch: Client, repriced: Events
) -> None:
    # The writer builds rows by position; the model gives the columns and their types.
    result = DirectReader(module_ch).query(
        f"SELECT {', '.join(CORRECTION_COLUMNS)} FROM cost_corrections FINAL"
    )
    assert result.result_rows
    for row in result.result_rows:
        correction = CostCorrectionRow.model_validate(
            dict(zip(CORRECTION_COLUMNS, row, strict=True))
        )
        parts = ("input", "cached_input", "cache_write", "output", "reasoning")
        assert correction.delta_cost_usd == correction.new_cost_usd - correction.old_cost_usd
        assert correction.new_cost_usd == sum(
            (getattr(correction, f"new_cost_{p}_usd") for p in parts), D(0)
        )


def test_rerunning_with_unchanged_prices_writes_nothing(
    module_ch: Client, tmp_path: Path, repriced: Events
) -> None:
    ch = module_ch
    before = ch.query("SELECT count() FROM cost_corrections").result_rows
    again = reprice(ch, PriceCatalog.load(data.pricing_file(tmp_path, NEW_PRICES)), ALL_DAYS)
    assert (again.corrections, again.delta_usd) == (0, 0)
    assert ch.query("SELECT count() FROM cost_corrections").result_rows == before


def test_chargeback_and_focus_show_the_corrected_month(module_ch: Client, repriced: Events) -> None:
    ch = module_ch
    events, new_events = repriced
    november = month("2026-11")
    report = build_chargeback(ch, november, "tenant")
    assert report.total == month_total(new_events, november)

    charges = query_focus(DirectReader(ch), november).to_pylist()
    corrections = [c for c in charges if c["ChargeClass"] == "Correction"]
    usage = [c for c in charges if c["ChargeClass"] is None]
    assert sum((c["BilledCost"] for c in usage), D(0)) == month_total(events, november)
    assert sum((c["BilledCost"] for c in charges), D(0)) == month_total(new_events, november)
    assert corrections and all(c["ConsumedQuantity"] == 0 for c in corrections)
    assert {c["SkuMeter"] for c in corrections} >= {"Output Tokens", "Input Tokens"}
    assert all(c["x_CorrectionReason"] == "gpt-4o price change" for c in corrections)
    assert {c["ChargePeriodStart"].date() for c in corrections} <= {
        d for d in november.days if d <= date(2026, 11, 22)
    }


# Last: it empties the module's ledger, which the tests above share.
def test_a_second_price_change_corrects_the_corrected_cost(ch: Client, tmp_path: Path) -> None:
    _, new_events = ingest_and_reprice(ch, tmp_path)
    third = {**NEW_PRICES, ("openai", "gpt-4o"): data.PRICES[("openai", "gpt-4o")]}
    reprice(ch, PriceCatalog.load(data.pricing_file(tmp_path, third)), ALL_DAYS)
    expected = sum((data.price(dict(e), third)["cost_usd"] for e in new_events), D(0))
    assert ch.query("SELECT sum(cost_usd) FROM tenant_daily").result_rows == [(expected,)]


def test_repricing_keeps_each_rows_price_context(ch: Client, catalog: CatalogPrices) -> None:
    # A flex call and a batch call priced at their variants by ingest; the catalog is
    # unchanged, so re-pricing must find nothing to correct (priced at the standard
    # rate, each would get a correction doubling its cost).
    at = datetime(2026, 11, 2, 10, tzinfo=UTC)
    prices = PriceCatalog(None, catalog)
    events = []
    for request_id, tier, batch in (("r-flex", "flex", False), ("r-batch", "", True)):
        event = UsageEvent.model_validate(
            {
                "request_id": request_id,
                "timestamp": at.isoformat(),
                "tenant_id": "acme",
                "provider": "openai",
                "model": "gpt-5",
                "input_tokens": 50_000,
                "output_tokens": 4_000,
                "service_tier": tier,
                "batch": batch,
            },
            context={"now": at},
        )
        events.append(price_event(prices, event, SourcePosition("spendstream.usage", 0, 0), at))
    keep_rows_of(ch, events)  # fixed dates, kept past the 90-day raw TTL
    ch.insert(
        "usage_ledger",
        [[row[c] for c in LEDGER_COLUMNS] for row in events],
        column_names=list(LEDGER_COLUMNS),
    )
    result = reprice(ch, prices, date_range("2026-11-02", "2026-11-02"))
    assert (result.rows_checked, result.corrections) == (2, 0)
    standard = prices.resolve("openai", "gpt-5", at)
    assert standard is not None
    assert all(row["cost_usd"] < standard.cost(50_000, 0, 0, 4_000).total for row in events)


def test_repricing_replaces_an_estimate_with_a_correction(
    ch: Client, catalog: CatalogPrices, tmp_path: Path
) -> None:
    at = datetime(2026, 11, 3, 10, tzinfo=UTC)
    event = UsageEvent.model_validate(
        {
            "request_id": "r-estimated",
            "timestamp": at.isoformat(),
            "tenant_id": "acme",
            "provider": "anthropic",
            "model": "claude-sonnet-9",
            "input_tokens": 10_000,
            "output_tokens": 1_000,
        },
        context={"now": at},
    )
    row = price_event(
        PriceCatalog(None, catalog), event, SourcePosition("spendstream.usage", 0, 0), at
    )
    assert row["cost_status"] == "estimated"
    keep_rows_of(ch, [row])
    ch.insert("usage_ledger", [[row[c] for c in LEDGER_COLUMNS]], column_names=list(LEDGER_COLUMNS))
    shown = "SELECT tenant_id, model, requests, estimated_cost_usd FROM estimated_spend_daily"
    estimate = row["estimated_cost_usd"]
    assert ch.query(shown).result_rows == [("acme", "claude-sonnet-9", 1, estimate)]
    # Shown beside known spend, never in it: chargeback and the weekly review.
    before = build_chargeback(ch, month("2026-11"), "tenant")
    assert [(line.key, line.cost, line.estimated) for line in before.lines] == [
        ("acme", D(0), estimate)
    ]
    assert "not charged" in render(before, "md")
    review = build_weekly_review(ch, iso_week("2026-W45"))
    assert [(m.model, m.requests, m.estimated) for m in review.estimated] == [
        ("claude-sonnet-9", 1, estimate)
    ]
    assert review.total == D(0)
    assert "Models with no price (estimated)" in render_markdown(review)

    path = tmp_path / "rates.yaml"
    path.write_text(
        "prices:\n  - {provider: anthropic, model: claude-sonnet-9, input: 4, output: 20}\n"
    )
    result = reprice(ch, PriceCatalog.load(path), date_range("2026-11-03", "2026-11-03"))
    # 10,000 x 4 + 1,000 x 20 = 60,000 per 1e6
    assert (result.corrections, result.newly_priced, result.delta_usd) == (1, 1, D("0.06"))
    assert ch.query(shown).result_rows == []
    assert ch.query(
        "SELECT old_cost_status, new_cost_status FROM cost_corrections FINAL"
    ).result_rows == [("estimated", "priced")]
    assert ch.query("SELECT sum(cost_usd) FROM tenant_daily").result_rows == [(D("0.06"),)]
    after = build_chargeback(ch, month("2026-11"), "tenant")
    assert [(line.key, line.cost, line.estimated) for line in after.lines] == [
        ("acme", D("0.06"), D(0))
    ]
