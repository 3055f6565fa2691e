"""The rollup views equal the sums over the distinct events, also when the same
events reach the ledger again in other insert blocks (re-delivery, replay)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from tests.analyst import ledger_data as data
from tests.analyst.ledger_data import day_of

METRICS = (
    "requests",
    "successful_requests",
    "errors",
    "retries",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
)
LATENCY = ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms")

# view → (key columns, the same key from an event)
VIEWS: dict[str, tuple[tuple[str, ...], Any]] = {
    "tenant_hourly": (
        ("hour", "tenant_id"),
        lambda e: (e["timestamp"].replace(minute=0, second=0, microsecond=0), e["tenant_id"]),
    ),
    "tenant_daily": (("day", "tenant_id"), lambda e: (day_of(e), e["tenant_id"])),
    "team_daily": (
        ("day", "tenant_id", "team_id"),
        lambda e: (day_of(e), e["tenant_id"], e["team_id"]),
    ),
    "workflow_daily": (
        ("day", "tenant_id", "workflow_id", "workflow_name"),
        lambda e: (day_of(e), e["tenant_id"], e["workflow_id"], e["workflow_name"]),
    ),
    "model_daily": (("day", "provider", "model"), lambda e: (day_of(e), e["provider"], e["model"])),
    "user_daily": (
        ("day", "tenant_id", "user_id"),
        lambda e: (day_of(e), e["tenant_id"], e["user_id"]),
    ),
    "feature_daily": (
        ("day", "tenant_id", "feature_name"),
        lambda e: (day_of(e), e["tenant_id"], e["feature_name"]),
    ),
}
SPEND_KEY = (
    "day",
    "tenant_id",
    "team_id",
    "feature_name",
    "environment",
    "workflow_id",
    "workflow_name",
    "provider",
    "model",
)


def view_rows(ch: Client, view: str, key: tuple[str, ...], columns: tuple[str, ...]) -> dict:
    result = ch.query(f"SELECT {', '.join(key + columns)} FROM {view}")
    rows = {}
    for row in result.result_rows:
        values = dict(zip(key + columns, row, strict=True))
        if "hour" in values:
            values["hour"] = values["hour"].replace(tzinfo=data.UTC)
        rows[tuple(values[k] for k in key)] = {c: values[c] for c in columns}
    return rows


# attribution_hourly: dimension -> (value, detail) of an event.
ATTRIBUTION = {
    "team": lambda e: (e["team_id"], ""),
    "workflow": lambda e: (e["workflow_id"], e["workflow_name"]),
    "model": lambda e: (e["model"], e["provider"]),
    "user": lambda e: (e["user_id"], ""),
    "feature": lambda e: (e["feature_name"], ""),
}
ATTRIBUTION_KEY = ("hour", "dimension", "tenant_id", "value", "detail")
ATTRIBUTION_METRICS = ("requests", "errors", "retries", "input_tokens", "output_tokens", "cost_usd")


def assert_attribution_matches(ch: Client, events: list[dict[str, Any]]) -> None:
    """attribution_hourly: every dimension's hourly rows equal the distinct events' sums."""
    expected = {}
    for dimension, attribute in ATTRIBUTION.items():
        grouped = data.group(
            events,
            lambda e, a=attribute: (  # type: ignore[misc]
                e["timestamp"].replace(minute=0, second=0, microsecond=0),
                e["tenant_id"],
                *a(e),
            ),
        )
        for (hour, tenant, value, detail), sums in grouped.items():
            key = (hour, dimension, tenant, value, detail)
            expected[key] = {m: sums[m] for m in ATTRIBUTION_METRICS}
    actual = view_rows(ch, "attribution_hourly", ATTRIBUTION_KEY, ATTRIBUTION_METRICS)
    assert actual == expected


def assert_view_matches(ch: Client, events: list[dict[str, Any]]) -> None:
    assert_attribution_matches(ch, events)
    for view, (key, key_of) in VIEWS.items():
        expected = data.group(events, key_of)
        actual = view_rows(ch, view, key, METRICS + LATENCY)
        assert actual.keys() == expected.keys(), view
        for group_key, sums in expected.items():
            got = actual[group_key]
            for metric in METRICS:
                assert got[metric] == sums[metric], (view, group_key, metric)
            for metric in LATENCY:
                if sums[metric] is None:
                    assert got[metric] is None, (view, group_key, metric)
                else:
                    assert got[metric] == pytest.approx(sums[metric]), (view, group_key, metric)
    spend_expected = data.group(events, lambda e: (day_of(e), *(e[k] for k in SPEND_KEY[1:])))
    spend_actual = view_rows(ch, "spend_daily", SPEND_KEY, METRICS)
    assert spend_actual.keys() == spend_expected.keys()
    for group_key, sums in spend_expected.items():
        assert {m: spend_actual[group_key][m] for m in METRICS} == {m: sums[m] for m in METRICS}


def test_views_equal_python_sums_of_the_events(ch: Client) -> None:
    events = data.make_events()
    data.insert(ch, events, token="batch-1")
    assert ch.query("SELECT count() FROM ledger_dirty_days").result_rows == [(0,)]
    assert_view_matches(ch, events)


def test_views_stay_exact_when_events_are_redelivered_in_other_blocks(ch: Client) -> None:
    events = data.make_events()
    data.insert(ch, events, token="batch-1")
    # Re-delivery: the events of two days again, in new blocks with their own
    # tokens, then everything once more as a replay. The views fire on each block.
    redelivered_days = {date(2026, 11, 17), date(2026, 11, 18)}
    again = [e for e in events if day_of(e) in redelivered_days]
    data.insert(ch, again[: len(again) // 2], token="redelivery-1")
    data.insert(ch, again[len(again) // 2 :], token="redelivery-2")
    dirty = {row[0] for row in ch.query("SELECT day FROM ledger_dirty_days").result_rows}
    assert dirty == redelivered_days
    assert_view_matches(ch, events)

    data.insert(ch, events, token="replay")
    assert_view_matches(ch, events)


def test_exact_retry_of_a_batch_is_deduplicated_and_leaves_no_dirty_day(ch: Client) -> None:
    events = data.make_events()
    data.insert(ch, events, token="batch-1")
    data.insert(ch, events, token="batch-1")
    assert ch.query("SELECT count() FROM usage_ledger").result_rows == [(len(events),)]
    assert ch.query("SELECT count() FROM ledger_dirty_days").result_rows == [(0,)]
    assert_view_matches(ch, events)


def test_workflow_run_daily_counts_runs_and_their_last_call(ch: Client) -> None:
    events = data.make_events()
    data.insert(ch, events, token="batch-1")
    data.insert(ch, events[:50], token="again")
    runs: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        runs.setdefault(event["workflow_run_id"], []).append(event)
    rows = ch.query(
        "SELECT workflow_run_id, sum(requests), sum(cost_usd), "
        "max((last_call_at, last_call_successful)).2 FROM workflow_run_daily "
        "GROUP BY workflow_run_id"
    ).result_rows
    actual = {run: (requests, cost, ok) for run, requests, cost, ok in rows}
    assert actual.keys() == runs.keys()
    for run, calls in runs.items():
        last = max(calls, key=lambda e: e["timestamp"])
        assert actual[run] == (
            sum(e["request_count"] for e in calls),
            sum((e["cost_usd"] for e in calls), Decimal(0)),
            int(data.successful(last)),
        ), run


def test_rollup_materialized_views_and_their_recompute_views_agree(ch: Client) -> None:
    # The MVs read ledger_facts, the dirty-day fallback reads ledger_facts_final:
    # two copies of one normalization that must not drift apart.
    events = data.make_events()
    for index in range(0, len(events), 200):  # several parts, so the states really merge
        data.insert(ch, events[index : index + 200], token=f"part-{index}")
    for view in ("tenant_hourly", "team_daily", "workflow_daily", "user_daily", "spend_daily"):
        described = ch.query(f"DESCRIBE TABLE {view}_state").result_rows
        keys = [name for name, kind, *_ in described if "AggregateFunction" not in kind]
        sums = [f"sum({name})" for name, kind, *_ in described if "SimpleAggregateFunction" in kind]
        select = f"SELECT {', '.join(keys + sums)} FROM {{source}} GROUP BY ALL ORDER BY ALL"
        state = ch.query(select.format(source=f"{view}_state")).result_rows
        recompute = ch.query(select.format(source=f"{view}_recompute")).result_rows
        assert len(state) > 10
        assert state == recompute, view
