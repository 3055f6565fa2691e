"""Rows with fixed dates kept in a ledger whatever their age.

Tests insert rows dated on fixed days (the analyst ledger of 2026-10-30..11-22, a
Monday of November). ClickHouse drops rows past the raw TTL as they are inserted, so
each such test would start failing 90 days after its dates; these set the retention,
as `spendstream retention` does, long enough to keep them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from streams.analyst.retention import (
    DEFAULT_HOURLY_DAYS,
    DEFAULT_RAW_DAYS,
    current_ttls,
    set_hourly_retention,
    set_raw_retention,
    ttl_period,
)

__all__ = ["keep_rows_of", "kept_days"]


def kept_days(default_days: int, oldest: datetime) -> int:
    """A retention that keeps rows as old as `oldest` for a week more: the migrations'
    default while it does, longer once they have aged past it."""
    return max(default_days, (datetime.now(UTC) - oldest).days + 8)


def keep_rows_of(client: Client, events: Sequence[dict[str, Any]]) -> None:
    """Raw and hourly retention long enough for rows as old as the oldest of `events`
    (each with a `timestamp`); a retention already long enough is left as it is."""
    oldest = min(event["timestamp"] for event in events)
    ttls = current_ttls(client)
    raw = kept_days(DEFAULT_RAW_DAYS, oldest)
    if _days(ttls["usage_ledger"]) < raw:
        set_raw_retention(client, raw)
    hourly = kept_days(DEFAULT_HOURLY_DAYS, oldest)
    if _days(ttls["tenant_hourly_state"]) < hourly:
        set_hourly_retention(client, hourly)


def _days(ttl: str) -> int:
    period = ttl_period(ttl)
    return period.days if period is not None else 1 << 30  # no TTL keeps every row
