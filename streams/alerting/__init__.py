"""Alerting: findings -> lifecycle -> routing -> delivery queue -> Slack / PagerDuty / console.

The stream calls `AlertLifecycle.observe(finding, now)` / `.clear(fingerprint, now)`
and hands any returned `Alert` to `AlertDeliveryQueue.enqueue()`, which never
blocks; every alert and delivery attempt is recorded by `AlertsTableWriter`.
"""

from streams.alerting.alerts_table import AlertsTableWriter
from streams.alerting.console import ConsoleNotifier
from streams.alerting.delivery import AlertDeliveryQueue, DeliveryRecorder
from streams.alerting.lifecycle import AlertLifecycle, alert_from_finding
from streams.alerting.notifier import Notifier, SendAttempt
from streams.alerting.pagerduty import PagerDutyNotifier
from streams.alerting.router import AlertRouter
from streams.alerting.slack import SlackNotifier, build_blocks
from streams.alerting.wiring import Alerting, build_alerting, build_notifiers
from streams.retrying import Backoff

__all__ = [
    "AlertDeliveryQueue",
    "AlertLifecycle",
    "AlertRouter",
    "Alerting",
    "AlertsTableWriter",
    "Backoff",
    "ConsoleNotifier",
    "DeliveryRecorder",
    "Notifier",
    "PagerDutyNotifier",
    "SendAttempt",
    "SlackNotifier",
    "alert_from_finding",
    "build_alerting",
    "build_blocks",
    "build_notifiers",
]
