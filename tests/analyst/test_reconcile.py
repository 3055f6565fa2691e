"""Reconciliation flags an injected 5 % gap and passes clean days, for OpenAI and
Anthropic cost exports, as JSON and as flattened CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from streams.analyst.reconcile import (
    ALL_MODELS,
    ReconcileInputError,
    normalize_model,
    read_provider_costs,
    reconcile,
    render,
)
from tests.analyst import ledger_data as data

CLEAN_DAY = date(2026, 11, 10)
GAP_DAY = date(2026, 11, 11)
SNAPSHOTS = {"gpt-4o": "gpt-4o-2024-08-06", "gpt-4o-mini": "gpt-4o-mini-2024-07-18"}


@pytest.fixture(scope="module")
def events(module_ch: Client) -> list[dict[str, Any]]:
    events = data.make_events()
    data.insert(module_ch, events, token="batch-1")
    return events


def ledger_costs(events: list[dict[str, Any]], provider: str) -> dict[tuple[date, str], Decimal]:
    costs: dict[tuple[date, str], Decimal] = {}
    for e in events:
        day = e["timestamp"].date()
        if e["provider"] == provider and day in (CLEAN_DAY, GAP_DAY):
            costs[(day, e["model"])] = costs.get((day, e["model"]), Decimal(0)) + e["cost_usd"]
    return costs


def with_gap(costs: dict[tuple[date, str], Decimal], model: str) -> dict:
    # The provider billed 5 % more than the ledger for one model on GAP_DAY; the
    # model's spend that day is large enough for 5 % to exceed the one-cent floor.
    assert costs[(GAP_DAY, model)] > Decimal("0.5")
    return {
        key: amount * Decimal("1.05") if key == (GAP_DAY, model) else amount
        for key, amount in costs.items()
    }


def epoch(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), UTC).timestamp())


def openai_json(costs: dict[tuple[date, str], Decimal], path: Path) -> Path:
    buckets = []
    for day in sorted({day for day, _ in costs}):
        results = []
        for (d, model), amount in sorted(costs.items()):
            if d != day:
                continue
            # Line items split input and output under the snapshot name.
            input_part = (amount * Decimal("0.3")).quantize(Decimal("1e-10"))
            for suffix, value in ((", input", input_part), (", output", amount - input_part)):
                results.append(
                    {
                        "object": "organization.costs.result",
                        "amount": {"value": float(value), "currency": "usd"},
                        "line_item": SNAPSHOTS[model] + suffix,
                        "project_id": None,
                    }
                )
        buckets.append(
            {
                "object": "bucket",
                "start_time": epoch(day),
                "end_time": epoch(day) + 86_400,
                "results": results,
            }
        )
    page = {"object": "page", "data": buckets, "has_more": False, "next_page": None}
    path.write_text(json.dumps(page))
    return path


def anthropic_json(costs: dict[tuple[date, str], Decimal], path: Path) -> Path:
    data_ = []
    for day in sorted({day for day, _ in costs}):
        results = [
            {
                "currency": "USD",
                "amount": str(amount * 100),  # cents, as the API reports them
                "workspace_id": None,
                "description": f"{model} Usage - Input Tokens",
                "cost_type": "tokens",
                "context_window": "0-200k",
                "model": model,
                "service_tier": "standard",
                "token_type": "uncached_input_tokens",
            }
            for (d, model), amount in sorted(costs.items())
            if d == day
        ]
        data_.append(
            {
                "starting_at": f"{day}T00:00:00Z",
                "ending_at": f"{day}T23:59:59Z",
                "results": results,
            }
        )
    path.write_text(json.dumps([{"data": data_, "has_more": False, "next_page": None}]))
    return path


def check(lines: list, gap: tuple[date, str]) -> None:
    flagged = {(line.day, line.key) for line in lines if line.flagged}
    assert flagged == {(gap[0], normalize_model(gap[1]))}
    assert {line.day for line in lines} == {CLEAN_DAY, GAP_DAY}
    assert all(not line.flagged for line in lines if line.day == CLEAN_DAY)


@pytest.mark.parametrize(
    ("provider", "model", "writer"),
    [
        ("openai", "gpt-4o", openai_json),
        ("anthropic", "claude-sonnet-4", anthropic_json),
    ],
)
def test_json_export_flags_the_five_percent_gap_only(
    module_ch: Client,
    events: list[dict[str, Any]],
    tmp_path: Path,
    provider: str,
    model: str,
    writer: Callable[[dict, Path], Path],
) -> None:
    costs = with_gap(ledger_costs(events, provider), model)
    lines = reconcile(
        module_ch, provider, read_provider_costs(writer(costs, tmp_path / "x.json"), provider)
    )
    check(lines, (GAP_DAY, model))
    gap = next(line for line in lines if line.flagged)
    assert gap.relative is not None
    assert float(gap.relative) == pytest.approx(-0.05 / 1.05, abs=1e-9)
    report = render(lines, provider)
    assert "1 over 2%" in report and "CHECK" in report


def test_openai_csv_export(module_ch: Client, events: list[dict[str, Any]], tmp_path: Path) -> None:
    costs = with_gap(ledger_costs(events, "openai"), "gpt-4o")
    path = tmp_path / "openai.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["start_time", "end_time", "line_item", "project_id", "amount_value"])
        for (day, model), amount in costs.items():
            writer.writerow([epoch(day), epoch(day) + 86_400, SNAPSHOTS[model], "proj_1", amount])
    check(reconcile(module_ch, "openai", read_provider_costs(path, "openai")), (GAP_DAY, "gpt-4o"))


def test_anthropic_csv_export_in_dollars(
    module_ch: Client, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    costs = with_gap(ledger_costs(events, "anthropic"), "claude-sonnet-4")
    path = tmp_path / "anthropic.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["starting_at", "model", "cost_type", "amount_usd", "currency"])
        for (day, model), amount in costs.items():
            writer.writerow([f"{day}T00:00:00Z", model, "tokens", amount, "USD"])
    lines = reconcile(module_ch, "anthropic", read_provider_costs(path, "anthropic"))
    check(lines, (GAP_DAY, "claude-sonnet-4"))


def test_an_export_without_models_is_compared_per_day(
    module_ch: Client, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    costs = ledger_costs(events, "openai")
    totals = {
        day: sum((a for (d, _), a in costs.items() if d == day), Decimal(0))
        for day in {d for d, _ in costs}
    }
    totals[GAP_DAY] *= Decimal("1.05")
    page = {
        "data": [
            {
                "start_time": epoch(day),
                "results": [{"amount": {"value": float(a), "currency": "usd"}}],
            }
            for day, a in totals.items()
        ]
    }
    path = tmp_path / "totals.json"
    path.write_text(json.dumps(page))
    lines = reconcile(module_ch, "openai", read_provider_costs(path, "openai"))
    assert {(line.day, line.key) for line in lines if line.flagged} == {(GAP_DAY, ALL_MODELS)}
    assert len(lines) == 2


def test_unreadable_exports_fail_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ReconcileInputError, match="not JSON"):
        read_provider_costs(path, "openai")
    path.write_text(json.dumps({"data": [{"start_time": 1, "results": [{"amount": {}}]}]}))
    with pytest.raises(ReconcileInputError, match="record 1 is not a openai cost record"):
        read_provider_costs(path, "openai")


def test_model_names_meet_across_snapshots_and_line_items() -> None:
    assert normalize_model("gpt-4o-2024-08-06, input") == "gpt-4o"
    assert normalize_model("GPT-4o-mini") == "gpt-4o-mini"
    assert normalize_model("claude-sonnet-4-20250514") == "claude-sonnet-4"
