"""Acknowledgement and snooze, pure parts: the rolling median rebased at an acknowledged
level, a snooze holding back a key's pages for its period only, the signed link, the
Slack block, durations."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr

from detectors.rolling_median import RollingMedianDetector
from streams.alerting.acknowledgements import (
    AckLinks,
    Acknowledgement,
    alert_id,
    link_token,
    parse_duration,
    valid_link_token,
)
from streams.alerting.alerts_table import AlertsTableWriter, read_alerts
from streams.alerting.console import ConsoleNotifier
from streams.alerting.delivery import AlertDeliveryQueue
from streams.alerting.lifecycle import AlertLifecycle, alert_from_finding
from streams.alerting.router import AlertRouter
from streams.alerting.slack import build_blocks
from streams.ledger.connect import ClickHouseHandle
from streams.spend.incidents import CORRELATED, IncidentPolicy
from tests.alerting.conftest import make_finding

START = datetime(2026, 11, 2, tzinfo=UTC)
SECRET = SecretStr("s3cret")


def detector_with_history() -> RollingMedianDetector:
    detector = RollingMedianDetector(k=Decimal(3))
    for h in range(48):
        detector.learn_one("tenant:acme", START + timedelta(hours=h), Decimal("2.00"))
    return detector


def test_an_acknowledged_level_is_the_new_normal_and_a_further_jump_still_pages() -> None:
    detector = detector_with_history()
    spike = START + timedelta(hours=48)
    assert detector.update("tenant:acme", spike, Decimal("12.00")) is not None  # 6x
    level = detector.level_since("tenant:acme", spike)
    assert level == Decimal("12.00")
    detector.set_acknowledged("tenant:acme", spike, level)
    same = spike + timedelta(hours=1)
    assert detector.update("tenant:acme", same, Decimal("12.50")) is None
    assert detector.baseline("tenant:acme", same).level == Decimal("12.00")  # type: ignore[union-attr]
    # The spike's incident clears (it is under the new normal); a jump opens a new one.
    assert len(detector.close_cleared(same + timedelta(minutes=30))) == 1
    jump = detector.update("tenant:acme", same + timedelta(hours=1), Decimal("40.00"))
    assert jump is not None and jump.evidence["acknowledged_usd"] == Decimal("12.00")
    # Without the acknowledgement, the same level an hour later is still a breach.
    control = detector_with_history()
    control.update("tenant:acme", spike, Decimal("12.00"))
    assert control.threshold("tenant:acme", same) == Decimal(6)
    control.update("tenant:acme", same, Decimal("12.50"))
    assert not control.is_resolved("tenant:acme", same + timedelta(minutes=30))


def test_the_acknowledgement_ends_with_the_lookback() -> None:
    detector = detector_with_history()
    at = START + timedelta(hours=48)
    detector.set_acknowledged("tenant:acme", at, Decimal(100))
    later = at + timedelta(days=detector.lookback_days)
    for h in range(48, 48 + 24 * detector.lookback_days):
        detector.learn_one("tenant:acme", START + timedelta(hours=h), Decimal("2.00"))
    assert detector.baseline("tenant:acme", later - timedelta(hours=1)).level == 100  # type: ignore[union-attr]
    assert detector.baseline("tenant:acme", later).acknowledged == 0  # type: ignore[union-attr]


def test_a_snooze_holds_back_pages_of_its_key_and_sub_keys_until_it_ends() -> None:
    policy = IncidentPolicy(AlertLifecycle(cooldown=timedelta(0)), resolving=CORRELATED)
    now = START
    policy.acks.add(
        Acknowledgement(
            "", "tenant:acme", "snooze", None, now, now + timedelta(hours=4), "a", "", now
        )
    )
    sub = make_finding(detector="rolling_median", key="tenant:acme/workflow:wf", evidence={})
    other = make_finding(detector="rolling_median", key="tenant:acmeco", evidence={})
    [snoozed] = policy.on_findings([sub], now + timedelta(hours=1))
    assert snoozed.state == "snoozed" and snoozed.key == sub.key
    assert policy.snoozed_findings == 1
    assert len(policy.on_findings([other], now + timedelta(hours=1))) == 1
    assert len(policy.on_findings([sub], now + timedelta(hours=4))) == 1  # ended


def test_a_paged_alert_is_found_by_its_id_or_fingerprint() -> None:
    policy = IncidentPolicy(AlertLifecycle(cooldown=timedelta(0)), resolving=CORRELATED)
    [alert] = policy.on_findings([make_finding(detector="rolling_median", evidence={})], START)
    assert policy.find_alert(alert_id(alert.fingerprint)) == alert
    assert policy.find_alert(alert.fingerprint) == alert
    assert policy.find_alert("0" * 16) is None


def test_the_link_token_authorises_one_alert_only() -> None:
    token = link_token(SECRET, "aaaa")
    assert valid_link_token(SECRET, "aaaa", token)
    assert not valid_link_token(SECRET, "bbbb", token)
    assert not valid_link_token(SecretStr("other"), "aaaa", token)
    assert not valid_link_token(SECRET, "aaaa", None)


def test_a_page_carries_the_link_and_a_resolve_does_not() -> None:
    alert = alert_from_finding(make_finding(detector="rolling_median", evidence={}), now=START)
    links = AckLinks("http://127.0.0.1:6066", SECRET)
    url = links.url(alert.fingerprint)
    assert url.startswith(f"http://127.0.0.1:6066/v1/alerts/{alert_id(alert.fingerprint)}/ack?")
    texts = [str(block.to_dict()) for block in build_blocks(alert, url)]
    assert any(f"<{url}|Acknowledge as new normal>" in text for text in texts)
    assert SECRET.get_secret_value() not in "".join(texts)
    assert not any("Acknowledge" in str(b.to_dict()) for b in build_blocks(alert))


@pytest.mark.parametrize(
    ("text", "period"),
    [("30m", timedelta(minutes=30)), ("4h", timedelta(hours=4)), ("2d", timedelta(days=2))],
)
def test_durations(text: str, period: timedelta) -> None:
    assert parse_duration(text) == period


@pytest.mark.parametrize("text", ["", "4", "0h", "4w", "-1h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def snoozed_policy(until: timedelta) -> IncidentPolicy:
    policy = IncidentPolicy(AlertLifecycle(cooldown=timedelta(hours=1)), resolving=CORRELATED)
    policy.acks.add(
        Acknowledgement("", "tenant:acme", "snooze", None, START, START + until, "a", "", START)
    )
    return policy


def test_a_snoozed_finding_is_recorded_once_per_severity_and_not_restored_as_open() -> None:
    policy = snoozed_policy(timedelta(hours=4))
    warning = make_finding(severity="warning", evidence={})
    critical = make_finding(severity="critical", evidence={})
    [held] = policy.on_findings([warning], START + timedelta(minutes=5))
    assert (held.state, held.severity, held.fingerprint) == (
        "snoozed",
        "warning",
        warning.fingerprint,
    )
    assert policy.on_findings([warning], START + timedelta(minutes=6)) == []  # recorded
    [worse] = policy.on_findings([critical], START + timedelta(minutes=7))
    assert (worse.state, worse.severity) == ("snoozed", "critical")
    assert policy.alerts_sent == 0 and policy.lifecycle.open_alerts() == []
    # A restart reads the snoozed states back: nothing open, no cooldown, nothing to
    # resolve; the same condition without the snooze pages at once.
    restarted = IncidentPolicy(AlertLifecycle(cooldown=timedelta(hours=1)), resolving=CORRELATED)
    restarted.restore([held, worse], START + timedelta(minutes=10))
    assert restarted.lifecycle.open_alerts() == [] and restarted.lifecycle.cooldowns == 0
    assert restarted.tenant_incidents == {} and restarted.restored == set()
    assert restarted.find_alert(held.fingerprint) is None  # not acknowledgeable: never paged
    [paged] = restarted.on_findings([critical], START + timedelta(minutes=11))
    assert paged.state == "triggered"


def test_a_key_paged_before_its_snooze_records_no_snoozed_state() -> None:
    policy = IncidentPolicy(AlertLifecycle(cooldown=timedelta(hours=1)), resolving=CORRELATED)
    [paged] = policy.on_findings([make_finding(evidence={})], START)
    policy.acks.add(
        Acknowledgement(
            "", "tenant:acme", "snooze", None, START, START + timedelta(hours=4), "a", "", START
        )
    )
    # Its triggered state stays its latest, so a restart still restores and resolves it.
    assert policy.on_findings([make_finding(evidence={})], START + timedelta(minutes=1)) == []
    assert policy.lifecycle.open_alerts() == [paged]


def test_a_snooze_ending_pages_once_an_incident_still_open() -> None:
    policy = snoozed_policy(timedelta(hours=4))
    finding = make_finding(key="tenant:acme/workflow:wf", evidence={})
    [held] = policy.on_findings([finding], START + timedelta(hours=1))

    def still_open(detector: str, key: str, now: datetime) -> bool:
        return True

    assert policy.on_cleared([], still_open, START + timedelta(hours=3)) == []  # snoozed
    [paged] = policy.on_cleared([], still_open, START + timedelta(hours=4))  # it ended
    assert paged.state == "triggered" and paged.fingerprint == held.fingerprint
    assert paged.recorded_at >= START + timedelta(hours=4)
    assert policy.on_cleared([], still_open, START + timedelta(hours=4, minutes=1)) == []
    assert policy.alerts_sent == 1 and policy.held == {}
    # It is the tenant's open incident: it resolves when the condition clears.
    [resolved] = policy.on_cleared([], lambda *_: False, START + timedelta(hours=5))
    assert resolved.state == "resolved" and resolved.fingerprint == held.fingerprint


def test_a_snoozed_condition_that_cleared_does_not_page_when_the_snooze_ends() -> None:
    policy = snoozed_policy(timedelta(hours=4))
    policy.on_findings([make_finding(evidence={})], START + timedelta(hours=1))

    def cleared(detector: str, key: str, now: datetime) -> bool:
        return False

    assert policy.on_cleared([], cleared, START + timedelta(hours=2)) == []
    assert policy.held == {}
    assert policy.on_cleared([], cleared, START + timedelta(hours=5)) == []
    assert policy.alerts_sent == 0


def test_a_held_page_of_a_detector_that_never_resolves_pages_when_the_snooze_ends() -> None:
    policy = snoozed_policy(timedelta(hours=4))
    budget = make_finding(detector="monthly_budget", severity="warning", evidence={})
    [held] = policy.on_findings([budget], START + timedelta(hours=1))
    assert held.state == "snoozed"

    def never_open(detector: str, key: str, now: datetime) -> bool:
        return False  # as the monitor says of a detector whose incidents do not resolve

    assert policy.on_cleared([], never_open, START + timedelta(hours=2)) == []
    [paged] = policy.on_cleared([], never_open, START + timedelta(hours=4))
    assert paged.state == "triggered" and paged.detector == "monthly_budget"


async def test_a_snoozed_state_is_written_to_the_alerts_table_and_delivered_nowhere(
    clickhouse: ClickHouseHandle,
) -> None:
    console = io.StringIO()
    writer = AlertsTableWriter(clickhouse.client)
    router = AlertRouter({"warning": [], "critical": []}, console=True)
    queue = AlertDeliveryQueue({"console": ConsoleNotifier(console)}, router, recorder=writer)
    policy = snoozed_policy(timedelta(hours=4))
    async with queue:
        for alert in policy.on_findings([make_finding(evidence={})], START):
            assert queue.enqueue(alert)
        await queue.join()
    writer.flush()
    query = clickhouse.client.query
    rows = query("SELECT state, key, severity FROM alerts FINAL").result_rows
    assert rows == [("snoozed", "tenant:acme", "critical")]
    assert query("SELECT count() FROM alert_deliveries").result_rows == [(0,)]
    assert console.getvalue() == ""
    restored = read_alerts(clickhouse.client, START - timedelta(days=1))
    assert [a.state for a in restored] == ["snoozed"]
