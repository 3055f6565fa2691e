"""The labelled scenario suite, small: three scenarios (a model substitution, a prompt
expansion, a genuine adoption, each beside two controls) through `spendstream replay`
into a fresh data dir, scored from the `alerts` table: each incident paged with its
cause, no control paged. And the scoring itself on hand-made alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.alert_scenarios import Scenario, Tenant, build, generate, replay, score

START = datetime(2026, 12, 3, 11, tzinfo=UTC)


def alert(tenant: str, at: datetime, detector: str = "rolling_median", cause: str = "") -> dict:
    return {
        "tenant_id": tenant,
        "detector": detector,
        "cause": cause,
        "evidence": json.dumps({"as_of": at.isoformat()}),
        "window_start": at.replace(minute=0).isoformat(),
    }


def test_scoring_counts_true_early_and_control_pages() -> None:
    scenarios = [
        Scenario(
            "s00",
            [
                Tenant("a", "prompt_expansion", 8, START),
                Tenant("b", "costly_run", 8, START),
                Tenant("c", "office_hours", 8),
            ],
        )
    ]
    alerts = [
        alert("a", START + timedelta(minutes=12), cause="prompt_expansion"),
        alert("b", START - timedelta(hours=5)),  # before its incident: false
        alert("c", START),  # a control: false
    ]
    result = score(scenarios, alerts, days=7)
    assert (result["precision"], result["recall"]) == (round(1 / 3, 3), 0.5)
    assert result["cause_accuracy"] == 1.0
    assert result["median_minutes_to_page"] == 12.0
    assert result["control_pages"] == 1
    assert result["control_pages_per_tenant_week"] == 1.0


def pages(alerts: list[dict]) -> set[tuple[str, str, str, str, str]]:
    """A replay's pages as (tenant, detector, hour, severity, cause)."""
    return {
        (a["tenant_id"], a["detector"], a["window_start"], a["severity"], a["cause"])
        for a in alerts
    }


@pytest.mark.integration
def test_three_scenarios_replayed_three_times_page_the_same_each_incident_and_no_control(
    tmp_path: Path,
) -> None:
    """Replayed into fresh data dirs, the same events give the same pages: each incident
    with its cause, no control. (A replay hands the worker days of a tenant's calls in
    one list; the monitor once learned them all before judging the first hour, and
    paged a control tenant, a different one from run to run.)"""
    scenarios, first, days = generate(count=4, days=8, seed=19)
    chosen = [s for s in scenarios if s.tenants[0].kind in CAUSED_HERE]
    events, config = build(chosen, first, days, seed=19)
    runs = []
    for n in range(3):
        (tmp_path / str(n)).mkdir()
        runs.append(replay(events, config, tmp_path / str(n)))
    result = score(chosen, runs[0], days)
    assert result["control_pages"] == 0, result["false_pages"]
    assert result["recall"] == 1.0, result["missed"]
    assert result["precision"] == 1.0, result["false_pages"]
    assert result["cause_accuracy"] == 1.0
    assert pages(runs[1]) == pages(runs[0])
    assert pages(runs[2]) == pages(runs[0])


CAUSED_HERE = {"model_substitution", "prompt_expansion", "genuine_adoption"}
