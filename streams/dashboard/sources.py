"""Where the dashboard's figures come from: the rollups, read by the views' own rules.

The public views (`spend_daily`, `tenant_hourly`, `user_daily`, …) check the whole
ledger for duplicates twice per query (`ledger_dirty_days`, see
sql/022_ledger_day_check.sql); on a large ledger that check is most of a query's
time. As the weekly review does (streams/analyst/weekly_review.py), a panel checks
only its own days once, then reads what those views union: the rollup state for
clean days, the recompute from the deduplicated ledger for dirty days, and the
re-pricing deltas. tests/dashboard/test_panels.py checks the result against the views.

Hourly figures come from `tenant_hourly` for tenants and from `attribution_hourly`
(sql/044_attribution_hourly.sql: team, workflow, model, user and feature in one table)
for the other dimensions, by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

# Measures every source below yields, in this order, after its dimension columns.
MEASURES = (
    "cost_usd",
    "requests",
    "errors",
    "retries",
    "input_tokens",
    "output_tokens",
)

# Bounds as epoch seconds: no time zone to interpret on either side.
START = "toDateTime({start:UInt32}, 'UTC')"
END = "toDateTime({end:UInt32}, 'UTC')"
# A period and the same span a week earlier, without the time between them (an hour
# and its counterpart are two hours of the week between): `[start, previous_end)` and
# `[current, end)`.
PREVIOUS_END = "toDateTime({previous_end:UInt32}, 'UTC')"
CURRENT = "toDateTime({current:UInt32}, 'UTC')"


def in_range(time: str, compared: bool) -> str:
    """`time` within the source's bounds (`compared`: the period and its counterpart)."""
    if compared:
        return (
            f"({time} >= {START} AND {time} < {PREVIOUS_END} "
            f"OR {time} >= {CURRENT} AND {time} < {END})"
        )
    return f"{time} >= {START} AND {time} < {END}"


# The rules of the ledger_dirty_days view (sql/022_ledger_day_check.sql), in two steps.
_DAY_ROWS = (
    "SELECT day, sum(ledger_rows) FROM ledger_day_check "
    "WHERE day >= {first:Date} AND day <= {last:Date} GROUP BY day"
)
_DAY_CHECK = (
    "SELECT day, sum(ledger_rows), uniqExactMerge(distinct_requests) FROM ledger_day_check "
    "WHERE day IN {days:Array(Date)} GROUP BY day"
)


@dataclass(frozen=True)
class Rollup:
    """A rollup's state table and recompute view, its time column and its dimensions."""

    name: str
    time: str  # "day" or "hour"
    dimensions: tuple[str, ...]
    # Where its re-pricing deltas are read: `cost_corrections`' columns, by its dimensions.
    corrections: str = "cost_corrections FINAL"


SPEND_DAILY = Rollup(
    "spend_daily",
    "day",
    (
        "tenant_id",
        "team_id",
        "feature_name",
        "environment",
        "workflow_id",
        "workflow_name",
        "provider",
        "model",
    ),
)
USER_DAILY = Rollup("user_daily", "day", ("tenant_id", "user_id"))
TENANT_HOURLY = Rollup("tenant_hourly", "hour", ("tenant_id",))
ATTRIBUTION_HOURLY = Rollup(
    "attribution_hourly",
    "hour",
    ("dimension", "tenant_id", "value", "detail"),
    corrections="attribution_corrections",
)
# Each dimension's columns (as spend_daily names them) in attribution_hourly.
ATTRIBUTION_COLUMNS: dict[str, dict[str, str]] = {
    "team": {"tenant_id": "tenant_id", "team_id": "value"},
    "workflow": {"tenant_id": "tenant_id", "workflow_id": "value", "workflow_name": "detail"},
    "model": {"tenant_id": "tenant_id", "provider": "detail", "model": "value"},
    "user": {"tenant_id": "tenant_id", "user_id": "value"},
    "feature": {"tenant_id": "tenant_id", "feature_name": "value"},
}


class Ledger:
    """The dashboard's ClickHouse client, with each day's duplicate check remembered.

    A day is dirty when its rollups received more rows than it has distinct request
    ids (`ledger_dirty_days`). Its verdict can change only when rows are inserted for
    it, and every insert adds to its row count (`ledger_rows`). So each day's verdict
    is kept with the row count it was made at, and only a day whose count has moved
    since is checked again (the distinct count merges the day's id sets: tens of
    milliseconds a day on a large ledger, against a few for the counts of a month): a
    live ledger re-checks today, not the month, whatever the merges do. Use one
    `Ledger` per client, from one thread at a time (the worker's ClickHouse thread).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._verdicts: dict[date, tuple[int, bool]] = {}  # day -> (rows, dirty)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self.client.query(sql, parameters=parameters)

    def dirty_days(self, first: date, last: date) -> list[date]:
        counts = self.query(_DAY_ROWS, {"first": first, "last": last}).result_rows
        moved = [day for day, rows in counts if self._verdicts.get(day, (None,))[0] != rows]
        if moved:
            # A verdict goes with the count it was made at (rows may arrive in between).
            for day, rows, distinct in self.query(_DAY_CHECK, {"days": moved}).result_rows:
                self._verdicts[day] = (rows, rows != distinct)
        return sorted(day for day, _ in counts if self._verdicts.get(day, (0, False))[1])

    def window(self, start: datetime, end: datetime) -> dict[str, Any]:
        """Parameters of a source over `[start, end)`: its bounds and its dirty days."""
        return {
            "start": int(start.timestamp()),
            "end": int(end.timestamp()),
            "dirty": self.dirty_days(start.date(), end.date()),
        }


def rollup_source(
    rollup: Rollup, dimensions: tuple[str, ...], dirty: bool, compared: bool = False
) -> str:
    """A subquery of `time, *dimensions, *MEASURES` rows over `[{start}, {end})`
    (epoch-second parameters), taking `{dirty:Array(Date)}` from `Ledger.window`;
    `dirty`: whether that list has a day (without one, the recompute view is left out:
    planning it costs ~10 ms of CPU even when it reads nothing); `compared`: only
    `[{start}, {previous_end})` and `[{current}, {end})` of it."""
    missing = set(dimensions) - set(rollup.dimensions)
    if missing:
        raise ValueError(f"{rollup.name} has no {', '.join(sorted(missing))}")
    time = rollup.time
    dims = "".join(f"{d}, " for d in dimensions)
    measures = ", ".join(MEASURES)
    within = in_range(time, compared)
    # `IN {dirty}` (not has()) lets an empty list skip the recompute's ledger read.
    correction_time = (
        "toDate(timestamp)" if time == "day" else "toDateTime(toStartOfHour(timestamp), 'UTC')"
    )
    zeros = ", ".join(f"toUInt64(0) AS {m}" for m in MEASURES[1:])
    recomputed = f"""
    SELECT {time}, {dims}{measures} FROM {rollup.name}_recompute
    WHERE {within} AND toDate({time}) IN {{dirty:Array(Date)}}
    UNION ALL"""
    return f"""
    SELECT {time}, {dims}{measures} FROM {rollup.name}_state
    WHERE {within} AND toDate({time}) NOT IN {{dirty:Array(Date)}}
    UNION ALL{recomputed if dirty else ""}
    SELECT {correction_time} AS {time}, {dims}delta_cost_usd AS cost_usd, {zeros}
    FROM {rollup.corrections}
    WHERE {in_range(correction_time, compared)}
    """


def attribution_source(
    dimension: str, columns: tuple[str, ...], dirty: bool, compared: bool = False
) -> str:
    """`rollup_source` of one dimension of `attribution_hourly`, its columns named as
    spend_daily names them (`team_id`, `provider`, `model`, …)."""
    names = ATTRIBUTION_COLUMNS[dimension]
    missing = set(columns) - set(names)
    if missing:
        raise ValueError(f"attribution_hourly has no {', '.join(sorted(missing))} by {dimension}")
    read = tuple(dict.fromkeys(names[c] for c in columns))
    renamed = "".join(f"{names[c]} AS {c}, " for c in columns)
    return f"""
    SELECT hour, {renamed}{", ".join(MEASURES)}
    FROM ({rollup_source(ATTRIBUTION_HOURLY, ("dimension", *read), dirty, compared)})
    WHERE dimension = '{dimension}'
    """
