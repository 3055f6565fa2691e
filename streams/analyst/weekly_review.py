"""The weekly review: what a lead needs to read on Monday, computed from the rollups.

Every amount is the corrected spend (ledger plus re-pricing corrections) in exact
Decimal. Entities with no workflow id are left out of the workflow sections.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from streams.analyst.money import ZERO
from streams.analyst.periods import Period, previous_week

TOP_N = 5
SPIKE_FACTOR = Decimal(3)
MTOK = Decimal(1_000_000)


@dataclass(frozen=True)
class SpendChange:
    """One tenant's, workflow's or model's spend this week against last week."""

    key: str
    label: str
    current: Decimal
    previous: Decimal


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

    @property
    def days(self) -> list[date]:
        return self.previous.days + self.week.days


@dataclass(frozen=True)
class _Daily:
    """Spend per entity per day over the previous and the current week."""

    labels: dict[str, str]
    spend: dict[str, dict[date, Decimal]]

    def total(self, key: str, period: Period) -> Decimal:
        return sum((self.spend[key].get(day, ZERO) for day in period.days), ZERO)

    def changes(self, week: Period, previous: Period) -> list[SpendChange]:
        changes = [
            SpendChange(key, self.labels[key], self.total(key, week), self.total(key, previous))
            for key in self.spend
        ]
        return sorted(changes, key=lambda change: (-change.current, change.key))


# One read of spend_daily serves the tenant, workflow and model sections and the
# token counts of the cheaper-model section: each view query pays for the
# duplicate check once (see sql/022_ledger_day_check.sql), so fewer is faster.
_SPEND = """
SELECT
    day, tenant_id, workflow_id, any(workflow_name), provider, model, sum(cost_usd),
    sum(input_tokens - cached_tokens - cache_write_tokens), sum(cached_tokens),
    sum(cache_write_tokens), sum(output_tokens - reasoning_tokens), sum(reasoning_tokens)
FROM spend_daily
WHERE day BETWEEN {start:Date} AND {end:Date}
GROUP BY day, tenant_id, workflow_id, provider, model
"""


@dataclass(frozen=True)
class _SpendRow:
    day: date
    tenant_id: str
    workflow_id: str
    workflow_name: str
    provider: str
    model: str
    cost: Decimal
    tokens: tuple[int, ...]  # uncached input, cached, cache write, output, reasoning


def build_weekly_review(client: Client, week: Period) -> WeeklyReview:
    previous = previous_week(week)
    rows = [
        _SpendRow(day, tenant, workflow, name, provider, model, cost, tuple(tokens))
        for day, tenant, workflow, name, provider, model, cost, *tokens in client.query(
            _SPEND, parameters={"start": previous.start, "end": week.end}
        ).result_rows
    ]
    tenants = _daily(rows, lambda row: (row.tenant_id, row.tenant_id))
    workflows = _daily(
        [row for row in rows if row.workflow_id],
        lambda row: (row.workflow_id, row.workflow_name),
    )
    models = _daily(rows, lambda row: (f"{row.provider}/{row.model}",) * 2)
    tenant_changes = tenants.changes(week, previous)
    model_changes = models.changes(week, previous)
    top_tenants = tenant_changes[:TOP_N]
    days = previous.days + week.days
    return WeeklyReview(
        week=week,
        previous=previous,
        total=sum((change.current for change in model_changes), ZERO),
        previous_total=sum((change.previous for change in model_changes), ZERO),
        top_tenants=top_tenants,
        top_workflows=workflows.changes(week, previous)[:TOP_N],
        spikes=_spikes("tenant", tenants, week, previous)
        + _spikes("workflow", workflows, week, previous),
        task_costs=_task_costs(client, week),
        models=model_changes,
        cheaper_models=_cheaper_models(
            client, week, [row for row in rows if row.workflow_id and row.day >= week.start]
        ),
        tenant_days={
            change.label: [tenants.spend[change.key].get(day, ZERO) for day in days]
            for change in top_tenants
        },
        model_days={
            change.label: [models.spend[change.key].get(day, ZERO) for day in days]
            for change in model_changes
        },
    )


def _daily(rows: list[_SpendRow], key: Callable[[_SpendRow], tuple[str, str]]) -> _Daily:
    labels: dict[str, str] = {}
    spend: dict[str, dict[date, Decimal]] = defaultdict(lambda: defaultdict(lambda: ZERO))
    for row in rows:
        entity, name = key(row)
        labels[entity] = _label(entity, name)
        spend[entity][row.day] += row.cost
    return _Daily(labels, {entity: dict(days) for entity, days in spend.items()})


def _spikes(kind: str, daily: _Daily, week: Period, previous: Period) -> list[Spike]:
    spikes = []
    for key, by_day in daily.spend.items():
        # Days without spend count as zero: a median over active days only would
        # hide a tenant that is usually idle.
        median = Decimal(statistics.median(by_day.get(day, ZERO) for day in previous.days))
        if median <= 0:
            continue
        above = [day for day in week.days if by_day.get(day, ZERO) > SPIKE_FACTOR * median]
        if not above:
            continue
        peak = max(above, key=lambda day: by_day[day])
        spikes.append(Spike(kind, key, daily.labels[key], len(above), peak, by_day[peak], median))
    return sorted(spikes, key=lambda spike: (-spike.ratio, spike.key))


def _task_costs(client: Client, week: Period) -> list[TaskCost]:
    rows = client.query(
        """
        SELECT workflow_id, any(workflow_name), count(), countIf(successful), sum(cost)
        FROM
        (
            SELECT
                tenant_id, workflow_id, workflow_run_id,
                any(workflow_name) AS workflow_name,
                max((last_call_at, last_call_successful)).2 = 1 AS successful,
                sum(cost_usd) AS cost
            FROM workflow_run_daily
            WHERE day BETWEEN {start:Date} AND {end:Date} AND workflow_id != ''
            GROUP BY tenant_id, workflow_id, workflow_run_id
        )
        GROUP BY workflow_id
        """,
        parameters={"start": week.start, "end": week.end},
    ).result_rows
    costs = [
        TaskCost(workflow_id, _label(workflow_id, name), runs, successful, cost)
        for workflow_id, name, runs, successful, cost in rows
    ]
    return sorted(costs, key=lambda task: (-task.cost, task.workflow_id))


def _cheaper_models(client: Client, week: Period, rows: list[_SpendRow]) -> list[CheaperModel]:
    prices = _unit_prices(client, week)
    usage: dict[tuple[str, str, str], list[Any]] = {}
    for row in rows:
        entry = usage.setdefault(
            (row.workflow_id, row.provider, row.model), [row.workflow_name, ZERO, [0] * 5]
        )
        entry[1] += row.cost
        entry[2] = [total + count for total, count in zip(entry[2], row.tokens, strict=True)]
    findings = []
    for (workflow_id, provider, model), (name, cost, tokens) in usage.items():
        alternatives = [
            (sum(t * p for t, p in zip(tokens, unit, strict=True)) / MTOK, other)
            for (other_provider, other), unit in prices.items()
            if other_provider == provider and other != model
        ]
        if not alternatives:
            continue
        alternative_cost, alternative = min(alternatives)
        if alternative_cost < cost:
            findings.append(
                CheaperModel(
                    workflow_id,
                    _label(workflow_id, name),
                    provider,
                    model,
                    alternative,
                    cost,
                    alternative_cost,
                )
            )
    return sorted(findings, key=lambda finding: (-finding.savings, finding.workflow_id))


def _unit_prices(client: Client, week: Period) -> dict[tuple[str, str], tuple[Decimal, ...]]:
    """The latest per-MTok prices (uncached input, cached input, cache write, output,
    reasoning) of each chat model priced that week, re-pricing included."""
    rows = client.query(
        """
        SELECT provider, model, argMax(prices, at)
        FROM
        (
            SELECT provider, model, timestamp AS at,
                (price_input_per_mtok, price_cached_input_per_mtok, price_cache_write_per_mtok,
                 price_output_per_mtok, price_reasoning_per_mtok) AS prices
            FROM usage_ledger
            WHERE timestamp >= {start:Date} AND timestamp < {end:Date} AND cost_status = 'priced'
            UNION ALL
            SELECT provider, model, corrected_at AS at,
                (new_price_input_per_mtok, new_price_cached_input_per_mtok,
                 new_price_cache_write_per_mtok, new_price_output_per_mtok,
                 new_price_reasoning_per_mtok) AS prices
            FROM cost_corrections FINAL
            WHERE timestamp >= {start:Date} AND timestamp < {end:Date}
                AND new_cost_status = 'priced'
        )
        GROUP BY provider, model
        """,
        parameters={"start": week.start, "end": week.end_exclusive},
    ).result_rows
    # A model with no output price (embeddings, moderation) is no substitute for a chat model.
    return {(provider, model): tuple(unit) for provider, model, unit in rows if unit[3] > 0}


def _label(key: str, name: str) -> str:
    return key if not name or name == key else f"{name} ({key})"
