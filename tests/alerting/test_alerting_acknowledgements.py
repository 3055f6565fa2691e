"""Acknowledgement and snooze, pure parts: the rolling median rebased at an acknowledged
level, a snooze holding back a key's pages for its period only, the signed link, the
Slack block, durations."""

from __future__ import annotations

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
from streams.alerting.lifecycle import AlertLifecycle, alert_from_finding
from streams.alerting.slack import build_blocks
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
    assert policy.on_findings([sub], now + timedelta(hours=1)) == []
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
