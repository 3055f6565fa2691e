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


# Not in `make test` (`make test-scenarios`): replayed into fresh data dirs, the same
# events page a control tenant in some runs (a baseline learned from partial hours);
# issue 19's determinism work is to find why and bring this case back.
@pytest.mark.integration
@pytest.mark.scenarios
def test_three_scenarios_through_replay_page_each_incident_with_its_cause_and_no_control(
    tmp_path: Path,
) -> None:
    scenarios, first, days = generate(count=4, days=8, seed=19)
    chosen = [s for s in scenarios if s.tenants[0].kind in CAUSED_HERE]
    events, config = build(chosen, first, days, seed=19)
    result = score(chosen, replay(events, config, tmp_path), days)
    assert result["control_pages"] == 0, result["false_pages"]
    assert result["recall"] == 1.0, result["missed"]
    assert result["precision"] == 1.0, result["false_pages"]
    assert result["cause_accuracy"] == 1.0


CAUSED_HERE = {"model_substitution", "prompt_expansion", "genuine_adoption"}
