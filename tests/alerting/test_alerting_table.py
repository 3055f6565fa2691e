"""Alerts and delivery attempts as ClickHouse rows (embedded chdb), end to end."""

from __future__ import annotations

import io
import json
import os
import re
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from slack_sdk.http_retry import FixedValueRetryIntervalCalculator

from detectors.finding import Finding
from schemas.alert import ALERT_COLUMNS, DELIVERY_COLUMNS
from streams.alerting.alerts_table import AlertsTableWriter
from streams.alerting.console import ConsoleNotifier
from streams.alerting.delivery import AlertDeliveryQueue
from streams.alerting.lifecycle import AlertLifecycle, alert_from_finding
from streams.alerting.pagerduty import PagerDutyNotifier
from streams.alerting.router import AlertRouter
from streams.alerting.slack import SlackNotifier, default_retry_handlers
from streams.ledger.connect import ClickHouseHandle
from streams.ledger.migrations import migration_files, split_statements
from streams.retrying import Backoff
from tests.alerting.conftest import T0

# Recent on purpose: the raw ledger keeps 90 days (sql/040_retention.sql). In the hour
# of the conftest's T0, not one read from the clock again (the hour may have turned).
NOW = T0.replace(minute=50)
ROUTING_KEY = "R0UT1NGKEYSECRET0000000000000000"


def columns(handle: ClickHouseHandle, table: str) -> list[str]:
    return [row[0] for row in handle.client.query(f"DESCRIBE TABLE {table}").result_rows]


def test_ddl_columns_mirror_the_models_in_order(clickhouse: ClickHouseHandle) -> None:
    assert columns(clickhouse, "alerts") == ALERT_COLUMNS
    assert columns(clickhouse, "alert_deliveries") == DELIVERY_COLUMNS


def test_rows_keep_decimal_money_exactly_and_evidence_as_json(
    clickhouse: ClickHouseHandle, finding: Callable[..., Finding]
) -> None:
    writer = AlertsTableWriter(clickhouse.client)
    alert = alert_from_finding(finding(value="412.123456789012345678"), now=NOW)
    writer.add_alert(alert)
    writer.add_alert(alert.model_copy(update={"state": "resolved", "resolved_at": NOW}))
    assert writer.flush() == 2
    rows = clickhouse.client.query(
        "SELECT state, value, threshold, baseline, evidence, resolved_at FROM alerts FINAL "
        "ORDER BY state DESC"
    ).result_rows
    assert [row[0] for row in rows] == ["triggered", "resolved"]
    assert rows[0][1] == Decimal("412.123456789012345678")
    assert rows[0][2] == Decimal("75.00") and rows[0][3] == Decimal("15.00")
    assert json.loads(rows[0][4])["median_usd"] == "14.20"
    assert rows[0][5] is None and rows[1][5] is not None


def test_a_failed_insert_keeps_the_rows_for_the_next_flush(
    clickhouse: ClickHouseHandle, finding: Callable[..., Finding]
) -> None:
    writer = AlertsTableWriter(clickhouse.client)
    clickhouse.client.command("DROP TABLE alerts")
    writer.add_alert(alert_from_finding(finding(), now=NOW))
    assert writer.flush() == 0
    assert writer.pending == 1
    ddl = dict(migration_files())["010_alerts.sql"]
    for statement in split_statements(ddl):
        clickhouse.client.command(statement)
    assert writer.flush() == 1
    assert clickhouse.client.query("SELECT count() FROM alerts").result_rows == [(1,)]


def test_the_analyst_query_runs_and_shows_the_spike(
    clickhouse: ClickHouseHandle, finding: Callable[..., Finding]
) -> None:
    start = NOW.replace(minute=0)
    names = ["request_id", "timestamp", "tenant_id", "user_id", "provider", "model"]
    names += ["input_tokens", "request_count", "retry_count", "cost_usd", "ingested_at"]

    def row(request_id: str, at: datetime, tenant: str, user: str, retries: int, cost: str) -> list:
        return [
            request_id,
            at,
            tenant,
            user,
            "openai",
            "gpt-4o",
            100,
            1,
            retries,
            Decimal(cost),
            NOW,
        ]

    rows = [
        row(f"r{h}-{i}", start - timedelta(hours=h), "acme", f"u{i}", 0, "0.50")
        for h in range(1, 4)
        for i in range(2)
    ]
    rows += [
        row(f"spike-{i}", start + timedelta(minutes=i), "acme", "u1", 3, "4.00") for i in range(10)
    ]
    rows.append(row("other", start, "globex", "u9", 0, "99"))
    clickhouse.client.insert("usage_ledger", rows, column_names=names)
    alert = alert_from_finding(finding(), now=NOW)
    result = clickhouse.client.query(alert.query).result_rows
    assert len(result) == 4  # three baseline hours and the spike hour, acme only
    spike = result[-1]
    assert spike[0].replace(tzinfo=UTC) == start
    assert spike[1] == Decimal("40.00") and spike[2] == 10 and spike[6] == 30
    run = alert_from_finding(finding(detector="run_cost", key="run:spike-run"), now=NOW)
    assert clickhouse.client.query(run.query).result_rows == []  # valid SQL, no such run


async def test_incident_end_to_end_rows_and_payloads(
    clickhouse: ClickHouseHandle,
    receivers: Callable[..., Any],
    finding: Callable[..., Finding],
    tls_files: tuple[Path, Path],
) -> None:
    """Findings -> lifecycle -> queue -> real Slack/PagerDuty clients -> chdb rows."""
    slack = await receivers("slack").start()
    pagerduty = await receivers("pagerduty").start()
    slack.reply(429, {"Retry-After": "0"}, "rate_limited")
    notifiers = {
        "console": ConsoleNotifier(io.StringIO()),
        "slack:critical": SlackNotifier(
            webhook_url=SecretStr(slack.base_url + "/services/T000/B000/XXXX"),
            retry_handlers=default_retry_handlers(
                rate_limit_retries=0, interval=FixedValueRetryIntervalCalculator(0.02)
            ),
        ),
        "pagerduty:critical": PagerDutyNotifier(
            SecretStr(ROUTING_KEY),
            base_url=pagerduty.base_url,
            verify=ssl.create_default_context(cafile=tls_files[0]),
        ),
    }
    router = AlertRouter(
        {"warning": ["slack:critical"], "critical": ["pagerduty:critical", "slack:critical"]},
        console=True,
    )
    writer = AlertsTableWriter(clickhouse.client)
    life = AlertLifecycle(cooldown=timedelta(minutes=30))
    queue = AlertDeliveryQueue(
        notifiers, router, recorder=writer, backoff=Backoff(initial=0.05, jitter=0)
    )
    async with queue:
        # A runaway loop re-detected every minute for 90 minutes, then it stops.
        for minute in range(90):
            alert = life.observe(finding(hour=minute // 60), now=NOW + timedelta(minutes=minute))
            if alert is not None:
                queue.enqueue(alert)
        resolved = life.clear(finding(hour=1).fingerprint, now=NOW + timedelta(minutes=95))
        assert resolved is not None
        queue.enqueue(resolved)
        await queue.join()
    writer.flush()  # as the worker's one-second timer does

    assert [r.body["event_action"] for r in pagerduty.requests] == ["trigger", "resolve"]
    assert len(slack.requests) == 3  # the 429, then the trigger and the resolve
    query = clickhouse.client.query
    alerts = query("SELECT state, severity, fingerprint FROM alerts FINAL ORDER BY recorded_at")
    fingerprint = finding(hour=0).fingerprint
    assert alerts.result_rows == [
        ("triggered", "critical", fingerprint),
        ("resolved", "critical", fingerprint),
    ]
    deliveries = query(
        "SELECT channel, action, attempt, outcome, status_code FROM alert_deliveries FINAL "
        "ORDER BY channel, action DESC, attempt"
    ).result_rows
    assert deliveries == [
        ("console", "trigger", 1, "delivered", None),
        ("console", "resolve", 1, "delivered", None),
        ("pagerduty:critical", "trigger", 1, "delivered", 202),
        ("pagerduty:critical", "resolve", 1, "delivered", 202),
        ("slack:critical", "trigger", 1, "retrying", 429),
        ("slack:critical", "trigger", 2, "delivered", 200),
        ("slack:critical", "resolve", 1, "delivered", 200),
    ]
    docs = Path(__file__).resolve().parents[2] / "docs" / "alerting.md"
    documented = re.search(r"```sql\n(.*?)```", docs.read_text(), re.S)
    assert documented is not None
    paged = query(documented.group(1).replace("now() - INTERVAL 1 DAY", "'2000-01-01'"))
    assert len(paged.result_rows) == len(deliveries)  # the documented query runs: every attempt
    capture = os.environ.get("SPENDSTREAM_CAPTURE_DIR")
    if capture:
        _capture(Path(capture), slack.requests[1].body, pagerduty.requests[0].body)


def _capture(directory: Path, slack_body: Any, pagerduty_body: Any) -> None:
    """Write the payloads the receivers got, for docs/alerting.md (routing key redacted)."""
    directory.mkdir(parents=True, exist_ok=True)
    pagerduty_body = {**pagerduty_body, "routing_key": "<routing key>"}
    (directory / "slack_block_kit.json").write_text(
        json.dumps(slack_body, indent=2, ensure_ascii=False) + "\n"
    )
    (directory / "pagerduty_trigger.json").write_text(
        json.dumps(pagerduty_body, indent=2, ensure_ascii=False) + "\n"
    )
