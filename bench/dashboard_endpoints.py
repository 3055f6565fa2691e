"""Benchmark: each dashboard panel's data endpoint over a large ledger in chdb.

    python -m bench.dashboard_endpoints --rows 10000000

Builds the ledger of bench.analyst_weekly (N rows over the last 8 weeks, up to now;
200 tenants, 4 workflows each, 5 models, the rollups built by their backfill), adds
2,000 alert states with deliveries and 20,000 dead letters, and gives every tenant a
budget. It waits for the background merges of that bulk load to finish (a ledger
built over weeks has none pending; timed during them, every figure measures the
merges too). Then each endpoint's work (the panel's ClickHouse reads and the JSON
encoding, what the worker runs on its ClickHouse thread for one request; not the HTTP
round trip) is timed `--runs` times per parameter set after one warm-up call, each
time after ten new calls for now went into the ledger (as live traffic does). Target:
the slowest median of any endpoint ≤ 200 ms over 10,000,000 rows.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bench.analyst_weekly import create_ledger, load, settle
from detectors.spike_cause import SpikeCauseClassifier
from schemas.spend_config import TenantConfig
from streams.dashboard import panels
from streams.dashboard.sources import Ledger
from streams.dashboard.svg import stacked_area
from streams.ledger.connect import clickhouse_session
from streams.ledger.migrations import apply_migrations
from streams.settings import chdb_url_for

ALERTS = """
INSERT INTO alerts
SELECT
    concat('fp-', toString(intDiv(number, 2))), 'rolling_median',
    concat('tenant:tenant-', toString(number % 200)), concat('tenant-', toString(number % 200)),
    '', '', if(number % 7 = 0, 'critical', 'warning'),
    if(number % 2 = 1 AND number % 10 != 1, 'resolved', 'triggered'),
    'tenant spent more than usual', toDecimal128(12.5, 18), toDecimal128(5, 18),
    toDecimal128(2.1, 18), 'usd', 'model_substitution',
    '{"cause":"model_substitution","cause_ratios":{"cost":5.9,"cost_per_token":4.1},"ratio":5.9}',
    'SELECT 1', now64(3) - toIntervalHour(intDiv(number, 2) % 300),
    now64(3) - toIntervalHour(intDiv(number, 2) % 300 - 1),
    now64(3) - toIntervalHour(intDiv(number, 2) % 300), NULL,
    now64(3) - toIntervalHour(intDiv(number, 2) % 300) + toIntervalMinute(number % 2 * 30)
FROM numbers(2000)
"""

DELIVERIES = """
INSERT INTO alert_deliveries
SELECT concat('fp-', toString(number)), 'pagerduty', 'trigger', 1, 'delivered', 202, '',
    NULL, now64(3) - toIntervalHour(number % 300)
FROM numbers(1000)
"""

DEAD_LETTERS = """
INSERT INTO dead_letters
SELECT 'bench', 'spendstream.usage', toInt32(number % 4), toInt64(number), -1,
    ['schema_invalid', 'json_invalid', 'tokens_absurd'][1 + number % 3],
    'input_tokens: Input should be a valid integer', '{}', 2, concat('bad-', toString(number)),
    concat('tenant-', toString(number % 200)), now64(3) - toIntervalSecond(number * 30)
FROM numbers(20000)
"""


# Ten new calls for now before each timed request, as live traffic adds them: today's
# duplicate check is made again whenever today's row count moves.
LIVE = """
INSERT INTO usage_ledger
SELECT * REPLACE (concat('live-', toString(generateUUIDv4())) AS request_id, now64(3) AS timestamp)
FROM usage_ledger LIMIT 10
"""


def endpoints(now: Callable[[], datetime]) -> dict[str, Callable[[Ledger], Any]]:
    """Endpoint (as the docs write it) -> the work the worker does for one request."""
    tenants = {
        f"tenant-{n}": TenantConfig(
            monthly_budget_usd=Decimal(1000 + 10 * n), contracted_hourly_budget_usd=Decimal(50)
        )
        for n in range(200)
    }
    classifier = SpikeCauseClassifier()
    work: dict[str, Callable[[Ledger], Any]] = {
        "now": lambda c: panels.now_spend(c, now()),
        "budgets": lambda c: panels.budgets(c, tenants, now()),
        "alerts": lambda c: panels.alerts(c, now()),
        "dead_letters": panels.dead_letters,
    }
    for period in panels.PERIODS:
        for by in panels.DIMENSIONS:
            work[f"who?by={by}&period={period}"] = lambda c, b=by, p=period: panels.who(
                c, b, p, now()
            )
        work[f"who?by=workflow&period={period}&tenant=tenant-0"] = lambda c, p=period: panels.who(
            c, "workflow", p, now(), "tenant-0"
        )
        work[f"movers?period={period}"] = lambda c, p=period: panels.movers(c, classifier, p, now())
        for by in ("tenant", "model", "user"):
            work[f"series?by={by}&period={period}"] = lambda c, b=by, p=period: panels.series(
                c, b, p, now()
            )
        work[f"series.svg?by=team&period={period}"] = lambda c, p=period: stacked_area(
            panels.series(c, "team", p, now())
        )
    return work


def time_endpoint(
    ledger: Ledger, work: Callable[[Ledger], Any], runs: int
) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each run. CPU is this process's, chdb's threads included:
    on a shared machine it moves far less with the load than the wall time does."""
    orjson.dumps(work(ledger), default=str)  # warm-up: first reads of the parts
    seconds = []
    for _ in range(runs):
        ledger.client.command(LIVE)
        started, cpu = time.perf_counter(), time.process_time()
        answer = work(ledger)
        if not isinstance(answer, str):
            orjson.dumps(answer, default=str)
        seconds.append((time.perf_counter() - started, time.process_time() - cpu))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000,000 rows")
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    args = parser.parse_args()
    rows = 1_000_000 if args.quick else args.rows
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    shutil.rmtree(data_dir / "clickhouse", ignore_errors=True)
    try:
        with clickhouse_session(chdb_url_for(data_dir)) as handle:
            client = handle.client
            started = time.perf_counter()
            create_ledger(client)
            load(client, rows)
            apply_migrations(client)
            for statement in (ALERTS, DELIVERIES, DEAD_LETTERS):
                client.command(statement)
            built = time.perf_counter() - started
            settled = settle(client)
            # One Ledger for the run, as the worker keeps one: its day checks are
            # remembered between requests (today's is made again whenever it grows).
            ledger = Ledger(client)
            timings = {
                name: time_endpoint(ledger, work, args.runs)
                for name, work in endpoints(lambda: datetime.now(UTC)).items()
            }
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    medians = {name: statistics.median(w for w, _ in s) * 1000 for name, s in timings.items()}
    slowest = max(medians, key=lambda name: medians[name])
    print(
        orjson.dumps(
            {
                "benchmark": "dashboard_endpoints",
                "rows": rows,
                "runs": args.runs,
                "build_s": round(built, 1),
                "merges_settled_s": round(settled, 1),
                "slowest": slowest,
                "slowest_median_ms": round(medians[slowest], 1),
                "endpoints_ms": {
                    name: {
                        "median": round(medians[name], 1),
                        "max": round(max(w for w, _ in s) * 1000, 1),
                        "cpu_median": round(statistics.median(c for _, c in s) * 1000, 1),
                    }
                    for name, s in timings.items()
                },
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
