"""Every read command gives the same output with the stack running (through the
worker's /v1/query) as with it stopped (the data dir opened directly). The commands
run in this process through the CLI's own entry point.

The reproductions of issue 17: `report weekly --format md|table|html` failed through
the worker on Decimal tuples, `export focus` on a DateTime parameter sent as text.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from streams.cli.main import main
from streams.ledger.connect import clickhouse_session
from streams.ledger.remote import DirectReader, running_worker_url
from streams.settings import chdb_url_for
from tests.analyst import ledger_data as data
from tests.helpers.stack import RunningStack, analyst_client, analyst_headers
from tests.helpers.waiting import wait_for
from tests.ledger.test_remote import EXPECTED, PARAMETERS, TRICKY

pytestmark = pytest.mark.integration

WEEK = ("--week", "2026-W47")
MONTH = ("--month", "2026-11")
DAYS = ("--from", "2026-11-16", "--to", "2026-11-22")


def provider_export(directory: Path) -> Path:
    path = directory / "openai-costs.json"
    results = [{"amount": {"value": "1.25", "currency": "usd"}, "line_item": "gpt-4o"}]
    start = 1_794_441_600  # 2026-11-12T00:00:00Z
    path.write_text(json.dumps({"data": [{"start_time": start, "results": results}]}))
    return path


# Each command's arguments (given the output directory) and how to read its result.
Command = tuple[str, Callable[[Path], tuple[str, ...]], Callable[[Path, str], object]]


def stdout(out: Path, text: str) -> object:
    return text


def file_text(name: str) -> Callable[[Path, str], object]:
    return lambda out, text: (text.replace(str(out), "OUT"), (out / name).read_text())


def parquet_rows(out: Path, text: str) -> object:
    return text.replace(str(out), "OUT"), pq.read_table(out / "focus.parquet").to_pylist()


COMMANDS: list[Command] = [
    ("weekly table", lambda out: ("report", "weekly", *WEEK), stdout),
    ("weekly md", lambda out: ("report", "weekly", *WEEK, "--format", "md"), stdout),
    ("weekly html", lambda out: ("report", "weekly", *WEEK, "--format", "html"), stdout),
    (
        "weekly html files",
        lambda out: ("report", "weekly", *WEEK, "--format", "html", "--out", str(out)),
        file_text("weekly-2026-W47.html"),
    ),
    ("chargeback tenant", lambda out: ("report", "chargeback", *MONTH, "--by", "tenant"), stdout),
    (
        "chargeback team md",
        lambda out: ("report", "chargeback", *MONTH, "--by", "team", "--format", "md"),
        stdout,
    ),
    (
        "focus csv",
        lambda out: ("export", "focus", *MONTH, "--out", str(out / "focus.csv")),
        file_text("focus.csv"),
    ),
    (
        "focus parquet",
        lambda out: ("export", "focus", *MONTH, "--out", str(out / "focus.parquet")),
        parquet_rows,
    ),
    (
        "reconcile",
        lambda out: ("reconcile", str(provider_export(out)), "--provider", "openai"),
        stdout,
    ),
    ("retention", lambda out: ("retention",), stdout),
    (
        "whatif swap json",
        lambda out: ("whatif", *DAYS, "--swap", "gpt-4o=gpt-4o-mini", "--format", "json"),
        stdout,
    ),
    (
        "whatif flex cache",
        lambda out: ("whatif", *DAYS, "--service-tier", "flex", "--cache-hit-rate", "0.5"),
        stdout,
    ),
    (
        "query table",
        lambda out: ("query", "SELECT tenant_id, sum(cost_usd) FROM usage_ledger GROUP BY 1"),
        stdout,
    ),
    (
        "query json",
        lambda out: (
            "query",
            "SELECT day, tenant_id, cost_usd FROM spend_daily ORDER BY ALL LIMIT 20",
            "--format",
            "json",
        ),
        stdout,
    ),
]


def run_all(data_dir: Path, out_root: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    for name, argv, read in COMMANDS:
        out = out_root / name.replace(" ", "-")
        out.mkdir(parents=True)
        printed, errors = io.StringIO(), io.StringIO()
        with redirect_stdout(printed), redirect_stderr(errors):
            code = main([*argv(out), "--data-dir", str(data_dir)])
        # Exit 1 is reconcile's "a difference needs checking", not a failure.
        assert code in (0, 1) and not errors.getvalue(), f"{name}: {errors.getvalue()}"
        results[name] = (code, read(out, printed.getvalue()))
    return results


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.write_data_dir(tmp_path_factory.mktemp("spendstream"))


def test_every_read_command_gives_the_same_output_through_the_worker(
    data_dir: Path, tmp_path: Path
) -> None:
    stack = RunningStack(data_dir)
    try:
        # The worker announces itself once it has opened ClickHouse, after it answers /stats.
        assert wait_for(lambda: running_worker_url(data_dir)) == stack.url
        remote = analyst_client(stack.url, data_dir)
        try:
            tricky = remote.query(TRICKY, PARAMETERS)
            sql = "SELECT count() FROM usage_ledger WHERE timestamp >= {start:DateTime64(3, 'UTC')}"
            counted = remote.query(sql, {"start": datetime(2026, 11, 1, tzinfo=UTC)})
        finally:
            remote.close()
        through_worker = run_all(data_dir, tmp_path / "running")
        swap = {"substitutions": [{"from": "gpt-4o", "to": "gpt-4o-mini"}]}
        whatif_over_http = httpx.post(
            f"{stack.url}/v1/whatif",
            json={"from": DAYS[1], "to": DAYS[3], "scenario": swap},
            headers=analyst_headers(data_dir),
            timeout=60,
        )
        whatif_refusals = [
            httpx.post(
                f"{stack.url}/v1/whatif",
                json=body,
                headers=analyst_headers(data_dir) if headers is None else headers,
                timeout=60,
            )
            for body, headers in (
                ({"from": DAYS[1], "to": DAYS[3]}, {}),  # no token
                ({"from": DAYS[1], "to": DAYS[3], "scenario": {"pricing": "/etc/passwd"}}, None),
                ({"from": "2020-01-01", "to": "2026-11-22"}, None),  # over a year
                ({"from": DAYS[3], "to": DAYS[1]}, None),
            )
        ]
        refused = io.StringIO()
        with redirect_stderr(refused):
            code = main(["query", "DROP TABLE usage_ledger", "--data-dir", str(data_dir)])
    finally:
        stack.stop()
    assert running_worker_url(data_dir) is None
    direct = run_all(data_dir, tmp_path / "stopped")
    with clickhouse_session(chdb_url_for(data_dir)) as handle:
        reader = DirectReader(handle.client)
        assert tricky.result_rows == reader.query(TRICKY, PARAMETERS).result_rows
        assert tricky.result_rows == [tuple(EXPECTED.values())]
        assert (
            counted.result_rows
            == reader.query(sql, {"start": datetime(2026, 11, 1, tzinfo=UTC)}).result_rows
        )
    for name in direct:
        assert through_worker[name] == direct[name], name
    # POST /v1/whatif answers what `whatif --format json` prints, and refuses the rest.
    assert whatif_over_http.status_code == 200, whatif_over_http.text
    code_printed = direct["whatif swap json"][1]
    assert isinstance(code_printed, str)
    assert whatif_over_http.json() == json.loads(code_printed)
    assert whatif_over_http.json()["total"]["calls_affected"] > 0
    assert [r.status_code for r in whatif_refusals] == [401, 400, 400, 400]
    # A refusal through the worker is one line, its reason said once.
    assert code == 2
    line = refused.getvalue()
    assert line.startswith("spendstream: query failed: ") and line.count("\n") == 1
    assert line.count("query failed") == 1 and "HTTP 400" in line
    weekly = direct["weekly table"][1]
    assert isinstance(weekly, str) and weekly.startswith("Weekly review 2026-W47")
    focus_rows = direct["focus parquet"][1][1]
    assert len(focus_rows) > 100
