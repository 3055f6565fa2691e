"""The operator's word end to end (issue 19): a spike pages Slack (the real slack-sdk
client against a receiver on 127.0.0.1) with an "Acknowledge as new normal" link; an
ack over HTTP rebases the tenant's baseline, so the same level the next hour does not
page while a bigger jump still does; a snooze holds back a key's pages; both survive a
worker restart; the link acknowledges (after a confirmation page); the CLI works; no
token is refused.

Event-time hours, counted back from the current hour H: 26 hours of history up to H-4,
the spike in H-3, the same level in H-2 and the jump in H-1 (past hours, so each
incident clears at the worker's next resolve tick). The cooldown is 0, so a page held
back here is held back by the acknowledgement or the snooze, not by a cooldown.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.embedded.simulate import TrafficGenerator
from streams.embedded.stack import EmbeddedStack
from streams.settings import Settings
from tests.helpers.receivers import Receiver, ReceiverLoop, slack_webhook_ok
from tests.helpers.stack import analyst_headers
from tests.helpers.waiting import wait_for
from tests.integration.test_alerting_e2e import (
    NORMAL,
    AlertingStack,
    hour_of_traffic,
    is_resolve,
    scaled_acme,
    slack_detector,
    slack_tenant,
)

pytestmark = pytest.mark.integration

LINK = re.compile(r"<(http://[^|>]+)\|Acknowledge as new normal>")


def ack_config(slack: Receiver) -> str:
    return f"""
alerting:
  cooldown_minutes: 0
  backoff_initial_seconds: 0.5
  backoff_max_seconds: 2
routing:
  console: false
  warning:
    slack:
      webhook_url: {slack.base_url}/services/T0/B0/warning
  critical:
    slack:
      webhook_url: {slack.base_url}/services/T0/B0/critical
detectors:
  rolling_median:
    k: "3"
    critical_k: "100"
    spend_floor_usd: "0.05"
    min_baseline_usd: "0.002"
    resolve_after: 1
  retry_storm:
    # Volume is scaled here with the same users: keep this about the rolling median.
    surge_factor: "1000"
    amplification: "1000"
  online:
    enabled: false
"""


def start(running: AlertingStack) -> None:
    running.root.mkdir(parents=True)
    config_file = running.root / "spend.yaml"
    config_file.write_text(ack_config(running.slack))
    data_dir = running.root / "data"
    data_dir.mkdir()
    running.stack = EmbeddedStack(Settings(data_dir=data_dir, config_file=config_file))
    running.stack.start_broker()
    running.worker = running.stack.start_worker()
    running.wait_ready()


def restart(running: AlertingStack) -> None:
    running.stack.stop_workers()
    running.worker = running.stack.start_worker()
    running.wait_ready()
    running.published = 0  # the new worker counts the events it ingests from 0


def tenant_pages(running: AlertingStack, tenant: str) -> list[dict[str, Any]]:
    return [
        m
        for m in running.slack_messages()
        if slack_tenant(m) == tenant and not is_resolve(m) and slack_detector(m) == "rolling_median"
    ]


def ack_link(message: dict[str, Any]) -> str:
    for block in message.get("blocks", []):
        text = (block.get("text") or {}).get("text", "")
        if match := LINK.search(text):
            return match[1]
    raise AssertionError(f"no acknowledge link in {message}")


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "alerts", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def publish_hour(running: AlertingStack, hour: datetime, quotas: dict[str, int], seed: int) -> None:
    events = hour_of_traffic(TrafficGenerator(seed=seed), hour, quotas)
    running.publish(events, per_message=len(events))
    running.wait_ingested()


def acks(running: AlertingStack) -> dict[str, Any]:
    headers = analyst_headers(running.stack.settings.data_dir)
    return dict(httpx.get(f"{running.url}/v1/alerts/acks", headers=headers, timeout=10).json())


def test_ack_rebases_snooze_holds_back_both_survive_a_restart(
    tmp_path: Path,
) -> None:
    loop = ReceiverLoop()
    slack = loop.start(Receiver(slack_webhook_ok))
    running = AlertingStack("ack", tmp_path / "ack", slack=slack, pagerduty=slack)
    try:
        start(running)
        data_dir = running.stack.settings.data_dir
        headers = analyst_headers(data_dir)
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        running.hour = hour
        generator = TrafficGenerator(seed=11)
        history: list[dict[str, Any]] = []
        for back in range(29, 3, -1):
            history += hour_of_traffic(generator, hour - timedelta(hours=back), NORMAL)
        running.publish(history)
        running.wait_ingested()
        running.wait_spend_agent("acme")

        # The spike pages, with the link.
        publish_hour(running, hour - timedelta(hours=3), scaled_acme(6), seed=21)
        wait_for(lambda: len(tenant_pages(running, "acme")) == 1, timeout=60)
        first = tenant_pages(running, "acme")[0]
        link = ack_link(first)
        assert link.startswith(f"{running.url}/v1/alerts/")
        alert_id = link.split("/v1/alerts/")[1].split("/")[0]

        # No token, a token of another alert, or the link's token elsewhere: 401.
        ack_url = f"{running.url}/v1/alerts/{alert_id}/ack"
        assert httpx.post(ack_url, timeout=10).status_code == 401
        assert httpx.get(f"{ack_url}?token=00", timeout=10).status_code == 401
        token = link.split("token=")[1]
        assert httpx.get(f"{running.url}/v1/alerts/acks?token={token}").status_code == 401
        snooze_url = f"{running.url}/v1/alerts/snooze"
        assert httpx.post(snooze_url, json={"key": "tenant:x", "for": "1h"}).status_code == 401

        # Acknowledged over HTTP: every rolling-median key of acme is rebased.
        answer = httpx.post(ack_url, headers=headers, json={"note": "launch"}, timeout=30)
        assert answer.status_code == 200, answer.text
        rebased = {a["key"]: a for a in answer.json()["acknowledged"]}
        assert "tenant:acme" in rebased
        assert "tenant:acme/workflow:answer-question" in rebased
        assert rebased["tenant:acme"]["note"] == "launch"
        assert rebased["tenant:acme"]["by"] == "analyst"

        # Snoozed from the CLI.
        snoozed = cli(data_dir, "snooze", "tenant:globex", "--for", "4h", "--note", "migration")
        assert snoozed.returncode == 0, snoozed.stderr
        assert snoozed.stdout.startswith("snoozed tenant:globex until ")

        # Both survive a restart.
        restart(running)
        in_force = acks(running)["acknowledgements"]
        assert {(a["key"], a["kind"]) for a in in_force} >= {
            ("tenant:acme", "ack"),
            ("tenant:globex", "snooze"),
        }

        # The same level an hour later does not page; globex's spike is held back.
        findings_before = running.stats()["findings"]
        publish_hour(
            running,
            hour - timedelta(hours=2),
            {**scaled_acme(6), "deep-research": 80, "draft-email": 80},
            seed=22,
        )
        running.wait_spend_agent("acme")
        wait_for(lambda: acks(running)["snoozed_findings"] >= 1, timeout=60)
        acme_findings = (
            running.stats()["findings"] - findings_before - acks(running)["snoozed_findings"]
        )
        assert acme_findings == 0
        time.sleep(3)  # a page would be on its way by now
        assert len(tenant_pages(running, "acme")) == 1
        assert tenant_pages(running, "globex") == []
        # What the snooze held back is in the alerts table, as snoozed, not as a page.
        globex = "SELECT state, count() FROM alerts FINAL WHERE tenant_id = 'globex' GROUP BY state"
        wait_for(lambda: len(running.query(globex)) > 0, timeout=30)
        assert {state for state, _ in running.query(globex)} == {"snoozed"}

        # The first incident resolves (nothing holds it); a jump to 4x the acknowledged
        # level pages again.
        wait_for(lambda: any(a["state"] == "resolved" for a in running.alerts("acme")), timeout=90)
        publish_hour(running, hour - timedelta(hours=1), scaled_acme(24), seed=23)
        wait_for(lambda: len(tenant_pages(running, "acme")) == 2, timeout=60)
        jump = tenant_pages(running, "acme")[1]
        link = ack_link(jump)

        # Following the link: a confirmation page, then its form acknowledges.
        page = httpx.get(link, timeout=10)
        assert page.status_code == 200
        assert "Acknowledge as new normal" in page.text
        action = re.search(r"action='([^']+)'", page.text)
        assert action is not None
        done = httpx.post(running.url + action[1], data={"note": "via slack"}, timeout=30)
        assert done.status_code == 200, done.text
        jump_id = link.split("/v1/alerts/")[1].split("/")[0]
        by_link = [a for a in acks(running)["acknowledgements"] if a["alert_id"] == jump_id]
        assert by_link and {a["by"] for a in by_link} == {"slack link"}
        assert {a["note"] for a in by_link} == {"via slack"}

        # The CLI acknowledges too.
        acked = cli(data_dir, "ack", jump_id, "--note", "from the cli")
        assert acked.returncode == 0, acked.stderr
        assert "acknowledged tenant:acme: new normal $" in acked.stdout
        rows = running.query(
            "SELECT kind, count() FROM alert_acknowledgements GROUP BY kind ORDER BY kind"
        )
        kinds = dict(rows)
        assert kinds["snooze"] == 1 and kinds["ack"] >= 3
    finally:
        if hasattr(running, "stack"):
            running.stack.stop()
        loop.stop(slack)
        loop.close()
