"""`SpendState`: what the spend agent keeps and does with one tenant's costed rows.

The rows are counted in the spend tables, the monitor runs the detectors on what
changed, and the incident policy (streams/spend/incidents.py) decides which alert
states go to the delivery queue. No Faust here: the agent (streams/spend/agent.py)
feeds it lists of costed messages, and the tables may be plain dicts in tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from detectors.finding import Finding
from schemas.alert import Alert
from schemas.spend_config import SpendConfig
from streams.alerting.acknowledgements import Acknowledgement, alert_id
from streams.alerting.delivery import DeliveryRecorder
from streams.alerting.wiring import Alerting
from streams.spend.coverage import Coverage
from streams.spend.incidents import IncidentPolicy
from streams.spend.monitor import SpendMonitor
from streams.spend.tables import LedgerBase, SpendTables

EXPIRE_EVERY = timedelta(minutes=10)
# History: calls counted this far behind the wall clock (a replay, a backfill, a long
# backlog) are judged cleared by their own time while they keep arriving; once none
# has come for HISTORY_QUIET, by the wall clock again.
HISTORY_LAG = timedelta(hours=1)
HISTORY_QUIET = timedelta(minutes=2)


@dataclass
class SpendState:
    config: SpendConfig
    tables: SpendTables
    monitor: SpendMonitor
    alerting: Alerting
    incidents: IncidentPolicy = field(init=False)
    skipped_redelivered: int = 0
    rewinds: int = 0  # costed partitions read again after a skip or a stall
    rows_seen: int = 0  # costed rows taken by the agent, counted or skipped
    # On Kafka: each costed partition's mark, the ledger rows its base holds
    # (streams/spend/coverage.py); None on the embedded broker, whose log epoch splits
    # the ledger. Until it is known, /v1/limits answers 503.
    coverage: Coverage | None = None
    in_ledger_base: int = 0  # costed rows skipped: their ledger rows are in the base
    # Set once the ledger's state before this log epoch and the open incidents are
    # restored (streams/spend/ledger_state.py); until then no list is counted and
    # /v1/limits answers 503.
    state_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # Set once the month totals are: /v1/limits reads nothing else.
    limits_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # The latest event time counted, and the wall time it last moved.
    event_clock: datetime | None = None
    event_clock_moved_at: datetime | None = None

    def __post_init__(self) -> None:
        self.incidents = IncidentPolicy(self.alerting.lifecycle, self.monitor.resolving_detectors)

    def months_restored(self, base: LedgerBase) -> None:
        """The base's month totals are in (its hours may follow): limits are exact."""
        self.tables.set_base(base)
        self.limits_ready.set()

    def restore(
        self,
        base: LedgerBase,
        alerts: Sequence[Alert],
        now: datetime,
        acks: Sequence[Acknowledgement] = (),
    ) -> None:
        """The spend tables' base from the ledger, the incidents open at the last stop
        (`alerts`: every recorded state), so none is paged again or left unresolved, and
        the operators' acknowledgements and snoozes."""
        self.tables.set_base(base)
        self.incidents.restore(alerts, now)
        self.apply_acknowledgements(acks)
        if self.coverage is None or self.coverage.since_ms:
            self.limits_ready.set()
        self.state_ready.set()

    def cover(self, base: LedgerBase, coverage: Coverage) -> None:
        """On Kafka: the base of the costed partitions this worker holds, read from the
        ledger below each partition's mark; limits are exact again."""
        self.tables.set_base(base)
        self.coverage = coverage
        self.limits_ready.set()

    def apply(self, tenant_id: str, rows: list[dict[str, Any]]) -> None:
        """Count one tenant's costed rows, run the detectors on what changed, and
        expire the tenant's old keys now and then."""
        result = self.tables.apply(tenant_id, rows)
        self.rows_seen += len(rows)
        self.skipped_redelivered += result.skipped
        now = datetime.now(UTC)
        newest = result.newest
        if newest is not None and (self.event_clock is None or newest > self.event_clock):
            self.event_clock, self.event_clock_moved_at = newest, now
        if result.counted:
            self.handle_findings(self.monitor.observe(self.tables, tenant_id, result), now)
        self.tables.expire_due(tenant_id, now, EXPIRE_EVERY)

    def handle_findings(self, findings: list[Finding], now: datetime) -> None:
        for alert in self.incidents.on_findings(findings, now):
            self.alerting.queue.enqueue(alert)

    def resolve_cleared(self, now: datetime) -> None:
        if not self.incidents.caught_up(now):
            return  # restored incidents wait for the detectors to see this hour's calls
        # A replay hands the agent days in seconds: by the wall clock every incident's
        # hour is long over at the first tick, and the same breach's next hour would
        # page again. The alert still records when it resolved by the wall clock.
        cleared = self.monitor.cleared(self.incident_clock(now))
        for alert in self.incidents.on_cleared(cleared, self.monitor.still_open, now):
            self.alerting.queue.enqueue(alert)

    def incident_clock(self, now: datetime) -> datetime:
        """The time conditions are judged cleared at: the latest event time counted
        while history is arriving (see HISTORY_LAG), else `now`."""
        clock, moved = self.event_clock, self.event_clock_moved_at
        if clock is None or moved is None or now - clock < HISTORY_LAG:
            return now
        return clock if now - moved < HISTORY_QUIET else now

    def acknowledgements_for(
        self, ident: str, by: str, note: str, now: datetime
    ) -> list[Acknowledgement] | None:
        """What acknowledging the paged alert `ident` (its id or fingerprint) as the new
        normal records: one row per rolling-median key of its tenant (the tenant, its
        teams, workflows and models moved together), each at its highest hourly spend
        since the incident began. None for an alert not paged (or forgotten)."""
        alert = self.incidents.find_alert(ident)
        if alert is None:
            return None
        rolling = self.monitor.rolling
        scope = f"tenant:{alert.tenant_id}" if alert.tenant_id else alert.key
        since = alert.window_start
        until = since + timedelta(days=rolling.lookback_days)
        acks = [
            Acknowledgement(
                alert_id(alert.fingerprint), key, "ack", level, since, until, by, note, now
            )
            for key in rolling.keys_under(scope)
            if (level := rolling.level_since(key, since)) is not None
        ]
        if not acks:  # an alert of another detector: the ack is recorded, nothing rebased
            acks = [
                Acknowledgement(
                    alert_id(alert.fingerprint), alert.key, "ack", None, since, until, by, note, now
                )
            ]
        return acks

    def snooze_for(
        self, target: str, period: timedelta, by: str, note: str, now: datetime
    ) -> Acknowledgement:
        """A snooze of `target`: a key, or a paged alert's id (its key is snoozed)."""
        alert = self.incidents.find_alert(target)
        key, ident = (alert.key, alert_id(alert.fingerprint)) if alert else (target, "")
        return Acknowledgement(ident, key, "snooze", None, now, now + period, by, note, now)

    def apply_acknowledgements(self, acks: Sequence[Acknowledgement]) -> None:
        """Recorded acknowledgements and snoozes take effect (also those restored at start)."""
        for ack in acks:
            self.incidents.acks.add(ack)
            if ack.kind != "ack":
                continue
            if ack.level is not None:
                self.monitor.rolling.set_acknowledged(ack.key, ack.since, ack.level)
            # The retry-storm detector holds workflow keys (the rolling median's too):
            # its rates from the incident's hour to the ack's become the key's usual.
            self.monitor.retry_storm.set_acknowledged(ack.key, ack.since, ack.at)

    def record_deliveries(self, recorder: DeliveryRecorder) -> None:
        """Alert states and delivery attempts go to `recorder` from now on."""
        self.alerting.queue.recorder = recorder

    @property
    def alerts_sent(self) -> int:
        return self.incidents.alerts_sent

    @property
    def findings(self) -> int:
        return self.incidents.findings

    @property
    def overflowed(self) -> dict[str, int]:
        """Rows counted under the tables' overflow bucket since start, per capped
        dimension ({"workflow": n, "team": n, "model": n}): values past a tenant's cap
        of distinct values. The alert names the tenant; this shows the volume."""
        return dict(self.tables.overflowed_by_dim)

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
            # Priced spend of the UTC day so far, for gateways with daily caps.
            "today_usd": str(self.tables.tenant_day(tenant_id, now).cost),
            "estimated_usd": str(month.estimated),
            "unpriced_requests": month.unpriced_requests,
            "estimates": mode,
            "monthly_budget_usd": str(budget) if budget is not None else None,
            "remaining_usd": str(remaining) if remaining is not None else None,
            "status": status,
        }
