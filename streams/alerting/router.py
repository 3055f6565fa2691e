"""Severity routing: warning -> Slack; critical -> PagerDuty and Slack; console if enabled.

Channel names are stable strings that also name the notifier in the delivery
queue and the `channel` column of `alert_deliveries`: "console",
"slack:warning", "slack:critical", "pagerduty:critical". A resolve goes to the
same channels as its trigger (it carries the incident's severity), so the Slack
thread learns it is over and PagerDuty closes the incident.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas.alert import Alert, Severity
from schemas.spend_config import RoutingConfig

CONSOLE = "console"
SLACK_WARNING = "slack:warning"
SLACK_CRITICAL = "slack:critical"
PAGERDUTY_CRITICAL = "pagerduty:critical"


class AlertRouter:
    """Maps an alert to the channels it is delivered to.

    >>> router = AlertRouter({"warning": ["slack:warning"],
    ...                       "critical": ["pagerduty:critical", "slack:critical"]}, console=True)
    >>> router.channels_for_severity("critical")
    ('console', 'pagerduty:critical', 'slack:critical')
    >>> router.channels_for_severity("info")
    ('console',)
    """

    def __init__(self, routes: Mapping[Severity, Sequence[str]], *, console: bool = False) -> None:
        self.routes = {severity: tuple(channels) for severity, channels in routes.items()}
        self.console = console

    def channels_for_severity(self, severity: Severity) -> tuple[str, ...]:
        channels = self.routes.get(severity, ())
        return ((CONSOLE,) if self.console else ()) + tuple(channels)

    def channels_for(self, alert: Alert) -> tuple[str, ...]:
        return self.channels_for_severity(alert.severity)

    @property
    def channels(self) -> set[str]:
        names = {channel for channels in self.routes.values() for channel in channels}
        return names | ({CONSOLE} if self.console else set())

    @classmethod
    def from_config(cls, routing: RoutingConfig, *, embedded: bool) -> AlertRouter:
        """The fixed policy over whichever targets the configuration names."""
        warning: list[str] = []
        critical: list[str] = []
        if routing.warning.slack is not None:
            warning.append(SLACK_WARNING)
        if routing.critical.pagerduty is not None:
            critical.append(PAGERDUTY_CRITICAL)
        if routing.critical.slack is not None:
            critical.append(SLACK_CRITICAL)
        elif routing.warning.slack is not None:
            critical.append(SLACK_WARNING)  # no separate critical channel: same Slack target
        console = routing.console if routing.console is not None else embedded
        return cls({"warning": warning, "critical": critical}, console=console)
