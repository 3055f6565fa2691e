"""The spend configuration for a worker: the YAML file plus routing secrets from the
environment. Kept apart from the Faust app so the launcher can validate it cheaply."""

from __future__ import annotations

from schemas.errors import ConfigFileError
from schemas.spend_config import PagerDutyTarget, SlackTarget, SpendConfig, load_spend_config
from streams.errors import ConfigError
from streams.settings import Settings


def load_config(settings: Settings) -> SpendConfig:
    """The spend configuration file, with routing secrets from the environment
    (`SPENDSTREAM_ALERTS__SLACK_WEBHOOK_URL`, `..._PAGERDUTY_ROUTING_KEY`) filling
    routes the file leaves empty, so a deployment keeps secrets out of the file. A bad
    file raises `ConfigError`: one line at the CLI."""
    try:
        config = (
            SpendConfig()
            if settings.config_file is None
            else load_spend_config(settings.config_file)
        )
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    alerts = settings.alerts
    routing = config.routing
    warning, critical = routing.warning, routing.critical
    if alerts.slack_webhook_url is not None and warning.slack is None:
        slack = SlackTarget(webhook_url=alerts.slack_webhook_url)
        warning = warning.model_copy(update={"slack": slack})
    if alerts.pagerduty_routing_key is not None and critical.pagerduty is None:
        pagerduty = PagerDutyTarget(
            routing_key=alerts.pagerduty_routing_key, base_url=alerts.pagerduty_url
        )
        critical = critical.model_copy(update={"pagerduty": pagerduty})
    routing = routing.model_copy(update={"warning": warning, "critical": critical})
    return config.model_copy(update={"routing": routing})
