"""The analyst CLI commands, run through argparse against an embedded data dir."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from streams.cli.analyst import add_analyst_commands
from streams.errors import ConfigError
from streams.ledger.connect import clickhouse_session
from streams.settings import chdb_url_for
from tests.analyst import ledger_data as data

URL_ENV = "SPENDSTREAM_CLICKHOUSE_URL"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.write_data_dir(tmp_path_factory.mktemp("spendstream"))


@pytest.fixture(autouse=True)
def no_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="spendstream")
    add_analyst_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_report_weekly_prints_the_table(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert run("report", "weekly", "--week", "2026-W47", "--data-dir", str(data_dir)) == 0
    out = capsys.readouterr().out
    assert out.startswith("Weekly review 2026-W47")
    assert "Top 5 tenants by spend" in out


def test_report_weekly_html_is_written_with_its_charts(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = run(
        "report", "weekly", "--week", "2026-W47", "--format", "html",
        "--out", str(tmp_path), "--data-dir", str(data_dir),
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == [
        "weekly-2026-W47.html",
        "weekly-2026-W47-tenants.png",
        "weekly-2026-W47-models.png",
    ]
    assert all(Path(p).stat().st_size > 1000 for p in printed)


def test_report_chargeback_csv(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(
        "report", "chargeback", "--month", "2026-11", "--by", "tenant",
        "--data-dir", str(data_dir),
    ) == 0  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {row["tenant"] for row in rows} == set(data.TENANTS)


def test_export_focus_parquet(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "nov.parquet"
    code = run(
        "export", "focus", "--month", "2026-11", "--out", str(out), "--data-dir", str(data_dir)
    )
    assert code == 0
    table = pq.read_table(out)
    assert capsys.readouterr().out.startswith(f"{table.num_rows} FOCUS rows for 2026-11")


def test_reprice_twice_writes_corrections_once(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    prices = str(data.pricing_file(tmp_path, data.NEW_PRICES))
    argv = ("reprice", "--from", "2026-11-01", "--to", "2026-11-30", "--pricing", prices)
    assert run(*argv, "--data-dir", str(data_dir)) == 0
    first = capsys.readouterr().out
    assert " 0 corrections" not in first and "newly priced" in first
    assert run(*argv, "--data-dir", str(data_dir)) == 0
    assert " 0 corrections (0 newly priced), net $0.00" in capsys.readouterr().out


def test_reconcile_exit_code_says_whether_a_difference_needs_checking(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with clickhouse_session(chdb_url_for(data_dir)) as handle:
        rows = handle.client.query(
            "SELECT model, sum(cost_usd) FROM model_daily "
            "WHERE provider = 'openai' AND day = '2026-11-12' GROUP BY model"
        ).result_rows
    start = 1_794_441_600  # 2026-11-12T00:00:00Z

    def export(factor: str) -> Path:
        results = [
            {"amount": {"value": str(cost * json.loads(factor)), "currency": "usd"}, "line_item": m}
            for m, cost in rows
        ]
        path = tmp_path / f"openai-{factor}.json"
        path.write_text(json.dumps({"data": [{"start_time": start, "results": results}]}))
        return path

    assert (
        run("reconcile", str(export("1")), "--provider", "openai", "--data-dir", str(data_dir)) == 0
    )
    assert "0 over 2%" in capsys.readouterr().out
    assert (
        run("reconcile", str(export("2")), "--provider", "openai", "--data-dir", str(data_dir)) == 1
    )
    assert "CHECK" in capsys.readouterr().out


def test_retention_shows_the_ttls(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert run("retention", "--data-dir", str(data_dir)) == 0
    raw_days = data.raw_days_kept()  # 90, the default, while the data is younger
    assert f"usage_ledger: toDateTime(timestamp) + toIntervalDay({raw_days})" in (
        capsys.readouterr().out
    )


def test_clickhouse_url_from_the_environment_wins(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(URL_ENV, chdb_url_for(data_dir))
    assert run("report", "weekly", "--week", "2026-W47", "--data-dir", "/nonexistent") == 0
    assert "Weekly review" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("report", "weekly", "--data-dir", "/nonexistent"), "no ClickHouse data in /nonexistent"),
        (("report", "weekly", "--week", "2026-47"), "not an ISO week like 2026-W47"),
        (("report", "chargeback", "--month", "2026-13", "--by", "team"), "not a month"),
        (("reprice", "--from", "2026-11-30", "--to", "2026-11-01"), "before --from"),
    ],
)
def test_mistakes_are_one_clear_line(data_dir: Path, argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run(*argv, *([] if "--data-dir" in argv else ["--data-dir", str(data_dir)]))
