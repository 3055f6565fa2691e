"""In-stream spend tables, by event time, as plain mappings (Faust tables at run time).

Costed messages arrive keyed by tenant, so every table key starts with the tenant:
a table's changelog is written to the partition of the event being processed,
and keying by the stream's own key keeps each key's changelog on the partition
that owns it (docs/architecture.md, "Faust facts"). Hourly buckets use explicit event-time
keys instead of Faust windows, whose expiry runs on wall-clock time and would
sweep replayed hours.

Tables (values are JSON-able dicts; money as Decimal strings):
- `hourly`: "tenant|dim|value|hour" → bucket, dims tenant, workflow, team, model;
  kept `hourly_retention_hours` (8 days) of event time;
- `totals`: "tenant|tenant|tenant|dDAY" the tenant's UTC day (40 days) and
  "tenant|month|YYYY-MM", holding only what totals are read for (cost, estimated,
  unpriced, seen). Days are the tenant's alone: nothing reads a workflow's, team's or
  model's day (their hours are kept), and three keys more per tenant-day would cost a
  fifth of a tenant's memory (T11). Such keys recovered from an older changelog are
  left to expire;
- `runs`: "tenant|run|workflow|run_id" → run cost, dropped 2 days after last seen.

Hourly buckets leave out their empty and zero fields (`hour_bucket_value`).

Every value also holds `seen`: per source partition (of each source log: the usage
broker's cluster id), the highest source position (offset and index in the message)
it has counted. A costed event re-published after
a crash (same position) is skipped by each value that already holds it. The mark
lives in the value it guards, so both are one changelog record: a crash that loses
some of a batch's table writes and not others can neither drop nor double-count.

Cardinality is bounded: past `max_values_per_dim` distinct workflows (or teams,
models) per tenant, new ones are counted under "__overflow__" (`OVERFLOW`), and
`overflowed_by_dim` counts the rows so counted. The distinct values of a tenant
are those with an hourly key still retained: when its hours expire, a value
frees its place under the cap (as it would after a restart's `rebuild_index`).
`detectors.cardinality` alerts when a tenant's dimension first overflows.

Memory: a million active tenants must fit in a couple of GiB (`python -m
bench.tenant_memory`), so a value holds no field nothing reads, and the values one
list writes share their equal parts (`_Shared`): a tenant's tenant, workflow, team and
model buckets of an hour often hold the same cost, models and marks, or are equal
whole (one value, four keys). Values are never changed in place (every write is a new
value), so sharing is safe.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from detectors.cardinality import OVERFLOW
from detectors.stats import WindowStats

SEP = "|"
# A message is at most 1 MiB and an event at least ~60 bytes: fewer than this per message.
MAX_EVENTS_PER_MESSAGE = 100_000
DIMENSIONS = ("tenant", "workflow", "team", "model")
CAPPED_DIMENSIONS = DIMENSIONS[1:]
MAX_USERS_TRACKED = 1000
HOUR = 3600
DAY = 86_400
HOURLY_RETENTION_HOURS = 8 * 24 + 1

Table = MutableMapping[str, Any]


def key_tenant(table: str, key: str) -> str:
    """The tenant of a key of `table` ("hourly", "totals", "runs"); a tenant id may hold
    SEP, while dimension values in keys have it replaced and hours and days are digits.
    A run's workflow and run ids are raw: its tenant ends at the first "|run|"."""
    if table == "runs":
        return key.split(f"{SEP}run{SEP}", 1)[0]
    parts = key.rsplit(SEP, 3)
    daily = len(parts) == 4 and parts[1] in DIMENSIONS and parts[3].startswith("d")
    if table == "hourly" or daily:
        return parts[0]
    return key.rsplit(SEP, 2)[0]  # "tenant|month|YYYY-MM"


def day_key(tenant_id: str, day: int) -> str:
    """The `totals` key of a tenant's UTC day (days since the epoch)."""
    return SEP.join((tenant_id, "tenant", tenant_id.replace(SEP, "/"), f"d{day}"))


def new_bucket() -> dict[str, Any]:
    return {"cost": "0", "input": 0, "output": 0, "models": {}}


def hour_bucket_value(
    cost: Decimal | str,
    input_tokens: int,
    output_tokens: int,
    models: dict[str, int],
    *,
    users: list[str] | None = None,
    retries: int = 0,
    errors: int = 0,
    estimated: Decimal | str = "0",
    unpriced: int = 0,
) -> dict[str, Any]:
    """An hourly bucket as the tables hold it. Its calls are the sum of `models` (calls
    per model), and a field that is empty or zero is left out: with its marks a bucket
    is then five fields, and a dict of at most five takes 184 bytes, of six to ten 272
    (T11). Buckets written before hold "requests" and every field; they read the same
    (`bucket_requests`, `bucket_stats`)."""
    bucket: dict[str, Any] = {
        "cost": str(cost),
        "input": input_tokens,
        "output": output_tokens,
        "models": models,
    }
    if users:
        bucket["users"] = users
    if retries:
        bucket["retries"] = retries
    if errors:
        bucket["errors"] = errors
    if Decimal(estimated):
        bucket["estimated"] = str(estimated)
    if unpriced:
        bucket["unpriced"] = unpriced
    return bucket


def bucket_requests(bucket: dict[str, Any]) -> int:
    """The bucket's calls: those of each model, summed."""
    return sum(bucket["models"].values())


def new_total() -> dict[str, Any]:
    return {"cost": "0"}


def bucket_stats(bucket: dict[str, Any]) -> WindowStats:
    return WindowStats(
        cost=Decimal(bucket["cost"]),
        requests=bucket_requests(bucket),
        distinct_users=len(bucket.get("users", ())),
        input_tokens=bucket["input"],
        output_tokens=bucket["output"],
        retries=bucket.get("retries", 0),
        errors=bucket.get("errors", 0),
        model_mix=dict(bucket["models"]),
    )


@dataclass
class _Delta:
    cost: Decimal = Decimal(0)
    users: set[str] = field(default_factory=set)
    input: int = 0
    output: int = 0
    retries: int = 0
    errors: int = 0
    models: dict[str, int] = field(default_factory=dict)
    # Calls to models with no price: their estimates, and how many (estimated or not).
    estimated: Decimal = Decimal(0)
    unpriced: int = 0

    def add(self, row: dict[str, Any]) -> None:
        self.cost += row["cost"]
        if row.get("cost_status", "priced") != "priced":
            self.estimated += row["estimated"]
            self.unpriced += row["request_count"]
        if row["user_id"]:
            self.users.add(row["user_id"])
        self.input += row["input_tokens"]
        self.output += row["output_tokens"]
        if row["retry_count"] or row["retry_of"]:
            self.retries += 1
        status = row["status_code"]
        if status is not None and status >= 400:
            self.errors += 1
        self.models[row["model"]] = self.models.get(row["model"], 0) + row["request_count"]

    def absorb(self, other: _Delta) -> None:
        self.cost += other.cost
        self.users |= other.users
        self.input += other.input
        self.output += other.output
        self.retries += other.retries
        self.errors += other.errors
        self.estimated += other.estimated
        self.unpriced += other.unpriced
        for model, count in other.models.items():
            self.models[model] = self.models.get(model, 0) + count

    def merge_into(self, bucket: dict[str, Any]) -> dict[str, Any]:
        users = bucket.get("users", [])
        if len(users) < MAX_USERS_TRACKED:
            known = set(users)
            users = users + sorted(self.users - known)[: MAX_USERS_TRACKED - len(users)]
        models = dict(bucket["models"])
        for model, count in self.models.items():
            models[model] = models.get(model, 0) + count
        return hour_bucket_value(
            Decimal(bucket["cost"]) + self.cost,
            bucket["input"] + self.input,
            bucket["output"] + self.output,
            models,
            users=users,
            retries=bucket.get("retries", 0) + self.retries,
            errors=bucket.get("errors", 0) + self.errors,
            estimated=Decimal(bucket.get("estimated", "0")) + self.estimated,
            unpriced=bucket.get("unpriced", 0) + self.unpriced,
        )

    def merge_into_total(self, total: dict[str, Any]) -> dict[str, Any]:
        """A `totals` value plus this delta: what the day and month totals are read for
        (a value written before they were slimmed may hold more; it is dropped). Like a
        bucket, it leaves out estimates and unpriced calls while there are none."""
        merged: dict[str, Any] = {"cost": str(Decimal(total.get("cost", "0")) + self.cost)}
        estimated = Decimal(total.get("estimated", "0")) + self.estimated
        if estimated:
            merged["estimated"] = str(estimated)
        unpriced = total.get("unpriced", 0) + self.unpriced
        if unpriced:
            merged["unpriced"] = unpriced
        return merged


_ONE_MODEL_CALLS_SHARED_UP_TO = 1000


@lru_cache(maxsize=65_536)
def _shared_one_model_calls(model: str, calls: int) -> dict[str, int]:
    """{model: calls} as buckets hold it, one dict for every tenant's: most of a million
    tenants' hours are a few calls to one model, and a dict takes 184 bytes. An evicted
    dict stays with the values that hold it."""
    return {model: calls}


def _one_model_calls(models: dict[str, int]) -> dict[str, int]:
    """`models` or an equal dict already held, if it is one model's few calls."""
    if len(models) != 1:
        return models
    ((model, calls),) = models.items()
    if calls > _ONE_MODEL_CALLS_SHARED_UP_TO:
        return models
    return _shared_one_model_calls(model, calls)


class _Shared:
    """Equal parts of the values one list writes, held once: a part already made is
    handed out again (cost strings, users lists, models and marks dicts), and so is a
    whole value equal to one already made (a tenant with one workflow, team and model
    has four equal buckets an hour, and four equal day totals). One model's few calls
    are shared with every list's (`_one_model_calls`)."""

    def __init__(self) -> None:
        self._parts: dict[Any, Any] = {}
        self._values: dict[tuple[Any, ...], dict[str, Any]] = {}

    def value(self, merged: dict[str, Any]) -> dict[str, Any]:
        for name, part in merged.items():
            if isinstance(part, str):
                merged[name] = self._parts.setdefault(part, part)
            elif isinstance(part, dict) and part:
                if name == "models":
                    part = _one_model_calls(part)
                merged[name] = self._parts.setdefault((name, *part.items()), part)
            elif isinstance(part, list):
                merged[name] = self._parts.setdefault((name, *part), part)
        # Equal dicts and lists are now the same objects: compared by identity, numbers
        # and strings by value.
        shape = tuple(
            (name, id(part) if isinstance(part, dict | list) else part)
            for name, part in merged.items()
        )
        return self._values.setdefault(shape, merged)


@dataclass
class LedgerBase:
    """The ledger's spend before this log epoch, keyed as the tables are; read-only
    (streams/spend/ledger_state.py loads it). Months and runs hold Decimals and
    datetimes, hourly buckets the tables' own shape."""

    hourly: dict[str, dict[str, Any]] = field(default_factory=dict)
    months: dict[str, dict[str, Any]] = field(default_factory=dict)
    days: dict[str, dict[str, Any]] = field(default_factory=dict)  # `day_key`
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: int = 0  # ledger rows behind the month totals (for the log line)


def merge_buckets(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two hourly buckets of the same key as one (the base and this epoch's counts)."""
    users = list(a.get("users", ()))
    if len(users) < MAX_USERS_TRACKED:
        known = set(users)
        more = [u for u in b.get("users", ()) if u not in known]
        users += more[: MAX_USERS_TRACKED - len(users)]
    models = dict(a["models"])
    for model, count in b["models"].items():
        models[model] = models.get(model, 0) + count
    return hour_bucket_value(
        Decimal(a["cost"]) + Decimal(b["cost"]),
        a["input"] + b["input"],
        a["output"] + b["output"],
        models,
        users=users,
        retries=a.get("retries", 0) + b.get("retries", 0),
        errors=a.get("errors", 0) + b.get("errors", 0),
        estimated=Decimal(a.get("estimated", "0")) + Decimal(b.get("estimated", "0")),
        unpriced=a.get("unpriced", 0) + b.get("unpriced", 0),
    )


@dataclass(frozen=True)
class TouchedKey:
    """A bucket changed by the last batch, for the detectors to look at."""

    tenant_id: str
    dim: str
    value: str
    hour: datetime


class RunUpdate(NamedTuple):
    tenant_id: str
    workflow_id: str
    run_id: str
    cost: Decimal
    started_at: datetime
    last_seen: datetime


@dataclass(frozen=True)
class PeriodSpend:
    """A month's or a day's spend."""

    cost: Decimal  # priced calls
    estimated: Decimal  # estimates of calls to models with no price
    unpriced_requests: int  # calls to models with no price, estimated or not


@dataclass
class BatchResult:
    counted: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    touched: list[TouchedKey] = field(default_factory=list)
    runs: list[RunUpdate] = field(default_factory=list)
    newest: datetime | None = None  # the latest event time among the rows


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def costed_row(row: dict[str, Any]) -> dict[str, Any]:
    """A costed event as published by the ingest service, with types restored and its
    source position (`_partition`, `_sequence`) computed once for every table. In place:
    the rows are the caller's own, just decoded, and restoring them twice is harmless."""
    row["cost"] = Decimal(str(row["cost_usd"]))
    row["estimated"] = Decimal(str(row.get("estimated_cost_usd") or 0))
    row["timestamp"] = _parse_time(row["timestamp"])
    row["_partition"] = _source_partition(row)
    row["_sequence"] = _sequence(row)
    return row


def _source_partition(row: dict[str, Any]) -> str:
    """The mark a row's position is kept under: its source partition within its source
    log. Positions of two logs are not comparable (a new in-memory broker's offsets
    start at 0 again), so each log's partitions have marks of their own. Rows with no
    log named keep the partition alone, as marks written before logs were named."""
    log = row.get("source_log")
    partition = str(row["source_partition"])
    # Interned: every value the row's list writes holds its mark under this string.
    return sys.intern(f"{log}{SEP}{partition}") if log else partition


def _sequence(row: dict[str, Any]) -> int:
    """A row's place in its source partition: (offset, index in the message) as one
    number. Costed rows of a partition arrive in that order."""
    return int(row["source_offset"]) * MAX_EVENTS_PER_MESSAGE + int(row.get("source_index", 0))


def _is_new(row: dict[str, Any], seen: dict[str, int]) -> bool:
    return bool(row["_sequence"] > seen.get(row["_partition"], -1))


class _Positions:
    """Rows of one group with each source partition's lowest and highest position: a
    value that holds none of them (the usual case) takes them without a look at each."""

    # Slots and a plain __init__: one is made per run and per group of every list.
    __slots__ = ("highest", "lowest", "rows")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.lowest: dict[str, int] = {}
        self.highest: dict[str, int] = {}

    def add_position(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        partition, sequence = row["_partition"], row["_sequence"]
        if sequence < self.lowest.get(partition, sequence + 1):
            self.lowest[partition] = sequence
        if sequence > self.highest.get(partition, -1):
            self.highest[partition] = sequence

    def all_new(self, seen: dict[str, int]) -> bool:
        return all(low > seen.get(p, -1) for p, low in self.lowest.items())

    def new_rows(self, seen: dict[str, int]) -> list[dict[str, Any]]:
        if self.all_new(seen):
            return self.rows
        return [row for row in self.rows if _is_new(row, seen)]


def _advance(
    seen: dict[str, int], counted: Iterable[_Positions | dict[str, Any]]
) -> dict[str, int]:
    """`seen` moved past the counted groups (all their rows) and single rows."""
    marks = dict(seen)
    for item in counted:
        highest = (
            item.highest
            if isinstance(item, _Positions)
            else {item["_partition"]: item["_sequence"]}
        )
        for partition, sequence in highest.items():
            if sequence > marks.get(partition, -1):
                marks[partition] = sequence
    return marks


class _Group(_Positions):
    """Rows of one (dimension values, hour) group, summed."""

    __slots__ = ("delta",)

    def __init__(self) -> None:
        super().__init__()
        self.delta = _Delta()

    def add(self, row: dict[str, Any]) -> None:
        self.delta.add(row)
        self.add_position(row)


class _Run(_Positions):
    """Rows of one workflow run: only what the run's record keeps."""

    __slots__ = ("cost", "first", "last")

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__()
        self.cost = Decimal(0)
        self.first: datetime = row["timestamp"]
        self.last: datetime = row["timestamp"]

    def add(self, row: dict[str, Any]) -> None:
        self.add_position(row)
        ts: datetime = row["timestamp"]
        self.cost += row["cost"]
        if ts < self.first:
            self.first = ts
        elif ts > self.last:
            self.last = ts


def _merge(bucket: dict[str, Any], groups: list[_Group], total: bool) -> dict[str, Any] | None:
    """`bucket` plus the rows of `groups` it does not hold yet; None if it holds all.
    A `totals` value (`total`) keeps only its totals."""
    seen: dict[str, int] = bucket.get("seen", {})
    delta = _Delta()
    counted: list[_Positions | dict[str, Any]] = []
    for group in groups:
        if group.all_new(seen):
            delta.absorb(group.delta)
            counted.append(group)
            continue
        for row in group.rows:
            if _is_new(row, seen):
                delta.add(row)
                counted.append(row)
    if not counted:
        return None
    merged = delta.merge_into_total(bucket) if total else delta.merge_into(bucket)
    merged["seen"] = _advance(seen, counted)
    return merged


class _Tenant:
    """What the tables keep of one tenant besides its values. Slotted, one per tenant:
    a million tenants must fit in a couple of GiB (T11)."""

    __slots__ = ("counted", "expired_at", "model", "owned", "team", "workflow")

    def __init__(self) -> None:
        # The cardinality index: each capped dimension's distinct values with an hourly
        # key still retained, bare while there is one (a set takes 216 bytes).
        self.workflow: str | set[str] | None = None
        self.team: str | set[str] | None = None
        self.model: str | set[str] | None = None
        # The keys the tenant owns in the three tables, so expiry never scans whole
        # tables: a list (a key goes in when it is first written), which takes half a
        # dict's bytes and a sixth of a set's.
        self.owned: list[str] = []
        # Expiry's clock (see `SpendTables.expire`): whether a row was counted since the
        # last expiry, and that expiry's wall minute.
        self.counted = False
        self.expired_at: int | None = None

    def values(self, dim: str) -> str | set[str] | None:
        value: str | set[str] | None = getattr(self, dim)
        return value

    def hold(self, dim: str, value: str) -> None:
        """`value` among the dimension's distinct values: bare while it is the only one."""
        held = self.values(dim)
        if held is None or held == value:
            setattr(self, dim, value)
        elif isinstance(held, str):
            setattr(self, dim, {held, value})
        else:
            held.add(value)

    def hold_key(self, key: str) -> None:
        """The value of an hourly key among its dimension's (not the tenant's own, nor
        OVERFLOW, which holds no place under the cap)."""
        # A tenant id may hold SEP; an hourly key's value and hour do not.
        _, dim, value, _ = key.rsplit(SEP, 3)
        if dim != "tenant" and value != OVERFLOW:
            self.hold(dim, value)

    def forget_values(self) -> None:
        self.workflow = self.team = self.model = None


class SpendTables:
    def __init__(
        self,
        hourly: Table,
        totals: Table,
        runs: Table,
        *,
        hourly_retention_hours: int = HOURLY_RETENTION_HOURS,
        daily_retention_days: int = 40,
        run_retention_hours: int = 48,
        max_values_per_dim: int = 1000,
    ) -> None:
        self.hourly = hourly
        self.totals = totals
        self.runs = runs
        self.hourly_retention_hours = hourly_retention_hours
        self.daily_retention_days = daily_retention_days
        self.run_retention_hours = run_retention_hours
        self.max_values_per_dim = max_values_per_dim
        # tenant -> what the tables know of it besides its values (cardinality index,
        # owned keys, expiry clock): one slotted record, not five dicts' slots (T11).
        self._tenants: dict[str, _Tenant] = {}
        # The wall minute of the latest expiry check, one int shared by every tenant
        # checked in that minute.
        self._minute = 0
        # dim -> rows counted under OVERFLOW since start (not persisted: a counter).
        self.overflowed_by_dim: dict[str, int] = dict.fromkeys(CAPPED_DIMENSIONS, 0)
        # What the ledger held before this log epoch; reads add it to the tables.
        self.base = LedgerBase()

    def set_base(self, base: LedgerBase) -> None:
        self.base = base
        self.rebuild_index()

    @property
    def overflowed(self) -> int:
        """Rows counted under OVERFLOW since start, summed over the dimensions (a row
        whose workflow and team both overflowed counts twice)."""
        return sum(self.overflowed_by_dim.values())

    def apply(self, tenant_id: str, raw_rows: Iterable[dict[str, Any]]) -> BatchResult:
        """Count one costed message's rows (all of one tenant) into every table."""
        result = BatchResult()
        groups: dict[tuple[Any, ...], _Group] = {}
        runs: dict[str, _Run] = {}
        # run key -> (workflow id, run id): both raw, so a key alone may not split back
        run_ids: dict[str, tuple[str, str]] = {}
        tenant = self._tenant(tenant_id)
        tenant.counted = True
        for raw in raw_rows:
            row = costed_row(raw)
            # One add per row into its group of raw dimension values and hour; the
            # groups, far fewer than rows, then fan out to every table key below.
            if result.newest is None or row["timestamp"] > result.newest:
                result.newest = row["timestamp"]
            group_key = (
                row.get("workflow_id"),
                row.get("team_id"),
                row.get("model"),
                int(row["timestamp"].timestamp()) // HOUR,
            )
            group = groups.get(group_key)
            if group is None:
                group = groups[group_key] = _Group()
            group.add(row)
            if row["workflow_run_id"]:
                run_key = SEP.join((tenant_id, "run", row["workflow_id"], row["workflow_run_id"]))
                run = runs.get(run_key)
                if run is None:
                    run = runs[run_key] = _Run(row)
                    run_ids[run_key] = (row["workflow_id"], row["workflow_run_id"])
                run.add(row)

        hourly: dict[str, list[_Group]] = {}
        totals: dict[str, list[_Group]] = {}
        touched: dict[str, TouchedKey] = {}
        for (*raw_values, hour), group in groups.items():
            # Resolved in order of first appearance, as the rows came: the cap admits
            # the same values as it would row by row.
            values = [self._dim_value(tenant, "tenant", tenant_id)] + [
                self._dim_value(tenant, dim, value)
                for dim, value in zip(CAPPED_DIMENSIONS, raw_values, strict=True)
            ]
            day = hour * HOUR // DAY
            start = datetime.fromtimestamp(hour * HOUR, UTC)
            for dim, value in zip(DIMENSIONS, values, strict=True):
                if value is None:
                    continue
                if value == OVERFLOW:
                    self.overflowed_by_dim[dim] += len(group.rows)
                base = f"{tenant_id}{SEP}{dim}{SEP}{value}"
                hourly.setdefault(f"{base}{SEP}{hour}", []).append(group)
                if dim == "tenant":
                    totals.setdefault(day_key(tenant_id, day), []).append(group)
                touched[f"{base}{SEP}{hour}"] = TouchedKey(tenant_id, dim, value, start)
            month_key = f"{tenant_id}{SEP}month{SEP}{start:%Y-%m}"
            totals.setdefault(month_key, []).append(group)
            # The month total is the tenant's reference: a row it already holds is a
            # re-delivery, and is neither counted for the detectors nor observed.
            fresh = group.new_rows((self.totals.get(month_key) or {}).get("seen", {}))
            result.counted.extend(fresh)
            result.skipped += len(group.rows) - len(fresh)

        owned = tenant.owned
        shared = _Shared()
        for table, updates, total in ((self.hourly, hourly, False), (self.totals, totals, True)):
            for key, contributions in updates.items():
                held = table.get(key)
                if held is None:
                    owned.append(key)
                bucket = held or (new_total() if total else new_bucket())
                merged = _merge(bucket, contributions, total)
                if merged is not None:
                    table[key] = shared.value(merged)
        for key, run in runs.items():
            old = self.runs.get(key)
            seen = old.get("seen", {}) if old else {}
            counted: list[_Positions | dict[str, Any]]
            if run.all_new(seen):
                cost, first, last, counted = run.cost, run.first, run.last, [run]
            else:
                fresh = run.new_rows(seen)
                if not fresh:
                    continue
                cost = sum((row["cost"] for row in fresh), Decimal(0))
                first = min(row["timestamp"] for row in fresh)
                last = max(row["timestamp"] for row in fresh)
                counted = list(fresh)
            if old:
                cost += Decimal(old["cost"])
                first = min(first, _parse_time(old["started_at"]))
                last = max(last, _parse_time(old["last_seen"]))
            else:
                owned.append(key)
            started_at = first.isoformat()
            self.runs[key] = {
                "cost": str(cost),
                "started_at": started_at,
                # Most runs' rows of a list share one time (a single call).
                "last_seen": started_at if last == first else last.isoformat(),
                "seen": _advance(seen, counted),
            }
            held = self.base.runs.get(key)
            if held is not None:  # the run's calls before this log epoch
                cost += held["cost"]
                first, last = min(first, held["started_at"]), max(last, held["last_seen"])
            workflow_id, run_id = run_ids[key]
            result.runs.append(RunUpdate(tenant_id, workflow_id, run_id, cost, first, last))
        result.touched = list(touched.values())
        return result

    def _dim_value(self, tenant: _Tenant, dim: str, raw: Any) -> str | None:
        """A dimension value as table keys hold it: None if empty, OVERFLOW past the
        tenant's cap of distinct values."""
        if not raw:
            return None
        value = str(raw).replace(SEP, "/")
        if dim == "tenant":
            return value
        # One string for every tenant's: most tenants call the same few models, and
        # often share team and workflow names (the index below holds each tenant's).
        value = sys.intern(value)
        held = tenant.values(dim)
        if value == held or (isinstance(held, set) and value in held):
            return value
        count = 0 if held is None else 1 if isinstance(held, str) else len(held)
        if count >= self.max_values_per_dim:
            return OVERFLOW
        tenant.hold(dim, value)
        return value

    def _tenant(self, tenant_id: str) -> _Tenant:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Tenant()
        return tenant

    def hour_bucket(self, tenant_id: str, dim: str, value: str, hour: datetime) -> dict[str, Any]:
        key = SEP.join((tenant_id, dim, value, str(int(hour.timestamp()) // HOUR)))
        return self._bucket(key) or new_bucket()

    def _bucket(self, key: str) -> dict[str, Any] | None:
        """The hour's bucket: this epoch's counts plus the ledger's before it."""
        counted, held = self.hourly.get(key), self.base.hourly.get(key)
        if counted and held:
            return merge_buckets(held, counted)
        return counted or held

    def hourly_buckets(self) -> list[tuple[str, dict[str, Any]]]:
        """Every hourly key with its bucket, the base's included."""
        keys = dict.fromkeys([*self.base.hourly, *self.hourly.keys()])
        return [(key, bucket) for key in keys if (bucket := self._bucket(key))]

    def month_spend(self, tenant_id: str, at: datetime) -> Decimal:
        """The month's known (priced) spend."""
        return self.month(tenant_id, at).cost

    def month(self, tenant_id: str, at: datetime) -> PeriodSpend:
        """The month's known spend, its estimates and its calls with no price."""
        key = f"{tenant_id}{SEP}month{SEP}{at:%Y-%m}"
        return self._total(key, self.base.months.get(key) or {})

    def tenant_day(self, tenant_id: str, at: datetime) -> PeriodSpend:
        """The tenant's spend on the UTC day of `at`."""
        key = day_key(tenant_id, int(at.timestamp()) // DAY)
        return self._total(key, self.base.days.get(key) or {})

    def _total(self, key: str, held: dict[str, Any]) -> PeriodSpend:
        """This epoch's counts of a `totals` key plus the ledger's before it."""
        bucket = self.totals.get(key) or {}
        return PeriodSpend(
            Decimal(bucket.get("cost", "0")) + held.get("cost", Decimal(0)),
            Decimal(bucket.get("estimated", "0")) + held.get("estimated", Decimal(0)),
            int(bucket.get("unpriced", 0)) + held.get("unpriced", 0),
        )

    def history(
        self, tenant_id: str, dim: str, value: str, before: datetime, hours: int
    ) -> list[tuple[datetime, dict[str, Any]]]:
        end = int(before.timestamp()) // HOUR
        out = []
        for hour in range(end - hours, end):
            bucket = self._bucket(SEP.join((tenant_id, dim, value, str(hour))))
            if bucket:
                out.append((datetime.fromtimestamp(hour * HOUR, UTC), bucket))
        return out

    def rebuild_index(self) -> None:
        """Cardinality sets and key ownership from existing keys (after a restart's
        table recovery)."""
        for tenant in self._tenants.values():
            tenant.owned = []
            tenant.forget_values()
        for key in self.base.hourly:  # values before this epoch hold their place under the cap
            # A tenant id may hold SEP; an hourly key's value and hour do not.
            self._tenant(key.rsplit(SEP, 3)[0]).hold_key(key)
        for name, table in (("hourly", self.hourly), ("totals", self.totals), ("runs", self.runs)):
            for key in list(table.keys()):
                tenant = self._tenant(key_tenant(name, key))
                tenant.owned.append(key)
                if name == "hourly":
                    tenant.hold_key(key)

    def expire_due(self, tenant_id: str, now: datetime, every: timedelta) -> int:
        """`expire` if the tenant's last expiry is `every` or more behind `now`."""
        minute = int(now.timestamp()) // 60
        if minute != self._minute:
            self._minute = minute
        tenant = self._tenants.get(tenant_id)
        last = None if tenant is None else tenant.expired_at
        if last is not None and minute - last < every.total_seconds() // 60:
            return 0
        expired = self.expire(tenant_id, now)
        tenant = self._tenants.get(tenant_id)
        if tenant is not None:
            tenant.expired_at = self._minute
        return expired

    def expire(self, tenant_id: str, now: datetime) -> int:
        """Drop this tenant's keys past retention; called while processing the tenant's
        own message, because a table may only change inside its stream's context.

        For a tenant counted since its last expiry, retention counts back from its
        newest hour (of its hourly keys) when that is earlier than `now`: a replay of
        weeks-old events must not expire an hour's bucket between two lists of that
        hour, or the second list would start the bucket again from zero and the
        detectors would learn its partial total as the hour's spend (a baseline far too
        low, and a false page). A tenant idle since counts by `now`, so its old hours
        still go."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return 0
        if tenant.counted:
            # Derived, not kept: a datetime a tenant is 56 bytes (T11).
            hours = [int(key.rsplit(SEP, 1)[1]) for key in tenant.owned if key in self.hourly]
            newest = datetime.fromtimestamp(max(hours) * HOUR, UTC) if hours else now
            now = min(now, newest)
        tenant.counted = False
        hour_cut = int(now.timestamp()) // HOUR - self.hourly_retention_hours
        day_cut = int(now.timestamp()) // DAY - self.daily_retention_days
        run_cut = now - timedelta(hours=self.run_retention_hours)
        kept: list[str] = []
        expired = hourly_expired = 0
        # A key deleted meanwhile (a costed partition begun again) leaves the index.
        for key in dict.fromkeys(tenant.owned):
            last = key.rsplit(SEP, 1)[1]
            if key in self.hourly:
                table, old = self.hourly, int(last) < hour_cut
                hourly_expired += old
            elif key in self.totals:
                table, old = self.totals, last.startswith("d") and int(last[1:]) < day_cut
            elif key in self.runs:
                table = self.runs
                old = _parse_time(self.runs[key]["last_seen"]) < run_cut
            else:
                continue
            if old:
                del table[key]
                expired += 1
            else:
                kept.append(key)
        if not kept:
            del self._tenants[tenant_id]
            return expired
        tenant.owned = kept
        if hourly_expired:
            tenant.forget_values()
            for key in kept:
                if key in self.hourly:
                    tenant.hold_key(key)
        return expired
