"""Alerting end to end (issue 3): simulated incidents through the real worker page the
real slack-sdk and pagerduty clients, which post to receivers on 127.0.0.1 (Slack over
HTTP, PagerDuty over HTTPS with a self-signed certificate).

Each injection kind gets its own stack (broker + worker + data dir): every kind hits
tenant acme, and one stack's open incident or cooldown would swallow the next kind's
page. The stacks start together, and each is loaded with the same history before its
test runs: the detectors compare an hour with the previous 7 days, so a backfill of
past event-time hours comes first (tables are by event time), then the incident hour.

One incident pages once per tenant: the rolling median fires for the tenant, team,
workflow and model keys at once, and the retry-storm and run-cost detectors with them;
the worker's spend agent joins those findings into the tenant's open incident (see
`streams.spend.incidents.CORRELATED`), and the tests count every request the receivers got.

The incident goes into the hour before the current one. The worker resolves by wall
clock: an incident in the current hour could only clear once the hour is over, so an
incident that is over must lie in a past hour; with nothing spent in the current hour,
its condition clears at the worker's next resolve tick.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.embedded.simulate import WORKFLOWS, TrafficGenerator
from streams.embedded.stack import EmbeddedStack, WorkerProcess
from streams.settings import Settings
from tests.helpers.receivers import (
    Receiver,
    ReceiverLoop,
    pagerduty_ok,
    self_signed_tls,
    slack_webhook_ok,
)
from tests.helpers.stack import analyst_client, analyst_headers
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

ROUTING_KEY = "R0123456789abcdef0123456789abcdef"  # a PagerDuty integration key is 32 chars

# The detectors need 24 active hours of baseline (min_history_hours, left at its default).
HISTORY_HOURS = 25
# Events per event-time hour for each workflow. Acme, the tenant every injection hits,
# has enough traffic that its 40 users mostly appear every hour (a retry storm is
# "requests up, users flat" only if the baseline's users are not limited by volume).
ACME_PER_WORKFLOW = 20
OTHER_PER_WORKFLOW = 8
NORMAL = {w.workflow_id: ACME_PER_WORKFLOW if w.tenant_id == "acme" else OTHER_PER_WORKFLOW
          for w in WORKFLOWS}  # fmt: skip
RUNAWAY = "runaway"  # the quota slot of the runaway loop's calls
RUNAWAY_CALLS = 600


def scaled_acme(factor: int) -> dict[str, int]:
    return {k: v * factor if k in ("answer-question", "summarize-ticket") else v
            for k, v in NORMAL.items()}  # fmt: skip


# The incident hour's traffic per injection kind. Other tenants keep their usual volume,
# so the only pages are acme's.
INCIDENT_QUOTAS: dict[str, dict[str, int]] = {
    # The loop calls answer-question 600 times under one run id from one user (the
    # simulator sends every acme answer-question call into the loop).
    "runaway-loop": {**NORMAL, "answer-question": 0, RUNAWAY: RUNAWAY_CALLS},
    # Swapped model and bloated prompts: the same work, twice the usual volume (a busy
    # hour must not hide the cause).
    "model-swap": scaled_acme(2),
    "prompt-bloat": scaled_acme(2),
    # A storm multiplies calls: ten times the requests, mostly retries of one user.
    "retry-storm": scaled_acme(10),
}

# What each injection is: the spike-cause label its page must carry. A runaway loop is
# "the same people, many more calls", which is the classifier's retry_storm (requests
# per user up) - it has no separate label for a loop.
EXPECTED_CAUSE = {
    "runaway-loop": "retry_storm",
    "model-swap": "model_substitution",
    "prompt-bloat": "prompt_expansion",
    "retry-storm": "retry_storm",
}

INCIDENT_CONFIG = """
workflows:
  run_threshold_usd:
    # The runaway run (~$0.70) crosses 3x this, so a critical run-cost finding pages
    # beside the incident; a normal three-call run costs about $0.002.
    answer-question: "0.20"
detectors:
  rolling_median:
    # The simulated hours cost cents: the production floors ($1 an hour, $0.20 baseline)
    # would hide every incident here. These keep their purpose at this scale: hooli's
    # $0.002 hours still never page.
    spend_floor_usd: "0.05"
    min_baseline_usd: "0.002"
    # Seconds into the next hour before its projection may resolve (default 15 min).
    resolve_after: 1
  retry_storm:
    resolve_after: 1
"""

DELIVERY_CONFIG = """
workflows:
  # Run cost is the detector that fires on the first event over its threshold (no
  # history needed): one expensive call is one incident. Above 3x it is critical.
  run_threshold_usd:
    export: "1.00"
"""


def routing_config(slack: Receiver, pagerduty: Receiver, slack_critical: Receiver | None) -> str:
    critical_slack = (
        f"""
    slack:
      webhook_url: {slack_critical.base_url}/services/T0/B1/critical"""
        if slack_critical is not None
        else ""
    )
    return f"""
alerting:
  cooldown_minutes: 60
  # Retries come quickly in tests; the policy (Retry-After first, then exponential
  # backoff) is the same at any scale.
  backoff_initial_seconds: 0.5
  backoff_max_seconds: 2
routing:
  console: false
  warning:
    slack:
      webhook_url: {slack.base_url}/services/T0/B0/warning
  critical:{critical_slack}
    pagerduty:
      routing_key: "{ROUTING_KEY}"
      base_url: {pagerduty.base_url}
      verify_tls: false
"""


# --- traffic ----------------------------------------------------------------------------


def slot(event: dict[str, Any]) -> str:
    run_id = str(event.get("workflow_run_id") or "")
    return RUNAWAY if run_id.startswith("run-runaway-") else str(event["workflow_id"])


def hour_of_traffic(
    generator: TrafficGenerator, hour: datetime, quotas: Mapping[str, int]
) -> list[dict[str, Any]]:
    """The simulator's events for one event-time hour, `quotas[slot]` of each workflow
    (and of the runaway loop), spread evenly over the hour. The simulator picks
    workflows at random; drawing to quotas fixes every tenant's volume per hour, so
    the baseline and the incident differ only in what the injection changes."""
    wanted = dict(quotas)
    picked: list[dict[str, Any]] = []
    for _ in range(200_000):
        if not any(wanted.values()):
            break
        event = generator.event(hour)
        if wanted.get(slot(event), 0) > 0:
            wanted[slot(event)] -= 1
            picked.append(event)
    else:
        raise AssertionError(f"the simulator never produced {wanted}")
    step = timedelta(hours=1) / (len(picked) + 1)
    for i, event in enumerate(picked):
        event["timestamp"] = (hour + step * (i + 1)).isoformat()
    return picked


async def _publish(bootstrap: str, messages: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send("spendstream.usage", m) for m in messages])
    finally:
        await producer.stop()


def publish(bootstrap: str, events: list[dict[str, Any]], per_message: int) -> None:
    """Events as JSON arrays (one Kafka message per `per_message` events), as a gateway
    batches them."""
    chunks = [events[i : i + per_message] for i in range(0, len(events), per_message)]
    asyncio.run(_publish(bootstrap, [orjson.dumps(chunk) for chunk in chunks]))


# --- a stack with its receivers ---------------------------------------------------------


@dataclass
class AlertingStack:
    """Broker, worker (configured by a spend config file) and the receivers it pages."""

    name: str
    root: Path
    slack: Receiver
    pagerduty: Receiver
    slack_critical: Receiver | None = None
    stack: EmbeddedStack = field(init=False)
    worker: WorkerProcess = field(init=False)
    hour: datetime = field(init=False)  # the current hour when the stack was loaded
    published: int = 0

    def start(self, config: str) -> None:
        """Start broker and worker; does not wait for the worker (see `wait_ready`)."""
        self.root.mkdir(parents=True)
        config_file = self.root / "spend.yaml"
        config_file.write_text(
            config + routing_config(self.slack, self.pagerduty, self.slack_critical)
        )
        data_dir = self.root / "data"
        data_dir.mkdir()
        self.stack = EmbeddedStack(Settings(data_dir=data_dir))
        self.stack.start_broker()
        self.worker = self.stack.start_worker(
            {
                "SPENDSTREAM_CONFIG_FILE": str(config_file),
            }
        )

    def wait_ready(self) -> None:
        self.stack.wait_ready(self.worker, timeout=120)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.worker.web_port}"

    def stop(self) -> None:
        self.stack.stop()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        client = analyst_client(self.url, self.stack.settings.data_dir)
        try:
            return list(client.query(sql).result_rows)
        finally:
            client.close()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/stats", timeout=5).json())

    def publish(self, events: list[dict[str, Any]], per_message: int = 100) -> None:
        publish(self.stack.bootstrap, events, per_message)
        self.published += len(events)

    def wait_ingested(self, timeout: float = 90) -> None:
        wait_for(lambda: self.stats()["events"] >= self.published, timeout=timeout)

    def wait_spend_agent(self, tenant: str, timeout: float = 60) -> None:
        """Until the spend tables hold every ledgered cent of `tenant` this month: the
        spend agent has counted the tenant's costed messages."""

        settle_until = time.monotonic() + 5

        def caught_up() -> bool:
            rows = self.query(
                "SELECT toString(sum(cost_usd)) FROM usage_ledger FINAL "
                f"WHERE tenant_id = '{tenant}' AND toStartOfMonth(timestamp) = "
                "toStartOfMonth(now64(3, 'UTC'))"
            )
            ledger = Decimal(rows[0][0]) if rows else Decimal(0)
            if ledger == 0:
                # In the first hours of a month the history lies in the last month,
                # which /v1/limits does not show: fall back to a settling pause.
                return time.monotonic() > settle_until
            limits = httpx.get(
                f"{self.url}/v1/limits/{tenant}",
                headers=analyst_headers(self.stack.settings.data_dir),
                timeout=5,
            ).json()
            if limits["status"] == "recovering":  # 503 until the tables are recovered
                return False
            return Decimal(limits["month_to_date_usd"]) == ledger

        wait_for(caught_up, timeout=timeout, interval=0.5)

    def load_history(self) -> None:
        """HISTORY_HOURS hours of normal traffic, ending two hours ago."""
        self.hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        generator = TrafficGenerator(seed=11)
        events: list[dict[str, Any]] = []
        for back in range(HISTORY_HOURS + 1, 1, -1):
            events += hour_of_traffic(generator, self.hour - timedelta(hours=back), NORMAL)
        self.publish(events)
        self.wait_ingested()
        self.wait_spend_agent("acme")

    # --- what the receivers got -------------------------------------------------------

    def slack_messages(self, receiver: Receiver | None = None) -> list[dict[str, Any]]:
        return [r.body for r in (receiver or self.slack).requests if isinstance(r.body, dict)]

    def pagerduty_events(self) -> list[dict[str, Any]]:
        return [r.body for r in self.pagerduty.requests if isinstance(r.body, dict)]

    def alerts(self, tenant: str) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT fingerprint, detector, key, severity, state, cause, tenant_id, workflow_id "
            f"FROM alerts FINAL WHERE tenant_id = '{tenant}' AND severity != 'info' "
            "ORDER BY recorded_at"
        )
        names = ("fingerprint", "detector", "key", "severity", "state", "cause", "tenant_id",
                 "workflow_id")  # fmt: skip
        return [dict(zip(names, row, strict=True)) for row in rows]

    def deliveries(self, fingerprint: str) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT channel, action, attempt, outcome, status_code, reason "
            f"FROM alert_deliveries FINAL WHERE fingerprint = '{fingerprint}' "
            "ORDER BY channel, action, attempt"
        )
        names = ("channel", "action", "attempt", "outcome", "status_code", "reason")
        return [dict(zip(names, row, strict=True)) for row in rows]


def slack_tenant(message: dict[str, Any]) -> str:
    for block in message.get("blocks", []):
        for item in block.get("fields") or []:
            text = item.get("text", "")
            if text.startswith("*Tenant*\n"):
                return str(text.split("\n", 1)[1])
    return ""


def slack_fingerprint(message: dict[str, Any]) -> str:
    for block in message.get("blocks", []):
        if block.get("type") == "context":
            text = block["elements"][0]["text"]
            return str(text.split("`")[1])
    return ""


def slack_detector(message: dict[str, Any]) -> str:
    """The detector named in the message's header (":red_circle: CRITICAL · run_cost · …")."""
    for block in message.get("blocks", []):
        if block.get("type") == "header":
            return str(block["text"]["text"].split(" · ")[1])
    return ""


def is_resolve(message: dict[str, Any]) -> bool:
    return str(message.get("text", "")).startswith("Resolved:")


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver_loop() -> Iterator[ReceiverLoop]:
    loop = ReceiverLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    return self_signed_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def stacks(
    tmp_path_factory: pytest.TempPathFactory, receiver_loop: ReceiverLoop, tls: ssl.SSLContext
) -> Iterator[dict[str, AlertingStack]]:
    """One stack per injection kind and one for the delivery tests, started together
    (the workers' start-up is mostly waiting: it overlaps) and loaded in parallel."""
    made: dict[str, AlertingStack] = {}
    root = tmp_path_factory.mktemp("alerting-e2e")
    try:
        for name in (*INCIDENT_QUOTAS, "delivery"):
            made[name] = AlertingStack(
                name,
                root / name,
                slack=receiver_loop.start(Receiver(slack_webhook_ok)),
                pagerduty=receiver_loop.start(Receiver(pagerduty_ok, tls)),
                slack_critical=(
                    receiver_loop.start(Receiver(slack_webhook_ok)) if name == "delivery" else None
                ),
            )
            made[name].start(DELIVERY_CONFIG if name == "delivery" else INCIDENT_CONFIG)
        # Processes are spawned from this thread only (they die with the thread that
        # spawned them); waiting and loading are safe in threads.
        with concurrent.futures.ThreadPoolExecutor(len(made)) as pool:
            list(pool.map(lambda s: s.wait_ready(), made.values()))
            loading = [s for name, s in made.items() if name != "delivery"]
            list(pool.map(lambda s: s.load_history(), loading))
        yield made
    finally:
        started = [s.stack for s in made.values() if hasattr(s, "stack")]
        with concurrent.futures.ThreadPoolExecutor(max(1, len(started))) as pool:
            list(pool.map(lambda stack: stack.stop(), started))  # each waits for its worker
        for running in made.values():
            for receiver in (running.slack, running.pagerduty, running.slack_critical):
                if receiver is not None:
                    receiver_loop.stop(receiver)
        shutil.rmtree(root, ignore_errors=True)


def inject(running: AlertingStack, kind: str) -> list[dict[str, Any]]:
    """The incident hour: the simulator with `--inject kind`, in the hour before the
    current one, published as ONE gateway batch (so the worker sees the whole hour at
    once and the page carries the incident's real severity and cause)."""
    incident = hour_of_traffic(
        TrafficGenerator(seed=12, inject=kind),
        running.hour - timedelta(hours=1),
        INCIDENT_QUOTAS[kind],
    )
    running.publish(incident, per_message=len(incident))
    return incident


# --- the incidents --------------------------------------------------------------------------


def spend_incident_rows(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["detector"] in ("rolling_median", "retry_storm")]


def assert_one_spend_incident(alerts: list[dict[str, Any]], cause: str) -> None:
    """The tenant's spend findings make one incident: paged at the crossing, then at
    most an escalation to critical (the incident's most severe key), each with the cause;
    any later row resolves a page of it."""
    rows = spend_incident_rows(alerts)
    paged = [a for a in rows if a["state"] == "triggered"]
    assert [a["cause"] for a in paged] == [cause] * len(paged), rows
    assert [a["severity"] for a in paged] in (["warning"], ["critical"], ["warning", "critical"])
    fingerprints = {a["fingerprint"] for a in paged}
    assert {a["fingerprint"] for a in rows if a["state"] == "resolved"} <= fingerprints, rows


def test_runaway_loop_pages_with_its_cause_names_its_run_and_resolves(
    stacks: dict[str, AlertingStack],
) -> None:
    running = stacks["runaway-loop"]
    inject(running, "runaway-loop")

    # Critical pages for acme: the spend incident (a retry storm) and the runaway run
    # over 3x its threshold, a page of its own that names the run and its workflow.
    def triggers() -> list[dict[str, Any]]:
        return [e for e in running.pagerduty_events() if e["event_action"] == "trigger"]

    wait_for(lambda: {e["payload"]["component"] == "run_cost" for e in triggers()} == {True, False})
    [run] = [e for e in triggers() if e["payload"]["component"] == "run_cost"]
    spend = [e for e in triggers() if e["payload"]["component"] != "run_cost"]
    assert "of workflow answer-question has cost" in run["payload"]["summary"]
    for trigger in spend:
        assert trigger["payload"]["severity"] == "critical"
        assert trigger["payload"]["group"] == "acme"
        assert trigger["payload"]["custom_details"]["cause"] == "retry_storm"
        assert trigger["routing_key"] == ROUTING_KEY

    # The resolve comes after the loop stopped: nothing is spent in the current hour,
    # so the worker's next resolve tick (every 15 s) finds the condition cleared. A
    # run's cost never falls: its page does not resolve.
    resolves = wait_for(
        lambda: [e for e in running.pagerduty_events() if e["event_action"] == "resolve"],
        timeout=60,
    )
    assert {r["dedup_key"] for r in resolves} <= {t["dedup_key"] for t in spend}
    arrivals = {r.body["event_action"]: r.at for r in running.pagerduty.requests}
    assert arrivals["resolve"] > arrivals["trigger"]

    messages = wait_for(
        lambda: any(is_resolve(m) for m in running.slack_messages()) and (running.slack_messages())
    )
    assert {slack_tenant(m) for m in messages} == {"acme"}
    spend_pages = [m for m in messages if not is_resolve(m) and slack_detector(m) != "run_cost"]
    assert spend_pages
    for page in spend_pages:
        assert "*Likely cause:* Retry storm" in orjson.dumps(page).decode()

    # The alerts table: one spend incident for acme, paged then resolved, the other
    # detectors' findings of it joined it instead of paging; and the run's own page.
    def resolved_rows() -> list[dict[str, Any]]:
        rows = running.alerts("acme")
        return rows if any(a["state"] == "resolved" for a in rows) else []

    alerts = wait_for(resolved_rows)
    assert_one_spend_incident(alerts, "retry_storm")
    assert [(a["detector"], a["state"]) for a in alerts if a["detector"] == "run_cost"] == [
        ("run_cost", "triggered")
    ]
    assert running.stats()["findings"] >= 3  # rolling median (several keys), run cost, retries


@pytest.mark.parametrize("kind", ["model-swap", "prompt-bloat", "retry-storm"])
def test_each_injection_is_labelled_with_its_cause(
    stacks: dict[str, AlertingStack], kind: str
) -> None:
    running = stacks[kind]
    inject(running, kind)
    expected = EXPECTED_CAUSE[kind]

    wait_for(lambda: running.slack_messages() and running.alerts("acme"), timeout=60)
    # All of the hour's findings come from one batch, so any later page would be
    # queued with the first: 2 s (two alert-table flushes) is enough to see it. The
    # incident lies in a past hour, so the worker's resolve tick (every 15 s) may
    # already have resolved it: a resolve of the same incident is not another page.
    time.sleep(2)
    messages, alerts = running.slack_messages(), running.alerts("acme")
    pages = [m for m in messages if not is_resolve(m)]
    assert [(a["state"], a["cause"]) for a in alerts][:1] == [("triggered", expected)], alerts
    assert_one_spend_incident(alerts, expected)
    assert {slack_tenant(m) for m in messages} == {"acme"}
    assert 1 <= len(pages) <= 2  # paged at the crossing, perhaps escalated
    assert pages[0]["text"].startswith(("WARNING", "CRITICAL"))
    label = {
        "model_substitution": "Model substitution",
        "prompt_expansion": "Prompt expansion",
        "retry_storm": "Retry storm",
    }[expected]
    for page in pages:
        assert f"*Likely cause:* {label}" in orjson.dumps(page).decode()
    critical = [a for a in alerts if a["state"] == "triggered" and a["severity"] == "critical"]
    triggers = [e for e in running.pagerduty_events() if e["event_action"] == "trigger"]
    assert len(triggers) == len(critical)
    for trigger in triggers:
        assert trigger["payload"]["custom_details"]["cause"] == expected


# --- delivery -------------------------------------------------------------------------------


def expensive_call(tenant: str, run_id: str, input_tokens: int) -> dict[str, Any]:
    """One gpt-4o call in its own run of workflow `export` (threshold $1): 1M input
    tokens cost $2.50, a warning; 2M cost $5.00, over 3x: critical."""
    return {
        "request_id": f"{tenant}-{run_id}",
        "timestamp": datetime.now(UTC).isoformat(),
        "tenant_id": tenant,
        "team_id": "data",
        "user_id": f"{tenant}-user-1",
        "workflow_id": "export",
        "workflow_run_id": run_id,
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": input_tokens,
        "output_tokens": 10,
    }


def page(running: AlertingStack, tenant: str, *, critical: bool) -> str:
    run_id = f"run-{tenant}"
    running.publish([expensive_call(tenant, run_id, 2_000_000 if critical else 1_000_000)])
    return f"run_cost|workflow:export/run:{run_id}|"


def requests_for(receiver: Receiver, fingerprint_prefix: str) -> list[Any]:
    def matches(body: Any) -> bool:
        if not isinstance(body, dict):
            return False
        if "dedup_key" in body:
            return str(body["dedup_key"]).startswith(fingerprint_prefix)
        return slack_fingerprint(body).startswith(fingerprint_prefix)

    return [r for r in receiver.requests if matches(r.body)]


def answered(running: AlertingStack, fingerprint_prefix: str) -> Callable[[], list[Any]]:
    return lambda: [
        d
        for d in running.query(
            "SELECT channel, attempt, outcome, status_code FROM alert_deliveries FINAL "
            f"WHERE startsWith(fingerprint, '{fingerprint_prefix}') ORDER BY channel, attempt"
        )
    ]


def test_slack_429_and_5xx_are_retried_until_delivered(stacks: dict[str, AlertingStack]) -> None:
    running = stacks["delivery"]
    running.slack.reply(429, {"Retry-After": "1"}, "rate_limited")
    running.slack.reply(503, {}, "service unavailable")
    running.slack.reply(500, {}, "internal error")
    running.slack.reply(502, {}, "bad gateway")
    prefix = page(running, "slack-retry", critical=False)

    received = wait_for(lambda: (r := requests_for(running.slack, prefix)) and len(r) >= 5 and r)
    assert len(received) == 5  # four failures, then delivered once: no duplicate post
    assert len({orjson.dumps(r.body) for r in received}) == 1  # the same message each time
    # The 429's Retry-After (1 s) was honoured before the next attempt.
    assert received[1].at - received[0].at >= 0.9

    rows = wait_for(
        lambda: (d := answered(running, prefix)()) and d[-1][2] == "delivered" and d, timeout=30
    )
    assert [(outcome, status) for _, _, outcome, status in rows] == [
        ("retrying", 429),
        ("retrying", 503),
        ("retrying", 500),
        ("retrying", 502),
        ("delivered", 200),
    ]


def test_pagerduty_429_and_5xx_are_retried_until_delivered(
    stacks: dict[str, AlertingStack],
) -> None:
    running = stacks["delivery"]
    running.pagerduty.reply(429, {"Retry-After": "1"}, {"status": "throttle event"})
    running.pagerduty.reply(500, {}, {"status": "error"})
    running.pagerduty.reply(503, {}, {"status": "error"})
    prefix = page(running, "pagerduty-retry", critical=True)

    received = wait_for(
        lambda: (r := requests_for(running.pagerduty, prefix)) and len(r) >= 4 and r, timeout=60
    )
    assert len(received) == 4
    assert {r.body["event_action"] for r in received} == {"trigger"}
    assert received[1].at - received[0].at >= 0.9  # Retry-After honoured
    assert running.slack_critical is not None
    assert requests_for(running.slack_critical, prefix)  # the critical Slack route too

    rows = wait_for(
        lambda: (
            (d := [r for r in answered(running, prefix)() if r[0] == "pagerduty:critical"])
            and d[-1][2] == "delivered"
            and d
        ),
        timeout=30,
    )
    assert [(outcome, status) for _, _, outcome, status in rows] == [
        ("retrying", 429),
        ("retrying", 500),
        ("retrying", 503),
        ("delivered", 202),
    ]


def test_receivers_down_get_their_alerts_once_back(
    stacks: dict[str, AlertingStack], receiver_loop: ReceiverLoop
) -> None:
    running = stacks["delivery"]
    assert running.slack_critical is not None
    receiver_loop.stop(running.pagerduty)
    receiver_loop.stop(running.slack_critical)
    down_since = time.monotonic()
    prefix = page(running, "receiver-down", critical=True)

    # While both are down the stream goes on: a warning for another tenant is posted.
    warning = page(running, "meanwhile", critical=False)
    wait_for(lambda: requests_for(running.slack, warning), timeout=60)

    # Attempts fail (connection refused) and are retried with backoff, not dropped.
    wait_for(
        lambda: len([r for r in answered(running, prefix)() if r[2] == "retrying"]) >= 4,
        timeout=60,
    )
    time.sleep(max(0.0, 10 - (time.monotonic() - down_since)))  # down for 10 s at least
    receiver_loop.start(running.pagerduty)
    receiver_loop.start(running.slack_critical)

    [trigger] = wait_for(lambda: requests_for(running.pagerduty, prefix), timeout=30)
    assert trigger.body["event_action"] == "trigger"
    assert trigger.body["payload"]["group"] == "receiver-down"
    [posted] = wait_for(lambda: requests_for(running.slack_critical, prefix), timeout=30)
    assert posted.body["text"].startswith("CRITICAL")
    rows = wait_for(
        lambda: (
            (d := answered(running, prefix)()) and Counter(r[2] for r in d)["delivered"] == 2 and d
        ),
        timeout=30,
    )
    for channel in ("pagerduty:critical", "slack:critical"):
        outcomes = [r[2] for r in rows if r[0] == channel]
        assert outcomes[-1] == "delivered" and set(outcomes[:-1]) == {"retrying"}, rows
        assert len(outcomes) >= 3
