"""Three days of traffic with a spike and a monthly budget, replayed into one data dir in
one `spendstream replay`, and into another in two runs split mid-series: the second run
starts a new broker with empty changelogs, so its spend state comes from the ledger and
its open incidents from the alerts table. Both data dirs end with the same spike
incident (same cause, paged once), the same month-to-date and the same `/v1/limits`;
the spike and the budget crossed in the second run fire there, against the baseline
and the month total the first run left in the ledger.

A replay takes seconds of wall time, and the agent counts what arrived together in one
list: which intermediate thresholds fire depends on that batching (one run sees the
whole month at once and pages only the highest threshold crossed), so the comparison
is of the spike and of the 100 % crossing; the 50 % crossed in the first run of the
split is not paged again in the second."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers.stack import (
    RunningStack,
    analyst_headers,
    query_json,
    spendstream,
    write_ndjson,
)
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

HOURS = 72
SPIKE = 60  # the hour of the series with 8x the usual calls
SPLIT = 45
# The series ends in the current hour (its last calls at most minutes ahead of the
# clock): the current month then always holds some of it, even in its first hour.
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
# gpt-4o: 100,000 input x $2.50 + 10,000 output x $10 per MTok.
CALL_COST = Decimal("0.35")


def calls(hour: int) -> int:
    return 80 if hour == SPIKE else 10


def hour_events(hour: int) -> list[bytes]:
    at = START + timedelta(hours=hour)
    return [
        orjson.dumps(
            {
                "request_id": f"split-{hour}-{i}",
                "timestamp": (at + timedelta(seconds=i * 40)).isoformat(),
                "tenant_id": "acme",
                "team_id": "search",
                "workflow_id": "answer",
                "provider": "openai",
                "model": "gpt-4o",
                "input_tokens": 100_000,
                "output_tokens": 10_000,
            }
        )
        for i in range(calls(hour))
    ]


def month_cost() -> Decimal:
    month = datetime.now(UTC).strftime("%Y-%m")
    hours = [h for h in range(HOURS) if f"{START + timedelta(hours=h):%Y-%m}" == month]
    return sum((calls(h) * CALL_COST for h in hours), Decimal(0))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("split")
    # The budget is crossed (100 %) near the end of the series: in the second run.
    budget = (month_cost() * Decimal("0.95")).quantize(Decimal("0.01"))
    config = root / "config.yaml"
    config.write_text(
        f"tenants:\n  acme: {{monthly_budget_usd: {budget}}}\n"
        "detectors: {online: {enabled: false}, "
        "contract: {monthly_thresholds: [0.5, 1], forecast: false}}\n"
    )
    env = {**os.environ, "SPENDSTREAM_CONFIG_FILE": str(config)}
    first = write_ndjson(root / "first.ndjson", [e for h in range(SPLIT) for e in hour_events(h)])
    second = write_ndjson(
        root / "second.ndjson", [e for h in range(SPLIT, HOURS) for e in hour_events(h)]
    )
    whole = write_ndjson(root / "whole.ndjson", [e for h in range(HOURS) for e in hour_events(h)])

    def replay(path: Path, data_dir: Path) -> dict[str, Any]:
        result = spendstream("replay", str(path), "--data-dir", str(data_dir), env=env)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        return dict(orjson.loads(result.stdout.strip().splitlines()[-1]))

    replay(whole, root / "one")
    replay(first, root / "split")
    split_at = datetime.now(UTC)
    replay(second, root / "split")
    yield {"one": root / "one", "split": root / "split", "split_at": split_at, "env": env}


def incidents(data_dir: Path) -> list[dict[str, Any]]:
    return query_json(
        data_dir,
        "SELECT detector, key, severity, cause, toString(window_start) AS window_start, "
        "count() AS pages, max(recorded_at) AS last_page FROM alerts FINAL "
        "WHERE state = 'triggered' GROUP BY detector, key, severity, cause, window_start "
        "ORDER BY detector, key, window_start",
    )


def test_the_split_run_pages_the_same_spike_and_the_budget_once_each(
    runs: dict[str, Any],
) -> None:
    one, split = incidents(runs["one"]), incidents(runs["split"])
    assert all(row["pages"] == 1 for row in one + split)
    assert len({(row["detector"], row["key"]) for row in split}) == len(split)

    def spikes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keep = ("detector", "key", "severity", "cause", "window_start")
        return [{k: row[k] for k in keep} for row in rows if row["detector"] == "rolling_median"]

    # Measured against the first run's hours, read from the ledger by the second.
    assert spikes(split) == spikes(one)
    spike_hour = f"{START + timedelta(hours=SPIKE):%Y-%m-%d %H:%M:%S}"
    assert {row["window_start"][:19] for row in spikes(split)} == {spike_hour}
    crossed = {row["detector"]: row for row in split if row["detector"].startswith("budget")}
    assert "budget_100pct" in {row["detector"] for row in one}
    last_page = datetime.fromisoformat(str(crossed["budget_100pct"]["last_page"]))
    assert last_page.replace(tzinfo=UTC) > runs["split_at"]


def limits(data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    config = {"SPENDSTREAM_CONFIG_FILE": env["SPENDSTREAM_CONFIG_FILE"]}
    running = RunningStack(data_dir, config)
    try:

        def exact() -> dict[str, Any] | None:
            response = httpx.get(
                f"{running.url}/v1/limits/acme", headers=analyst_headers(data_dir), timeout=5
            )
            return dict(response.json()) if response.status_code == 200 else None

        body = wait_for(exact)
        assert body is not None
        return body
    finally:
        running.stop()


def test_month_to_date_and_limits_equal_one_run_and_the_ledger(runs: dict[str, Any]) -> None:
    one, split = limits(runs["one"], runs["env"]), limits(runs["split"], runs["env"])
    (ledger,) = query_json(
        runs["split"],
        "SELECT toString(sum(cost_usd)) AS cost FROM usage_ledger FINAL "
        "WHERE tenant_id = 'acme' AND toStartOfMonth(timestamp) = toStartOfMonth(now())",
    )
    assert Decimal(split["month_to_date_usd"]) == Decimal(ledger["cost"]) == month_cost()
    assert Decimal(one["month_to_date_usd"]) == Decimal(split["month_to_date_usd"])
    assert (one["status"], split["status"]) == ("over", "over")
