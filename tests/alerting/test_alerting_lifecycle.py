"""Lifecycle: one page per incident, cooldown against flapping, resolve when it clears."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from detectors.finding import Finding
from streams.alerting.lifecycle import AlertLifecycle, alert_from_finding

T0 = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def test_one_incident_pages_once_across_re_detections_and_new_windows(
    finding: Callable[..., Finding],
) -> None:
    life = AlertLifecycle(cooldown=timedelta(hours=1))
    pages = []
    # Re-detected every minute for three hours: three windows, 180 findings.
    for minute in range(180):
        alert = life.observe(finding(hour=minute // 60), now=T0 + minute * MINUTE)
        if alert is not None:
            pages.append(alert)
    assert len(pages) == 1
    assert pages[0].state == "triggered"
    assert pages[0].fingerprint == finding(hour=0).fingerprint


def test_resolve_by_any_fingerprint_of_the_incident_uses_the_paged_fingerprint(
    finding: Callable[..., Finding],
) -> None:
    life = AlertLifecycle(cooldown=timedelta(hours=1))
    trigger = life.observe(finding(hour=0), now=T0)
    assert trigger is not None
    assert life.observe(finding(hour=1), now=T0 + 60 * MINUTE) is None
    # The detector reports the later window clear: the incident (and its page) resolves.
    resolved = life.clear(finding(hour=1).fingerprint, now=T0 + 90 * MINUTE)
    assert resolved is not None
    assert resolved.state == "resolved"
    assert resolved.fingerprint == trigger.fingerprint  # the PagerDuty dedup_key
    assert resolved.dedup_key == trigger.dedup_key
    assert resolved.resolved_at == T0 + 90 * MINUTE
    assert resolved.triggered_at == T0
    assert life.clear(finding(hour=0).fingerprint, now=T0 + 91 * MINUTE) is None  # idempotent
    assert life.open_alerts() == []


def test_flapping_within_cooldown_does_not_page_again(finding: Callable[..., Finding]) -> None:
    life = AlertLifecycle(cooldown=timedelta(hours=1))
    assert life.observe(finding(hour=0), now=T0) is not None
    assert life.clear(finding(hour=0).fingerprint, now=T0 + 10 * MINUTE) is not None
    # Back 5 minutes later, same fingerprint: held back by the cooldown.
    assert life.observe(finding(hour=0), now=T0 + 15 * MINUTE) is None
    # It clears again before the cooldown ends: nothing was paged, so nothing resolves.
    assert life.clear(finding(hour=0).fingerprint, now=T0 + 20 * MINUTE) is None


def test_condition_still_present_after_cooldown_pages(finding: Callable[..., Finding]) -> None:
    life = AlertLifecycle(cooldown=timedelta(hours=1))
    first = life.observe(finding(hour=0), now=T0)
    assert first is not None
    life.clear(finding(hour=0).fingerprint, now=T0 + 10 * MINUTE)
    assert life.observe(finding(hour=0), now=T0 + 15 * MINUTE) is None
    assert life.observe(finding(hour=0), now=T0 + 59 * MINUTE) is None
    late = life.observe(finding(hour=1), now=T0 + 61 * MINUTE)
    assert late is not None and late.state == "triggered"
    # Paged under the fingerprint of the finding that reopened the incident.
    assert late.fingerprint == finding(hour=0).fingerprint
    assert late.triggered_at == T0 + 61 * MINUTE
    assert life.observe(finding(hour=1), now=T0 + 62 * MINUTE) is None


def test_new_incident_after_resolve_and_cooldown_pages(finding: Callable[..., Finding]) -> None:
    life = AlertLifecycle(cooldown=timedelta(minutes=30))
    assert life.observe(finding(hour=0), now=T0) is not None
    assert life.clear(finding(hour=0).fingerprint, now=T0 + 5 * MINUTE) is not None
    again = life.observe(finding(hour=2), now=T0 + 120 * MINUTE)
    assert again is not None
    assert again.fingerprint == finding(hour=2).fingerprint


def test_escalation_to_critical_pages_again_under_the_same_fingerprint(
    finding: Callable[..., Finding],
) -> None:
    life = AlertLifecycle(cooldown=timedelta(hours=1))
    warning = life.observe(finding(severity="warning"), now=T0)
    assert warning is not None and warning.severity == "warning"
    assert life.observe(finding(severity="warning"), now=T0 + MINUTE) is None
    critical = life.observe(finding(severity="critical", value="900"), now=T0 + 2 * MINUTE)
    assert critical is not None
    # No state of its own (docs/alerting.md, Tables): another triggered row.
    assert (critical.state, critical.severity) == ("triggered", "critical")
    assert critical.fingerprint == warning.fingerprint
    assert critical.value == Decimal("900")
    assert critical.triggered_at == T0
    assert life.observe(finding(severity="warning"), now=T0 + 3 * MINUTE) is None
    resolved = life.clear(warning.fingerprint, now=T0 + 30 * MINUTE)
    assert resolved is not None and resolved.severity == "critical"  # routes to PagerDuty too


def test_different_keys_and_detectors_are_separate_incidents(
    finding: Callable[..., Finding],
) -> None:
    life = AlertLifecycle()
    assert life.observe(finding(key="tenant:acme"), now=T0) is not None
    assert life.observe(finding(key="tenant:globex"), now=T0) is not None
    assert life.observe(finding(detector="contract", key="tenant:acme"), now=T0) is not None
    assert len(life.open_alerts()) == 3


def test_an_incident_restored_from_its_recorded_alert_is_not_paged_again(
    finding: Callable[..., Finding],
) -> None:
    life = AlertLifecycle(cooldown=timedelta(hours=1))
    trigger = life.observe(finding(hour=0), now=T0)
    assert trigger is not None
    restarted = AlertLifecycle(cooldown=timedelta(hours=1))
    restarted.restore([trigger], now=T0 + 60 * MINUTE)
    assert restarted.observe(finding(hour=1), now=T0 + 61 * MINUTE) is None
    resolved = restarted.clear(finding(hour=1).fingerprint, now=T0 + 70 * MINUTE)
    assert resolved is not None and resolved.fingerprint == trigger.fingerprint
    assert resolved.value == trigger.value


def test_a_resolved_incident_restored_within_its_cooldown_reopens_quietly(
    finding: Callable[..., Finding],
) -> None:
    life = AlertLifecycle(cooldown=timedelta(hours=1))
    assert life.observe(finding(hour=0), now=T0) is not None
    resolved = life.clear(finding(hour=0).fingerprint, now=T0 + 5 * MINUTE)
    assert resolved is not None
    restarted = AlertLifecycle(cooldown=timedelta(hours=1))
    restarted.restore([resolved], now=T0 + 10 * MINUTE)
    assert restarted.open_alerts() == []
    assert restarted.observe(finding(hour=1), now=T0 + 20 * MINUTE) is None
    late = AlertLifecycle(cooldown=timedelta(hours=1))
    late.restore([resolved], now=T0 + 61 * MINUTE)
    assert late.observe(finding(hour=1), now=T0 + 62 * MINUTE) is not None


def test_prune_forgets_pages_older_than_the_cooldown(finding: Callable[..., Finding]) -> None:
    life = AlertLifecycle(cooldown=timedelta(minutes=30))
    life.observe(finding(), now=T0)
    life.clear(finding().fingerprint, now=T0 + MINUTE)
    life.prune(T0 + 10 * MINUTE)
    assert life.cooldowns == 1  # still holding back a re-page
    life.prune(T0 + 31 * MINUTE)
    assert (life.cooldowns, life.open_alerts()) == (0, [])


def test_alert_carries_ids_cause_baseline_and_a_query(finding: Callable[..., Finding]) -> None:
    alert = alert_from_finding(finding(key="tenant:acme/model:meta-llama/Llama-3"), now=T0)
    assert (alert.tenant_id, alert.team_id, alert.workflow_id) == ("acme", "search", "summarize")
    assert alert.cause == "retry_storm"
    assert alert.baseline == Decimal("15.00")
    assert alert.threshold == Decimal("75.00")
    assert "tenant_id = 'acme'" in alert.query
    assert "model = 'meta-llama/Llama-3'" in alert.query
    assert alert.evidence["active_hours"] == 168


def test_very_long_fingerprint_gets_a_dedup_key_pagerduty_accepts(
    finding: Callable[..., Finding],
) -> None:
    alert = alert_from_finding(finding(key="workflow:" + "x" * 400), now=T0)
    assert len(alert.fingerprint) > 255
    assert len(alert.dedup_key) <= 255
    assert (
        alert.dedup_key
        == alert_from_finding(finding(key="workflow:" + "x" * 400), now=T0).dedup_key
    )
