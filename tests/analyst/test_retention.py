"""Raw ledger rows expire after the retention period; the daily rollups keep them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client

from streams.analyst.retention import current_ttls, set_hourly_retention, set_raw_retention
from streams.errors import ConfigError
from tests.analyst import ledger_data as data


def test_migrations_set_a_90_day_raw_ttl_and_keep_rollups(ch: Client) -> None:
    ttls = current_ttls(ch)
    assert ttls["usage_ledger"] == "toDateTime(timestamp) + toIntervalDay(90)"
    assert ttls["ledger_day_check"] == "day + toIntervalDay(89)"
    assert ttls["tenant_hourly_state"] == "hour + toIntervalDay(400)"
    assert ttls["attribution_hourly_state"] == "hour + toIntervalDay(400)"
    rollups = ch.query(
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name IN ('tenant_daily_state', 'spend_daily_state', 'cost_corrections')"
    ).result_rows
    assert len(rollups) == 3
    assert all(" TTL " not in engine for _, engine in rollups)


def test_expired_raw_rows_go_while_the_daily_rollups_keep_their_spend(ch: Client) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    old, recent = data.make_events()[:40], data.make_events(seed=8)[:40]
    for index, event in enumerate(old):
        event["timestamp"] = now - timedelta(days=120, minutes=index)
    for index, event in enumerate(recent):
        event["timestamp"] = now - timedelta(days=3, minutes=index)
    data.insert(ch, old + recent, token="batch", expire=True)
    ch.command("OPTIMIZE TABLE usage_ledger FINAL")
    ch.command("OPTIMIZE TABLE ledger_day_check FINAL")

    raw = ch.query("SELECT request_id FROM usage_ledger").result_rows
    assert {r for (r,) in raw} == {e["request_id"] for e in recent}
    old_day = (now - timedelta(days=120)).date()
    kept = ch.query(
        "SELECT sum(cost_usd), sum(requests) FROM tenant_daily WHERE day <= {day:Date}",
        parameters={"day": old_day},
    ).result_rows
    assert kept == [(sum(e["cost_usd"] for e in old), sum(e["request_count"] for e in old))]
    # The old days' duplicate checks expired with the raw rows: nothing is "dirty".
    assert ch.query("SELECT count() FROM ledger_dirty_days").result_rows == [(0,)]


def test_retention_is_configurable(ch: Client) -> None:
    set_raw_retention(ch, 30)
    set_hourly_retention(ch, 60)
    ttls = current_ttls(ch)
    assert ttls["usage_ledger"] == "toDateTime(timestamp) + toIntervalDay(30)"
    assert ttls["ledger_day_check"] == "day + toIntervalDay(29)"
    assert ttls["tenant_hourly_state"] == "hour + toIntervalDay(60)"
    assert ttls["attribution_hourly_state"] == "hour + toIntervalDay(60)"
    with pytest.raises(ConfigError, match="shorter than the 8 days"):
        set_raw_retention(ch, 5)
    set_raw_retention(ch, 90)
    set_hourly_retention(ch, 400)


def test_the_analyst_ledger_keeps_its_fixed_dates_whatever_their_age(ch: Client) -> None:
    """The analyst tests' ledger has fixed dates, older each day: `ledger_data.insert`
    lengthens the retention to keep its rows (a raw TTL shorter than their age stands
    for the 90 days they will outlive on 2027-01-28), and drops them when told to."""
    events = data.make_events()
    set_raw_retention(ch, 10)  # the data's last day was 16 days ago on 2026-12-08
    data.insert(ch, events, token="expired", expire=True)
    assert ch.query("SELECT count() FROM usage_ledger").result_rows == [(0,)]

    data.insert(ch, events, token="kept")
    assert ch.query("SELECT count() FROM usage_ledger").result_rows == [(len(events),)]
    assert current_ttls(ch)["usage_ledger"] == (
        f"toDateTime(timestamp) + toIntervalDay({data.raw_days_kept()})"
    )
    set_raw_retention(ch, 90)  # as the migrations left it, for the module's next test
