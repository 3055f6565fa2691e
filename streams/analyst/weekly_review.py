"""The weekly review: what a lead needs to read on Monday, computed from the rollups.

Every amount is the corrected spend (ledger plus re-pricing corrections) in exact
Decimal. Entities with no workflow id are left out of the workflow sections.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import NamedTuple

from detectors.decomposition import Usage, decompose
from streams.analyst.money import ZERO
from streams.analyst.periods import Period, previous_week
from streams.ledger.remote import Reader

TOP_N = 5
SPIKE_FACTOR = Decimal(3)
MTOK = Decimal(1_000_000)


@dataclass(frozen=True)
class SpendChange:
    """One tenant's, workflow's or model's spend this week against last week.

    `why` (tenants only): the change split into additive parts that sum to it to the
    cent, by `detectors.decomposition` (volume, retries, model mix, tokens per call,
    unit price, cache-hit rate)."""

    key: str
    label: str
    current: Decimal
    previous: Decimal
    why: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class Spike:
    """A tenant or workflow whose daily spend went above 3× last week's median day."""

    kind: str
    key: str
    label: str
    days_above: int
    peak_day: date
    peak_spend: Decimal
    last_week_median: Decimal

    @property
    def ratio(self) -> Decimal:
        return self.peak_spend / self.last_week_median


@dataclass(frozen=True)
class TaskCost:
    """Cost per successful task: all the workflow's spend over its runs whose last call was 2xx."""

    workflow_id: str
    label: str
    runs: int
    successful_runs: int
    cost: Decimal

    @property
    def cost_per_successful_run(self) -> Decimal | None:
        return self.cost / self.successful_runs if self.successful_runs else None


@dataclass(frozen=True)
class CheaperModel:
    """A workflow's spend on one model against the cheapest other model of the same
    provider at the same token counts (prices seen in the ledger that week)."""

    workflow_id: str
    label: str
    provider: str
    model: str
    alternative: str
    cost: Decimal
    alternative_cost: Decimal

    @property
    def savings(self) -> Decimal:
        return self.cost - self.alternative_cost


@dataclass(frozen=True)
class EstimatedModel:
    """This week's calls to a model with no price, and their estimate."""

    provider: str
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    estimated: Decimal
    estimate_source: str


@dataclass(frozen=True)
class WeeklyReview:
    week: Period
    previous: Period
    total: Decimal
    previous_total: Decimal
    top_tenants: list[SpendChange]
    top_workflows: list[SpendChange]
    spikes: list[Spike]
    task_costs: list[TaskCost]
    models: list[SpendChange]
    cheaper_models: list[CheaperModel]
    # Daily spend over both weeks, for the charts: series label → one amount per day.
    tenant_days: dict[str, list[Decimal]] = field(default_factory=dict)
    model_days: dict[str, list[Decimal]] = field(default_factory=dict)
    estimated: list[EstimatedModel] = field(default_factory=list)

    @property
    def estimated_total(self) -> Decimal:
        return sum((model.estimated for model in self.estimated), ZERO)

    @property
    def days(self) -> list[date]:
        return self.previous.days + self.week.days


@dataclass(frozen=True)
class _Daily:
    """Spend per entity per day over the previous and the current week."""

    labels: dict[str, str]
    spend: dict[str, dict[date, Decimal]]

    def changes(self, week: Period, previous: Period) -> list[SpendChange]:
        current_days, previous_days = week.days, previous.days
        changes = [
            SpendChange(
                key,
                self.labels[key],
                _total(by_day, current_days),
                _total(by_day, previous_days),
            )
            for key, by_day in self.spend.items()
        ]
        return sorted(changes, key=lambda change: (-change.current, change.key))


def _total(by_day: dict[date, Decimal], days: list[date]) -> Decimal:
    return sum((by_day.get(day, ZERO) for day in days), ZERO)


# The public views spend_daily and workflow_run_daily check the whole ledger for
# duplicates, twice per query (ledger_dirty_days, see sql/022_ledger_day_check.sql):
# on a large ledger that is most of the review's time. The review checks its own two
# weeks once, then reads what those views union, by the same rules: the rollup state
# for clean days, the recompute from the deduplicated ledger for dirty days, and the
# re-pricing deltas. test_weekly_review_sources.py checks the result against the views.
# `day IN {dirty:Array(Date)}` (not has()) lets the recompute skip the ledger's parts
# of clean days; with no dirty day the branch is left out: planned over the ledger, it
# costs milliseconds even when it reads nothing.
_DIRTY_DAYS = "SELECT day FROM ledger_dirty_days WHERE day BETWEEN {start:Date} AND {end:Date}"


def _union(state: str, recompute: str, corrections: str, dirty: list[date]) -> str:
    return " UNION ALL ".join([state, recompute, corrections] if dirty else [state, corrections])


# One read serves every section but the task costs, summed in one pass by the keys
# each needs: per day and tenant, workflow or model, and per week, workflow and model
# with the token counts (the cheaper-model section). `kind` tells which.
_SPEND_COLUMNS = """
    day, tenant_id, workflow_id, workflow_name, provider, model, cost_usd,
    input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
    requests, retries
"""
_SPEND_STATE = f"""
SELECT {_SPEND_COLUMNS} FROM spend_daily_state
WHERE day BETWEEN {{start:Date}} AND {{end:Date}} AND day NOT IN {{dirty:Array(Date)}}
"""
_SPEND_RECOMPUTE = f"""
SELECT {_SPEND_COLUMNS} FROM spend_daily_recompute
WHERE day BETWEEN {{start:Date}} AND {{end:Date}} AND day IN {{dirty:Array(Date)}}
"""
_SPEND_CORRECTIONS = """
SELECT
    toDate(timestamp) AS day, tenant_id, workflow_id, workflow_name, provider, model,
    delta_cost_usd AS cost_usd, toUInt64(0) AS input_tokens, toUInt64(0) AS cached_tokens,
    toUInt64(0) AS cache_write_tokens, toUInt64(0) AS output_tokens,
    toUInt64(0) AS reasoning_tokens, toUInt64(0) AS requests, toUInt64(0) AS retries
FROM cost_corrections FINAL
WHERE day BETWEEN {start:Date} AND {end:Date}
"""


def _spend_query(dirty: list[date]) -> str:
    return f"""
SELECT
    multiIf(
        grouping(tenant_id) = 0 AND grouping(day) = 0, 'tenant',
        grouping(tenant_id) = 0, 'tenant_usage',
        grouping(day) = 1, 'usage',
        grouping(workflow_id) = 0, 'workflow',
        'model'
    ) AS kind,
    day, day >= {{week_start:Date}} AS this_week, tenant_id, workflow_id, any(workflow_name),
    provider, model, sum(cost_usd),
    sum(input_tokens - cached_tokens - cache_write_tokens), sum(cached_tokens),
    sum(cache_write_tokens), sum(output_tokens - reasoning_tokens), sum(reasoning_tokens),
    sum(requests), sum(retries)
FROM ({_union(_SPEND_STATE, _SPEND_RECOMPUTE, _SPEND_CORRECTIONS, dirty)})
-- The two compared periods only: for a week to date, the days between the earlier
-- period's end and this week's start belong to neither (the per-week groupings would
-- count them as last week's).
WHERE day <= {{previous_end:Date}} OR day >= {{week_start:Date}}
GROUP BY GROUPING SETS (
    (day, tenant_id),
    (day, workflow_id),
    (day, provider, model),
    (this_week, workflow_id, provider, model),
    (this_week, tenant_id, provider, model)
)
"""


_RUN_COLUMNS = "day, tenant_id, workflow_id, workflow_name, workflow_run_id, cost_usd, last_call"
_RUN_STATE = f"""
SELECT {_RUN_COLUMNS} FROM workflow_run_daily_state
WHERE day BETWEEN {{start:Date}} AND {{end:Date}} AND day NOT IN {{dirty:Array(Date)}}
"""
_RUN_RECOMPUTE = f"""
SELECT {_RUN_COLUMNS} FROM workflow_run_daily_recompute
WHERE day BETWEEN {{start:Date}} AND {{end:Date}} AND day IN {{dirty:Array(Date)}}
"""
_RUN_CORRECTIONS = """
SELECT
    toDate(timestamp) AS day, tenant_id, workflow_id, workflow_name, workflow_run_id,
    delta_cost_usd AS cost_usd, (toDateTime64(0, 3, 'UTC'), toUInt8(0)) AS last_call
FROM cost_corrections FINAL
WHERE day BETWEEN {start:Date} AND {end:Date} AND workflow_run_id != ''
"""


def _task_costs_query(dirty: list[date]) -> str:
    """A run's outcome is its last call over all its days (max of (time, successful)),
    taken as the max of time in ms * 2 + successful (0 or 1): the same order as the
    tuple's, and a third of the time of max() over tuples on a large week."""
    return f"""
SELECT workflow_id, any(workflow_name), count(), countIf(successful), sum(cost)
FROM
(
    SELECT
        tenant_id, workflow_id, workflow_run_id,
        any(workflow_name) AS workflow_name,
        max(toUnixTimestamp64Milli(last_call.1) * 2 + last_call.2) % 2 = 1 AS successful,
        sum(cost_usd) AS cost
    FROM ({_union(_RUN_STATE, _RUN_RECOMPUTE, _RUN_CORRECTIONS, dirty)})
    WHERE workflow_id != ''
    GROUP BY tenant_id, workflow_id, workflow_run_id
)
GROUP BY workflow_id
"""


class _SpendRow(NamedTuple):
    kind: str  # tenant, workflow or model (per day); usage, tenant_usage (per week)
    day: date
    this_week: bool
    tenant_id: str
    workflow_id: str
    workflow_name: str
    provider: str
    model: str
    cost: Decimal
    uncached_input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int  # without reasoning
    reasoning_tokens: int
    requests: int
    retries: int

    @property
    def tokens(self) -> tuple[int, ...]:
        return self[9:14]


@dataclass
class ReviewReading:
    """A weekly review whose spend is read while its other sections' queries (task
    costs, unit prices, estimates) run on a second thread: the days, top tenants and
    models, what the charts draw, are here at once; `result()` waits for the rest.
    The engine releases the GIL while it runs a query, so whatever the caller does
    meanwhile (drawing the charts) overlaps it."""

    week: Period
    previous: Period
    tenant_days: dict[str, list[Decimal]]
    model_days: dict[str, list[Decimal]]
    _rest: Future[WeeklyReview]
    _pool: ThreadPoolExecutor

    @property
    def days(self) -> list[date]:
        return self.previous.days + self.week.days

    def result(self) -> WeeklyReview:
        try:
            return self._rest.result()
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)


def build_weekly_review(client: Reader, week: Period) -> WeeklyReview:
    return start_weekly_review(client, week).result()


def start_weekly_review(client: Reader, week: Period) -> ReviewReading:
    """The spend read now, the other sections on a second thread (`ReviewReading`);
    `client` must stay open until `result()`."""
    previous = previous_week(week)
    dirty = [
        day
        for (day,) in client.query(
            _DIRTY_DAYS, parameters={"start": previous.start, "end": week.end}
        ).result_rows
    ]
    spend = client.query(
        _spend_query(dirty),
        parameters={
            "start": previous.start,
            "end": week.end,
            "week_start": week.start,
            "previous_end": previous.end,
            "dirty": dirty,
        },
    )
    # One query at a time on the second thread: a ClickHouse HTTP session refuses
    # concurrent queries.
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        task_costs = pool.submit(_task_costs, client, week, dirty)
        prices = pool.submit(_unit_prices, client, week)
        estimated = pool.submit(_estimated, client, week)
        rows: defaultdict[str, list[_SpendRow]] = defaultdict(list)
        for row in map(_SpendRow._make, spend.result_rows):
            rows[row.kind].append(row)
        tenants = _daily(
            (row.tenant_id, row.tenant_id, row.day, row.cost) for row in rows["tenant"]
        )
        workflows = _daily(
            (row.workflow_id, row.workflow_name, row.day, row.cost)
            for row in rows["workflow"]
            if row.workflow_id
        )
        models = _daily(
            (f"{row.provider}/{row.model}", "", row.day, row.cost) for row in rows["model"]
        )
        tenant_changes = tenants.changes(week, previous)
        model_changes = models.changes(week, previous)
        top_tenants = _with_why(tenant_changes[:TOP_N], rows["tenant_usage"])
        days = previous.days + week.days
        tenant_days = {
            change.label: [tenants.spend[change.key].get(day, ZERO) for day in days]
            for change in top_tenants
        }
        model_days = {
            change.label: [models.spend[change.key].get(day, ZERO) for day in days]
            for change in model_changes
        }

        def rest() -> WeeklyReview:
            spikes = _spikes("tenant", tenants, week, previous) + _spikes(
                "workflow", workflows, week, previous
            )
            cheaper_models = _cheaper_models(
                prices.result(),
                [row for row in rows["usage"] if row.this_week and row.workflow_id],
            )
            return WeeklyReview(
                week=week,
                previous=previous,
                total=sum((change.current for change in model_changes), ZERO),
                previous_total=sum((change.previous for change in model_changes), ZERO),
                top_tenants=top_tenants,
                top_workflows=workflows.changes(week, previous)[:TOP_N],
                spikes=spikes,
                task_costs=task_costs.result(),
                models=model_changes,
                cheaper_models=cheaper_models,
                tenant_days=tenant_days,
                model_days=model_days,
                estimated=estimated.result(),
            )

        # Last on the second thread: it waits on the three queries before it.
        finished = pool.submit(rest)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    return ReviewReading(week, previous, tenant_days, model_days, finished, pool)


def _with_why(changes: list[SpendChange], usage: list[_SpendRow]) -> list[SpendChange]:
    """Each tenant's change split into why it moved, from its week's calls, retries,
    tokens and spend per model against last week's."""
    periods: dict[tuple[str, bool], dict[str, Usage]] = defaultdict(dict)
    for row in usage:
        model = f"{row.provider}/{row.model}"
        held = periods[row.tenant_id, row.this_week].get(model)
        summed = Usage(row.requests, row.retries, sum(row.tokens), row.cost)
        if held is not None:  # a model's row per workflow name: add them up
            summed = Usage(
                held.calls + summed.calls,
                held.retries + summed.retries,
                held.tokens + summed.tokens,
                held.cost + summed.cost,
            )
        periods[row.tenant_id, row.this_week][model] = summed
    return [
        replace(
            change,
            why=decompose(periods[change.key, False], periods[change.key, True]),
        )
        for change in changes
    ]


# estimated_spend_daily deduplicates the whole ledger (FINAL) before it filters: seconds
# on a large ledger. A request whose last version is estimated on a day of the week has
# a raw row estimated on that day, so no such raw row means the view has nothing for the
# week, which this cheap scan tells (estimates are rare: models with no price).
_ANY_ESTIMATED = """
SELECT count() > 0 FROM usage_ledger
WHERE cost_status = 'estimated' AND toDate(timestamp) BETWEEN {start:Date} AND {end:Date}
"""


def _estimated(client: Reader, week: Period) -> list[EstimatedModel]:
    parameters = {"start": week.start, "end": week.end}
    if not client.query(_ANY_ESTIMATED, parameters=parameters).result_rows[0][0]:
        return []
    rows = client.query(
        "SELECT provider, model, sum(requests), sum(input_tokens), sum(output_tokens), "
        "sum(estimated_cost_usd), any(estimate_source) FROM estimated_spend_daily "
        "WHERE day BETWEEN {start:Date} AND {end:Date} "
        "GROUP BY provider, model ORDER BY sum(estimated_cost_usd) DESC, provider, model",
        parameters=parameters,
    ).result_rows
    return [EstimatedModel(*row) for row in rows]


def _daily(entries: Iterable[tuple[str, str, date, Decimal]]) -> _Daily:
    """Sum (entity, name, day, cost) entries; an entity is labelled with its last name."""
    names: dict[str, str] = {}
    spend: defaultdict[str, dict[date, Decimal]] = defaultdict(dict)
    for entity, name, day, cost in entries:
        names[entity] = name
        by_day = spend[entity]
        by_day[day] = by_day.get(day, ZERO) + cost
    return _Daily({entity: _label(entity, name) for entity, name in names.items()}, dict(spend))


def _spikes(kind: str, daily: _Daily, week: Period, previous: Period) -> list[Spike]:
    current_days, previous_days = week.days, previous.days
    spikes = []
    for key, by_day in daily.spend.items():
        # Days without spend count as zero: a median over active days only would
        # hide a tenant that is usually idle.
        median = Decimal(statistics.median(by_day.get(day, ZERO) for day in previous_days))
        if median <= 0:
            continue
        above = [day for day in current_days if by_day.get(day, ZERO) > SPIKE_FACTOR * median]
        if not above:
            continue
        peak = max(above, key=lambda day: by_day[day])
        spikes.append(Spike(kind, key, daily.labels[key], len(above), peak, by_day[peak], median))
    return sorted(spikes, key=lambda spike: (-spike.ratio, spike.key))


def _task_costs(client: Reader, week: Period, dirty: list[date]) -> list[TaskCost]:
    rows = client.query(
        _task_costs_query(dirty), parameters={"start": week.start, "end": week.end, "dirty": dirty}
    ).result_rows
    costs = [
        TaskCost(workflow_id, _label(workflow_id, name), runs, successful, cost)
        for workflow_id, name, runs, successful, cost in rows
    ]
    return sorted(costs, key=lambda task: (-task.cost, task.workflow_id))


def _cheaper_models(
    prices: dict[tuple[str, str], tuple[Decimal, ...]], usage: list[_SpendRow]
) -> list[CheaperModel]:
    """`prices`: from `_unit_prices`; `usage`: one row per workflow and model, the
    week's cost and token counts."""
    findings = []
    for row in usage:
        alternatives = [
            (sum(t * p for t, p in zip(row.tokens, unit, strict=True)) / MTOK, other)
            for (other_provider, other), unit in prices.items()
            if other_provider == row.provider and other != row.model
        ]
        if not alternatives:
            continue
        alternative_cost, alternative = min(alternatives)
        if alternative_cost < row.cost:
            findings.append(
                CheaperModel(
                    row.workflow_id,
                    _label(row.workflow_id, row.workflow_name),
                    row.provider,
                    row.model,
                    alternative,
                    row.cost,
                    alternative_cost,
                )
            )
    return sorted(findings, key=lambda finding: (-finding.savings, finding.workflow_id))


def _unit_prices(client: Reader, week: Period) -> dict[tuple[str, str], tuple[Decimal, ...]]:
    """The latest per-MTok prices (uncached input, cached input, cache write, output,
    reasoning) of each chat model priced that week, re-pricing included."""
    rows = client.query(
        """
        SELECT provider, model, argMax(prices, at)
        FROM
        (
            SELECT provider, model, latest.1 AS at, latest.2 AS prices
            FROM model_prices_daily
            WHERE day BETWEEN {start:Date} AND {end:Date}
            UNION ALL
            SELECT provider, model, corrected_at AS at,
                (new_price_input_per_mtok, new_price_cached_input_per_mtok,
                 new_price_cache_write_per_mtok, new_price_output_per_mtok,
                 new_price_reasoning_per_mtok) AS prices
            FROM cost_corrections FINAL
            WHERE timestamp >= {start:Date} AND timestamp < {end_exclusive:Date}
                AND new_cost_status = 'priced'
        )
        GROUP BY provider, model
        """,
        parameters={"start": week.start, "end": week.end, "end_exclusive": week.end_exclusive},
    ).result_rows
    # A model with no output price (embeddings, moderation) is no substitute for a chat model.
    return {(provider, model): tuple(unit) for provider, model, unit in rows if unit[3] > 0}


def _label(key: str, name: str) -> str:
    return key if not name or name == key else f"{name} ({key})"
