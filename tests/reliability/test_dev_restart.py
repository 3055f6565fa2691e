"""Case 16, restart of the whole `spendstream dev` (broker included): SIGKILL, and Ctrl-C,
each followed by a new `dev` on the same data dir (a new in-memory broker, empty
changelogs, a new log epoch).

Traffic for tenants with monthly budgets crosses 50 % before the stop and 100 % after
it. After the restart the spend state is rebuilt from the ledger and the open incidents
from the alerts table, so:
- every tenant's in-stream month-to-date (`/v1/limits`) equals `sum(cost_usd)` of the
  ledger for the month, before and after the second half (off by 0);
- no (detector, key) is paged twice: the 50 % pages of the first run are not repeated
  when the second run's first events find the tenants still between 50 % and 100 %;
- events waited for before the stop are all ledgered (lost 0).
A last burst is published right before the stop and not waited for: what of it is not
in the ledger after the restart is the window the in-memory broker loses (reported;
docs/operations.md). In the SIGKILL case, HTTP ingest with durable ack (the embedded
broker's default) runs up to the kill, a request in flight as it lands: every event
acknowledged 202 before the kill is in the ledger after the restart (lost 0), while the
broker-acknowledged burst sent just before it is the crash window.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from streams.ports import free_port
from tests.helpers.stack import analyst_client, analyst_headers
from tests.helpers.waiting import wait_for
from tests.reliability.conftest import (
    MONTH_START,
    Expectation,
    Tally,
    make_events,
    publish_positions,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

FIRST_LINE = re.compile(r"broker (\S+?),.*?workers? (http://[\d.:]+)")
ALERT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d ALERT \[")
BURST = 300
# Durable-ack HTTP requests posted one after another up to the SIGKILL; the kill lands
# once DURABLE_BEFORE_KILL of them are answered.
DURABLE_REQUESTS, DURABLE_EVENTS, DURABLE_BEFORE_KILL = 40, 20, 5
DEV = [sys.executable, "-m", "streams.cli", "dev"]


class Dev:
    """`spendstream dev` as a user runs it, in its own process."""

    def __init__(self, data_dir: Path, config: Path) -> None:
        self.data_dir = data_dir
        self.lines: list[str] = []
        port = ["--port", str(free_port())]
        self.process = subprocess.Popen(
            [*DEV, "--data-dir", str(data_dir), "--config", str(config), *port],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        match = wait_for(self._started, 120)
        assert match is not None, self.lines
        self.bootstrap, self.url = match.group(1), match.group(2)

    def _started(self) -> re.Match[str] | None:
        if self.process.poll() is not None:
            raise RuntimeError(f"dev exited {self.process.returncode}: {self.lines[-5:]}")
        return next(filter(None, (FIRST_LINE.search(line) for line in list(self.lines))), None)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/stats", timeout=10)
        return dict(response.json()) if response.status_code == 200 else {}

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        client = analyst_client(self.url, self.data_dir)
        try:
            return list(client.query(sql).result_rows)
        finally:
            client.close()

    def publish(self, events: list[dict[str, Any]]) -> None:
        asyncio.run(publish_positions(self.bootstrap, [orjson.dumps(e) for e in events]))

    def wait_counted(self, ids: int, prefix: str, this_run: int) -> None:
        """Until `ids` of ours are ledgered, `this_run` of them by this dev's worker, the
        spend agent took every row it ledgered and every alert it raised is recorded.
        /stats' `ledgered` follows the costed publish, which follows the ledger write
        the query sees: without `this_run` the last rows could still be on their way
        (seen: in-stream off by $2.49 and 5 budget pages not yet written, 1 s later
        exact)."""

        def done() -> bool:
            (ledgered,) = self.query(
                f"SELECT count() FROM usage_ledger FINAL WHERE startsWith(request_id, '{prefix}')"
            )[0]
            stats = self.stats()
            return (
                int(ledgered) >= ids
                and int(stats.get("ledgered", 0)) >= this_run
                and int(stats.get("spend_rows", 0)) >= int(stats.get("ledgered", 0))
                and int(stats.get("alerts_pending", 1)) == 0
            )

        wait_for(done, 300, 0.5)

    def limits(self, tenant: str) -> dict[str, Any] | None:
        response = httpx.get(
            f"{self.url}/v1/limits/{tenant}", headers=analyst_headers(self.data_dir), timeout=10
        )
        return dict(response.json()) if response.status_code == 200 else None

    def stop(self, how: signal.Signals) -> int:
        self.process.send_signal(how)
        return self.process.wait(timeout=120)


async def durable_http_then_kill(
    dev: Dev, batches: list[list[dict[str, Any]]], burst: list[dict[str, Any]]
) -> set[str]:
    """Post `batches` to `/v1/events` (durable ack: the embedded broker's default) one
    after another; once DURABLE_BEFORE_KILL are answered, publish `burst` to the broker
    and SIGKILL dev. Returns the request ids of every event acknowledged 202."""
    acknowledged: set[str] = set()
    answered = 0

    async def post_all(client: httpx.AsyncClient) -> None:
        nonlocal answered
        for batch in batches:
            try:
                answer = await client.post("/v1/events", json=batch)
            except httpx.TransportError:
                return  # dev is gone: this request was in flight, unacknowledged
            assert answer.status_code == 202, answer.text
            assert answer.json()["ack"] == "ledger"
            acknowledged.update(e["request_id"] for e in batch)
            answered += 1

    async with httpx.AsyncClient(base_url=dev.url, timeout=60) as client:
        posting = asyncio.create_task(post_all(client))
        async with asyncio.timeout(120):
            while answered < DURABLE_BEFORE_KILL:
                await asyncio.sleep(0.01)
        await publish_positions(dev.bootstrap, [orjson.dumps(e) for e in burst])
        dev.process.send_signal(signal.SIGKILL)
        await posting
    return acknowledged


def off_by(dev: Dev, tenants: list[str]) -> Decimal:
    """The sum over tenants of |in-stream month-to-date - ledger month sum|."""
    month = MONTH_START.strftime("%Y-%m-%d %H:%M:%S")
    ledger = {
        tenant: Decimal(str(cost))
        for tenant, cost in dev.query(
            "SELECT tenant_id, sum(cost_usd) FROM usage_ledger FINAL "
            f"WHERE timestamp >= toDateTime64('{month}', 3, 'UTC') GROUP BY tenant_id"
        )
    }
    total = Decimal(0)
    for tenant in tenants:
        body = wait_for(partial(dev.limits, tenant), 120)
        assert body is not None
        total += abs(Decimal(body["month_to_date_usd"]) - ledger.get(tenant, Decimal(0)))
    return total


@pytest.fixture(params=["sigkill", "ctrl_c"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    how = signal.SIGKILL if request.param == "sigkill" else signal.SIGINT
    prefix = f"dr{request.param[:2]}-"
    first, second = make_events(600, 161, prefix), make_events(600, 162, prefix)
    burst = [dict(e, request_id=f"{e['request_id']}-b") for e in make_events(BURST, 163, prefix)]
    # A tenant of its own, without a budget: the budgets' pages stay the first/second runs'.
    durable = [
        dict(e, request_id=f"{e['request_id']}-h", tenant_id="durable-http")
        for e in make_events(DURABLE_REQUESTS * DURABLE_EVENTS, 164, prefix)
    ]
    durable_batches = [
        durable[n : n + DURABLE_EVENTS] for n in range(0, len(durable), DURABLE_EVENTS)
    ]
    # Only this month's events count toward a month's budget.
    expected = Expectation.of(
        e for e in first + second if str(e["timestamp"]) >= MONTH_START.isoformat()
    )
    tenants = sorted(expected.cost_by_tenant)
    budgets = {
        t: (c * Decimal("0.9")).quantize(Decimal("0.01"))
        for t, c in expected.cost_by_tenant.items()
    }
    config = tmp_path / "config.yaml"
    config.write_text(
        "tenants:\n"
        + "".join(f"  {t}: {{monthly_budget_usd: {b}}}\n" for t, b in budgets.items() if b > 0)
        + "detectors: {online: {enabled: false}, "
        "contract: {monthly_thresholds: [0.5, 1], forecast: false}}\n"
    )
    data_dir = tmp_path / "data"
    dev = Dev(data_dir, config)
    try:
        dev.publish(first)
        dev.wait_counted(len(first), prefix, len(first))
        before_stop = off_by(dev, tenants)
        acknowledged: set[str] = set()
        if how == signal.SIGKILL:
            acknowledged = asyncio.run(durable_http_then_kill(dev, durable_batches, burst))
            code = dev.process.wait(timeout=120)
        else:
            dev.publish(burst)
            code = dev.stop(how)
        restarted_at = datetime.now(UTC)
        dev = Dev(data_dir, config)
        restarted_off_by = off_by(dev, tenants)
        dev.publish(second)
        dev.wait_counted(len(first) + len(second), prefix, len(second))
        yield {
            "case": request.param,
            "dev": dev,
            "prefix": prefix,
            "tenants": tenants,
            "ids": {e["request_id"] for e in first + second},
            "burst": {e["request_id"] for e in burst},
            "durable_acknowledged": acknowledged,
            "exit_code": code,
            "restarted_at": restarted_at,
            "before_stop_off_by": before_stop,
            "restarted_off_by": restarted_off_by,
        }
    finally:
        if dev.process.poll() is None:
            dev.stop(signal.SIGINT)


def test_a_restarted_dev_counts_the_ledger_exactly_and_pages_nothing_twice(
    case: dict[str, Any],
) -> None:
    dev: Dev = case["dev"]
    prefix = case["prefix"]
    final_off_by = off_by(dev, case["tenants"])
    ledgered = {
        request_id
        for (request_id,) in dev.query(
            f"SELECT request_id FROM usage_ledger FINAL WHERE startsWith(request_id, '{prefix}')"
        )
    }
    # An escalation (warning, then critical) pages the same incident again by design;
    # a repeat is a second page at the same severity.
    pages = dev.query(
        "SELECT detector, key, severity, count() FROM alerts FINAL WHERE state = 'triggered' "
        f"AND startsWith(tenant_id, '{prefix}') GROUP BY detector, key, severity"
    )
    repeated = sum(int(n) - 1 for *_, n in pages if int(n) > 1)
    (resolved,) = dev.query(
        "SELECT count() FROM alerts FINAL WHERE state = 'resolved' "
        f"AND startsWith(tenant_id, '{prefix}')"
    )[0]
    lost = len(case["ids"] - ledgered)
    burst_lost = len(case["burst"] - ledgered)
    acknowledged: set[str] = case["durable_acknowledged"]
    durable_lost = len(acknowledged - ledgered)
    offered = case["ids"] | case["burst"] | acknowledged
    durable = (
        {
            f"events lost for durable-ack HTTP ({len(acknowledged)} acknowledged 202 "
            "before the kill)": durable_lost
        }
        if case["case"] == "sigkill"
        else {}
    )
    Tally(
        f"dev restart after {case['case']}",
        len(offered),
        len(ledgered & offered),
        lost + burst_lost + durable_lost,
        0,
        {
            "in-stream off by (before stop, after restart, at end)": (
                f"{case['before_stop_off_by']}, {case['restarted_off_by']}, {final_off_by}"
            ),
            "pages": len(pages),
            "pages repeated": repeated,
            "incidents resolved": resolved,
            "events waited for lost": lost,
            f"burst of {BURST} broker-acknowledged just before the stop, lost": burst_lost,
            **durable,
            "dev exit code": case["exit_code"],
        },
    ).report()
    assert case["before_stop_off_by"] == case["restarted_off_by"] == final_off_by == 0
    assert repeated == 0
    assert {page[0] for page in pages} >= {"budget_50pct", "budget_100pct"}
    assert lost == 0
    assert durable_lost == 0
    if case["case"] == "sigkill":
        assert len(acknowledged) >= DURABLE_BEFORE_KILL * DURABLE_EVENTS
    if case["case"] == "ctrl_c":
        assert case["exit_code"] == 0


def test_a_restarted_dev_prints_only_the_alert_states_of_its_own_run(
    case: dict[str, Any],
) -> None:
    """The first run's pages are in the alerts table, not printed again by the second
    `dev` as if they were new: it prints the states recorded since it started."""
    dev: Dev = case["dev"]
    since = case["restarted_at"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    ((earlier,),) = dev.query(
        f"SELECT count() FROM alerts WHERE recorded_at < toDateTime64('{since}', 3, 'UTC')"
    )
    assert int(earlier) > 0  # the first run paged (its 50 % budget pages)

    def printed_and_recorded() -> tuple[int, int] | None:
        printed = sum(1 for line in list(dev.lines) if ALERT_LINE.match(line))
        ((recorded,),) = dev.query(
            f"SELECT count() FROM alerts WHERE recorded_at >= toDateTime64('{since}', 3, 'UTC')"
        )
        return (printed, int(recorded)) if printed == int(recorded) else None

    wait_for(printed_and_recorded, 30)
