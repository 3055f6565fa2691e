"""The incident policy: what the spend agent does with detectors' findings.

One incident, one page, per tenant. A runaway loop in one workflow trips the rolling
median on the tenant, its team, the workflow and the model and the retry-storm
detector at once: five pages for one cause. These detectors' findings for a tenant
that already has an open incident of at least their severity join that incident
instead of paging; a more severe one still pages (it reaches PagerDuty). A workflow
run over its threshold (it names the run and its workflow), the contracted hourly
budget crossed (a contract), monthly thresholds, forecasts and the online detector
are other kinds of news and page on their own: folded into the tenant's spike, the
run was never named (issue 19). After the tenant's incident resolves, the cooldown holds for the
tenant as the lifecycle holds it for one (detector, key): findings that come back
within it reopen the incident quietly.

A snoozed key's findings are held back: recorded as 'snoozed' alert states (never
delivered, never restored as open at a restart) and paged at the first evaluation after
the snooze ends if their condition still holds.

Pure: no Faust, no I/O, the time passed in. `IncidentPolicy` decides which alert
states to send and returns them; the caller queues them for delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from detectors.finding import Finding
from schemas.alert import SEVERITY_RANK, Alert
from streams.alerting.acknowledgements import AcknowledgementBook, alert_id
from streams.alerting.lifecycle import AlertLifecycle, alert_from_finding
from streams.alerting.query import parse_key

# Both resolve: the tenant's incident resolves when every one of them that joined it
# has cleared.
CORRELATED = frozenset({"rolling_median", "retry_storm"})
# An incident restored from the alerts table at start is held this long, or until the
# first costed list is counted, before the detectors are asked whether it still holds:
# they have not seen the hour's new calls yet.
RESTORED_GRACE = timedelta(seconds=30)
MILLISECOND = timedelta(milliseconds=1)
# Paged alerts an operator can acknowledge by id (the newest kept).
MAX_ACKNOWLEDGEABLE = 10_000


@dataclass
class TenantIncident:
    severity: str  # the highest severity paged for it
    paged: list[str] = field(default_factory=list)  # fingerprints to resolve at the end
    open_keys: set[tuple[str, str]] = field(default_factory=set)  # (detector, key) not cleared


def _instant(finding: Finding) -> datetime:
    """When the finding's condition was seen: its `as_of` (the newest event time
    counted), else the start of its window."""
    as_of = finding.evidence.get("as_of")
    if isinstance(as_of, str):
        return datetime.fromisoformat(as_of)
    return as_of if isinstance(as_of, datetime) else finding.window_start


def finding_tenant(finding: Finding) -> str:
    return str(finding.evidence.get("tenant_id") or parse_key(finding.key).get("tenant", ""))


class IncidentPolicy:
    """Tenant incidents over the alert lifecycle (which holds one incident per
    (detector, key) with its own cooldown). `resolving`: the detectors whose incidents
    clear (the others page once and stay open)."""

    def __init__(self, lifecycle: AlertLifecycle, resolving: frozenset[str]) -> None:
        self.lifecycle = lifecycle
        self.resolving = resolving
        self.tenant_incidents: dict[str, TenantIncident] = {}
        # tenant -> (end of the cooldown, severity paged) after its incident resolved
        self.tenant_cooldowns: dict[str, tuple[datetime, str]] = {}
        self.alerts_sent = 0
        self.findings = 0
        # (detector, key) open at the last stop, until a detector holds it or it resolves
        self.restored: set[tuple[str, str]] = set()
        self.restored_at: datetime | None = None
        self.counted_since_restore = False  # the detectors have seen new calls
        self.acks = AcknowledgementBook()
        self.snoozed_findings = 0  # findings of snoozed keys: recorded, not paged
        # (detector, key) -> the latest finding a snooze held back, until the snooze ends
        # (then it pages if its condition still holds) or the condition clears.
        self.held: dict[tuple[str, str], Finding] = {}
        self.paged_alerts: dict[str, Alert] = {}  # alert id -> its triggered state

    def remember_paged(self, alert: Alert) -> None:
        if alert.state != "triggered":
            return
        self.paged_alerts[alert_id(alert.fingerprint)] = alert
        if len(self.paged_alerts) > MAX_ACKNOWLEDGEABLE:
            del self.paged_alerts[next(iter(self.paged_alerts))]

    def find_alert(self, ident: str) -> Alert | None:
        """The paged alert of this id (or of this fingerprint)."""
        return self.paged_alerts.get(ident) or self.paged_alerts.get(alert_id(ident))

    def restore(self, alerts: Sequence[Alert], now: datetime) -> None:
        """The incidents open at the last stop and the cooldowns still running, from
        every recorded alert state (each fingerprint's latest counts), so none is paged
        again or left unresolved."""
        latest: dict[str, Alert] = {}
        for alert in sorted(alerts, key=lambda a: a.recorded_at):
            latest[alert.fingerprint] = alert
            self.remember_paged(alert)
        self.lifecycle.restore(list(latest.values()), now)
        cooldown = self.lifecycle.cooldown
        for alert in latest.values():
            tenant = alert.tenant_id
            if not tenant or alert.detector not in CORRELATED:
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
        self.restored_at = now

    def saw_new_calls(self) -> None:
        """A costed list was counted: the detectors know this hour's calls."""
        self.counted_since_restore = True

    def caught_up(self, now: datetime) -> bool:
        """Whether cleared conditions may resolve: restored incidents wait until the
        detectors have seen new calls (a counted list, or the grace)."""
        if not self.restored:
            return True
        if self.restored_at is None:
            return False
        return self.counted_since_restore or now - self.restored_at >= RESTORED_GRACE

    def on_findings(self, findings: list[Finding], now: datetime) -> list[Alert]:
        """The alert states to send for these findings (triggered, on opening or
        escalating, and snoozed: recorded, not delivered)."""
        self.findings += len(findings)
        return self._decide(findings, now)

    def _decide(self, findings: list[Finding], now: datetime) -> list[Alert]:
        alerts: list[Alert] = []
        # In event-time order, the most severe first among those of one instant: of
        # findings at once, the most severe opens the tenant's incident and the rest
        # join it, so it pages once at its real severity; an earlier warning still pages
        # first, whether the list held a minute of calls or (a replay) the whole hour.
        for finding in sorted(findings, key=lambda f: (_instant(f), -SEVERITY_RANK[f.severity])):
            if self.acks.snoozed(finding.key, now) is not None:
                self.snoozed_findings += 1  # an operator snoozed the key: no page
                if (held := self._hold(finding, now + len(alerts) * MILLISECOND)) is not None:
                    alerts.append(held)
                continue
            tenant = finding_tenant(finding)
            correlated = bool(tenant) and finding.detector in CORRELATED
            if correlated and self._joins_open_incident(tenant, finding, now):
                continue
            # The states one list decides are recorded a millisecond apart, in the order
            # decided: an escalation decided with its trigger (a replay's list may hold
            # the whole hour) would otherwise share the alerts table's key
            # (fingerprint, state, recorded_at) with it and replace it.
            alert = self.lifecycle.observe(finding, now + len(alerts) * MILLISECOND)
            if alert is None:
                continue
            self.alerts_sent += 1
            alerts.append(alert)
            self.remember_paged(alert)
            if not correlated:
                continue
            incident = self.tenant_incidents.get(tenant)
            if incident is None:
                incident = self.tenant_incidents[tenant] = TenantIncident(alert.severity)
            if SEVERITY_RANK[alert.severity] > SEVERITY_RANK[incident.severity]:
                incident.severity = alert.severity
            if alert.fingerprint not in incident.paged:
                incident.paged.append(alert.fingerprint)
            incident.open_keys.add((finding.detector, finding.key))
        return alerts

    def _hold(self, finding: Finding, now: datetime) -> Alert | None:
        """Hold back a snoozed key's finding until the snooze ends. The 'snoozed' state
        to record (so the alerts panel and an analyst see what was held back) when the
        key's incident is new or more severe than the one held; None when that was
        already recorded, or the key's incident was paged before the snooze (its
        triggered state stays its latest, so a restart restores and resolves it)."""
        ikey = (finding.detector, finding.key)
        before = self.held.get(ikey)
        self.held[ikey] = finding
        if self.lifecycle.is_paged(*ikey):
            return None
        if before is not None and SEVERITY_RANK[finding.severity] <= SEVERITY_RANK[before.severity]:
            return None
        alert = alert_from_finding(finding, now=now, query_builder=self.lifecycle.query_builder)
        return alert.model_copy(update={"state": "snoozed"})

    def _release_held(
        self, still_open: Callable[[str, str, datetime], bool], now: datetime
    ) -> list[Alert]:
        """Findings whose snooze has ended page now if their condition still holds (the
        detectors report a condition once, when it opens: none would come again). A
        resolving detector's finding whose condition cleared is dropped, snoozed or not;
        one of the others (budget, forecast, run cost, online) stays true, so it pages."""
        released = []
        for ikey, finding in list(self.held.items()):
            holds = finding.detector not in self.resolving or still_open(*ikey, now)
            if holds and self.acks.snoozed(finding.key, now) is not None:
                continue
            del self.held[ikey]
            if holds:
                released.append(finding)
        return self._decide(released, now)

    def _joins_open_incident(self, tenant: str, finding: Finding, now: datetime) -> bool:
        incident = self.tenant_incidents.get(tenant)
        cooldown = self.tenant_cooldowns.get(tenant)
        if incident is None and cooldown is not None and now < cooldown[0]:
            incident = self.tenant_incidents[tenant] = TenantIncident(cooldown[1])  # quiet
        if incident is None or SEVERITY_RANK[finding.severity] > SEVERITY_RANK[incident.severity]:
            return False
        incident.open_keys.add((finding.detector, finding.key))
        return True

    def on_cleared(
        self,
        cleared: Iterable[Finding],
        still_open: Callable[[str, str, datetime], bool],
        now: datetime,
    ) -> list[Alert]:
        """The resolved alert states to send, given the findings whose condition cleared
        and `still_open(detector, key, now)`, the detectors' view of a key. Call it only
        once `caught_up(now)`."""
        held = {key for incident in self.tenant_incidents.values() for key in incident.open_keys}
        alerts = [
            alert
            for finding in cleared
            if (finding.detector, finding.key) not in held
            and (alert := self.lifecycle.clear(finding.fingerprint, now)) is not None
        ]
        for tenant, incident in list(self.tenant_incidents.items()):
            # Asking the detectors, not only counting cleared findings, also lets go of
            # a key a detector evicted (it never reports that one as cleared).
            incident.open_keys = {key for key in incident.open_keys if still_open(*key, now)}
            if not incident.open_keys:
                del self.tenant_incidents[tenant]
                for fingerprint in incident.paged:
                    if (alert := self.lifecycle.clear(fingerprint, now)) is not None:
                        alerts.append(alert)
                if incident.paged:
                    until = now + self.lifecycle.cooldown
                    self.tenant_cooldowns[tenant] = (until, incident.severity)
        for tenant, (until, _) in list(self.tenant_cooldowns.items()):
            if now >= until:
                del self.tenant_cooldowns[tenant]
        alerts += self._resolve_restored(still_open, now, held)
        alerts += self._release_held(still_open, now + len(alerts) * MILLISECOND)
        self.lifecycle.prune(now)
        return alerts

    def _resolve_restored(
        self,
        still_open: Callable[[str, str, datetime], bool],
        now: datetime,
        held: set[tuple[str, str]],
    ) -> list[Alert]:
        """Restored incidents no detector holds (its condition ended before the restart,
        or it never came back) resolve; those a detector re-detected resolve with it.
        Monthly budget, forecast, run-cost and online pages never resolve, as in one run."""
        alerts = []
        for detector, key in list(self.restored):
            if (detector, key) in held or still_open(detector, key, now):
                continue
            self.restored.discard((detector, key))
            if detector not in self.resolving:
                continue
            if (alert := self.lifecycle.clear_key(detector, key, now)) is not None:
                alerts.append(alert)
        return alerts
