"""The dashboard in a real browser (Debian's chromium through playwright) against a real
stack: the embedded broker, a worker with an analyst token and a spend config that pages
PagerDuty (a receiver on 127.0.0.1 over HTTPS), and ClickHouse through chdb.

The traffic: globex's calls in the same span a week earlier, four past hours of cheap
calls for acme and globex, a few of globex's this hour, then acme's current
hour on a pricier model with ten times the tokens, over its contracted $1/h: the
contract detector opens a critical incident, the spike-cause classifier labels it, and
the worker pages PagerDuty. Every figure the page shows is compared with SQL through
the worker's /v1/query.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from detectors.decomposition import FACTORS
from streams.embedded.stack import EmbeddedStack, WorkerProcess
from streams.ledger.remote import RemoteQueryClient
from streams.settings import Settings
from tests.helpers.receivers import Receiver, ReceiverLoop, pagerduty_ok, self_signed_tls
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

TOKEN = "dashboard-test-token"
ROUTING_KEY = "R0123456789abcdef0123456789abcdef"
HISTORY_HOURS = 4


def config(pagerduty: Receiver) -> str:
    return f"""
tenants:
  acme:
    contracted_hourly_budget_usd: 1
    monthly_budget_usd: 500
  globex:
    monthly_budget_usd: 100
detectors:
  contract:
    hourly_severity: critical
routing:
  console: false
  critical:
    pagerduty:
      routing_key: "{ROUTING_KEY}"
      base_url: {pagerduty.base_url}
      verify_tls: false
"""


def event(tenant: str, at: datetime, model: str, tokens: int, workflow: str) -> dict[str, Any]:
    return {
        "request_id": str(uuid.uuid4()),
        "timestamp": at.isoformat(),
        "tenant_id": tenant,
        "team_id": f"{tenant}-team",
        "user_id": f"{tenant}-user-{uuid.uuid4().int % 5}",
        "workflow_id": workflow,
        "feature_name": "chat",
        "provider": "openai",
        "model": model,
        "input_tokens": tokens,
        "output_tokens": tokens // 10,
    }


def history(now: datetime) -> list[dict[str, Any]]:
    hour = now.replace(minute=0, second=0, microsecond=0)
    events = []
    for back in range(HISTORY_HOURS, 0, -1):
        start = hour - timedelta(hours=back)
        for n in range(20):
            at = start + timedelta(minutes=2 * n + 1)
            events.append(event("acme", at, "gpt-4o-mini", 2000, "answer"))
            events.append(event("globex", at, "gpt-4o-mini", 1000, "summarize"))
    return events


def current_hour(
    now: datetime, tenant: str, model: str, tokens: int, count: int, workflow: str = "answer"
) -> list[dict]:
    hour = now.replace(minute=0, second=0, microsecond=0)
    span = max(now - hour, timedelta(seconds=1))
    return [
        event(tenant, hour + span * (n + 1) / (count + 1), model, tokens, workflow)
        for n in range(count)
    ]


def a_week_earlier(now: datetime) -> list[dict[str, Any]]:
    """globex's spend in the same span of the day a week earlier (what the movers
    compare with): larger calls of a dearer model in its workflow `summarize`, and a
    workflow `legacy` it no longer runs. acme had none."""
    earlier = now - timedelta(days=7)
    return current_hour(earlier, "globex", "gpt-4o", 20_000, 10, "summarize") + current_hour(
        earlier, "globex", "gpt-4o", 1000, 5, "legacy"
    )


async def _publish(bootstrap: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        chunks = [events[i : i + 50] for i in range(0, len(events), 50)]
        sent = [await producer.send("spendstream.usage", orjson.dumps(c)) for c in chunks]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


@dataclass
class Stack:
    stack: EmbeddedStack
    worker: WorkerProcess
    pagerduty: Receiver
    published: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.worker.web_port}"

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        client = RemoteQueryClient(self.url, TOKEN)
        try:
            return list(client.query(sql).result_rows)
        finally:
            client.close()

    def publish(self, events: list[dict[str, Any]]) -> None:
        # On its own thread: playwright's sync API keeps an event loop in this one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _publish(self.stack.bootstrap, events)).result()
        self.published += len(events)
        wait_for(
            lambda: self.query("SELECT count() FROM usage_ledger FINAL")[0][0] == self.published,
            timeout=90,
        )


def after_a_coming_midnight(now: datetime) -> datetime:
    """`now`, or just after midnight UTC when that is minutes away: the page's day is
    the server's today, and this module's spend must still be today when it is read."""
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if midnight - now > timedelta(minutes=10):
        return now
    time.sleep((midnight - now).total_seconds() + 5)
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("dashboard")
    loop = ReceiverLoop()
    tls: ssl.SSLContext = self_signed_tls(root)
    pagerduty = loop.start(Receiver(pagerduty_ok, tls))
    config_file = root / "spend.yaml"
    config_file.write_text(config(pagerduty))
    embedded = EmbeddedStack(Settings(data_dir=root / "data"))
    try:
        embedded.start_broker()
        worker = embedded.start_worker(
            {"SPENDSTREAM_CONFIG_FILE": str(config_file), "SPENDSTREAM_ANALYST_TOKEN": TOKEN}
        )
        embedded.wait_ready(worker, timeout=120)
        running = Stack(embedded, worker, pagerduty)
        now = after_a_coming_midnight(datetime.now(UTC))
        running.publish(a_week_earlier(now))
        running.publish(history(now))
        # globex spends this hour too, whatever the time of day (history may be yesterday).
        running.publish(current_hour(now, "globex", "gpt-4o-mini", 1000, 10, "summarize"))
        running.publish(current_hour(now, "acme", "gpt-4o", 20_000, 60))
        wait_for(lambda: pagerduty.requests, timeout=120)
        wait_for(
            lambda: running.query(
                "SELECT count() FROM alert_deliveries FINAL WHERE outcome = 'delivered'"
            )[0][0],
            timeout=60,
        )
        yield running
    finally:
        embedded.stop()
        loop.stop(pagerduty)
        loop.close()


@dataclass
class Dashboard:
    page: Any
    problems: list[str]


def open_dashboard(browser: Any, url: str) -> Dashboard:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on(
        "console",
        lambda message: (
            problems.append(f"{message.type}: {message.text}")
            if message.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.goto(url + "/?refresh=1&period=day")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", TOKEN)
    page.click("#login button[type=submit]")
    page.wait_for_selector("[data-testid=now-day] .figure[data-value]")
    return Dashboard(page, problems)


def today_start() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d 00:00:00")


def test_data_endpoints_refuse_a_request_without_the_token(stack: Stack) -> None:
    for path in ("now", "who?by=team", "budgets", "alerts", "movers", "series.svg", "dead_letters"):
        refused = httpx.get(f"{stack.url}/v1/dashboard/{path}", timeout=30)
        assert refused.status_code == 401, path
        answered = httpx.get(
            f"{stack.url}/v1/dashboard/{path}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert answered.status_code == 200, (path, answered.text)
    # The page holds no figures; it is what asks for the token.
    assert httpx.get(stack.url + "/", timeout=30).status_code == 200


def test_page_loads_without_console_errors_and_shows_the_ledgers_figures(
    browser: Any, stack: Stack
) -> None:
    dashboard = open_dashboard(browser, stack.url)
    page = dashboard.page
    (today,) = stack.query(
        f"SELECT sum(cost_usd) FROM usage_ledger FINAL WHERE timestamp >= '{today_start()}'"
    )[0]
    shown = page.locator("[data-testid=now-day] .figure")
    assert Decimal(shown.get_attribute("data-value")) == today
    assert shown.inner_text() == f"${today.quantize(Decimal('0.01')):,.2f}"
    (rows,) = stack.query("SELECT count() FROM usage_ledger")[0]
    assert page.locator("[data-testid=ledger-rows]").get_attribute("data-value") == str(rows)

    tenants = dict(
        stack.query(
            "SELECT tenant_id, sum(cost_usd) FROM usage_ledger FINAL "
            f"WHERE timestamp >= '{today_start()}' GROUP BY tenant_id"
        )
    )
    table = page.locator("[data-testid=who-tenant]")
    cells = {
        row.get_attribute("data-key"): Decimal(
            row.locator("td.num").first.get_attribute("data-value")
        )
        for row in table.locator("tbody tr").all()
    }
    assert cells == tenants
    assert page.locator("[data-testid=health]").inner_text() == "pipeline healthy"
    assert page.locator("#chart svg polygon").count() >= 1
    page.close()
    assert dashboard.problems == []


def test_page_updates_when_new_events_arrive(browser: Any, stack: Stack) -> None:
    dashboard = open_dashboard(browser, stack.url)
    page = dashboard.page
    page.evaluate("window.loadedOnce = true")
    before = int(page.locator("[data-testid=ledger-rows]").get_attribute("data-value"))
    stack.publish(current_hour(datetime.now(UTC), "globex", "gpt-4o-mini", 1000, 25))
    (rows,) = stack.query("SELECT count() FROM usage_ledger")[0]
    assert rows == before + 25
    page.wait_for_function(
        f"document.querySelector('[data-testid=ledger-rows]').dataset.value === '{rows}'",
        timeout=30_000,
    )
    (today,) = stack.query(
        f"SELECT sum(cost_usd) FROM usage_ledger FINAL WHERE timestamp >= '{today_start()}'"
    )[0]
    page.wait_for_function(
        "expected => document.querySelector('[data-testid=now-day] .figure').dataset.value"
        " === expected",
        arg=format(today.normalize(), "f"),
        timeout=30_000,
    )
    assert page.evaluate("window.loadedOnce") is True  # no reload
    page.close()
    assert dashboard.problems == []


def test_drills_down_from_a_tenant_to_its_workflows_and_models(browser: Any, stack: Stack) -> None:
    dashboard = open_dashboard(browser, stack.url)
    page = dashboard.page
    page.locator("[data-testid=who-tenant] tr[data-key=acme]").click()
    page.wait_for_selector("[data-testid=who-workflow]")
    for by, column in (("workflow", "workflow_id"), ("model", "model")):
        want = dict(
            stack.query(
                f"SELECT {column}, sum(cost_usd) FROM usage_ledger FINAL "
                f"WHERE tenant_id = 'acme' AND timestamp >= '{today_start()}' GROUP BY {column}"
            )
        )
        rows = page.locator(f"[data-testid=who-{by}] tbody tr").all()
        shown = {
            row.get_attribute("data-key"): Decimal(
                row.locator("td.num").first.get_attribute("data-value")
            )
            for row in rows
        }
        assert shown == want, by
    assert "acme" in page.locator("#drill-tenant").inner_text()
    page.click("#drill-back")
    page.wait_for_selector("[data-testid=who-tenant]")
    page.close()
    assert dashboard.problems == []


def test_why_it_moved_shows_drivers_that_sum_to_the_change(browser: Any, stack: Stack) -> None:
    """globex spent in both spans: its change is split into every driver. acme had no
    spend a week earlier: one line of new spend. globex's `legacy` workflow stopped."""
    dashboard = open_dashboard(browser, stack.url)
    page = dashboard.page
    page.wait_for_selector("#mover-list .mover")
    movers = {m.get_attribute("data-key"): m for m in page.locator("#mover-list .mover").all()}
    assert {"acme", "globex", "legacy"} <= set(movers)
    for mover in movers.values():
        change = Decimal(mover.locator("[data-testid=mover-change]").get_attribute("data-value"))
        drivers = mover.locator(".driver").all()
        names = [d.get_attribute("data-driver") for d in drivers]
        if names in (["new_spend"], ["stopped"]):
            (part,) = [
                Decimal(d.locator("[data-value]").get_attribute("data-value")) for d in drivers
            ]
        else:
            assert names == list(FACTORS)
            parts = [Decimal(d.locator(".num").first.get_attribute("data-value")) for d in drivers]
            part = sum(parts, Decimal(0))
        assert part == change != 0

    def line(key: str) -> tuple[list[str | None], str]:
        drivers = movers[key].locator(".driver").all()
        return [d.get_attribute("data-driver") for d in drivers], drivers[0].inner_text()

    (acme,) = stack.query(
        "SELECT sum(cost_usd) FROM usage_ledger FINAL "
        f"WHERE tenant_id = 'acme' AND timestamp >= '{today_start()}'"
    )[0]
    new = f"${acme.quantize(Decimal('0.01')):,.2f}"
    assert line("acme") == (["new_spend"], f"new spend: {new} (no spend in the previous period)")
    (legacy,) = stack.query(
        "SELECT sum(cost_usd) FROM usage_ledger FINAL WHERE workflow_id = 'legacy'"
    )[0]
    assert line("legacy") == (["stopped"], f"stopped: −${legacy.quantize(Decimal('0.01')):,.2f}")
    assert line("globex")[0] == list(FACTORS)
    page.close()
    assert dashboard.problems == []


def test_shows_the_paged_incident_with_its_cause(browser: Any, stack: Stack) -> None:
    (fingerprint, severity, cause, query), *_ = stack.query(
        "SELECT fingerprint, severity, cause, query FROM alerts FINAL "
        "WHERE detector = 'contract_hourly' ORDER BY recorded_at DESC"
    )
    channels = stack.query(
        "SELECT DISTINCT channel FROM alert_deliveries FINAL "
        f"WHERE fingerprint = '{fingerprint}' AND outcome = 'delivered'"
    )
    assert severity == "critical" and cause and channels
    dashboard = open_dashboard(browser, stack.url)
    page = dashboard.page
    incident = page.locator(f"[data-testid=incident][data-fingerprint='{fingerprint}']")
    incident.wait_for()
    assert "open" in (incident.get_attribute("class") or "")
    assert incident.locator("[data-testid=cause] b").inner_text() == cause
    assert f"{channels[0][0]} delivered" in incident.locator("[data-testid=paged]").inner_text()
    incident.locator("summary").click()
    assert incident.locator("pre").inner_text().strip() == query.strip()
    page.close()
    assert dashboard.problems == []
    # What the receiver got was the page for this incident.
    assert any(r.body.get("dedup_key") for r in stack.pagerduty.requests)
