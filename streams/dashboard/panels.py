"""Each panel's figures, from ClickHouse: plain functions of a `Ledger` and a clock.

Every function returns what its JSON endpoint answers (docs/dashboard.md). Amounts
are exact Decimal sums, written as strings (`money`); shares are Decimal fractions
to four places. The functions block: the web layer runs them on the ClickHouse
thread, as POST /v1/query does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from detectors.contract import month_bounds, month_end_projection
from detectors.decomposition import CENT, Usage, decompose
from detectors.history import as_utc
from detectors.spike_cause import SpikeCauseClassifier
from detectors.stats import WindowStats
from schemas.spend_config import TenantConfig
from streams.analyst.money import ZERO, exact
from streams.dashboard.sources import (
    SPEND_DAILY,
    TENANT_HOURLY,
    USER_DAILY,
    Ledger,
    Rollup,
    attribution_source,
    rollup_source,
)

Period = Literal["hour", "day", "week", "month"]
Dimension = Literal["tenant", "team", "workflow", "model", "user", "feature"]
PERIODS: tuple[Period, ...] = ("hour", "day", "week", "month")
DIMENSIONS: tuple[Dimension, ...] = ("tenant", "team", "workflow", "model", "user", "feature")
WEEK = timedelta(days=7)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SHARE = Decimal("0.0001")
WHO_LIMIT = 100
SERIES_KEYS = 6
MOVERS = 4
LATEST_ROWS = 20


def money(amount: Decimal) -> str:
    return exact(amount)


def named(result: Any) -> list[dict[str, Any]]:
    """Rows as dicts by column name (the worker's reader or, in a peer worker, the
    owner's query endpoint: both answer column names and rows)."""
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def utc(moment: datetime) -> str:
    """ISO 8601 with its offset: ClickHouse hands UTC times back without a zone, and a
    browser reads a time without one as local."""
    return as_utc(moment).isoformat()


def share(part: Decimal, total: Decimal) -> str:
    return str((part / total).quantize(SHARE)) if total else "0"


# -- periods -------------------------------------------------------------------


def hour_floor(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_floor(at: datetime) -> datetime:
    return hour_floor(at).replace(hour=0)


def window(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """`[start, end)` of the period containing `now`, to the end of the current hour:
    this hour, today, the last 7 days with today, the month to date."""
    end = hour_floor(now) + HOUR
    if period == "hour":
        return end - HOUR, end
    if period == "day":
        return day_floor(now), end
    if period == "week":
        return day_floor(now) - 6 * DAY, end
    return month_bounds(now)[0], end


# -- dimensions ------------------------------------------------------------------


@dataclass(frozen=True)
class Grouping:
    """How one dimension is read: its name, its daily rollup, the columns it groups by
    (the last is the key; a tenant column first, where there is one, tells whose), and
    its label."""

    dimension: Dimension
    daily: Rollup
    columns: tuple[str, ...]
    label: str  # a SQL expression over the grouped rows

    @property
    def key(self) -> str:
        return self.columns[-1]


GROUPINGS: dict[Dimension, Grouping] = {
    "tenant": Grouping("tenant", SPEND_DAILY, ("tenant_id",), "tenant_id"),
    "team": Grouping("team", SPEND_DAILY, ("tenant_id", "team_id"), "team_id"),
    "workflow": Grouping(
        "workflow",
        SPEND_DAILY,
        ("tenant_id", "workflow_id"),
        "if(any(workflow_name) IN ('', workflow_id), workflow_id, "
        "concat(any(workflow_name), ' (', workflow_id, ')'))",
    ),
    "model": Grouping("model", SPEND_DAILY, ("provider", "model"), "concat(provider, '/', model)"),
    "user": Grouping("user", USER_DAILY, ("tenant_id", "user_id"), "user_id"),
    "feature": Grouping("feature", SPEND_DAILY, ("tenant_id", "feature_name"), "feature_name"),
}


def grain(period: Period) -> Literal["hour", "day"]:
    """Hourly figures for the hour (from tenant_hourly and attribution_hourly), daily
    ones (from the daily rollups) otherwise: a day the period reaches into counts whole,
    and so does its counterpart a week earlier."""
    return "hour" if period == "hour" else "day"


def _source(
    grouping: Grouping,
    extra: tuple[str, ...],
    step: Literal["hour", "day"],
    dirty: bool,
    compared: bool = False,
) -> tuple[str, str]:
    """A source of the grouping's (and `extra`) columns at the grain `step` and its time
    column (`dirty`, `compared`: see `rollup_source`). Hourly, a dimension's own columns and its
    tenant only (one attribution_hourly dimension at a time)."""
    columns = tuple(dict.fromkeys(grouping.columns + extra))
    if "workflow_id" in columns:
        columns += ("workflow_name",)
    if step == "day":
        return rollup_source(grouping.daily, columns, dirty, compared), grouping.daily.time
    if set(columns) <= set(TENANT_HOURLY.dimensions):
        return rollup_source(TENANT_HOURLY, columns, dirty, compared), "hour"
    return attribution_source(grouping.dimension, columns, dirty, compared), "hour"


# -- Who -------------------------------------------------------------------------


def who(
    ledger: Ledger,
    by: Dimension,
    period: Period,
    now: datetime,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Spend by `by` over the period, each with its share and last week's figure for the
    same span; `tenant` narrows to one tenant (the drill-down)."""
    grouping = GROUPINGS[by]
    start, end = window(period, now)
    extra: tuple[str, ...] = ("tenant_id",) if tenant is not None else ()
    parameters = ledger.window(start - WEEK, end)
    source, time = _source(grouping, extra, grain(period), bool(parameters["dirty"]), compared=True)
    parameters.update(current=int(start.timestamp()), previous_end=int((end - WEEK).timestamp()))
    where = "WHERE tenant_id = {tenant:String}" if tenant is not None else ""
    if tenant is not None:
        parameters["tenant"] = tenant
    group = ", ".join(grouping.columns)
    # The largest WHO_LIMIT rows, with the totals and the count of all of them.
    rows = ledger.query(
        f"""
        SELECT {group}, label, cost, requests, previous,
            sum(cost) OVER (), sum(previous) OVER (), count() OVER ()
        FROM
        (
            SELECT {group}, {grouping.label} AS label,
                sumIf(cost_usd, {time} >= toDateTime({{current:UInt32}}, 'UTC')) AS cost,
                sumIf(requests, {time} >= toDateTime({{current:UInt32}}, 'UTC')) AS requests,
                sumIf(cost_usd, {time} < toDateTime({{previous_end:UInt32}}, 'UTC')) AS previous
            FROM ({source}) {where}
            GROUP BY {group}
            HAVING cost != 0 OR previous != 0
        )
        ORDER BY cost DESC, {group}
        LIMIT {WHO_LIMIT}
        """,
        parameters=parameters,
    ).result_rows
    width = len(grouping.columns)
    total, previous_total, count = rows[0][-3:] if rows else (ZERO, ZERO, 0)
    entries = []
    for row in rows:
        values = dict(zip(grouping.columns, row[:width], strict=True))
        label, cost, requests, previous = row[width : width + 4]
        entries.append(
            {
                "key": values[grouping.key],
                "tenant_id": values.get("tenant_id"),
                "label": label or "(none)",
                "cost_usd": money(cost),
                "share": share(cost, total),
                "requests": requests,
                "previous_cost_usd": money(previous),
            }
        )
    return {
        "by": by,
        "period": period,
        "tenant": tenant,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "total_usd": money(total),
        "previous_total_usd": money(previous_total),
        "rows": entries,
        "more": count - len(entries),
    }


# -- Now -------------------------------------------------------------------------


def now_spend(ledger: Ledger, now: datetime) -> dict[str, Any]:
    """This hour, today and the month to date (whole hours, the current one included),
    each against the same hours one week earlier."""
    month_start, end = window("month", now)
    start = min(month_start, day_floor(now)) - WEEK
    parameters = ledger.window(start, end)
    source = rollup_source(TENANT_HOURLY, (), bool(parameters["dirty"]))
    bounds = {p: window(p, now)[0] for p in ("hour", "day", "month")}
    sums = ", ".join(
        f"sumIf(cost_usd, hour >= toDateTime({int(b.timestamp())}, 'UTC')), "
        f"sumIf(cost_usd, hour >= toDateTime({int((b - WEEK).timestamp())}, 'UTC') "
        f"AND hour < toDateTime({int((end - WEEK).timestamp())}, 'UTC'))"
        for b in bounds.values()
    )
    (row,) = ledger.query(f"SELECT {sums} FROM ({source})", parameters=parameters).result_rows
    spend = {}
    for index, period in enumerate(bounds):
        current, previous = row[2 * index], row[2 * index + 1]
        spend[period] = {
            "cost_usd": money(current),
            "previous_week_usd": money(previous),
            "change_usd": money(current - previous),
            "change": share(current - previous, previous) if previous else None,
        }
    (ledger_rows,) = ledger.query("SELECT count() FROM usage_ledger").result_rows[0]
    (dead_letters,) = ledger.query("SELECT count() FROM dead_letters FINAL").result_rows[0]
    return {
        "at": now.isoformat(),
        "spend": spend,
        "ledger_rows": ledger_rows,
        "dead_letters": dead_letters,
    }


# -- Budgets ---------------------------------------------------------------------


def budgets(ledger: Ledger, tenants: Mapping[str, TenantConfig], now: datetime) -> dict[str, Any]:
    """Each configured tenant's month to date against its monthly budget, with the
    contract detector's month-end forecast, and this hour against its hourly contract."""
    month_start, end = window("month", now)
    hour_start = end - HOUR
    names = sorted(tenants)
    spent: dict[str, tuple[Decimal, Decimal]] = {}
    if names:
        parameters = ledger.window(month_start, end)
        parameters.update(tenants=names, hour=int(hour_start.timestamp()))
        rows = ledger.query(
            f"""
            SELECT tenant_id, sum(cost_usd),
                sumIf(cost_usd, hour >= toDateTime({{hour:UInt32}}, 'UTC'))
            FROM ({rollup_source(TENANT_HOURLY, ("tenant_id",), bool(parameters["dirty"]))})
            WHERE tenant_id IN {{tenants:Array(String)}}
            GROUP BY tenant_id
            """,
            parameters=parameters,
        ).result_rows
        spent = {tenant: (month, hour) for tenant, month, hour in rows}
    entries = []
    for tenant in names:
        config = tenants[tenant]
        month, hour = spent.get(tenant, (ZERO, ZERO))
        projected, _ = month_end_projection(month, now)
        budget = config.monthly_budget_usd
        contract = config.contracted_hourly_budget_usd
        entries.append(
            {
                "tenant_id": tenant,
                "month_to_date_usd": money(month),
                "monthly_budget_usd": money(budget) if budget else None,
                "used": share(month, budget) if budget else None,
                "forecast_usd": money(projected),
                "forecast_used": share(projected, budget) if budget else None,
                "hour_usd": money(hour),
                "contracted_hourly_usd": money(contract) if contract else None,
                "hour_used": share(hour, contract) if contract else None,
            }
        )
    return {
        "at": now.isoformat(),
        "month_start": month_start.isoformat(),
        "month_elapsed": str(month_end_projection(ZERO, now)[1].quantize(SHARE)),
        "tenants": entries,
    }


# -- Alerts ----------------------------------------------------------------------

# Each incident's latest state first, then the filter: an incident resolved long ago
# must not show as open by its old triggered row. A snoozed one (held back by an
# operator's snooze, never paged) shows, and is not open.
_ALERTS = """
SELECT *
FROM
(
    SELECT fingerprint, detector, key, tenant_id, severity, state, summary, value,
        threshold, baseline, unit, cause, evidence, query, window_start, window_end,
        triggered_at, resolved_at, recorded_at
    FROM alerts FINAL
    ORDER BY recorded_at DESC
    LIMIT 1 BY fingerprint
)
WHERE recorded_at >= {since:DateTime64(3)} OR state = 'triggered'
ORDER BY recorded_at DESC
LIMIT {limit:UInt32}
"""

_DELIVERIES = """
SELECT fingerprint, channel, argMax(outcome, attempted_at), max(attempted_at)
FROM alert_deliveries FINAL
WHERE fingerprint IN {fingerprints:Array(String)} AND action = 'trigger'
GROUP BY fingerprint, channel
ORDER BY fingerprint, channel
"""


def alerts(ledger: Ledger, now: datetime, limit: int = 50) -> dict[str, Any]:
    """Open incidents and those recorded in the last 7 days, each in its latest state,
    with its evidence, the query behind it, and where it was paged."""
    since = (now - WEEK).replace(tzinfo=None)
    incidents = named(ledger.query(_ALERTS, parameters={"since": since, "limit": limit}))
    deliveries: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    if incidents:
        for fingerprint, channel, outcome, at in ledger.query(
            _DELIVERIES, parameters={"fingerprints": [i["fingerprint"] for i in incidents]}
        ).result_rows:
            deliveries[fingerprint].append({"channel": channel, "outcome": outcome, "at": utc(at)})
    entries = [_incident(row, deliveries[row["fingerprint"]]) for row in incidents]
    entries.sort(key=lambda e: (e["open"], e["triggered_at"]), reverse=True)
    return {
        "open": sum(1 for e in entries if e["open"]),
        "incidents": entries,
    }


def _incident(row: dict[str, Any], paged: list[dict[str, Any]]) -> dict[str, Any]:
    evidence = json.loads(row["evidence"] or "{}")
    value, baseline = row["value"], row["baseline"]
    ratio = evidence.get("ratio")
    if ratio is None and baseline:
        ratio = str((value / baseline).quantize(Decimal("0.01")))
    return {
        "fingerprint": row["fingerprint"],
        "open": row["state"] == "triggered",
        "state": row["state"],
        "severity": row["severity"],
        "detector": row["detector"],
        "key": row["key"],
        "tenant_id": row["tenant_id"],
        "summary": row["summary"],
        "unit": row["unit"],
        "observed": exact(value) if row["unit"] == "usd" else str(value.normalize()),
        "threshold": exact(row["threshold"]),
        "baseline": exact(baseline) if baseline is not None else None,
        "ratio": ratio,
        "cause": row["cause"] or evidence.get("cause") or "",
        "cause_explanation": evidence.get("cause_explanation", ""),
        "cause_ratios": evidence.get("cause_ratios", {}),
        "evidence": evidence,
        "query": row["query"],
        "window_start": utc(row["window_start"]),
        "window_end": utc(row["window_end"]),
        "triggered_at": utc(row["triggered_at"]),
        "resolved_at": utc(row["resolved_at"]) if row["resolved_at"] else None,
        "paged": paged,
    }


# -- Why it moved ------------------------------------------------------------------


def movers(
    ledger: Ledger, classifier: SpikeCauseClassifier, period: Period, now: datetime
) -> dict[str, Any]:
    """The tenants and workflows whose spend moved most against the same span a week
    earlier, each change (to the cent) split into volume, retries, model mix, tokens per
    call, unit price and cache-hit parts that sum to it (`detectors.decomposition`, as
    an alert's `why_it_moved_usd`), or one `new_spend` / `stopped` part when either
    span had no spend, with the spike-cause label an alert would carry."""
    if period == "hour":
        period = "day"  # a workflow's models are kept by day only (spend_daily)
    start, end = window(period, now)
    previous_start, previous_end = start - WEEK, end - WEEK
    columns = ("tenant_id", "workflow_id", "provider", "model")
    parameters = ledger.window(previous_start, end)
    parameters.update(current=int(start.timestamp()), previous_end=int(previous_end.timestamp()))
    source, time = _source(
        GROUPINGS["tenant"], columns, grain(period), bool(parameters["dirty"]), compared=True
    )
    # The MOVERS tenants and MOVERS workflows whose spend changed most, each with its
    # models' totals in both periods: only those are decomposed (exact arithmetic over
    # every order of the factors), and the rest never leave ClickHouse. A row counts for
    # its tenant and its workflow: doubled once grouped (a few thousand rows, not the
    # rollup's).
    rows = ledger.query(
        f"""
        SELECT kind, key, any(name), sumIf(cost, this_period) AS current,
            sumIf(cost, NOT this_period) AS previous,
            groupArray((this_period, provider, model, cost, requests, input_tokens,
                output_tokens, retries, errors))
        FROM
        (
            SELECT entity.1 AS kind, entity.2 AS key, this_period, any(name) AS name,
                provider, model, sum(cost) AS cost, sum(requests) AS requests,
                sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                sum(retries) AS retries, sum(errors) AS errors
            FROM
            (
                SELECT {time} >= toDateTime({{current:UInt32}}, 'UTC') AS this_period,
                    tenant_id, workflow_id, any(workflow_name) AS name, provider, model,
                    sum(cost_usd) AS cost, sum(requests) AS requests,
                    sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                    sum(retries) AS retries, sum(errors) AS errors
                FROM ({source})
                WHERE {time} >= toDateTime({{current:UInt32}}, 'UTC')
                    OR {time} < toDateTime({{previous_end:UInt32}}, 'UTC')
                GROUP BY this_period, tenant_id, workflow_id, provider, model
            )
            ARRAY JOIN if(
                workflow_id = '',
                [('tenant', toString(tenant_id))],
                [('tenant', toString(tenant_id)), ('workflow', toString(workflow_id))]
            ) AS entity
            GROUP BY kind, key, this_period, provider, model
        )
        GROUP BY kind, key
        -- A change that rounds to $0.00 (half to even, as shown) moved nothing.
        HAVING abs(current - previous) > toDecimal128('0.005', 18)
        ORDER BY kind, abs(current - previous) DESC, key
        LIMIT {MOVERS} BY kind
        """,
        parameters=parameters,
    ).result_rows

    # (kind, key, this period) -> model -> its totals.
    usage: dict[tuple[str, str, bool], dict[str, _ModelTotals]] = defaultdict(dict)
    labels: dict[tuple[str, str], str] = {}
    for kind, key, name, _, _, models in rows:
        if kind == "workflow":
            labels[(kind, key)] = key if name in ("", key) else f"{name} ({key})"
        for this, provider, model, cost, *counts in models:
            totals = usage[(kind, key, bool(this))].setdefault(
                f"{provider}/{model}", _ModelTotals()
            )
            totals.add(cost, *counts)
    top = [(kind, key, current, previous) for kind, key, _, current, previous, _ in rows]
    users = _distinct_users(
        ledger, period, parameters, [key for kind, key, *_ in top if kind == "tenant"]
    )

    entries = []
    for kind, key, current, previous in top:
        after = usage.get((kind, key, True), {})
        before = usage.get((kind, key, False), {})
        parts = decompose(
            {model: totals.usage() for model, totals in before.items()},
            {model: totals.usage() for model, totals in after.items()},
        )
        change = (current - previous).quantize(CENT, rounding=ROUND_HALF_EVEN)
        cause = classifier.classify(
            _window_stats(after, users.get((key, True), 0)),
            _window_stats(before, users.get((key, False), 0)),
        )
        entries.append(
            {
                "kind": kind,
                "key": key,
                "label": labels.get((kind, key), key),
                "cost_usd": money(current),
                "previous_cost_usd": money(previous),
                "change_usd": money(change),
                "drivers": [
                    {
                        "driver": driver,
                        "change_usd": money(part),
                        "share": share(part, change),
                    }
                    for driver, part in parts.items()
                ],
                "cause": cause.cause,
                "cause_explanation": cause.explanation,
                "cause_ratios": cause.ratios,
            }
        )
    return {
        "period": period,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "previous_start": previous_start.isoformat(),
        "previous_end": previous_end.isoformat(),
        "movers": entries,
    }


@dataclass
class _ModelTotals:
    """One model's totals of an entity over one period."""

    cost: Decimal = ZERO
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    retries: int = 0
    errors: int = 0

    def add(
        self, cost: Decimal, requests: int, inp: int, out: int, retries: int, errors: int
    ) -> None:
        self.cost += cost
        self.requests += requests
        self.input_tokens += inp
        self.output_tokens += out
        self.retries += retries
        self.errors += errors

    def usage(self) -> Usage:
        return Usage(
            calls=self.requests,
            retries=self.retries,
            tokens=self.input_tokens + self.output_tokens,
            cost=self.cost,
        )


def _window_stats(models: Mapping[str, _ModelTotals], users: int) -> WindowStats:
    """The spike-cause classifier's view of an entity's models over one period."""
    totals = models.values()
    return WindowStats(
        cost=sum((m.cost for m in totals), ZERO),
        requests=sum(m.requests for m in totals),
        input_tokens=sum(m.input_tokens for m in totals),
        output_tokens=sum(m.output_tokens for m in totals),
        retries=sum(m.retries for m in totals),
        errors=sum(m.errors for m in totals),
        distinct_users=users,
        model_mix={model: m.requests for model, m in models.items()},
    )


def _distinct_users(
    ledger: Ledger, period: Period, parameters: dict[str, Any], tenants: list[str]
) -> dict[tuple[str, bool], int]:
    """(tenant, this period) -> its distinct users, for the given tenants."""
    if not tenants:
        return {}
    source, time = _source(
        GROUPINGS["user"], (), grain(period), bool(parameters["dirty"]), compared=True
    )
    rows = ledger.query(
        f"""
        SELECT {time} >= toDateTime({{current:UInt32}}, 'UTC') AS this_period,
            tenant_id, uniqExactIf(user_id, user_id != '' AND requests > 0)
        FROM ({source})
        WHERE tenant_id IN {{tenants:Array(String)}}
            AND ({time} >= toDateTime({{current:UInt32}}, 'UTC')
                OR {time} < toDateTime({{previous_end:UInt32}}, 'UTC'))
        GROUP BY this_period, tenant_id
        """,
        parameters={**parameters, "tenants": tenants},
    ).result_rows
    return {(tenant, bool(this)): users for this, tenant, users in rows}


# -- Charts ----------------------------------------------------------------------


def series(ledger: Ledger, by: Dimension, period: Period, now: datetime) -> dict[str, Any]:
    """Spend over time stacked by `by`, daily over the period (the last 7 days for the
    hour, the day and the week); by tenant, hourly over the last 24 hours for the hour
    and the day (from the hourly rollup). The largest SERIES_KEYS keys get their own
    series, the rest one "other"."""
    grouping = GROUPINGS[by]
    end = hour_floor(now) + HOUR
    if period in ("hour", "day") and by == "tenant":
        start, step = end - DAY, HOUR
    else:
        start, step = window("week" if period in ("hour", "day") else period, now)[0], DAY
    parameters = ledger.window(start, end)
    source, time = _source(
        grouping, (), "hour" if step == HOUR else "day", bool(parameters["dirty"])
    )
    group = ", ".join(grouping.columns)
    # Keys ranked by their total over the range (ties by key); the first SERIES_KEYS
    # keep their own slot (1…), the others share slot 0. The keys are ranked once (one
    # row per key) and the rows then summed by (time, slot), never by (time, key).
    rows = ledger.query(
        f"""
        WITH (
            SELECT (
                arraySlice(
                    arraySort(k -> (-k.3, k.1), groupArray((key, label, total))),
                    1,
                    {SERIES_KEYS}
                ),
                count()
            )
            FROM
            (
                SELECT tuple({group}) AS key, {grouping.label} AS label,
                    sum(cost_usd) AS total
                FROM ({source})
                GROUP BY {group}
            )
        ) AS ranked
        SELECT toDateTime({time}, 'UTC') AS t,
            indexOf(arrayMap(k -> k.1, ranked.1), tuple({group})) AS slot, sum(cost_usd),
            any(ranked)
        FROM ({source})
        GROUP BY t, slot
        """,
        parameters=parameters,
    ).result_rows
    buckets = []
    at = start
    while at < end:
        buckets.append(at)
        at += step
    index = {bucket: n for n, bucket in enumerate(buckets)}
    slots: dict[int, list[Decimal]] = {}
    names: dict[int, tuple[Any, str]] = {}
    keys = rows[0][-1][1] if rows else 0  # how many there are
    for bucket, slot, cost, (top, _) in rows:
        values = slots.setdefault(slot, [ZERO] * len(buckets))
        at = bucket.replace(tzinfo=UTC)
        if at in index:
            values[index[at]] += cost
        if slot:
            key, label, _ = top[slot - 1]
            names[slot] = (key[-1], label or "(none)")
    out = [
        {"key": names[slot][0], "label": names[slot][1], "values": [money(v) for v in slots[slot]]}
        for slot in sorted(names)
    ]
    if 0 in slots:
        out.append(
            {
                "key": None,
                "label": f"{keys - SERIES_KEYS} others",
                "values": [money(v) for v in slots[0]],
            }
        )
    return {
        "by": by,
        "period": period,
        "grain": "hour" if step == HOUR else "day",
        "buckets": [bucket.isoformat() for bucket in buckets],
        "series": out,
    }


# -- Dead letters and unpriced calls -------------------------------------------------

_UNPRICED = """
SELECT provider, model, count(), sum(input_tokens), sum(output_tokens),
    sum(ifNull(reported_cost_usd, 0)), max(timestamp), sum(estimated_cost_usd)
FROM
(
    SELECT request_id, any(provider) AS provider, any(model) AS model,
        any(input_tokens) AS input_tokens, any(output_tokens) AS output_tokens,
        any(reported_cost_usd) AS reported_cost_usd, any(timestamp) AS timestamp,
        any(estimated_cost_usd) AS estimated_cost_usd
    FROM usage_ledger
    WHERE cost_status != 'priced'
        AND request_id NOT IN (
            SELECT request_id FROM cost_corrections FINAL WHERE new_cost_status = 'priced'
        )
    GROUP BY request_id
)
GROUP BY provider, model
ORDER BY count() DESC, provider, model
"""


def dead_letters(ledger: Ledger) -> dict[str, Any]:
    """Dead letters by reason and the latest ones (never their payload), and the calls
    still unpriced by model, with what their providers reported they cost."""
    by_reason = ledger.query(
        "SELECT reason, count(), max(received_at) FROM dead_letters FINAL "
        "GROUP BY reason ORDER BY count() DESC, reason"
    ).result_rows
    latest = named(
        ledger.query(
            f"""
            SELECT received_at, reason, message, topic, partition, offset, element_index,
                request_id, tenant_id, payload_bytes
            FROM dead_letters FINAL ORDER BY received_at DESC, offset DESC LIMIT {LATEST_ROWS}
            """
        )
    )
    unpriced = ledger.query(_UNPRICED).result_rows
    return {
        "total": sum(count for _, count, _ in by_reason),
        "by_reason": [
            {"reason": reason, "count": count, "latest_at": utc(at)}
            for reason, count, at in by_reason
        ],
        "latest": [
            {**row, "received_at": utc(row["received_at"]), "message": row["message"][:300]}
            for row in latest
        ],
        "unpriced": {
            "calls": sum(row[2] for row in unpriced),
            "reported_cost_usd": money(sum((row[5] for row in unpriced), ZERO)),
            # Calls to models with no price are estimated (docs/pricing.md).
            "estimated_cost_usd": money(sum((row[7] for row in unpriced), ZERO)),
            "by_model": [
                {
                    "provider": provider,
                    "model": model,
                    "calls": calls,
                    "input_tokens": inp,
                    "output_tokens": out,
                    "reported_cost_usd": money(reported),
                    "estimated_cost_usd": money(estimated),
                    "latest_at": utc(at),
                }
                for provider, model, calls, inp, out, reported, at, estimated in unpriced
            ],
        },
    }
