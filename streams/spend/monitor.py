"""`SpendMonitor`: feeds the spend tables' changed buckets to the detectors.

No I/O: it reads the tables (mappings) and returns findings; the agent hands them
to the alerting edge. Spend findings (rolling median, hourly contract) are
annotated with their likely cause, comparing the hour with its baseline hours.
A tenant's dimension overflowing the tables' cap of distinct values is a finding
of its own (`CardinalityOverflowDetector`), whose alert carries a query of the
dimension's distinct values per hour instead of the spend query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from detectors.burn_rate import BurnRateDetector
from detectors.cardinality import FIELD_NAMES, CardinalityOverflowDetector
from detectors.contract import ContractDetector
from detectors.decomposition import Usage, decompose
from detectors.finding import Finding
from detectors.retry_storm import RetryStormDetector
from detectors.rolling_median import RollingMedianDetector
from detectors.run_cost import RunCostDetector
from detectors.spike_cause import SpikeCauseClassifier
from detectors.stats import WindowStats
from detectors.unpriced_model import UnpricedModelDetector
from schemas.spend_config import SpendConfig
from streams.alerting.query import burn_rate_query, rolling_median_query, sql_string
from streams.spend.tables import (
    HOUR,
    HOURLY_RETENTION_HOURS,
    OVERFLOW,
    SEP,
    BatchResult,
    SpendTables,
    TouchedKey,
    bucket_requests,
    bucket_stats,
)


def detector_key(dim: str, tenant_id: str, value: str) -> str:
    """The key a finding names: 'tenant:acme', 'tenant:acme/workflow:summarize', ...

    Every dimension is named, so the alert's tenant, team and workflow columns and
    its analyst query (`streams.alerting.query.parse_key`) filter on the right
    values; 'workflow:acme/summarize' would read as workflow_id 'acme/summarize'.
    """
    return f"tenant:{tenant_id}" if dim == "tenant" else f"tenant:{tenant_id}/{dim}:{value}"


@dataclass
class SpendMonitor:
    config: SpendConfig
    rolling: RollingMedianDetector = field(init=False)
    contract: ContractDetector = field(init=False)
    run_cost: RunCostDetector = field(init=False)
    retry_storm: RetryStormDetector = field(init=False)
    cardinality: CardinalityOverflowDetector | None = field(init=False)
    unpriced: UnpricedModelDetector | None = field(init=False)
    burn_rate: BurnRateDetector | None = field(init=False)
    online: Any = field(init=False)  # OnlineAnomalyDetector, built on first use
    cause: SpikeCauseClassifier = field(init=False)
    _learned: bool = False
    _online_enabled: bool = False
    # tenant -> (minute, cost, input, output, latency sum, requests, retries) of the open
    # minute, least recently written first; at most twice the online detector's tenants
    # (`_observe_minutes`).
    _minutes: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = self.config.detectors
        # A tenant's own floor covers its tenant, workflow, team and model keys.
        floors = {
            detector_key("tenant", tenant_id, tenant_id): tenant.spend_floor_usd
            for tenant_id, tenant in self.config.tenants.items()
            if tenant.spend_floor_usd is not None
        }
        self.rolling = RollingMedianDetector(**d.rolling_median.kwargs(), floors=floors)
        self.contract = ContractDetector(self.config.tenants, **d.contract.kwargs())
        self.run_cost = RunCostDetector(**self.config.workflows.model_dump())
        self.retry_storm = RetryStormDetector(**d.retry_storm.kwargs(), floors=floors)
        self.cardinality = (
            CardinalityOverflowDetector(
                **d.cardinality.kwargs(), retention_hours=HOURLY_RETENTION_HOURS
            )
            if d.cardinality.enabled
            else None
        )
        self.unpriced = (
            UnpricedModelDetector(**d.unpriced_model.kwargs()) if d.unpriced_model.enabled else None
        )
        self.burn_rate = BurnRateDetector(**d.burn_rate.kwargs()) if d.burn_rate.enabled else None
        self.online = None
        self._online_enabled = d.online.enabled
        spike = d.spike_cause.model_dump(exclude={"rate_floor"})
        self.cause = SpikeCauseClassifier(**spike)

    def learn_history(self, tables: SpendTables, judged: Iterable[TouchedKey] = ()) -> int:
        """Feed every hourly bucket already in the tables: recovered from their changelogs
        or read from the ledger at start (the baselines follow from them).

        The buckets of `judged` (those the list being observed changed) are left to the
        observation, which feeds them hour by hour in event-time order: learned here,
        a list holding days of a tenant's calls (a replay) would put its last hours in
        the history before its first ones were judged. Their baselines would then be
        cut to the retention counted back from the last hour, and each hour judged at
        its final total instead of its running one: the false pages of issue 19."""
        skip = {
            SEP.join((t.tenant_id, t.dim, t.value, str(int(t.hour.timestamp()) // HOUR)))
            for t in judged
        }
        learned = 0
        for key, bucket in tables.hourly_buckets():
            if key in skip:
                continue
            # A tenant id may hold SEP; an hourly key's value and hour do not.
            tenant_id, dim, value, hour_text = key.rsplit(SEP, 3)
            hour = datetime.fromtimestamp(int(hour_text) * HOUR, UTC)
            dkey = detector_key(dim, tenant_id, value)
            self.rolling.learn_one(dkey, hour, Decimal(bucket["cost"]))
            if dim == "workflow":
                self.retry_storm.learn_one(dkey, hour, bucket_stats(bucket))
            learned += 1
        self._learned = True
        return learned

    def observe(self, tables: SpendTables, tenant_id: str, result: BatchResult) -> list[Finding]:
        if not self._learned:
            self.learn_history(tables, result.touched)
        findings: list[Finding] = []
        overflowing: list[TouchedKey] = []
        # The list's rows per event-time hour, in event-time order: a spend figure is
        # judged at the instant it crossed, whatever the list's boundaries.
        by_hour: dict[int, list[dict[str, Any]]] = {}
        for row in result.counted:
            by_hour.setdefault(int(row["timestamp"].timestamp()) // HOUR, []).append(row)
        for rows in by_hour.values():
            rows.sort(key=lambda row: row["timestamp"])
        of_value: dict[tuple[int, str], dict[str, list[dict[str, Any]]]] = {}
        # Hour by hour: each hour is judged against the hours before it, complete.
        for touched in sorted(result.touched, key=lambda t: t.hour):
            if touched.value == OVERFLOW and touched.dim != "tenant":
                overflowing.append(touched)
            bucket = tables.hour_bucket(tenant_id, touched.dim, touched.value, touched.hour)
            spend = Decimal(bucket["cost"])
            dkey = detector_key(touched.dim, tenant_id, touched.value)
            hour = int(touched.hour.timestamp()) // HOUR
            rows = _rows_of(
                by_hour.get(hour, []), touched, of_value.setdefault((hour, touched.dim), {})
            )
            for as_of, running in self._running_totals(dkey, touched.hour, spend, rows):
                finding = self.rolling.update(dkey, as_of, running)
                if finding is not None:
                    finding = self._with_rolling_query(finding, as_of)
                    findings.append(
                        self._with_cause(
                            tables, touched.dim, tenant_id, touched.value, touched.hour, finding
                        )
                    )
            if touched.dim == "workflow":
                storm = self.retry_storm.update(dkey, touched.hour, bucket_stats(bucket))
                if storm is not None:
                    findings.append(_with_tenant(_as_retry_storm(storm), tenant_id))
            if touched.dim == "tenant":
                # Budgets count the estimates of calls to models with no price.
                month = tables.month(tenant_id, touched.hour)
                hour_spend = spend + Decimal(bucket.get("estimated", "0"))
                month_spend = month.cost + month.estimated
                for as_of, hour_total, month_total in self._budget_totals(
                    tenant_id, touched.hour, hour_spend, month_spend, rows, result.counted
                ):
                    for found in self.contract.update(tenant_id, as_of, hour_total, month_total):
                        # The instant the totals held at (the newest event time counted).
                        evidence = {**found.evidence, "as_of": as_of.isoformat()}
                        found = replace(found, evidence=evidence)
                        if found.detector == "contract_hourly":
                            found = self._with_cause(
                                tables, "tenant", tenant_id, tenant_id, touched.hour, found
                            )
                        findings.append(found)
        budget = self.config.tenants.get(tenant_id)
        if self.burn_rate is not None and budget is not None and budget.monthly_budget_usd:
            findings.extend(
                self._observe_burn(tables, tenant_id, budget.monthly_budget_usd, result.counted)
            )
        if overflowing and self.cardinality is not None:
            findings.extend(_observe_overflow(self.cardinality, tables, tenant_id, overflowing))
        for run in result.runs:
            found_run = self.run_cost.update(
                run.workflow_id, run.run_id, run.cost, run.started_at, run.last_seen
            )
            if found_run is not None:
                findings.append(_with_tenant(found_run, tenant_id))
        if self.unpriced is not None:
            findings.extend(_observe_unpriced(self.unpriced, tenant_id, result.counted))
        if self._online_enabled and self.online is None:
            # River is imported here, not at start: it costs seconds (see warm_up_online).
            from detectors.online_anomaly import OnlineAnomalyDetector

            self.online = OnlineAnomalyDetector(**self.config.detectors.online.kwargs())
        if self.online is not None:
            findings.extend(self._observe_minutes(tenant_id, result.counted))
        return findings

    def _observe_minutes(self, tenant_id: str, rows: list[dict[str, Any]]) -> list[Finding]:
        """The online model learns one sample per tenant per event-time minute (totals of
        cost, tokens and retries, mean latency): per-request River updates would cost
        more than the rest of the pipeline together. A minute is scored once closed,
        when a later minute of the same tenant arrives.

        Open minutes are bounded: past twice the detector's `max_tenants`, the least
        recently written is dropped unlearned. Its tenant is then not among the
        detector's `max_tenants` most recently seen either, so its model is (or is about
        to be) evicted too; open minutes for every tenant ever seen would grow without
        bound (T11: 276 bytes a tenant)."""
        from detectors.online_anomaly import RequestSample

        findings: list[Finding] = []
        # Taken out and put back last: the least recently written is dropped first.
        current = self._minutes.pop(tenant_id, None)
        for row in rows:
            minute = int(row["timestamp"].timestamp()) // 60
            if current is not None and current[0] < minute:
                _, cost, tokens_in, tokens_out, latency, requests, retries = current
                sample = RequestSample(
                    cost=cost,
                    input_tokens=tokens_in,
                    output_tokens=tokens_out,
                    latency_ms=latency / requests if requests else 0,
                    retries=retries,
                )
                at = datetime.fromtimestamp(current[0] * 60, UTC)
                found = self.online.update(tenant_id, at, sample)
                # An odd minute alone never pages (a single $0.0017 request did): it
                # is evidence only while a spend incident of the tenant is open.
                if found is not None and self._spend_incident_open(tenant_id, at):
                    findings.append(_with_tenant(found, tenant_id))
                current = None
            if current is None:
                current = (minute, Decimal(0), 0, 0, 0, 0, 0)
            # A late row (an earlier minute) joins the open minute.
            current = (
                current[0],
                current[1] + row["cost"],
                current[2] + row["input_tokens"],
                current[3] + row["output_tokens"],
                current[4] + (row["latency_ms"] or 0),
                current[5] + 1,
                current[6] + row["retry_count"],
            )
        if current is not None:
            self._minutes[tenant_id] = current
        while len(self._minutes) > 2 * self.online.max_tenants:
            del self._minutes[next(iter(self._minutes))]
        return findings

    def _observe_burn(
        self, tables: SpendTables, tenant_id: str, budget: Decimal, rows: list[dict[str, Any]]
    ) -> list[Finding]:
        """The list's spend per event-time minute, in order, with the month's total as it
        stood at each (budgets count estimates, as the contract detector does)."""
        assert self.burn_rate is not None
        per_minute: dict[datetime, Decimal] = {}
        for row in rows:
            minute = row["timestamp"].replace(second=0, microsecond=0)
            per_minute[minute] = per_minute.get(minute, Decimal(0)) + row["cost"] + row["estimated"]
        findings = []
        for minute in sorted(per_minute):
            month = tables.month(tenant_id, minute)
            later = sum(
                (cost for m, cost in per_minute.items() if m > minute and m.month == minute.month),
                Decimal(0),
            )
            month_spend = month.cost + month.estimated - later
            found = self.burn_rate.update(
                tenant_id, minute, per_minute[minute], month_spend, budget
            )
            if found is not None:
                query = burn_rate_query(
                    tenant_id, minute, self.burn_rate.short_window, self.burn_rate.long_window
                )
                findings.append(replace(found, evidence={**found.evidence, "query": query}))
        return findings

    def _running_totals(
        self, key: str, hour: datetime, spend: Decimal, rows: list[dict[str, Any]]
    ) -> list[tuple[datetime, Decimal]]:
        """(event time, the hour's total then) to judge: the final total alone when it
        cannot breach (below where the detector starts to look, at its total or its
        projection), else every row's running total, so the alert names the instant
        and the figure at which the hour crossed (the same for any list boundaries)."""
        as_of = rows[-1]["timestamp"] if rows else hour
        watch_from = self.rolling.watch_from(key, hour)
        if watch_from is None or spend < watch_from:
            return [(as_of, spend)]
        running = spend - sum((row["cost"] for row in rows), Decimal(0))
        totals = []
        for row in rows:
            running += row["cost"]
            totals.append((row["timestamp"], running))
        return totals or [(as_of, spend)]

    def _budget_totals(
        self,
        tenant_id: str,
        hour: datetime,
        hour_spend: Decimal,
        month_spend: Decimal,
        rows: list[dict[str, Any]],
        counted: list[dict[str, Any]],
    ) -> list[tuple[datetime, Decimal, Decimal]]:
        """(event time, the hour's and the month's totals then) to judge the tenant's
        budgets at: the final totals alone when they cross none of its budgets, else
        every row's running totals, so a contract or monthly threshold alert names the
        instant and the figures at which it crossed, whatever the list's boundaries (a
        replay's list holds the whole hour: it was paged at the hour's last call)."""
        as_of = rows[-1]["timestamp"] if rows else hour
        budget = self.config.tenants.get(tenant_id)
        hourly = budget.contracted_hourly_budget_usd if budget else None
        monthly = budget.monthly_budget_usd if budget else None
        crossing = (hourly is not None and hour_spend > hourly) or (
            monthly is not None and month_spend >= min(self.contract.monthly_thresholds) * monthly
        )
        if not crossing or not rows:
            return [(as_of, hour_spend, month_spend)]
        # The month's total at a row: less the list's later rows of the same month.
        month_rows = sorted(
            (row for row in counted if f"{row['timestamp']:%Y-%m}" == f"{hour:%Y-%m}"),
            key=lambda row: row["timestamp"],
        )
        later = sum((row["cost"] + row["estimated"] for row in month_rows), Decimal(0))
        hour_total = hour_spend - sum((row["cost"] + row["estimated"] for row in rows), Decimal(0))
        month_total = month_spend - later
        totals = []
        next_month_row = 0
        for row in rows:
            while (
                next_month_row < len(month_rows)
                and month_rows[next_month_row]["timestamp"] <= row["timestamp"]
            ):
                month_row = month_rows[next_month_row]
                month_total += month_row["cost"] + month_row["estimated"]
                next_month_row += 1
            hour_total += row["cost"] + row["estimated"]
            totals.append((row["timestamp"], hour_total, month_total))
        return totals

    def _with_rolling_query(self, finding: Finding, as_of: datetime) -> Finding:
        query = rolling_median_query(
            finding.key,
            as_of,
            lookback_days=self.rolling.lookback_days,
            k=self.rolling.k,
            min_baseline_usd=self.rolling.min_baseline_usd,
        )
        return replace(finding, evidence={**finding.evidence, "query": query})

    def _spend_incident_open(self, tenant_id: str, at: datetime) -> bool:
        return not self.rolling.is_resolved(
            f"tenant:{tenant_id}", at
        ) or not self.contract.is_resolved(tenant_id, at)

    def _with_cause(
        self,
        tables: SpendTables,
        dim: str,
        tenant_id: str,
        value: str,
        hour: datetime,
        finding: Finding,
    ) -> Finding:
        window = bucket_stats(tables.hour_bucket(tenant_id, dim, value, hour))
        history = tables.history(tenant_id, dim, value, hour, hours=CAUSE_HISTORY_DAYS * 24)
        found = self.cause.classify(window, _typical_hour(history, hour)).annotate(finding)
        if dim == "tenant":
            found = _with_why_it_moved(tables, tenant_id, hour, history, found)
        return _with_tenant(found, tenant_id)

    @property
    def resolving_detectors(self) -> frozenset[str]:
        """The detectors whose incidents clear (the others page once and stay open)."""
        names = {self.rolling.name, self.retry_storm.name, "contract_hourly"}
        names |= {d.name for d in (self.cardinality, self.unpriced) if d is not None}
        return frozenset(names)

    def still_open(self, detector: str, key: str, now: datetime) -> bool:
        """Whether `detector` holds an incident for `key` not cleared at `now` (an evicted
        or never-opened one is not open)."""
        if detector == self.rolling.name:
            return not self.rolling.is_resolved(key, now)
        if detector == self.retry_storm.name:
            return not self.retry_storm.is_resolved(key, now)
        if detector == "contract_hourly":
            return not self.contract.is_resolved(key.removeprefix("tenant:"), now)
        if self.cardinality is not None and detector == self.cardinality.name:
            return not self.cardinality.is_resolved(key, now)
        if self.unpriced is not None and detector == self.unpriced.name:
            return not self.unpriced.is_resolved(key, now)
        return False

    def cleared(self, now: datetime) -> list[Finding]:
        """Findings whose condition has cleared, to resolve (call about once a minute)."""
        return [
            *self.rolling.close_cleared(now),
            *self.contract.close_cleared(now),
            *self.retry_storm.close_cleared(now),
            *(self.cardinality.close_cleared(now) if self.cardinality is not None else []),
            *(self.unpriced.close_cleared(now) if self.unpriced is not None else []),
        ]


def _observe_unpriced(
    detector: UnpricedModelDetector, tenant_id: str, rows: list[dict[str, Any]]
) -> list[Finding]:
    """The calls of one list to models with no price, summed per model, in order."""
    per_model: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        if row.get("cost_status", "priced") == "priced":
            continue
        totals = per_model.setdefault(
            (row["provider"], row["model"]), [row["timestamp"], 0, 0, 0, Decimal(0)]
        )
        totals[0] = max(totals[0], row["timestamp"])
        totals[1] += row["request_count"]
        totals[2] += row["input_tokens"]
        totals[3] += row["output_tokens"]
        totals[4] += row["estimated"]
    findings = []
    for (provider, model), (at, requests, tokens_in, tokens_out, estimated) in per_model.items():
        found = detector.update(
            tenant_id, provider, model, at, requests, tokens_in, tokens_out, estimated
        )
        if found is not None:
            findings.append(
                replace(
                    found, evidence={**found.evidence, "query": unpriced_query(provider, model)}
                )
            )
    return findings


def unpriced_query(provider: str, model: str) -> str:
    """SQL over `usage_ledger FINAL`: the model's unpriced calls per tenant and day."""
    return (
        "SELECT\n"
        "    toDate(timestamp) AS day,\n"
        "    tenant_id,\n"
        "    sum(request_count) AS requests,\n"
        "    sum(input_tokens) AS input_tokens,\n"
        "    sum(output_tokens) AS output_tokens,\n"
        "    sum(estimated_cost_usd) AS estimated_cost_usd\n"
        "FROM usage_ledger FINAL\n"
        f"WHERE provider = {sql_string(provider)} AND model = {sql_string(model)}\n"
        "  AND cost_status != 'priced'\n"
        "GROUP BY day, tenant_id\n"
        "ORDER BY day, tenant_id"
    )


def _observe_overflow(
    detector: CardinalityOverflowDetector,
    tables: SpendTables,
    tenant_id: str,
    overflowing: list[TouchedKey],
) -> list[Finding]:
    """The hours in which values of a dimension were counted under the overflow bucket,
    earliest first: the first one of an incident opens it."""
    findings = []
    for touched in sorted(overflowing, key=lambda t: (t.hour, t.dim)):
        bucket = tables.hour_bucket(tenant_id, touched.dim, OVERFLOW, touched.hour)
        found = detector.update(
            tenant_id,
            touched.dim,
            touched.hour,
            cap=tables.max_values_per_dim,
            overflowed=bucket_requests(bucket),
        )
        if found is not None:
            query = cardinality_query(tenant_id, touched.dim, found.window_start)
            findings.append(replace(found, evidence={**found.evidence, "query": query}))
    return findings


def cardinality_query(tenant_id: str, dim: str, window_start: datetime) -> str:
    """SQL over `usage_ledger FINAL`: the tenant's distinct values of the dimension per
    hour, from a day before the first overflowing hour on (the ledger keeps them all)."""
    column = FIELD_NAMES[dim]
    since = f"{window_start - timedelta(days=1):%Y-%m-%d %H:%M:%S}"
    return (
        "SELECT\n"
        "    toStartOfHour(timestamp) AS hour,\n"
        f"    uniqExact({column}) AS distinct_values,\n"
        "    sum(request_count) AS requests,\n"
        "    sum(cost_usd) AS cost_usd,\n"
        f"    topK(5)({column}) AS top_values\n"
        "FROM usage_ledger FINAL\n"
        f"WHERE tenant_id = {sql_string(tenant_id)}\n"
        f"  AND timestamp >= toDateTime64('{since}', 3, 'UTC')\n"
        "GROUP BY hour\n"
        "ORDER BY hour"
    )


def _model_usage(tables: SpendTables, tenant_id: str, hour: datetime) -> dict[str, Usage]:
    """The tenant's hour per model, from its (tenant, model) buckets."""
    models = tables.hour_bucket(tenant_id, "tenant", tenant_id, hour)["models"]
    usage = {}
    for model in models:
        b = tables.hour_bucket(tenant_id, "model", str(model).replace(SEP, "/"), hour)
        usage[model] = Usage(
            calls=bucket_requests(b),
            retries=b.get("retries", 0),
            tokens=b["input"] + b["output"],
            cost=Decimal(b["cost"]),
        )
    return usage


def _with_why_it_moved(
    tables: SpendTables,
    tenant_id: str,
    hour: datetime,
    history: list[tuple[datetime, dict[str, Any]]],
    finding: Finding,
) -> Finding:
    """The hour's change against the mean of the same hour of day on the previous days
    with spend, split into volume, retries, model mix, tokens per call, unit price and
    cache-hit parts that sum to it (`detectors.decomposition`); all new spend when that
    hour had none on any of them."""
    same_hours = [at for at, bucket in history if at.hour == hour.hour and bucket_requests(bucket)]
    n = len(same_hours)
    against = (
        f"mean of the same hour on {n} previous days with spend"
        if n
        else f"no spend in the same hour on the previous {CAUSE_HISTORY_DAYS} days"
    )
    summed: dict[str, list[Any]] = {}
    for at in same_hours:
        for model, u in _model_usage(tables, tenant_id, at).items():
            total = summed.setdefault(model, [0, 0, 0, Decimal(0)])
            total[0] += u.calls
            total[1] += u.retries
            total[2] += u.tokens
            total[3] += u.cost
    before = {
        model: Usage(Fraction(calls, n), Fraction(retries, n), Fraction(tokens, n), cost / n)
        for model, (calls, retries, tokens, cost) in summed.items()
    }
    after = _model_usage(tables, tenant_id, hour)
    parts = decompose(before, after)
    change = sum((u.cost for u in after.values()), Decimal(0)) - sum(
        (u.cost for u in before.values()), Decimal(0)
    )
    evidence = {
        **finding.evidence,
        "why_it_moved_usd": {factor: str(part) for factor, part in parts.items()},
        "why_it_moved_change_usd": str(change.quantize(Decimal("0.01"))),
        "why_it_moved_against": against,
    }
    return replace(finding, evidence=evidence)


# The days of a key's hourly history a spike's cause and why it moved compare with.
CAUSE_HISTORY_DAYS = 7

# Same hours of day with spend needed before the cause compares with them alone.
MIN_SAME_HOURS = 3


def _typical_hour(history: list[tuple[datetime, dict[str, Any]]], hour: datetime) -> WindowStats:
    """What the hour is compared with to name a cause: the median of the same hour of
    day over the previous days with spend (at least MIN_SAME_HOURS), else of every
    active hour. A median over every hour mixes a night's one call by one user with a
    working hour's users, so a busy hour read as "users 5x" and "requests per user 4x"
    whatever happened (a contract breach named genuine adoption)."""
    stats = [(at, bucket_stats(bucket)) for at, bucket in history]
    same = [s for at, s in stats if at.hour == hour.hour and s.requests > 0]
    if len(same) >= MIN_SAME_HOURS:
        return WindowStats.median_of(same)
    return WindowStats.median_of(s for _, s in stats)


def _rows_of(
    rows: list[dict[str, Any]],
    touched: TouchedKey,
    by_value: dict[str, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """The rows of one hour that count in the touched key's bucket. `by_value` is the
    hour's rows split by the touched dimension's value, filled at the first look: a
    list touches many keys of a dimension in an hour, and one pass serves them all."""
    if touched.dim == "tenant":
        return rows
    if touched.value == OVERFLOW:
        return []
    if not by_value:
        column = FIELD_NAMES[touched.dim]
        for row in rows:
            by_value.setdefault(str(row.get(column) or "").replace(SEP, "/"), []).append(row)
    return by_value.get(touched.value, [])


def warm_up_online() -> None:
    """Import River in a background thread at worker start, so neither the start nor
    the first costed event waits for it."""
    import importlib
    import threading

    threading.Thread(
        target=importlib.import_module, args=("detectors.online_anomaly",), daemon=True
    ).start()


def _with_tenant(finding: Finding, tenant_id: str) -> Finding:
    evidence: dict[str, Any] = dict(finding.evidence)
    evidence.setdefault("tenant_id", tenant_id)
    return Finding(
        finding.detector,
        finding.key,
        finding.window_start,
        finding.window_end,
        finding.severity,
        finding.summary,
        finding.value,
        finding.threshold,
        evidence,
    )


def _as_retry_storm(finding: Finding) -> Finding:
    """A retry-storm finding is its own cause: label it as the spend findings are
    labelled, so its alert never reads "not classified"."""
    evidence: dict[str, Any] = {
        **finding.evidence,
        "cause": "retry_storm",
        "cause_explanation": finding.summary,
    }
    return replace(finding, evidence=evidence)
