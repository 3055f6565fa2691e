"""Routing: warning -> Slack; critical -> PagerDuty and Slack; console in the embedded default."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from detectors.finding import Finding
from schemas.spend_config import parse_spend_config
from streams.alerting.lifecycle import alert_from_finding
from streams.alerting.router import AlertRouter
from streams.alerting.wiring import build_alerting

NOW = datetime(2025, 3, 4, 11, tzinfo=UTC)

ROUTING = {
    "warning": {"slack": {"webhook_url": "https://hooks.slack.com/services/T/B/warn"}},
    "critical": {
        "slack": {"webhook_url": "https://hooks.slack.com/services/T/B/crit"},
        "pagerduty": {"routing_key": "R0UT1NG"},
    },
}


def channels(routing: dict[str, object], severity: str, *, embedded: bool) -> tuple[str, ...]:
    config = parse_spend_config({"routing": routing})
    return AlertRouter.from_config(config.routing, embedded=embedded).channels_for_severity(
        severity  # type: ignore[arg-type]
    )


def test_warning_goes_to_slack_only() -> None:
    assert channels(ROUTING, "warning", embedded=False) == ("slack:warning",)


def test_critical_goes_to_pagerduty_and_slack() -> None:
    assert channels(ROUTING, "critical", embedded=False) == ("pagerduty:critical", "slack:critical")


def test_info_goes_nowhere_but_the_console() -> None:
    assert channels(ROUTING, "info", embedded=False) == ()
    assert channels(ROUTING, "info", embedded=True) == ("console",)


@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
def test_embedded_default_always_prints_to_the_console(severity: str) -> None:
    assert channels(ROUTING, severity, embedded=True)[0] == "console"
    assert "console" not in channels(ROUTING, severity, embedded=False)
    assert "console" in channels({**ROUTING, "console": True}, severity, embedded=False)
    assert "console" not in channels({**ROUTING, "console": False}, severity, embedded=True)


def test_critical_uses_the_warning_slack_when_it_has_none_of_its_own() -> None:
    routing = {
        "warning": ROUTING["warning"],
        "critical": {"pagerduty": {"routing_key": "R0UT1NG"}},
    }
    assert channels(routing, "critical", embedded=False) == ("pagerduty:critical", "slack:warning")


def test_resolve_goes_where_its_trigger_went(finding: Callable[..., Finding]) -> None:
    router = AlertRouter.from_config(
        parse_spend_config({"routing": ROUTING}).routing, embedded=False
    )
    trigger = alert_from_finding(finding(severity="critical"), now=NOW)
    resolved = trigger.model_copy(update={"state": "resolved", "resolved_at": NOW})
    assert router.channels_for(resolved) == router.channels_for(trigger)


def test_build_alerting_has_a_notifier_for_every_routed_channel() -> None:
    config = parse_spend_config({"routing": ROUTING, "alerting": {"cooldown_minutes": 15}})
    alerting = build_alerting(config, embedded=True)
    assert set(alerting.queue.notifiers) == {
        "console",
        "slack:warning",
        "slack:critical",
        "pagerduty:critical",
    }
    assert alerting.lifecycle.cooldown.total_seconds() == 15 * 60
