"""The analyst query an alert carries: ClickHouse SQL that shows what the detector saw.

Detector keys look like `tenant:acme`, `workflow:summarize` or
`tenant:acme/model:gpt-4o`; each known dimension becomes a filter on the
ledger. The query spans the alert window and the baseline before it, so the
spike is visible next to the hours it was compared with.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal

# Detector key dimension -> usage_ledger column.
DIMENSIONS: dict[str, str] = {
    "tenant": "tenant_id",
    "team": "team_id",
    "workflow": "workflow_id",
    "run": "workflow_run_id",
    "workflow_run": "workflow_run_id",
    "model": "model",
    "provider": "provider",
    "user": "user_id",
    "feature": "feature_name",
}

# A dimension starts the key or follows a separator; values may contain "/" (model
# names like "meta-llama/Llama-3") so we split on the dimension names, not on "/".
_DIM = re.compile(
    r"(?:^|[,/|& ])(" + "|".join(sorted(DIMENSIONS, key=len, reverse=True)) + r")[:=]"
)


def parse_key(key: str) -> dict[str, str]:
    """`"tenant:acme/model:gpt-4o"` -> `{"tenant": "acme", "model": "gpt-4o"}`."""
    matches = list(_DIM.finditer(key))
    parts: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(key)
        value = key[match.end() : end].strip()
        if value:
            parts[match.group(1)] = value
    return parts


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_time(moment: datetime) -> str:
    return f"toDateTime64('{moment.strftime('%Y-%m-%d %H:%M:%S')}', 3, 'UTC')"


def analyst_query(
    key: str, window_start: datetime, window_end: datetime, *, baseline_days: int = 7
) -> str:
    """SQL over `usage_ledger FINAL` for the key's window plus its baseline."""
    dims = parse_key(key)
    filters = [f"{DIMENSIONS[dim]} = {sql_string(value)}" for dim, value in dims.items()]
    if "run" in dims or "workflow_run" in dims:
        # A run is short and its own baseline is meaningless: show what it spent on.
        bucket, label = "model", "model"
        time_filter: list[str] = []
    else:
        daily = window_end - window_start > timedelta(days=1)
        bucket = "toStartOfDay(timestamp)" if daily else "toStartOfHour(timestamp)"
        label = "day" if daily else "hour"
        since = window_start - timedelta(days=baseline_days)
        time_filter = [f"timestamp >= {_sql_time(since)}", f"timestamp < {_sql_time(window_end)}"]
    where = "\n  AND ".join(filters + time_filter) or "1"
    return (
        f"SELECT\n"
        f"    {bucket} AS {label},\n"
        f"    sum(cost_usd) AS cost_usd,\n"
        f"    sum(request_count) AS requests,\n"
        f"    uniqExact(user_id) AS users,\n"
        f"    sum(input_tokens) AS input_tokens,\n"
        f"    sum(output_tokens) AS output_tokens,\n"
        f"    sum(retry_count) AS retries,\n"
        f"    countIf(status_code >= 400) AS errors,\n"
        f"    topK(3)(model) AS top_models\n"
        f"FROM usage_ledger FINAL\n"
        f"WHERE {where}\n"
        f"GROUP BY {label}\n"
        f"ORDER BY {label}"
    )


def _median_sql(sorted_array: str) -> str:
    """The median of a sorted array as `statistics.median` takes it: the middle element,
    or the mean of the two middle ones (0 for an empty array)."""
    n = f"length({sorted_array})"
    return (
        f"if({n} = 0, toDecimal128(0, 18), "
        f"({sorted_array}[intDiv({n} + 1, 2)] + {sorted_array}[intDiv({n}, 2) + 1]) / 2)"
    )


def rolling_median_query(
    key: str,
    as_of: datetime,
    *,
    lookback_days: int,
    k: Decimal,
    min_baseline_usd: Decimal,
) -> str:
    """SQL over `usage_ledger FINAL` giving every figure of a `rolling_median` alert in
    one row: the hour's spend up to `as_of` (observed), the median of the key's active
    hours over the previous `lookback_days` and of the same hour of day, the baseline
    (the larger of the two, at least `min_baseline_usd`), the threshold (k x baseline)
    and the ratio (observed / baseline)."""
    hour = as_of.replace(minute=0, second=0, microsecond=0)
    since = hour - timedelta(days=lookback_days)
    filters = [f"{DIMENSIONS[dim]} = {sql_string(value)}" for dim, value in parse_key(key).items()]
    where = " AND ".join(filters) or "1"
    return (
        "WITH\n"
        "    hours AS (\n"
        "        SELECT toStartOfHour(timestamp) AS hour, sum(cost_usd) AS spend\n"
        "        FROM usage_ledger FINAL\n"
        f"        WHERE {where}\n"
        f"          AND timestamp >= {_sql_time(since)} AND timestamp < {_sql_time(hour)}\n"
        "        GROUP BY hour\n"
        "        HAVING spend > 0\n"
        "    ),\n"
        "    past AS (\n"
        "        SELECT arraySort(groupArray(spend)) AS active,\n"
        f"            arraySort(groupArrayIf(spend, toHour(hour) = {hour.hour})) AS same_hour\n"
        "        FROM hours\n"
        "    ),\n"
        "    now AS (\n"
        "        SELECT sum(cost_usd) AS observed\n"
        "        FROM usage_ledger FINAL\n"
        f"        WHERE {where}\n"
        f"          AND timestamp >= {_sql_time(hour)} AND timestamp <= {_sql_time_ms(as_of)}\n"
        "    )\n"
        "SELECT\n"
        "    observed,\n"
        f"    {_median_sql('active')} AS median_usd,\n"
        f"    {_median_sql('same_hour')} AS same_hour_median_usd,\n"
        "    greatest(median_usd, same_hour_median_usd, "
        f"toDecimal128('{min_baseline_usd}', 18)) AS baseline_usd,\n"
        f"    toDecimal128('{k}', 18) * baseline_usd AS threshold_usd,\n"
        "    observed / baseline_usd AS ratio,\n"
        "    length(active) AS active_hours\n"
        "FROM now, past"
    )


def _sql_time_ms(moment: datetime) -> str:
    return f"toDateTime64('{moment.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}', 3, 'UTC')"


def burn_rate_query(
    tenant_id: str, as_of: datetime, short_window: timedelta, long_window: timedelta
) -> str:
    """SQL over `usage_ledger FINAL` giving a `budget_burn_rate` alert's figures: the
    tenant's spend over each window ending at `as_of` (whole minutes, as the detector
    counts them; the rates are these over the window's hours) and the month's spend by
    then (estimates included, as budgets count them)."""
    end = as_of.replace(second=0, microsecond=0) + timedelta(minutes=1)
    month_start = as_of.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    spend = "cost_usd + estimated_cost_usd"
    return (
        "SELECT\n"
        f"    sumIf({spend}, timestamp >= {_sql_time(end - short_window)}) AS short_spend_usd,\n"
        f"    sumIf({spend}, timestamp >= {_sql_time(end - long_window)}) AS long_spend_usd,\n"
        f"    sumIf({spend}, timestamp >= {_sql_time(month_start)}) AS month_spend_usd\n"
        "FROM usage_ledger FINAL\n"
        f"WHERE tenant_id = {sql_string(tenant_id)}\n"
        f"  AND timestamp >= {_sql_time(min(month_start, end - long_window))}\n"
        f"  AND timestamp < {_sql_time(end)}"
    )
