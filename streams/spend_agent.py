"""The spend agent: costed events → spend tables → detectors → alerts.

Registered on the Faust app by `register_spend_agent`. Costed messages are keyed
by tenant and hold that tenant's rows of one ingest batch; the tables are keyed
by tenant first so their changelogs follow the stream's partitions, and recover
from them after a restart. Alert delivery runs off this path, from a queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import faust
import orjson
from faust.types import StreamT

from schemas.spend_config import (
    PagerDutyTarget,
    SlackTarget,
    SpendConfig,
    load_spend_config,
)
from streams.alerting.alerts_table import AlertsTableWriter
from streams.alerting.wiring import Alerting, build_alerting
from streams.settings import Settings
from streams.spend_monitor import SpendMonitor
from streams.spend_tables import SpendTables

log = logging.getLogger(__name__)

EXPIRE_EVERY = timedelta(minutes=10)


@dataclass
class SpendRuntime:
    config: SpendConfig
    tables: SpendTables
    monitor: SpendMonitor
    alerting: Alerting
    recorder: AlertsTableWriter | None = None
    last_expiry: dict[str, datetime] = field(default_factory=dict)
    alerts_sent: int = 0
    findings: int = 0
    skipped_redelivered: int = 0

    def handle_findings(self, findings: list[Any], now: datetime) -> None:
        self.findings += len(findings)
        for finding in findings:
            alert = self.alerting.lifecycle.observe(finding, now)
            if alert is not None:
                self.alerts_sent += 1
                self.alerting.queue.enqueue(alert)

    def resolve_cleared(self, now: datetime) -> None:
        for finding in self.monitor.cleared(now):
            alert = self.alerting.lifecycle.clear(finding.fingerprint, now)
            if alert is not None:
                self.alerting.queue.enqueue(alert)
        self.alerting.lifecycle.prune(now)

    def limits(self, tenant_id: str, now: datetime) -> dict[str, Any]:
        """Month-to-date spend against the tenant's budget, for gateways to enforce caps."""
        spent = self.tables.month_spend(tenant_id, now)
        tenant = self.config.tenants.get(tenant_id)
        budget = tenant.monthly_budget_usd if tenant else None
        if budget is None:
            status, remaining = "ok", None
        else:
            remaining = max(Decimal(0), budget - spent)
            status = (
                "over" if spent >= budget else "warn" if spent >= budget * Decimal("0.8") else "ok"
            )
        return {
            "tenant_id": tenant_id,
            "month": f"{now:%Y-%m}",
            "month_to_date_usd": str(spent),
            "monthly_budget_usd": str(budget) if budget is not None else None,
            "remaining_usd": str(remaining) if remaining is not None else None,
            "status": status,
        }


def load_config(settings: Settings) -> SpendConfig:
    """The spend configuration file, with routing secrets from the environment
    (`SPENDSTREAM_ALERTS__SLACK_WEBHOOK_URL`, `..._PAGERDUTY_ROUTING_KEY`) filling
    routes the file leaves empty, so a deployment keeps secrets out of the file."""
    config = (
        SpendConfig() if settings.config_file is None else load_spend_config(settings.config_file)
    )
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


def register_spend_agent(
    app: faust.App, settings: Settings, config: SpendConfig, embedded: bool
) -> SpendRuntime:
    def table(name: str) -> Any:
        return app.Table(
            name,
            default=None,
            partitions=settings.topic_partitions,
        )

    tables = SpendTables(
        table("spend_hourly"), table("spend_totals"), table("run_cost"), table("spend_offsets")
    )
    runtime = SpendRuntime(
        config=config,
        tables=tables,
        monitor=SpendMonitor(config),
        alerting=build_alerting(config, embedded=embedded),
    )
    costed_topic = app.topic(settings.costed_topic, value_serializer="raw", key_serializer="raw")

    @app.agent(costed_topic, name="spend")
    async def spend(stream: StreamT[bytes]) -> None:
        await runtime.alerting.queue.start()
        async for event in stream.events():
            tenant_id = bytes(event.key or b"").decode()
            rows = orjson.loads(event.value)
            result = tables.apply(tenant_id, rows)
            runtime.skipped_redelivered += result.skipped
            now = datetime.now(UTC)
            if result.counted:
                runtime.handle_findings(runtime.monitor.observe(tables, tenant_id, result), now)
            last = runtime.last_expiry.get(tenant_id)
            if last is None or now - last >= EXPIRE_EVERY:
                tables.expire(tenant_id, now)
                runtime.last_expiry[tenant_id] = now

    @app.timer(15.0)
    async def resolve_cleared() -> None:
        runtime.resolve_cleared(datetime.now(UTC))

    @app.page("/v1/limits/{tenant_id}")
    async def limits(web: Any, request: Any, tenant_id: str) -> Any:
        return web.json(runtime.limits(tenant_id, datetime.now(UTC)))

    return runtime
