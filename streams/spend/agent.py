"""The spend agent: costed events → spend tables → detectors → alerts.

Registered on the Faust app by `register_spend_agent`. Costed messages are keyed
by tenant and hold that tenant's rows of one ingest batch; the tables are keyed
by tenant first so their changelogs follow the stream's partitions, and recover
from them after a restart. Alert delivery runs off this path, from a queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, cast

import faust
import orjson
from faust.types import TP, EventT, StreamT

from detectors.finding import Finding
from schemas.alert import SEVERITY_RANK, Alert
from schemas.spend_config import SpendConfig
from streams.alerting.alerts_table import AlertsTableWriter
from streams.alerting.query import parse_key
from streams.alerting.wiring import Alerting, build_alerting
from streams.retrying import until_done
from streams.settings import Settings
from streams.spend.batched_table import BatchedTable
from streams.spend.monitor import SpendMonitor, warm_up_online
from streams.spend.progress import CostedProgress
from streams.spend.tables import LedgerBase, SpendTables

log = logging.getLogger(__name__)

EXPIRE_EVERY = timedelta(minutes=10)
# The agent takes costed messages by the list: each tenant's rows of a list are counted
# at once and each changed key is written to its changelog once, however many messages
# touched it. A list closes when full or after the wait, which bounds the latency added.
TAKE_MAX_MESSAGES = 1000
TAKE_WITHIN_SECONDS = 0.1
# How often the agent compares each costed partition's log end with how far it has
# counted; a partition behind its end with no progress since the last look is read
# again (streams/spend/progress.py).
STALL_CHECK_SECONDS = 5.0


def tenant_rows(
    events: Sequence[EventT],
) -> tuple[dict[tuple[str, int], list[dict[str, Any]]], int]:
    """The costed rows of `events` by tenant and costed partition, in order, each source
    position once (and how many repeated one): a batch re-published after an ingest
    crash may share the list with its first publication, and the tables' marks only
    skip what earlier lists held."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    repeated = 0
    seen: set[tuple[Any, Any, Any]] = set()
    for event in events:
        key = (bytes(event.key or b"").decode(), event.message.partition)
        rows = grouped.setdefault(key, [])
        for row in orjson.loads(event.value):
            position = (row["source_partition"], row["source_offset"], row.get("source_index", 0))
            if position in seen:
                repeated += 1
                continue
            seen.add(position)
            rows.append(row)
    return grouped, repeated


# One incident, one page, per tenant. A runaway loop in one workflow trips the rolling
# median on the tenant, its team, the workflow and the model, the retry-storm detector
# and the run-cost detector at once: six pages for one cause. These detectors' findings
# for a tenant that already has an open incident of at least their severity join that
# incident instead of paging; a more severe one still pages (it reaches PagerDuty).
# Monthly thresholds, forecasts and the online detector are other kinds of news and
# page on their own. After the tenant's incident resolves, the cooldown holds for the
# tenant as the lifecycle holds it for one (detector, key): findings that come back
# within it reopen the incident quietly.
CORRELATED = frozenset({"rolling_median", "contract_hourly", "retry_storm", "run_cost"})
# Those that resolve (a run's cost never falls): the tenant's incident resolves when
# every one of these that joined it has cleared.
RESOLVING = CORRELATED - {"run_cost"}
# An incident restored from the alerts table at start is held this long, or until the
# first costed list is counted, before the detectors are asked whether it still holds:
# they have not seen the hour's new calls yet.
RESTORED_GRACE = timedelta(seconds=30)


@dataclass
class TenantIncident:
    severity: str  # the highest severity paged for it
    paged: list[str] = field(default_factory=list)  # fingerprints to resolve at the end
    open_keys: set[tuple[str, str]] = field(default_factory=set)  # (detector, key) not cleared


def finding_tenant(finding: Finding) -> str:
    return str(finding.evidence.get("tenant_id") or parse_key(finding.key).get("tenant", ""))


@dataclass
class SpendRuntime:
    config: SpendConfig
    tables: SpendTables
    monitor: SpendMonitor
    alerting: Alerting
    recorder: AlertsTableWriter | None = None
    last_expiry: dict[str, datetime] = field(default_factory=dict)
    tenant_incidents: dict[str, TenantIncident] = field(default_factory=dict)
    # tenant -> (end of the cooldown, severity paged) after its incident resolved
    tenant_cooldowns: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    alerts_sent: int = 0
    findings: int = 0
    correlated: int = 0
    skipped_redelivered: int = 0
    rewinds: int = 0  # costed partitions read again after a skip or a stall
    counting: bool = False  # inside a list: waiting on its table writes is no stall
    needs_index: bool = True
    # Awaited once before the first list: the worker wires the alerts table here, so
    # that no alert raised at start is missing from it.
    before_first_list: Callable[[], Awaitable[None]] | None = None
    # Set once the ledger's state before this log epoch and the open incidents are
    # restored (streams/spend/ledger_state.py); until then no list is counted and
    # /v1/limits answers 503.
    state_ready: asyncio.Event = field(default_factory=asyncio.Event)
    ready_at: datetime | None = None
    rows_seen: int = 0  # costed rows taken by the agent, counted or skipped
    counted_since_ready: bool = False
    restored: set[tuple[str, str]] = field(default_factory=set)  # (detector, key) open at start

    def restore(self, base: LedgerBase, alerts: Sequence[Alert], now: datetime) -> None:
        """The spend tables' base from the ledger, and the incidents open at the last stop
        (`alerts`: every recorded state), so none is paged again or left unresolved."""
        self.tables.set_base(base)
        latest: dict[str, Alert] = {}
        for alert in sorted(alerts, key=lambda a: a.recorded_at):
            latest[alert.fingerprint] = alert
        lifecycle = self.alerting.lifecycle
        lifecycle.restore(list(latest.values()), now)
        cooldown = lifecycle.cooldown
        for alert in latest.values():
            tenant = alert.tenant_id
            if not tenant or alert.detector not in RESOLVING:
                continue
            if alert.state == "triggered":
                incident = self.tenant_incidents.setdefault(tenant, TenantIncident(alert.severity))
                if SEVERITY_RANK[alert.severity] > SEVERITY_RANK[incident.severity]:
                    incident.severity = alert.severity
                incident.paged.append(alert.fingerprint)
                incident.open_keys.add((alert.detector, alert.key))
            elif alert.resolved_at is not None and alert.resolved_at + cooldown > now:
                held = self.tenant_cooldowns.get(tenant)
                until = alert.resolved_at + cooldown
                if held is None or held[0] < until:
                    self.tenant_cooldowns[tenant] = (until, alert.severity)
        self.restored = {(a.detector, a.key) for a in latest.values() if a.state == "triggered"}
        self.ready_at = now
        self.state_ready.set()

    def apply(self, tenant_id: str, rows: list[dict[str, Any]]) -> None:
        """Count one tenant's costed rows, run the detectors on what changed, and
        expire the tenant's old keys now and then."""
        result = self.tables.apply(tenant_id, rows)
        self.rows_seen += len(rows)
        self.skipped_redelivered += result.skipped
        now = datetime.now(UTC)
        if result.counted:
            self.handle_findings(self.monitor.observe(self.tables, tenant_id, result), now)
        last = self.last_expiry.get(tenant_id)
        if last is None or now - last >= EXPIRE_EVERY:
            self.tables.expire(tenant_id, now)
            self.last_expiry[tenant_id] = now

    def handle_findings(self, findings: list[Finding], now: datetime) -> None:
        self.findings += len(findings)
        # Most severe first (stable): of one batch's findings, the most severe opens the
        # tenant's incident and the rest join it, so it pages once at its real severity.
        for finding in sorted(findings, key=lambda f: -SEVERITY_RANK[f.severity]):
            tenant = finding_tenant(finding)
            correlated = bool(tenant) and finding.detector in CORRELATED
            if correlated and self._joins_open_incident(tenant, finding, now):
                continue
            alert = self.alerting.lifecycle.observe(finding, now)
            if alert is None:
                continue
            self.alerts_sent += 1
            self.alerting.queue.enqueue(alert)
            if not correlated:
                continue
            incident = self.tenant_incidents.get(tenant)
            if incident is None:
                if finding.detector not in RESOLVING:
                    continue  # nothing would ever resolve it: a page of its own
                incident = self.tenant_incidents[tenant] = TenantIncident(alert.severity)
            if SEVERITY_RANK[alert.severity] > SEVERITY_RANK[incident.severity]:
                incident.severity = alert.severity
            if finding.detector in RESOLVING:
                if alert.fingerprint not in incident.paged:
                    incident.paged.append(alert.fingerprint)
                incident.open_keys.add((finding.detector, finding.key))

    def _joins_open_incident(self, tenant: str, finding: Finding, now: datetime) -> bool:
        incident = self.tenant_incidents.get(tenant)
        cooldown = self.tenant_cooldowns.get(tenant)
        if incident is None and cooldown is not None and now < cooldown[0]:
            if finding.detector not in RESOLVING:
                return False
            incident = self.tenant_incidents[tenant] = TenantIncident(cooldown[1])  # quiet
        if incident is None or SEVERITY_RANK[finding.severity] > SEVERITY_RANK[incident.severity]:
            return False
        if finding.detector in RESOLVING:
            incident.open_keys.add((finding.detector, finding.key))
        self.correlated += 1
        return True

    @property
    def overflowed(self) -> dict[str, int]:
        """Rows counted under the tables' overflow bucket since start, per capped
        dimension ({"workflow": n, "team": n, "model": n}): values past a tenant's cap
        of distinct values. The alert names the tenant; this shows the volume."""
        return dict(self.tables.overflowed_by_dim)

    def resolve_cleared(self, now: datetime) -> None:
        if not self._caught_up(now):
            return  # restored incidents wait for the detectors to see this hour's calls
        held = {key for incident in self.tenant_incidents.values() for key in incident.open_keys}
        for finding in self.monitor.cleared(now):
            if (finding.detector, finding.key) not in held:
                self._resolve(finding.fingerprint, now)
        for tenant, incident in list(self.tenant_incidents.items()):
            # Asking the detectors, not only counting cleared findings, also lets go of
            # a key a detector evicted (it never reports that one as cleared).
            incident.open_keys = {
                key for key in incident.open_keys if self.monitor.still_open(*key, now)
            }
            if not incident.open_keys:
                del self.tenant_incidents[tenant]
                for fingerprint in incident.paged:
                    self._resolve(fingerprint, now)
                if incident.paged:
                    until = now + self.alerting.lifecycle.cooldown
                    self.tenant_cooldowns[tenant] = (until, incident.severity)
        for tenant, (until, _) in list(self.tenant_cooldowns.items()):
            if now >= until:
                del self.tenant_cooldowns[tenant]
        self._resolve_restored(now, held)
        self.alerting.lifecycle.prune(now)

    def _caught_up(self, now: datetime) -> bool:
        if not self.restored:
            return True
        if self.ready_at is None:
            return False
        return self.counted_since_ready or now - self.ready_at >= RESTORED_GRACE

    def _resolve_restored(self, now: datetime, held: set[tuple[str, str]]) -> None:
        """Restored incidents no detector holds (its condition ended before the restart,
        or it never came back) resolve; those a detector re-detected resolve with it.
        Monthly budget, forecast, run-cost and online pages never resolve, as in one run."""
        for detector, key in list(self.restored):
            if (detector, key) in held or self.monitor.still_open(detector, key, now):
                continue
            self.restored.discard((detector, key))
            if detector not in self.monitor.resolving_detectors:
                continue
            alert = self.alerting.lifecycle.clear_key(detector, key, now)
            if alert is not None:
                self.alerting.queue.enqueue(alert)

    def _resolve(self, fingerprint: str, now: datetime) -> None:
        alert = self.alerting.lifecycle.clear(fingerprint, now)
        if alert is not None:
            self.alerting.queue.enqueue(alert)

    def limits(self, tenant_id: str, now: datetime) -> dict[str, Any]:
        """Month-to-date spend against the tenant's budget, for gateways to enforce caps.

        `month_to_date_usd` is the known (priced) spend; `estimated_usd` the estimates
        of calls to models with no price. With `limits.estimates: count` the status
        judges their sum; with `unknown` a month with such calls is `unknown`."""
        month = self.tables.month(tenant_id, now)
        tenant = self.config.tenants.get(tenant_id)
        budget = tenant.monthly_budget_usd if tenant else None
        mode = self.config.limits.estimates
        counted = month.cost + month.estimated
        if mode == "unknown" and month.unpriced_requests:
            status, remaining = "unknown", None
        elif budget is None:
            status, remaining = "ok", None
        else:
            remaining = max(Decimal(0), budget - counted)
            status = (
                "over"
                if counted >= budget
                else "warn"
                if counted >= budget * Decimal("0.8")
                else "ok"
            )
        return {
            "tenant_id": tenant_id,
            "month": f"{now:%Y-%m}",
            "month_to_date_usd": str(month.cost),
            "estimated_usd": str(month.estimated),
            "unpriced_requests": month.unpriced_requests,
            "estimates": mode,
            "monthly_budget_usd": str(budget) if budget is not None else None,
            "remaining_usd": str(remaining) if remaining is not None else None,
            "status": status,
        }


def tables_ready(app: faust.App) -> bool:
    """Recovered from their changelogs, and no rebalance under way."""
    recovered = cast(Any, app.tables).recovery.completed.is_set()
    return bool(recovered and not app.in_recovery and not app.rebalancing)


def register_spend_agent(
    app: faust.App,
    settings: Settings,
    config: SpendConfig,
    embedded: bool,
    may_read_limits: Callable[[Any, str], bool] = lambda request, tenant_id: False,
) -> SpendRuntime:
    def table(name: str) -> BatchedTable:
        return BatchedTable(app.Table(name, default=None, partitions=settings.topic_partitions))

    warm_up_online()
    batched = [table("spend_hourly"), table("spend_totals"), table("run_cost")]
    tables = SpendTables(*batched)
    progress_table = table("costed_progress")
    progress = CostedProgress(progress_table)
    runtime = SpendRuntime(
        config=config,
        tables=tables,
        monitor=SpendMonitor(config),
        alerting=build_alerting(config, embedded=embedded),
    )
    costed_topic = app.topic(settings.costed_topic, value_serializer="raw", key_serializer="raw")

    async def durably(*flushes: Callable[[], Awaitable[None]]) -> None:
        # Retried in place, never raised: a failed flush keeps its records for the next
        # try, and a crashed agent would leave the list's events unacknowledged.
        async def flush_all() -> None:
            # Every flush settled before a retry: one still in flight has taken its
            # records, and a retry would find nothing to send and call them durable.
            results = await asyncio.gather(*(f() for f in flushes), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

        await until_done(flush_all, log, "spend table changelog write")

    async def read_again(partition: int, offset: int, why: str) -> None:
        log.warning("costed partition %d: %s; reading again from offset %d", partition, why, offset)
        runtime.rewinds += 1
        await app.consumer.seek(TP(settings.costed_topic, partition), offset)

    @app.agent(costed_topic, name="spend")
    async def spend(stream: StreamT[bytes]) -> None:
        await runtime.alerting.queue.start()
        if runtime.before_first_list is not None:
            await runtime.before_first_list()
        # Faust acks a taken list's events only after this body is done with it, so
        # their offsets are committed after the table writes are durable.
        taken = cast("faust.Stream[bytes]", stream).take_events(
            TAKE_MAX_MESSAGES, within=TAKE_WITHIN_SECONDS
        )
        async for events in taken:
            runtime.counting = True
            try:
                await count(events)
            finally:
                runtime.counting = False

    async def count(events: Sequence[EventT]) -> None:
        """One taken list: its admitted events into the tables, then the progress record."""
        # Nothing is counted before the base from the ledger is in: the detectors'
        # history and every total start from it.
        await runtime.state_ready.wait()
        if runtime.needs_index:
            # Tables recovered from their changelogs (at start or after a
            # rebalance): learn which keys each tenant owns before expiring any.
            tables.rebuild_index()
            runtime.needs_index = False
        admitted = progress.admit(events)
        grouped, repeated = tenant_rows(admitted.events)
        runtime.skipped_redelivered += repeated
        for (tenant_id, partition), rows in grouped.items():
            runtime.apply(tenant_id, rows)
            await durably(*(partial(table.flush, app, partition) for table in batched))
        runtime.counted_since_ready = True
        # After the values: a crash between the two counts the list again, and the
        # values' source-position marks skip what they already hold.
        for partition, offset in progress.reached(admitted.events).items():
            progress_table[str(partition)] = offset
            await durably(partial(progress_table.flush, app, partition))
        for partition, offset in admitted.rewind.items():
            await read_again(partition, offset, "a message was skipped")

    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        runtime.needs_index = True

    app.on_partitions_assigned.connect(on_assigned)

    @app.timer(15.0)
    async def resolve_cleared() -> None:
        runtime.resolve_cleared(datetime.now(UTC))

    last_expected: dict[int, int | None] = {}

    @app.timer(STALL_CHECK_SECONDS)
    async def read_stalled_partitions_again() -> None:
        if not tables_ready(app):
            last_expected.clear()
            return
        if runtime.counting:
            return  # a list's writes are pending (a slow broker): reading again would not help
        partitions = [tp for tp in app.consumer.assignment() if tp.topic == settings.costed_topic]
        if not partitions:
            return
        try:
            ends = await app.consumer.highwaters(*partitions)
        except Exception as exc:  # a timer that raises stops the worker: look next time
            log.warning("costed log ends unavailable (%s); checking again later", exc)
            return
        stalled = progress.stalled({tp.partition: end for tp, end in ends.items()}, last_expected)
        last_expected.clear()
        last_expected.update({tp.partition: progress.expected(tp.partition) for tp in partitions})
        for partition, offset in stalled.items():
            await read_again(partition, offset, "behind its log end with no progress")

    @app.page("/v1/limits/{tenant_id}")
    async def limits(web: Any, request: Any, tenant_id: str) -> Any:
        if not may_read_limits(request, tenant_id):
            body = {"error": "the analyst token or an ingest key of this tenant is required"}
            return web.json(body, status=401, headers={"WWW-Authenticate": "Bearer"})
        # Until the tables are recovered from their changelogs and their base read from
        # the ledger a total would be partial (0 right after a start): a gateway
        # enforcing caps must not read it as spend.
        if not (tables_ready(app) and runtime.state_ready.is_set()):
            body = {
                "tenant_id": tenant_id,
                "status": "recovering",
                "message": "in-stream spend state is being rebuilt; retry shortly",
            }
            return web.json(body, status=503, headers={"Retry-After": "1"})
        return web.json(runtime.limits(tenant_id, datetime.now(UTC)))

    return runtime
