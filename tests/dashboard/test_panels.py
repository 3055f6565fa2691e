"""The panels' figures against the public views (and the ledger), on the analyst tests'
ledger in chdb: clean, with a re-delivered day (dirty: recomputed from the ledger),
and after re-pricing (corrections added)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from detectors.contract import month_end_projection
from detectors.decomposition import FACTORS, NEW_SPEND, STOPPED, Usage, decompose
from detectors.spike_cause import SpikeCauseClassifier
from detectors.stats import WindowStats
from schemas.alert import Alert, AlertDelivery
from schemas.ledger import DEAD_LETTER_COLUMNS
from schemas.spend_config import TenantConfig
from streams.alerting.alerts_table import AlertsTableWriter
from streams.analyst.periods import date_range
from streams.analyst.reprice import reprice
from streams.cost.catalog import PriceCatalog
from streams.dashboard import panels
from streams.dashboard.sources import Ledger
from streams.ledger.remote import DirectReader
from tests.analyst import ledger_data as data
from tests.analyst.conftest import ch  # noqa: F401 (a fixture)

NOW = datetime(2026, 11, 18, 12, 30, tzinfo=UTC)  # the spike day of hooli
REDELIVERED = date(2026, 11, 17)

# Dimension -> (view, key column) for daily figures; hourly ones come from the ledger.
VIEWS = {
    "tenant": ("spend_daily", "tenant_id"),
    "team": ("spend_daily", "team_id"),
    "workflow": ("spend_daily", "workflow_id"),
    "model": ("spend_daily", "model"),
    "user": ("user_daily", "user_id"),
    "feature": ("spend_daily", "feature_name"),
}


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


def expected(client: Client, by: str, start: datetime, end: datetime, hourly: bool) -> dict:
    """Spend per key over [start, end) from the public views, or for hourly figures from
    the raw ledger (deduplicated by FINAL) plus the corrections, written independently of
    the panels."""
    view, key = VIEWS[by]
    if hourly:
        sql = f"""
            SELECT {key}, sum(cost) FROM (
                SELECT {key}, cost_usd AS cost, timestamp FROM usage_ledger FINAL
                UNION ALL
                SELECT {key}, delta_cost_usd AS cost, timestamp FROM cost_corrections FINAL
            )
            WHERE timestamp >= toDateTime({ts(start)}, 'UTC')
                AND timestamp < toDateTime({ts(end)}, 'UTC')
            GROUP BY {key}
        """
    else:
        # Whole days: a day the window reaches into counts whole.
        last = "<" if end.time() == datetime.min.time() else "<="
        sql = (
            f"SELECT {key}, sum(cost_usd) FROM {view} "
            f"WHERE day >= '{start.date()}' AND day {last} '{end.date()}' GROUP BY {key}"
        )
    return {k: v for k, v in client.query(sql).result_rows if v}


def load(client: Client, scenario: str, tmp_path: Path) -> None:
    events = data.make_events()
    data.insert(client, events, token="batch-1")
    if scenario in ("redelivered", "repriced"):
        again = [e for e in events if e["timestamp"].date() == REDELIVERED]
        data.insert(client, again, token="redelivered")
    if scenario == "hour_redelivered_repriced":
        # NOW's hour and its counterpart a week earlier: their days are dirty, so the
        # hourly figures come from the recompute, plus the corrections.
        days = {NOW.date(), (NOW - panels.WEEK).date()}
        again = [e for e in events if e["timestamp"].date() in days]
        data.insert(client, again, token="redelivered-hour")
    if scenario in ("repriced", "hour_redelivered_repriced"):
        catalog = PriceCatalog.load(data.pricing_file(tmp_path, data.NEW_PRICES))
        days = date_range(str(data.FIRST_DAY), str(data.LAST_DAY))
        assert reprice(client, catalog, days, reason="price change", now=NOW).corrections


@pytest.mark.parametrize(
    "scenario", ["clean", "redelivered", "repriced", "hour_redelivered_repriced"]
)
def test_who_equals_the_views_for_every_dimension_and_period(
    ch: Client,  # noqa: F811
    tmp_path: Path,
    scenario: str,
) -> None:
    load(ch, scenario, tmp_path)
    for by in panels.DIMENSIONS:
        for period in panels.PERIODS:
            answer = panels.who(Ledger(ch), by, period, NOW)  # type: ignore[arg-type]
            start, end = panels.window(period, NOW)  # type: ignore[arg-type]
            hourly = panels.grain(period) == "hour"  # type: ignore[arg-type]
            want = expected(ch, by, start, end, hourly)
            assert want, (scenario, by, period)  # the hour has spend in every dimension
            got: dict[str, Decimal] = defaultdict(Decimal)
            got_previous: dict[str, Decimal] = defaultdict(Decimal)
            for row in answer["rows"]:
                got[row["key"]] += Decimal(row["cost_usd"])
                got_previous[row["key"]] += Decimal(row["previous_cost_usd"])
            assert {k: v for k, v in got.items() if v} == want, (scenario, by, period)
            assert Decimal(answer["total_usd"]) == sum(want.values(), Decimal(0))
            previous = expected(ch, by, start - panels.WEEK, end - panels.WEEK, hourly)
            assert Decimal(answer["previous_total_usd"]) == sum(previous.values(), Decimal(0))
            assert {k: v for k, v in got_previous.items() if v} == previous, (scenario, by)
            shares = [Decimal(row["share"]) for row in answer["rows"]]
            assert abs(sum(shares, Decimal(0)) - 1) <= Decimal("0.0001") * len(shares) or not shares


def test_dirty_days_are_the_views_and_follow_a_redelivery(ch: Client, tmp_path: Path) -> None:  # noqa: F811
    load(ch, "clean", tmp_path)
    ledger = Ledger(ch)
    assert ledger.dirty_days(data.FIRST_DAY, data.LAST_DAY) == []
    again = [e for e in data.make_events() if e["timestamp"].date() == REDELIVERED]
    data.insert(ch, again, token="redelivered")
    view = [day for (day,) in ch.query("SELECT day FROM ledger_dirty_days").result_rows]
    assert ledger.dirty_days(data.FIRST_DAY, data.LAST_DAY) == view == [REDELIVERED]


def test_drill_down_narrows_to_one_tenant(ch: Client, tmp_path: Path) -> None:  # noqa: F811
    load(ch, "clean", tmp_path)
    answer = panels.who(Ledger(ch), "workflow", "week", NOW, tenant="hooli")
    start, end = panels.window("week", NOW)
    rows = ch.query(
        "SELECT workflow_id, sum(cost_usd) FROM spend_daily WHERE tenant_id = 'hooli' "
        f"AND day BETWEEN '{start.date()}' AND '{end.date()}' GROUP BY workflow_id"
    ).result_rows
    assert {r["key"]: Decimal(r["cost_usd"]) for r in answer["rows"]} == dict(rows)
    assert {r["tenant_id"] for r in answer["rows"]} == {"hooli"}


def test_now_compares_whole_hours_with_the_same_hours_a_week_earlier(
    ch: Client,  # noqa: F811
    tmp_path: Path,
) -> None:
    load(ch, "redelivered", tmp_path)
    answer = panels.now_spend(Ledger(ch), NOW)
    for period in ("hour", "day", "month"):
        start, end = panels.window(period, NOW)  # type: ignore[arg-type]
        for shift, field in ((panels.WEEK * 0, "cost_usd"), (panels.WEEK, "previous_week_usd")):
            (total,) = ch.query(
                "SELECT sum(cost_usd) FROM tenant_hourly WHERE "
                f"hour >= toDateTime({ts(start - shift)}, 'UTC') "
                f"AND hour < toDateTime({ts(end - shift)}, 'UTC')"
            ).result_rows[0]
            assert Decimal(answer["spend"][period][field]) == total, (period, field)
    (rows,) = ch.query("SELECT count() FROM usage_ledger").result_rows[0]
    assert answer["ledger_rows"] == rows


def test_budgets_use_the_contract_detectors_forecast(ch: Client, tmp_path: Path) -> None:  # noqa: F811
    load(ch, "clean", tmp_path)
    tenants = {
        "hooli": TenantConfig(monthly_budget_usd=Decimal(4)),
        "acme": TenantConfig(contracted_hourly_budget_usd=Decimal("0.5")),
    }
    answer = panels.budgets(Ledger(ch), tenants, NOW)
    by_tenant = {t["tenant_id"]: t for t in answer["tenants"]}
    month_start, end = panels.window("month", NOW)
    for tenant in tenants:
        (spent,) = ch.query(
            f"SELECT sum(cost_usd) FROM tenant_hourly WHERE tenant_id = '{tenant}' "
            f"AND hour >= toDateTime({ts(month_start)}, 'UTC') "
            f"AND hour < toDateTime({ts(end)}, 'UTC')"
        ).result_rows[0]
        assert Decimal(by_tenant[tenant]["month_to_date_usd"]) == spent
        assert Decimal(by_tenant[tenant]["forecast_usd"]) == month_end_projection(spent, NOW)[0]
    assert Decimal(by_tenant["hooli"]["used"]) == (
        Decimal(by_tenant["hooli"]["month_to_date_usd"]) / 4
    ).quantize(panels.SHARE)
    assert by_tenant["acme"]["monthly_budget_usd"] is None
    assert by_tenant["acme"]["contracted_hourly_usd"] == "0.50"


def view_window(client: Client, tenant: str, start: datetime, end: datetime) -> WindowStats:
    """A tenant's WindowStats over whole days from the public views."""
    where = f"tenant_id = '{tenant}' AND day >= '{start.date()}' AND day <= '{end.date()}'"
    cost, requests, inp, out, retries, errors = client.query(
        "SELECT sum(cost_usd), sum(requests), sum(input_tokens), sum(output_tokens), "
        f"sum(retries), sum(errors) FROM spend_daily WHERE {where}"
    ).result_rows[0]
    mix = dict(
        client.query(
            "SELECT concat(provider, '/', model), sum(requests) FROM spend_daily "
            f"WHERE {where} GROUP BY provider, model HAVING sum(requests) > 0"
        ).result_rows
    )
    (users,) = client.query(
        f"SELECT uniqExactIf(user_id, user_id != '') FROM user_daily WHERE {where}"
    ).result_rows[0]
    return WindowStats(
        cost=cost,
        requests=requests,
        distinct_users=users,
        input_tokens=inp,
        output_tokens=out,
        retries=retries,
        errors=errors,
        model_mix=mix,
    )


def view_usage(client: Client, where: str) -> dict[str, Usage]:
    """Each model's usage over whole days from spend_daily, for the decomposition."""
    rows = client.query(
        "SELECT concat(provider, '/', model), sum(requests), sum(retries), "
        "sum(input_tokens) + sum(output_tokens), sum(cost_usd) FROM spend_daily "
        f"WHERE {where} GROUP BY provider, model"
    ).result_rows
    return {
        model: Usage(calls=calls, retries=retries, tokens=tokens, cost=cost)
        for model, calls, retries, tokens, cost in rows
    }


@pytest.mark.parametrize("scenario", ["clean", "repriced"])
def test_movers_split_the_change_into_the_decompositions_parts(
    ch: Client,  # noqa: F811
    tmp_path: Path,
    scenario: str,
) -> None:
    load(ch, scenario, tmp_path)
    classifier = SpikeCauseClassifier()
    answer = panels.movers(Ledger(ch), classifier, "week", NOW)
    start, end = panels.window("week", NOW)
    assert {m["kind"] for m in answer["movers"]} == {"tenant", "workflow"}
    for mover in answer["movers"]:
        column = "tenant_id" if mover["kind"] == "tenant" else "workflow_id"
        key = f"{column} = '{mover['key']}'"

        def days(first: datetime, last: datetime, key: str = key) -> str:
            return f"{key} AND day >= '{first.date()}' AND day <= '{last.date()}'"

        before = view_usage(ch, days(start - panels.WEEK, end - panels.WEEK))
        after = view_usage(ch, days(start, end))
        change = sum((u.cost for u in after.values()), Decimal(0)) - sum(
            (u.cost for u in before.values()), Decimal(0)
        )
        shown = Decimal(mover["change_usd"])
        parts = {d["driver"]: Decimal(d["change_usd"]) for d in mover["drivers"]}
        # The parts shown sum to the change shown, which is the views' change to the cent.
        assert sum(parts.values(), Decimal(0)) == shown, mover["key"]
        assert shown == change.quantize(Decimal("0.01")), mover["key"]
        assert parts == decompose(before, after), mover["key"]
        # Every mover had spend in both weeks: the change is split into every driver.
        assert list(parts) == list(FACTORS)
        shares = [Decimal(d["share"]) for d in mover["drivers"]]
        assert abs(sum(shares, Decimal(0)) - 1) <= Decimal("0.0001") * len(shares)
    hooli = next(m for m in answer["movers"] if m["kind"] == "tenant" and m["key"] == "hooli")
    window = view_window(ch, "hooli", start, end)
    baseline = view_window(ch, "hooli", start - panels.WEEK, end - panels.WEEK)
    assert hooli["cause_ratios"] == classifier.ratios(window, baseline)
    assert hooli["cause"] == classifier.classify(window, baseline).cause
    changes = [abs(Decimal(m["change_usd"])) for m in answer["movers"] if m["kind"] == "tenant"]
    assert changes == sorted(changes, reverse=True)


@pytest.mark.parametrize(
    ("now", "driver"),
    [
        # The ledger starts on 2026-10-30: nothing in the week before 2026-11-05's.
        (datetime(2026, 11, 5, 12, 30, tzinfo=UTC), NEW_SPEND),
        # It ends on 2026-11-22: nothing in the week of 2026-11-29.
        (datetime(2026, 11, 29, 12, 30, tzinfo=UTC), STOPPED),
    ],
)
def test_a_mover_from_or_to_no_spend_is_one_part_not_split_into_drivers(
    ch: Client,  # noqa: F811
    tmp_path: Path,
    now: datetime,
    driver: str,
) -> None:
    load(ch, "clean", tmp_path)
    answer = panels.movers(Ledger(ch), SpikeCauseClassifier(), "week", now)
    assert {m["kind"] for m in answer["movers"]} == {"tenant", "workflow"}
    for mover in answer["movers"]:
        zero = "previous_cost_usd" if driver == NEW_SPEND else "cost_usd"
        assert Decimal(mover[zero]) == 0, mover
        change = Decimal(mover["cost_usd"]) - Decimal(mover["previous_cost_usd"])
        assert Decimal(mover["change_usd"]) == change.quantize(Decimal("0.01")) != 0
        assert mover["drivers"] == [
            {"driver": driver, "change_usd": mover["change_usd"], "share": "1.0000"}
        ], mover


@pytest.mark.parametrize(("by", "period"), [("tenant", "day"), ("model", "day"), ("team", "month")])
def test_series_stack_adds_up_to_the_totals(
    ch: Client,  # noqa: F811
    tmp_path: Path,
    by: str,
    period: str,
) -> None:
    load(ch, "redelivered", tmp_path)
    answer = panels.series(Ledger(ch), by, period, NOW)  # type: ignore[arg-type]
    assert answer["grain"] == ("hour" if by == "tenant" else "day")
    buckets = [datetime.fromisoformat(b) for b in answer["buckets"]]
    stacked = [
        sum((Decimal(s["values"][n]) for s in answer["series"]), Decimal(0))
        for n in range(len(buckets))
    ]
    if answer["grain"] == "hour":
        rows = ch.query(
            "SELECT hour, sum(cost_usd) FROM tenant_hourly "
            f"WHERE hour >= toDateTime({ts(buckets[0])}, 'UTC') GROUP BY hour"
        ).result_rows
    else:
        rows = ch.query(
            f"SELECT day, sum(cost_usd) FROM spend_daily WHERE day >= '{buckets[0].date()}' "
            "GROUP BY day"
        ).result_rows
    totals = {
        (t if isinstance(t, datetime) else datetime.combine(t, datetime.min.time())).replace(
            tzinfo=UTC
        ): v
        for t, v in rows
    }
    assert stacked == [totals.get(b, Decimal(0)) for b in buckets]
    assert len(answer["series"]) <= panels.SERIES_KEYS + 1


def test_dead_letters_never_carry_a_payload(ch: Client, tmp_path: Path) -> None:  # noqa: F811
    load(ch, "clean", tmp_path)
    row: dict[str, Any] = {
        "log_epoch": "test",
        "topic": "spendstream.usage",
        "partition": 0,
        "offset": 7,
        "element_index": -1,
        "reason": "schema_invalid",
        "message": "input_tokens: Input should be a valid integer",
        "raw_payload": '{"prompt": "the secret prompt text"}',
        "payload_bytes": 36,
        "request_id": "r-1",
        "tenant_id": "acme",
        "received_at": NOW,
    }
    ch.insert(
        "dead_letters",
        [[row[c] for c in DEAD_LETTER_COLUMNS]],
        column_names=list(DEAD_LETTER_COLUMNS),
    )
    answer = panels.dead_letters(Ledger(ch))
    assert answer["by_reason"][0]["reason"] == "schema_invalid"
    assert answer["latest"][0]["request_id"] == "r-1"
    assert b"secret prompt" not in orjson.dumps(answer, default=str)
    # The analyst ledger's unpriced model: 'acme/acme-llm-1', never re-priced here.
    (calls,) = ch.query(
        "SELECT count() FROM usage_ledger FINAL WHERE cost_status = 'unpriced'"
    ).result_rows[0]
    assert answer["unpriced"]["calls"] == calls > 0


def test_alerts_show_each_incidents_latest_state_with_its_evidence(ch: Client) -> None:  # noqa: F811
    def state(fingerprint: str, name: str, at: datetime, **fields: Any) -> Alert:
        return Alert(
            fingerprint=fingerprint,
            detector="rolling_median",
            key="tenant:acme",
            tenant_id="acme",
            severity="critical",
            state=name,  # type: ignore[arg-type]
            summary=f"{fingerprint} spent more than usual",
            value=Decimal("12.5"),
            threshold=Decimal(5),
            baseline=Decimal("2.5"),
            cause="model_substitution",
            evidence={"ratio": 5.0, "cause_ratios": {"cost_per_token": 4.0}},
            query="SELECT 1",
            window_start=at,
            window_end=at + timedelta(hours=1),
            triggered_at=at,
            recorded_at=at,
            **fields,
        )

    old = NOW - timedelta(days=30)
    recent = NOW - timedelta(hours=2)
    writer = AlertsTableWriter(ch)
    for alert in (
        state("old", "triggered", old),
        state("old", "resolved", old + timedelta(hours=3), resolved_at=old + timedelta(hours=3)),
        state("open", "triggered", recent),
        state("closed", "triggered", recent),
        state("closed", "resolved", NOW, resolved_at=NOW),
        state("held", "snoozed", recent),  # held back by a snooze: shown, not open
        state("held long ago", "snoozed", old),
    ):
        writer.add_alert(alert)
    writer.add_delivery(
        AlertDelivery(
            fingerprint="open",
            channel="pagerduty",
            action="trigger",
            attempt=1,
            outcome="delivered",
            status_code=202,
            attempted_at=recent,
        )
    )
    writer.flush()
    answer = panels.alerts(Ledger(ch), NOW)
    by_fingerprint = {i["fingerprint"]: i for i in answer["incidents"]}
    # "old" was resolved long ago; "held long ago" was never open
    assert set(by_fingerprint) == {"open", "closed", "held"}
    assert answer["open"] == 1
    assert by_fingerprint["held"]["state"] == "snoozed" and not by_fingerprint["held"]["open"]
    opened = by_fingerprint["open"]
    assert opened["open"] and not by_fingerprint["closed"]["open"]
    assert (opened["observed"], opened["baseline"], opened["ratio"]) == ("12.50", "2.50", 5.0)
    assert opened["cause"] == "model_substitution"
    assert opened["cause_ratios"] == {"cost_per_token": 4.0}
    assert opened["paged"][0]["channel"] == "pagerduty"
    assert opened["query"] == "SELECT 1"


def test_a_peer_worker_reading_through_the_owner_gets_the_same_answers(
    ch: Client,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A peer of `dev --workers N` reads through the owner's query endpoint, whose
    results are Arrow-backed (`DirectReader` makes the same results in process)."""
    load(ch, "redelivered", tmp_path)
    test_alerts_show_each_incidents_latest_state_with_its_evidence(ch)
    tenants = {"hooli": TenantConfig(monthly_budget_usd=Decimal(4))}
    classifier = SpikeCauseClassifier()
    answers = []
    for reader in (ch, DirectReader(ch)):
        ledger = Ledger(reader)
        answers.append(
            orjson.dumps(
                [
                    panels.now_spend(ledger, NOW),
                    panels.who(ledger, "workflow", "hour", NOW),
                    panels.who(ledger, "user", "week", NOW, tenant="hooli"),
                    panels.budgets(ledger, tenants, NOW),
                    panels.alerts(ledger, NOW),
                    panels.movers(ledger, classifier, "week", NOW),
                    panels.series(ledger, "team", "month", NOW),
                    panels.dead_letters(ledger),
                ],
                default=str,
            )
        )
    assert answers[0] == answers[1]
