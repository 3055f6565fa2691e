"""The incident policy without Faust: one page per tenant incident, joins, escalation,
resolution when every resolving key has cleared, and the tenant's cooldown."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

from detectors.finding import Finding, Severity
from streams.alerting.lifecycle import AlertLifecycle
from streams.spend.incidents import (
    CORRELATED,
    RESTORED_GRACE,
    IncidentPolicy,
    finding_tenant,
)
from tests.alerting.conftest import make_finding

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
COOLDOWN = timedelta(hours=1)


def finding(detector: str, key: str, severity: Severity = "warning") -> Finding:
    return make_finding(detector=detector, key=key, severity=severity, evidence={})


def policy() -> IncidentPolicy:
    resolving = CORRELATED | {"contract_hourly"}
    return IncidentPolicy(AlertLifecycle(cooldown=COOLDOWN), resolving=resolving)


def nothing_open(detector: str, key: str, now: datetime) -> bool:
    return False


def test_the_module_runs_without_faust() -> None:
    code = "import sys, streams.spend.incidents; print('faust' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_tenant_is_read_from_the_evidence_or_the_key() -> None:
    assert finding_tenant(finding("rolling_median", "tenant:acme/workflow:wf")) == "acme"
    with_evidence = Finding(
        **{**finding("run_cost", "run:r1").__dict__, "evidence": {"tenant_id": "globex"}}
    )
    assert finding_tenant(with_evidence) == "globex"
    assert finding_tenant(finding("online", "model:gpt-4o")) == ""


def test_one_cause_on_many_keys_pages_once_at_its_highest_severity() -> None:
    incidents = policy()
    alerts = incidents.on_findings(
        [
            finding("rolling_median", "tenant:acme"),
            finding("rolling_median", "tenant:acme/workflow:loop"),
            finding("retry_storm", "tenant:acme/workflow:loop", "critical"),
        ],
        T0,
    )
    assert [(a.detector, a.severity) for a in alerts] == [("retry_storm", "critical")]
    assert (incidents.alerts_sent, incidents.findings) == (1, 3)
    incident = incidents.tenant_incidents["acme"]
    assert incident.severity == "critical"
    assert incident.open_keys == {
        ("retry_storm", "tenant:acme/workflow:loop"),
        ("rolling_median", "tenant:acme"),
        ("rolling_median", "tenant:acme/workflow:loop"),
    }


def test_a_more_severe_finding_pages_and_raises_the_incident() -> None:
    incidents = policy()
    first = incidents.on_findings([finding("rolling_median", "tenant:acme")], T0)
    assert len(first) == 1
    later = T0 + timedelta(minutes=5)
    joined = [finding("rolling_median", "tenant:acme/workflow:wf")]
    assert incidents.on_findings(joined, later) == []
    escalated = incidents.on_findings(
        [finding("retry_storm", "tenant:acme/workflow:wf", "critical")], later
    )
    assert [(a.detector, a.severity) for a in escalated] == [("retry_storm", "critical")]
    assert incidents.tenant_incidents["acme"].severity == "critical"


def test_other_kinds_of_news_and_other_tenants_page_on_their_own() -> None:
    incidents = policy()
    incidents.on_findings([finding("rolling_median", "tenant:acme", "critical")], T0)
    alerts = incidents.on_findings(
        [
            finding("contract_monthly", "tenant:acme"),  # not a correlated detector
            finding("rolling_median", "tenant:globex"),  # another tenant
        ],
        T0,
    )
    assert sorted(a.key for a in alerts) == ["tenant:acme", "tenant:globex"]
    assert "contract_monthly" not in CORRELATED


def test_a_costly_run_and_a_contract_breach_page_beside_the_tenants_spike() -> None:
    """A run over its threshold names the run and its workflow, a contract breach the
    contract: folded into the tenant's spike, neither was ever named (issue 19)."""
    incidents = policy()
    incidents.on_findings([finding("rolling_median", "tenant:acme", "critical")], T0)
    alerts = incidents.on_findings(
        [
            finding("run_cost", "tenant:acme/workflow:digest/run:r1"),
            finding("contract_hourly", "tenant:acme"),
        ],
        T0,
    )
    assert sorted(a.detector for a in alerts) == ["contract_hourly", "run_cost"]
    assert incidents.tenant_incidents["acme"].open_keys == {("rolling_median", "tenant:acme")}
    # And alone they open no tenant incident (a run's cost never falls).
    alone = policy()
    assert len(alone.on_findings([finding("run_cost", "tenant:acme/run:r1")], T0)) == 1
    assert alone.tenant_incidents == {}


def test_the_incident_resolves_when_every_resolving_key_has_cleared() -> None:
    incidents = policy()
    paged = incidents.on_findings(
        [
            finding("rolling_median", "tenant:acme", "critical"),
            finding("retry_storm", "tenant:acme/workflow:wf"),
        ],
        T0,
    )
    assert len(paged) == 1
    now = T0 + timedelta(minutes=20)
    open_keys = {("retry_storm", "tenant:acme/workflow:wf")}

    def still_open(detector: str, key: str, at: datetime) -> bool:
        return (detector, key) in open_keys

    # The tenant-level key cleared, the retry storm did not: nothing resolves yet.
    cleared = [finding("rolling_median", "tenant:acme", "critical")]
    assert incidents.on_cleared(cleared, still_open, now) == []
    assert "acme" in incidents.tenant_incidents
    open_keys.clear()
    resolved = incidents.on_cleared([], still_open, now)
    assert [(a.state, a.fingerprint) for a in resolved] == [("resolved", paged[0].fingerprint)]
    assert incidents.tenant_incidents == {}
    assert incidents.tenant_cooldowns["acme"] == (now + COOLDOWN, "critical")


def test_findings_within_the_tenant_cooldown_reopen_the_incident_quietly() -> None:
    incidents = policy()
    incidents.on_findings([finding("rolling_median", "tenant:acme")], T0)
    resolved_at = T0 + timedelta(minutes=10)
    assert len(incidents.on_cleared([], nothing_open, resolved_at)) == 1
    within = resolved_at + timedelta(minutes=30)
    assert incidents.on_findings([finding("retry_storm", "tenant:acme/workflow:wf")], within) == []
    assert incidents.tenant_incidents["acme"].paged == []  # quiet: nothing to resolve later
    # Cleared again, and past the cooldown: the next finding pages.
    incidents.on_cleared([], nothing_open, within)
    after = resolved_at + COOLDOWN + timedelta(minutes=1)
    incidents.on_cleared([], nothing_open, after)
    assert "acme" not in incidents.tenant_cooldowns
    alerts = incidents.on_findings([finding("retry_storm", "tenant:acme/workflow:other")], after)
    assert len(alerts) == 1


def test_a_cleared_finding_outside_any_tenant_incident_resolves_its_own_alert() -> None:
    incidents = policy()
    page = incidents.on_findings([finding("contract_monthly", "tenant:acme")], T0)
    cleared = [finding("contract_monthly", "tenant:acme")]
    resolved = incidents.on_cleared(cleared, nothing_open, T0 + timedelta(minutes=1))
    assert [(a.state, a.fingerprint) for a in resolved] == [("resolved", page[0].fingerprint)]
    # Resolving is idempotent: the same cleared finding again sends nothing.
    assert incidents.on_cleared(cleared, nothing_open, T0 + timedelta(minutes=2)) == []


def test_restored_incidents_wait_for_new_calls_then_resolve_unless_held() -> None:
    before = policy()
    paged = before.on_findings(
        [
            finding("rolling_median", "tenant:acme", "critical"),
            finding("rolling_median", "tenant:globex"),
        ],
        T0,
    )
    after = policy()
    restart = T0 + timedelta(minutes=5)
    after.restore(paged, restart)
    assert after.restored == {
        ("rolling_median", "tenant:acme"),
        ("rolling_median", "tenant:globex"),
    }
    assert after.tenant_incidents["acme"].severity == "critical"
    # The detectors have seen no call since the restart: nothing may resolve yet.
    assert not after.caught_up(restart + RESTORED_GRACE / 2)
    after.saw_new_calls()
    assert after.caught_up(restart + RESTORED_GRACE / 2)

    def still_open(detector: str, key: str, at: datetime) -> bool:
        return key == "tenant:globex"  # re-detected after the restart

    resolved = after.on_cleared([], still_open, restart + timedelta(minutes=1))
    assert [(a.key, a.state) for a in resolved] == [("tenant:acme", "resolved")]
    # Resolved once: the next look lets go of it and sends nothing more.
    assert after.on_cleared([], still_open, restart + timedelta(minutes=2)) == []
    assert after.restored == {("rolling_median", "tenant:globex")}
    # A restored page is not paged again while it is open.
    assert after.on_findings([finding("rolling_median", "tenant:globex")], restart) == []
