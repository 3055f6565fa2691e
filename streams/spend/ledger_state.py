"""Spend state derived from the ledger: what the in-stream tables held before this log.

The spend tables live in Faust changelogs, and the embedded broker keeps its topics in
memory: every `spendstream dev` or `replay` starts a new broker, a new log epoch, and
tables that would be empty while the ledger holds every priced call. So at start the
worker reads, with a few GROUP BY queries over `usage_ledger FINAL`, the rows ingested
before its log epoch began (`ingested_at < log_epoch_started_at`): hourly buckets over
the detectors' lookback per tenant/workflow/team/model with every field the detectors
read, month totals, each tenant's daily totals over the tables' daily retention, and
the workflow runs still open. That is the base; the tables
count this epoch's costed events on top of it and reads add the two.

No row is in both: a row of this epoch is priced (`ingested_at`) after the epoch began,
and the rows before it were ledgered under an earlier broker whose costed topic is gone.
Nothing is written to the changelogs, so a worker that restarts under the same broker
recovers this epoch's counts from them and reads the same base again.

Work is per aggregated row (tenant, value, hour), never per ledger row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from streams.ledger.remote import DirectReader, Reader
from streams.spend.coverage import Coverage, costed_partition, since_datetime
from streams.spend.tables import (
    CAPPED_DIMENSIONS,
    DAY,
    HOUR,
    HOURLY_RETENTION_HOURS,
    MAX_USERS_TRACKED,
    OVERFLOW,
    SEP,
    LedgerBase,
    day_key,
    hour_bucket_value,
    merge_buckets,
)

# A run's record lives this long after its last call (SpendTables.run_retention_hours);
# its calls are read from this far back.
RUN_LOOKBACK = timedelta(days=8)
# Months whose totals are read: this one and the one before (late events of last month).
MONTH_LOOKBACK = timedelta(days=32)

_COLUMNS = {"tenant": "tenant_id", "workflow": "workflow_id", "team": "team_id", "model": "model"}


def _hourly_sql(dim: str) -> str:
    # Dimension values as the tables key them: '|' is the key separator.
    column = _COLUMNS[dim]
    return f"""
SELECT
    tenant_id,
    replaceAll({column}, '|', '/') AS value,
    intDiv(toUnixTimestamp(timestamp), {HOUR}) AS hour,
    min(timestamp) AS first_seen,
    sum(cost_usd) AS cost,
    groupUniqArrayIf({MAX_USERS_TRACKED})(user_id, user_id != '') AS users,
    sum(toUInt64(input_tokens)) AS input,
    sum(toUInt64(output_tokens)) AS output,
    countIf(retry_count > 0 OR retry_of != '') AS retries,
    countIf(ifNull(status_code, 0) >= 400) AS errors,
    sumMap(map(model, toUInt64(request_count))) AS models,
    sumIf(estimated_cost_usd, cost_status != 'priced') AS estimated,
    sumIf(toUInt64(request_count), cost_status != 'priced') AS unpriced
FROM usage_ledger FINAL
WHERE ingested_at < fromUnixTimestamp64Milli(%(before_ms)s)
  AND timestamp >= fromUnixTimestamp64Milli(%(since_ms)s)
  AND {column} != ''
GROUP BY tenant_id, value, hour
ORDER BY tenant_id, first_seen, value
"""


_MONTHS_SQL = """
SELECT
    tenant_id,
    toYYYYMM(timestamp) AS month,
    count() AS rows,
    sum(cost_usd) AS cost,
    sumIf(estimated_cost_usd, cost_status != 'priced') AS estimated,
    sumIf(toUInt64(request_count), cost_status != 'priced') AS unpriced
FROM usage_ledger FINAL
WHERE ingested_at < fromUnixTimestamp64Milli(%(before_ms)s)
  AND timestamp >= fromUnixTimestamp64Milli(%(since_ms)s)
GROUP BY tenant_id, month
"""

_DAYS_SQL = f"""
SELECT
    tenant_id,
    intDiv(toUnixTimestamp(timestamp), {DAY}) AS day,
    sum(cost_usd) AS cost,
    sumIf(estimated_cost_usd, cost_status != 'priced') AS estimated,
    sumIf(toUInt64(request_count), cost_status != 'priced') AS unpriced
FROM usage_ledger FINAL
WHERE ingested_at < fromUnixTimestamp64Milli(%(before_ms)s)
  AND timestamp >= fromUnixTimestamp64Milli(%(since_ms)s)
GROUP BY tenant_id, day
"""

_RUNS_SQL = """
SELECT
    tenant_id,
    workflow_id,
    workflow_run_id,
    sum(cost_usd) AS cost,
    min(timestamp) AS started_at,
    max(timestamp) AS last_seen
FROM usage_ledger FINAL
WHERE ingested_at < fromUnixTimestamp64Milli(%(before_ms)s)
  AND timestamp >= fromUnixTimestamp64Milli(%(since_ms)s)
  AND workflow_run_id != ''
GROUP BY tenant_id, workflow_id, workflow_run_id
HAVING last_seen >= fromUnixTimestamp64Milli(%(open_since_ms)s)
"""


def _millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class LedgerQueries:
    """The base's queries over the ledger's rows ingested before `before` (blocking: run
    them on the ClickHouse thread). `reader` is a clickhouse-connect client or a peer's
    remote reader; `keep(tenant_id)`, when given, says which tenants' rows the base
    takes (every query's first column is the tenant)."""

    def __init__(
        self,
        reader: Any,
        before: datetime,
        now: datetime,
        keep: Callable[[str], bool] | None = None,
    ) -> None:
        # A peer worker's client reads through the owner; a local one reads directly.
        self.read: Reader = reader if getattr(reader, "remote", False) else DirectReader(reader)
        self.before = before
        self.now = now
        self.keep = keep

    def rows(self, sql: str, **moments: datetime) -> list[tuple[Any, ...]]:
        moments["before"] = self.before
        parameters = {f"{name}_ms": _millis(at) for name, at in moments.items()}
        rows = self.read.query(sql, parameters).result_rows
        keep = self.keep
        return rows if keep is None else [row for row in rows if keep(str(row[0]))]

    def months(self, base: LedgerBase) -> None:
        """Month totals: all `/v1/limits` reads, so it answers before the rest is in."""
        now = self.now
        since = (now - MONTH_LOOKBACK).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        for tenant, month, count, cost, estimated, unpriced in self.rows(_MONTHS_SQL, since=since):
            base.months[SEP.join((tenant, "month", f"{month // 100:04d}-{month % 100:02d}"))] = {
                "cost": Decimal(cost),
                "estimated": Decimal(estimated),
                "unpriced": int(unpriced),
            }
            base.rows += int(count)

    def hours_and_runs(
        self,
        base: LedgerBase,
        max_values_per_dim: int = 1000,
        run_retention: timedelta = timedelta(hours=48),
        daily_retention_days: int = 40,
    ) -> None:
        """Hourly buckets over the detectors' lookback, the tenants' daily totals, and
        the runs still open."""
        since_hour = datetime.fromtimestamp(
            (int(self.now.timestamp()) // HOUR - HOURLY_RETENTION_HOURS) * HOUR, UTC
        )
        # Values past a tenant's cap of distinct values count under OVERFLOW, as the
        # tables count them: admitted in order of first appearance.
        admitted: dict[tuple[str, str], set[str]] = {}

        def capped(tenant: str, dim: str, value: str) -> str:
            if dim == "tenant":
                return value
            seen = admitted.setdefault((tenant, dim), set())
            if value not in seen:
                if len(seen) >= max_values_per_dim:
                    return OVERFLOW
                seen.add(value)
            return value

        for dim in ("tenant", *CAPPED_DIMENSIONS):
            for tenant, value, hour, _, cost, users, *counts in self.rows(
                _hourly_sql(dim), since=since_hour
            ):
                value = capped(tenant, dim, value)
                inputs, outputs, retries, errors, models, estimated, unpriced = counts
                bucket = hour_bucket_value(
                    cost,
                    int(inputs),
                    int(outputs),
                    {str(m): int(n) for m, n in dict(models).items()},
                    users=sorted(users),
                    retries=int(retries),
                    errors=int(errors),
                    estimated=estimated,
                    unpriced=int(unpriced),
                )
                key = SEP.join((tenant, dim, value, str(hour)))
                held = base.hourly.get(key)
                base.hourly[key] = bucket if held is None else merge_buckets(held, bucket)

        # The tenants' days the tables keep (UTC days since the epoch).
        since_day = datetime.fromtimestamp(
            (int(self.now.timestamp()) // DAY - daily_retention_days) * DAY, UTC
        )
        for tenant, day, cost, estimated, unpriced in self.rows(_DAYS_SQL, since=since_day):
            base.days[day_key(tenant, day)] = {
                "cost": Decimal(cost),
                "estimated": Decimal(estimated),
                "unpriced": int(unpriced),
            }

        for tenant, workflow, run, cost, started, last in self.rows(
            _RUNS_SQL, since=self.now - RUN_LOOKBACK, open_since=self.now - run_retention
        ):
            base.runs[SEP.join((tenant, "run", workflow, run))] = {
                "cost": Decimal(cost),
                "started_at": _utc(started),
                "last_seen": _utc(last),
            }


def load_ledger_base(
    reader: Any,
    before: datetime,
    now: datetime,
    *,
    max_values_per_dim: int = 1000,
    run_retention: timedelta = timedelta(hours=48),
    daily_retention_days: int = 40,
    keep: Callable[[str], bool] | None = None,
    into: LedgerBase | None = None,
) -> LedgerBase:
    """The whole base at once (blocking): of the tenants `keep` takes, into `into`."""
    base = LedgerBase() if into is None else into
    queries = LedgerQueries(reader, before, now, keep)
    queries.months(base)
    queries.hours_and_runs(base, max_values_per_dim, run_retention, daily_retention_days)
    return base


def load_covered_base(
    reader: Any,
    coverage: Coverage,
    partitions: int,
    now: datetime,
    **limits: Any,
) -> LedgerBase:
    """The base of the costed partitions `coverage` names (Kafka, streams/spend/coverage.py):
    each partition's tenants' rows ingested before its mark; one query set per distinct
    mark (blocking). `limits`: as `load_ledger_base`'s."""
    base = LedgerBase()
    for since, group in sorted(coverage.groups().items()):
        owners: dict[str, bool] = {}  # tenant -> in this group (murmur2 once per tenant)

        def keep(tenant: str, group: set[int] = group, owners: dict[str, bool] = owners) -> bool:
            owned = owners.get(tenant)
            if owned is None:
                owned = owners[tenant] = costed_partition(tenant, partitions) in group
            return owned

        load_ledger_base(reader, since_datetime(since), now, keep=keep, into=base, **limits)
    return base
