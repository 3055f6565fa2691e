"""The weekly review reads the rollup state tables, the dirty-day recompute and the
re-pricing deltas itself (one duplicate check for its two weeks instead of several
over the whole ledger), and its unit prices from model_prices_daily instead of the
raw ledger: its numbers must stay those of the public views and of the ledger, on a
clean ledger, with a re-delivered day, and after re-pricing."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from clickhouse_connect.driver.client import Client

from streams.analyst.periods import date_range, iso_week
from streams.analyst.reprice import reprice
from streams.analyst.weekly_review import WeeklyReview, _unit_prices, build_weekly_review
from streams.cost.catalog import PriceCatalog
from tests.analyst import ledger_data as data

WEEK = iso_week("2026-W47")
PREVIOUS = iso_week("2026-W46")
REDELIVERED_DAY = date(2026, 11, 18)


def view_model_days(client: Client) -> dict[tuple[str, date], Decimal]:
    rows = client.query(
        "SELECT concat(provider, '/', model), day, sum(cost_usd) FROM spend_daily "
        "WHERE day BETWEEN {start:Date} AND {end:Date} GROUP BY ALL",
        parameters={"start": PREVIOUS.start, "end": WEEK.end},
    ).result_rows
    return {(model, day): cost for model, day, cost in rows}


def view_tenant_weeks(client: Client) -> dict[str, tuple[Decimal, Decimal]]:
    rows = client.query(
        "SELECT tenant_id, sumIf(cost_usd, day >= {week:Date}), sumIf(cost_usd, day < {week:Date}) "
        "FROM tenant_daily WHERE day BETWEEN {start:Date} AND {end:Date} GROUP BY tenant_id",
        parameters={"start": PREVIOUS.start, "week": WEEK.start, "end": WEEK.end},
    ).result_rows
    return {tenant: (current, previous) for tenant, current, previous in rows}


def view_task_costs(client: Client) -> dict[str, tuple[int, int, Decimal]]:
    rows = client.query(
        """
        SELECT workflow_id, count(), countIf(successful), sum(cost)
        FROM
        (
            SELECT
                tenant_id, workflow_id, workflow_run_id,
                max((last_call_at, last_call_successful)).2 = 1 AS successful,
                sum(cost_usd) AS cost
            FROM workflow_run_daily
            WHERE day BETWEEN {start:Date} AND {end:Date} AND workflow_id != ''
            GROUP BY tenant_id, workflow_id, workflow_run_id
        )
        GROUP BY workflow_id
        """,
        parameters={"start": WEEK.start, "end": WEEK.end},
    ).result_rows
    return {workflow: (runs, successful, cost) for workflow, runs, successful, cost in rows}


def ledger_unit_prices(client: Client) -> dict[tuple[str, str], tuple[Decimal, ...]]:
    """The latest prices of the week as the raw ledger and the corrections have them."""
    rows = client.query(
        """
        SELECT provider, model, argMax(prices, at)
        FROM
        (
            SELECT provider, model, timestamp AS at,
                (price_input_per_mtok, price_cached_input_per_mtok, price_cache_write_per_mtok,
                 price_output_per_mtok, price_reasoning_per_mtok) AS prices
            FROM usage_ledger
            WHERE timestamp >= {start:Date} AND timestamp < {end:Date} AND cost_status = 'priced'
            UNION ALL
            SELECT provider, model, corrected_at AS at,
                (new_price_input_per_mtok, new_price_cached_input_per_mtok,
                 new_price_cache_write_per_mtok, new_price_output_per_mtok,
                 new_price_reasoning_per_mtok) AS prices
            FROM cost_corrections FINAL
            WHERE timestamp >= {start:Date} AND timestamp < {end:Date}
                AND new_cost_status = 'priced'
        )
        GROUP BY provider, model
        """,
        parameters={"start": WEEK.start, "end": WEEK.end_exclusive},
    ).result_rows
    return {(provider, model): tuple(unit) for provider, model, unit in rows if unit[3] > 0}


def dirty_days(client: Client) -> list[date]:
    return [day for (day,) in client.query("SELECT day FROM ledger_dirty_days").result_rows]


def assert_review_matches_the_views(client: Client) -> WeeklyReview:
    review = build_weekly_review(client, WEEK)
    model_days = {
        (model, day): amount
        for model, amounts in review.model_days.items()
        for day, amount in zip(review.days, amounts, strict=True)
        if amount
    }
    assert model_days == {key: cost for key, cost in view_model_days(client).items() if cost}
    tenants = view_tenant_weeks(client)
    assert {c.key: (c.current, c.previous) for c in review.top_tenants} == {
        c.key: tenants[c.key] for c in review.top_tenants
    }
    assert [c.key for c in review.top_tenants] == sorted(
        tenants, key=lambda tenant: (-tenants[tenant][0], tenant)
    )[:5]
    assert review.total == sum((current for current, _ in tenants.values()), Decimal(0))
    assert {
        t.workflow_id: (t.runs, t.successful_runs, t.cost) for t in review.task_costs
    } == view_task_costs(client)
    assert _unit_prices(client, WEEK) == ledger_unit_prices(client)
    return review


def ingest(client: Client, redeliver: bool = False) -> None:
    events = data.make_events()
    data.insert(client, events, token="batch-1")
    if redeliver:
        again = [e for e in events if e["timestamp"].date() == REDELIVERED_DAY]
        data.insert(client, again, token="redelivered")
    assert dirty_days(client) == ([REDELIVERED_DAY] if redeliver else [])


def test_review_matches_the_views_on_a_clean_ledger(ch: Client) -> None:
    ingest(ch)
    review = assert_review_matches_the_views(ch)
    assert review.cheaper_models


def test_review_matches_the_views_with_a_redelivered_day(ch: Client) -> None:
    ingest(ch, redeliver=True)
    assert_review_matches_the_views(ch)


def test_review_matches_the_views_after_repricing(ch: Client, tmp_path: Path) -> None:
    ingest(ch, redeliver=True)
    before = build_weekly_review(ch, WEEK)
    catalog = PriceCatalog.load(data.pricing_file(tmp_path, data.NEW_PRICES))
    now = datetime(2026, 11, 23, 9, tzinfo=UTC)
    days = date_range(str(data.FIRST_DAY), str(data.LAST_DAY))
    assert reprice(ch, catalog, days, reason="gpt-4o price change", now=now).corrections
    after = assert_review_matches_the_views(ch)
    assert after.total > before.total
    # The corrections' prices count: gpt-4o's new output price, the newly priced model.
    prices = _unit_prices(ch, WEEK)
    assert prices[("openai", "gpt-4o")][3] == Decimal(12)
    assert data.UNPRICED_MODEL in prices
