"""`spendstream whatif` through argparse against an embedded data dir (its own module:
one process opens one chdb path at a time, and test_whatif.py holds another)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from schemas.ledger import LEDGER_COLUMNS
from streams.cli.analyst import add_analyst_commands
from streams.errors import ConfigError
from streams.ledger.connect import clickhouse_session
from streams.ledger.migrations import apply_migrations
from streams.settings import chdb_url_for
from tests.analyst.test_whatif import AT, PRICES, ledger_rows
from tests.helpers.retention import keep_rows_of


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="spendstream")
    add_analyst_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_the_cli_reports_json_with_exact_amounts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.delenv("SPENDSTREAM_CLICKHOUSE_URL", raising=False)
    pricing = tmp_path / "rates.yaml"
    pricing.write_text(PRICES)
    data_dir = tmp_path / "data"
    with clickhouse_session(chdb_url_for(data_dir)) as handle:
        apply_migrations(handle.client)
        keep_rows_of(handle.client, [{"timestamp": AT}])  # a fixed date
        handle.client.insert(
            "usage_ledger", ledger_rows(pricing), column_names=list(LEDGER_COLUMNS)
        )
    argv = ["whatif", "--from", "2026-11-10", "--to", "2026-11-10", "--data-dir", str(data_dir)]
    swap = ["--swap", "acme/big=small", "--workflow", "classify", "--pricing", str(pricing)]
    assert run(*argv, *swap, "--format", "json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"] == {
        "key": "total",
        "calls": 4,
        "calls_affected": 2,
        "calls_unpriced": 0,
        "actual_usd": "0.0417",
        "scenario_usd": "0.02415",
        "difference_usd": "-0.01755",
    }
    assert [line["key"] for line in out["by_workflow"]] == ["classify", "summarize"]
    assert out["scenario"]["substitutions"] == [
        {"from": "acme/big", "to": "small", "workflow_id": "classify"}
    ]
    assert run(*argv, *swap, "--format", "md") == 0
    assert "## By tenant" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="expected FROM=TO"):
        run(*argv, "--swap", "big")


def test_a_scenario_file_with_a_relative_price_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.delenv("SPENDSTREAM_CLICKHOUSE_URL", raising=False)
    (tmp_path / "rates.yaml").write_text(PRICES)
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(
        "substitutions:\n"
        "  - {from: big, to: small, tenant_id: t2}\n"
        "pricing: rates.yaml\n"
        "service_tier: flex\n"
    )
    data_dir = tmp_path / "data"
    with clickhouse_session(chdb_url_for(data_dir)) as handle:
        apply_migrations(handle.client)
        keep_rows_of(handle.client, [{"timestamp": AT}])  # a fixed date
        handle.client.insert(
            "usage_ledger", ledger_rows(tmp_path / "rates.yaml"), column_names=list(LEDGER_COLUMNS)
        )
    argv = ["whatif", "--from", "2026-11-10", "--to", "2026-11-10", "--data-dir", str(data_dir)]
    assert run(*argv, "--scenario", str(scenario), "--format", "json") == 0
    out = json.loads(capsys.readouterr().out)
    # r3 (t2, big) becomes small: 0.00065; the others at flex where priced: r1 0.0065,
    # r2 0.0085, r4 (small, no flex entry) 0.0052; total 0.02085.
    assert (out["total"]["scenario_usd"], out["total"]["calls_affected"]) == ("0.02085", 3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("cache_hit_rate: 1.5\n")
    with pytest.raises(ConfigError, match="cache_hit_rate"):
        run(*argv, "--scenario", str(bad))
