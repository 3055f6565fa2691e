"""Builds the alerting pieces from the spend configuration, for the worker to run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TextIO

from schemas.spend_config import SpendConfig
from streams.alerting.acknowledgements import AckLinks
from streams.alerting.console import ConsoleNotifier
from streams.alerting.delivery import AlertDeliveryQueue, DeliveryRecorder
from streams.alerting.lifecycle import AlertLifecycle
from streams.alerting.notifier import Notifier
from streams.alerting.pagerduty import PagerDutyNotifier
from streams.alerting.router import (
    CONSOLE,
    PAGERDUTY_CRITICAL,
    SLACK_CRITICAL,
    SLACK_WARNING,
    AlertRouter,
)
from streams.alerting.slack import SlackNotifier
from streams.retrying import Backoff


@dataclass
class Alerting:
    lifecycle: AlertLifecycle
    router: AlertRouter
    queue: AlertDeliveryQueue


def build_notifiers(
    config: SpendConfig,
    router: AlertRouter,
    *,
    console_stream: TextIO | None = None,
    ack_links: AckLinks | None = None,
) -> dict[str, Notifier]:
    routing = config.routing
    notifiers: dict[str, Notifier] = {}
    for channel in router.channels:
        if channel == CONSOLE:
            notifiers[channel] = ConsoleNotifier(console_stream)
        elif channel == SLACK_WARNING and routing.warning.slack is not None:
            notifiers[channel] = SlackNotifier.from_target(
                routing.warning.slack, ack_links=ack_links
            )
        elif channel == SLACK_CRITICAL and routing.critical.slack is not None:
            notifiers[channel] = SlackNotifier.from_target(
                routing.critical.slack, ack_links=ack_links
            )
        elif channel == PAGERDUTY_CRITICAL and routing.critical.pagerduty is not None:
            notifiers[channel] = PagerDutyNotifier.from_target(routing.critical.pagerduty)
    return notifiers


def build_alerting(
    config: SpendConfig,
    *,
    embedded: bool,
    recorder: DeliveryRecorder | None = None,
    console_stream: TextIO | None = None,
    ack_links: AckLinks | None = None,
) -> Alerting:
    """Lifecycle, router and (not yet started) delivery queue for this configuration."""
    settings = config.alerting
    router = AlertRouter.from_config(config.routing, embedded=embedded)
    queue = AlertDeliveryQueue(
        build_notifiers(config, router, console_stream=console_stream, ack_links=ack_links),
        router,
        recorder=recorder,
        maxsize=settings.queue_size,
        backoff=Backoff(
            initial=settings.backoff_initial_seconds, maximum=settings.backoff_max_seconds
        ),
    )
    lifecycle = AlertLifecycle(cooldown=timedelta(minutes=settings.cooldown_minutes))
    return Alerting(lifecycle=lifecycle, router=router, queue=queue)
