"""Alert lifecycle: trigger, cooldown, resolve. Pure logic; the caller passes the clock.

An incident is identified by (detector, key). Detectors re-detect the same
condition on every evaluation and in every new window, each with its own
fingerprint (detector|key|window_start); all of them belong to the open incident
and none pages again. So one incident pages once, under the fingerprint of the
finding that opened it, and that fingerprint is the PagerDuty dedup_key of both
its trigger and its resolve.

The cooldown is the minimum gap between two pages for the same (detector, key):
a condition that clears and comes back within it (flapping) reopens the incident
quietly, and it pages only if it is still there once the cooldown has passed.
An escalation (warning -> critical) within an open incident pages again, under
the same fingerprint, because it changes who is paged.

    >>> from datetime import UTC, datetime, timedelta
    >>> from decimal import Decimal
    >>> from detectors.finding import Finding
    >>> t0 = datetime(2025, 3, 4, 10, tzinfo=UTC)
    >>> finding = Finding("rolling_median", "tenant:acme", t0, t0 + timedelta(hours=1),
    ...                   "critical", "spend 6x median", Decimal(60), Decimal(50))
    >>> life = AlertLifecycle(cooldown=timedelta(hours=1))
    >>> life.observe(finding, now=t0).state
    'triggered'
    >>> life.observe(finding, now=t0 + timedelta(minutes=5)) is None  # same incident
    True
    >>> life.clear(finding.fingerprint, now=t0 + timedelta(hours=2)).state
    'resolved'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from detectors.finding import Finding
from schemas.alert import SEVERITY_RANK, Alert
from streams.alerting.query import analyst_query, parse_key

IncidentKey = tuple[str, str]  # (detector, key)

# Key dimensions that fill the alert's who-columns; evidence of the column name wins.
_ID_KEYS = {"tenant": "tenant_id", "team": "team_id", "workflow": "workflow_id"}


def _decimal_or_none(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def alert_from_finding(
    finding: Finding,
    *,
    now: datetime,
    fingerprint: str | None = None,
    triggered_at: datetime | None = None,
    query_builder: Callable[[str, datetime, datetime], str] = analyst_query,
) -> Alert:
    """A triggered `Alert` for a finding; ids, cause and baseline come from key and evidence.

    Evidence conventions read here (all optional): `cause`, `baseline`, `unit`
    ("usd" or "count"), `tenant_id`, `team_id`, `workflow_id` and `query`.
    """
    evidence = dict(finding.evidence)
    dims = parse_key(finding.key)
    ids = {
        column: str(evidence.get(column) or dims.get(dim, "")) for dim, column in _ID_KEYS.items()
    }
    unit = evidence.get("unit", "usd")
    return Alert(
        fingerprint=fingerprint or finding.fingerprint,
        detector=finding.detector,
        key=finding.key,
        tenant_id=ids["tenant_id"],
        team_id=ids["team_id"],
        workflow_id=ids["workflow_id"],
        severity=finding.severity,
        state="triggered",
        summary=finding.summary,
        value=finding.value,
        threshold=finding.threshold,
        baseline=_decimal_or_none(evidence.get("baseline")),
        unit=unit if unit in ("usd", "count") else "usd",
        cause=str(evidence.get("cause") or ""),
        evidence=evidence,
        query=str(
            evidence.get("query")
            or query_builder(finding.key, finding.window_start, finding.window_end)
        ),
        window_start=finding.window_start,
        window_end=finding.window_end,
        triggered_at=triggered_at or now,
        recorded_at=now,
    )


@dataclass
class _Incident:
    alert: Alert  # the state last paged, or that would be paged
    paged: bool
    fingerprints: set[str] = field(default_factory=set)


class AlertLifecycle:
    """Decides which findings page, and when an incident resolves.

    `observe(finding, now)` returns the `Alert` to deliver, or None when the
    finding belongs to an incident already paged (or held back by the cooldown).
    `clear(fingerprint, now)` returns the resolved `Alert`, or None when nothing
    was paged for it. Memory: one entry per open incident plus one timestamp per
    (detector, key) paged within the last cooldown; `prune(now)` drops the rest.
    """

    def __init__(
        self,
        cooldown: timedelta = timedelta(hours=1),
        *,
        max_fingerprints_per_incident: int = 1000,
        query_builder: Callable[[str, datetime, datetime], str] = analyst_query,
    ) -> None:
        self.cooldown = cooldown
        self.max_fingerprints_per_incident = max_fingerprints_per_incident
        self.query_builder = query_builder
        self._open: dict[IncidentKey, _Incident] = {}
        self._by_fingerprint: dict[str, IncidentKey] = {}
        self._last_page: dict[IncidentKey, datetime] = {}

    def observe(self, finding: Finding, now: datetime) -> Alert | None:
        ikey = (finding.detector, finding.key)
        incident = self._open.get(ikey)
        if incident is None:
            return self._open_incident(ikey, finding, now)
        self._remember(ikey, incident, finding.fingerprint)
        if not incident.paged:
            if self._in_cooldown(ikey, now):
                return None
            return self._page(ikey, incident, finding, now)
        if SEVERITY_RANK[finding.severity] > SEVERITY_RANK[incident.alert.severity]:
            return self._page(ikey, incident, finding, now)
        return None

    def clear(self, fingerprint: str, now: datetime) -> Alert | None:
        """The condition behind `fingerprint` (or any re-detection of it) has cleared."""
        ikey = self._by_fingerprint.get(fingerprint)
        if ikey is None:
            return None  # unknown, or already resolved: resolving is idempotent
        return self._close(ikey, now)

    def clear_key(self, detector: str, key: str, now: datetime) -> Alert | None:
        """The incident of (detector, key) has cleared (one restored at start that no
        detector holds has no fingerprint of its own to clear by)."""
        if (detector, key) not in self._open:
            return None
        return self._close((detector, key), now)

    def is_paged(self, detector: str, key: str) -> bool:
        incident = self._open.get((detector, key))
        return incident is not None and incident.paged

    def open_alerts(self) -> list[Alert]:
        return [incident.alert for incident in self._open.values() if incident.paged]

    def prune(self, now: datetime) -> None:
        """Forget pages older than the cooldown; they no longer hold anything back."""
        expired = [k for k, at in self._last_page.items() if now - at >= self.cooldown]
        for ikey in expired:
            del self._last_page[ikey]

    def _in_cooldown(self, ikey: IncidentKey, now: datetime) -> bool:
        last = self._last_page.get(ikey)
        return last is not None and now - last < self.cooldown

    def _open_incident(self, ikey: IncidentKey, finding: Finding, now: datetime) -> Alert | None:
        alert = alert_from_finding(finding, now=now, query_builder=self.query_builder)
        incident = _Incident(alert=alert, paged=False)
        self._open[ikey] = incident
        self._remember(ikey, incident, finding.fingerprint)
        if self._in_cooldown(ikey, now):
            return None
        incident.paged = True
        self._last_page[ikey] = now
        return alert

    def _page(
        self, ikey: IncidentKey, incident: _Incident, finding: Finding, now: datetime
    ) -> Alert:
        # Same fingerprint as the incident: PagerDuty updates the one incident.
        alert = alert_from_finding(
            finding,
            now=now,
            fingerprint=incident.alert.fingerprint,
            triggered_at=incident.alert.triggered_at if incident.paged else now,
            query_builder=self.query_builder,
        )
        incident.alert = alert
        incident.paged = True
        self._last_page[ikey] = now
        return alert

    def _remember(self, ikey: IncidentKey, incident: _Incident, fingerprint: str) -> None:
        if fingerprint in incident.fingerprints:
            return
        if len(incident.fingerprints) >= self.max_fingerprints_per_incident:
            return  # the opening fingerprint and the earliest re-detections stay resolvable
        incident.fingerprints.add(fingerprint)
        self._by_fingerprint[fingerprint] = ikey

    def _close(self, ikey: IncidentKey, now: datetime) -> Alert | None:
        incident = self._open.pop(ikey)
        for fingerprint in incident.fingerprints:
            self._by_fingerprint.pop(fingerprint, None)
        if not incident.paged:
            return None
        return incident.alert.model_copy(
            update={"state": "resolved", "resolved_at": now, "recorded_at": now}
        )

    def restore(self, alerts: list[Alert], now: datetime) -> None:
        """The incidents and cooldowns of a previous run, from each fingerprint's latest
        recorded state (the `alerts` table): a triggered one is open and paged, so its
        re-detections join it and its resolve goes to the same fingerprint; a page
        within the cooldown still holds back the next page of its (detector, key)."""
        for alert in alerts:
            if alert.state == "snoozed":
                continue  # held back, never paged: neither open nor a page to cool down from
            ikey = (alert.detector, alert.key)
            if alert.state == "triggered" and ikey not in self._open:
                incident = _Incident(alert=alert, paged=True)
                self._open[ikey] = incident
                self._remember(ikey, incident, alert.fingerprint)
            paged_at = alert.recorded_at if alert.state == "triggered" else alert.triggered_at
            if now - paged_at < self.cooldown and paged_at >= self._last_page.get(ikey, paged_at):
                self._last_page[ikey] = paged_at

    @property
    def cooldowns(self) -> int:
        """(detector, key) pairs whose last page still holds back the next."""
        return len(self._last_page)
