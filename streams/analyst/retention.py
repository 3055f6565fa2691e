"""Retention: how long raw ledger rows and hourly detail are kept.

Raw rows expire after `raw_days` (default 90), hourly rollups after `hourly_days`
(default 400); `ledger_day_check`, the duplicate
detector of the rollups, expires one day earlier, so that a day is never
recomputed from a ledger that has started to drop its rows (022_ledger_day_check.sql).
Daily rollups and corrections have no TTL. TTLs are applied by ClickHouse during
merges, so expired rows disappear some time after their deadline, not at it; a
changed TTL is applied to the rows already stored before `retention` returns.
"""

from __future__ import annotations

import re
from datetime import timedelta

from clickhouse_connect.driver.client import Client

from streams.errors import ConfigError
from streams.ledger.remote import Reader

DEFAULT_RAW_DAYS = 90
DEFAULT_HOURLY_DAYS = 400
# Duplicates arrive within the pipeline's dedupe horizon (7 days); the duplicate
# detector must outlive it for the rollup views to stay exact.
MIN_RAW_DAYS = 8
HOURLY_TABLES = ("tenant_hourly_state", "attribution_hourly_state")
TTL_TABLES = ("usage_ledger", "ledger_day_check", *HOURLY_TABLES)
# A new TTL is applied to the rows already stored by a mutation, which ClickHouse
# runs in the background: the command waits for it, so that what `retention` drops
# is gone when it returns, whichever way it ran (directly or through the worker),
# and a query just after it reads the same rows both ways.
_APPLIED_NOW = " SETTINGS mutations_sync = 2"


def current_ttls(client: Reader | Client) -> dict[str, str]:
    """The TTL clause of each table that has one, as ClickHouse reports it."""
    rows = client.query(
        "SELECT name, engine_full FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
        parameters={"names": list(TTL_TABLES)},
    ).result_rows
    ttls = {}
    for name, engine in rows:
        _, found, rest = engine.partition(" TTL ")
        ttls[name] = rest.split(" SETTINGS ", 1)[0].strip() if found else "(none)"
    return ttls


def ttl_period(ttl: str) -> timedelta | None:
    """The period of a TTL clause as `current_ttls` gives it (None: no TTL)."""
    # ClickHouse reports `INTERVAL 90 DAY` as `toIntervalDay(90)`.
    found = re.search(r"toIntervalDay\((\d+)\)|INTERVAL (\d+) DAY", ttl)
    return timedelta(days=int(found.group(1) or found.group(2))) if found else None


def raw_retention_of(client: Reader | Client) -> timedelta | None:
    """The ledger's raw TTL, as ClickHouse has it (None: no TTL)."""
    return ttl_period(current_ttls(client).get("usage_ledger", ""))


def set_raw_retention(client: Client, days: int) -> None:
    if days < MIN_RAW_DAYS:
        raise ConfigError(
            f"raw retention of {days} days is shorter than the {MIN_RAW_DAYS} days "
            "duplicates can still arrive in"
        )
    client.command(
        f"ALTER TABLE usage_ledger MODIFY TTL toDateTime(timestamp) + INTERVAL {days} DAY"
        f"{_APPLIED_NOW}"
    )
    client.command(
        f"ALTER TABLE ledger_day_check MODIFY TTL day + INTERVAL {days - 1} DAY{_APPLIED_NOW}"
    )


def set_hourly_retention(client: Client, days: int) -> None:
    if days < 1:
        raise ConfigError(f"hourly retention must be at least 1 day, not {days}")
    for table in HOURLY_TABLES:
        client.command(f"ALTER TABLE {table} MODIFY TTL hour + INTERVAL {days} DAY{_APPLIED_NOW}")
