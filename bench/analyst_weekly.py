"""Benchmark: the weekly review on a large ledger in embedded ClickHouse (chdb).

    python -m bench.analyst_weekly --rows 10000000

Builds a fresh ledger of N rows over the last 8 weeks with one INSERT … SELECT
FROM numbers() per chunk (200 tenants with a skewed spend, 4 workflows each,
runs of 8 calls 5 s apart, 5 models, cache reads/writes, reasoning, 2 % of runs
failing on their last call,
Decimal costs). The analyst migrations are applied after the load, so the
rollups are built by their backfill (INSERT … SELECT from the same recompute
views that serve a dirty day): the state the materialized views reach once their
parts are merged. Once the background merges are done (as on a ledger the review
reads on Monday), the weekly review of the last complete ISO week is built
and rendered as HTML with its charts, three times; the result line gives the
best and the median.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

from clickhouse_connect.driver.client import Client

from streams.analyst.periods import last_complete_week
from streams.analyst.weekly_render import render
from streams.analyst.weekly_review import start_weekly_review
from streams.ledger.connect import clickhouse_session
from streams.ledger.migrations import apply_migrations, split_statements
from streams.settings import chdb_url_for

DAYS = 56
CHUNK_ROWS = 2_000_000
# (provider, model, input, cached input, cache write, output) in USD per million
# tokens times 1e6, i.e. picodollars per token: exact integer arithmetic in SQL.
MODELS = (
    "[('openai', 'gpt-4o', 2500000, 1250000, 2500000, 10000000),"
    " ('openai', 'gpt-4o-mini', 150000, 75000, 150000, 600000),"
    " ('anthropic', 'claude-sonnet-4', 3000000, 300000, 3750000, 15000000),"
    " ('anthropic', 'claude-haiku-4', 800000, 80000, 1000000, 4000000),"
    " ('openai', 'o3', 2000000, 500000, 2000000, 8000000)]"
)

LOAD = f"""
INSERT INTO usage_ledger
WITH
    {MODELS} AS models,
    intDiv(number, 8) AS run,
    toUInt32(floor(pow((cityHash64(run, 8) % 1000000) / 1000000, 2) * 200)) AS tenant,
    cityHash64(run, 12) % 4 AS wf,
    concat('wf-', toString(tenant), '-', toString(wf)) AS workflow,
    models[1 + (cityHash64(workflow) + cityHash64(run, 7) % 2) % 5] AS m,
    toUInt32(200 + cityHash64(number, 2) % 8000) AS inp,
    toUInt32(inp * (cityHash64(number, 3) % 50) / 100) AS cached,
    toUInt32(if(m.1 = 'anthropic', inp * (cityHash64(number, 4) % 10) / 100, 0)) AS cw,
    toUInt32(20 + cityHash64(number, 5) % 1500) AS outp,
    toUInt32(if(m.2 = 'o3', outp / 2, 0)) AS reas,
    1000000000000 AS pico
SELECT
    concat('req-', toString(number)),
    toDateTime64({{start_epoch}} + cityHash64(run, 1) % {DAYS * 86400} + number % 8 * 5, 3, 'UTC'),
    concat('tenant-', toString(tenant)),
    concat('team-', toString(tenant), '-', toString(wf % 2)),
    concat('user-', toString(tenant), '-', toString(cityHash64(number, 10) % 25)),
    concat('feature-', toString(cityHash64(workflow) % 6)),
    workflow,
    concat('run-', toString(run)),
    concat('Workflow ', workflow),
    'v1',
    if(cityHash64(number, 13) % 10 = 0, 'staging', 'prod'),
    concat('key-', toString(tenant)),
    m.1, m.2, inp, outp, cached, cw, reas, 1,
    toUInt32(100 + cityHash64(number, 15) % 5000),
    if(number % 8 = 7 AND cityHash64(run, 16) % 50 = 0, 500, 200),
    0, '', NULL, map(),
    toDecimal128((inp - cached - cw) * m.3, 18) / pico,
    toDecimal128(cached * m.4, 18) / pico,
    toDecimal128(cw * m.5, 18) / pico,
    toDecimal128((outp - reas) * m.6, 18) / pico,
    toDecimal128(reas * m.6, 18) / pico,
    toDecimal128((inp - cached - cw) * m.3 + cached * m.4 + cw * m.5 + outp * m.6, 18) / pico,
    toDecimal128(m.3, 12) / 1000000, toDecimal128(m.4, 12) / 1000000,
    toDecimal128(m.5, 12) / 1000000, toDecimal128(m.6, 12) / 1000000,
    toDecimal128(m.6, 12) / 1000000,
    'bench', 'priced', 'spendstream.usage', 0, number, now64(3)
FROM numbers({{first}}, {{count}})
"""


def create_ledger(client: Client) -> None:
    sql = resources.files("sql").joinpath("001_usage_ledger.sql").read_text()
    for statement in split_statements(sql):
        client.command(statement)


def load(client: Client, rows: int) -> None:
    start_epoch = int(time.time()) - DAYS * 86400
    for first in range(0, rows, CHUNK_ROWS):
        count = min(CHUNK_ROWS, rows - first)
        client.command(
            LOAD.format(start_epoch=start_epoch, first=first, count=count),
            settings={"max_insert_threads": 2, "optimize_on_insert": 0},
        )


def settle(client: Client, limit_s: float = 900.0) -> float:
    """Seconds until no background merge runs (at most `limit_s`)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        (running,) = client.query("SELECT count() FROM system.merges").result_rows[0]
        if not running:
            break
        time.sleep(1.0)
    return time.perf_counter() - started


def time_review(client: Client) -> tuple[float, float]:
    """As `spendstream report weekly --format html`: the spend read, then the charts
    drawn while the other sections' queries run, then the page."""
    week = last_complete_week()
    started = time.perf_counter()
    reading = start_weekly_review(client, week)
    spend_read = time.perf_counter()
    render(reading, "html")
    return spend_read - started, time.perf_counter() - spend_read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-analyst-"))
    shutil.rmtree(data_dir / "clickhouse", ignore_errors=True)
    try:
        with clickhouse_session(chdb_url_for(data_dir)) as handle:
            client = handle.client
            started = time.perf_counter()
            create_ledger(client)
            load(client, args.rows)
            loaded = time.perf_counter()
            apply_migrations(client)
            migrated = time.perf_counter()
            # The review on Monday reads parts merged long since: the backfill's
            # background merges (seconds of both cores) are not the review's time.
            settled = settle(client)
            runs = [time_review(client) for _ in range(args.runs)]
        totals = sorted(query + draw for query, draw in runs)
        best = min(runs, key=sum)
        print(
            f"analyst_weekly rows={args.rows} "
            f"weekly_review_s={totals[0]:.2f} (median {statistics.median(totals):.2f}; "
            f"spend read {best[0]:.2f} + charts beside the other queries, html "
            f"{best[1]:.2f}) "
            f"load_s={loaded - started:.1f} rollups_s={migrated - loaded:.1f} "
            f"merges_settled_s={settled:.1f}"
        )
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
