"""Auditable figures: every figure of a spend alert is what its attached ClickHouse
query returns over the ledger. Eight days of traffic for an office-hours tenant (busy
afternoons, quiet nights and weekends: the issue's falsely paged case) and a steady
tenant that spikes are counted by the worker's spend tables and monitor in event-time
order, and ledgered in the real ClickHouse engine (chdb); each alert's query is run
there and its row compared with the alert's observed, baseline, threshold and ratio."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from detectors.finding import Finding
from schemas.ledger import LedgerRow
from schemas.spend_config import SpendConfig
from streams.cost.rows import costed_event
from streams.ledger.connect import ClickHouseHandle
from streams.spend.monitor import SpendMonitor
from streams.spend.tables import SpendTables
from tests.helpers.retention import keep_rows_of
from tests.spend.test_ledger_state import insert

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)
DAYS = 9
SPIKE = MONDAY + timedelta(days=8, hours=14)


def office_hour_spend(at: datetime, rng: random.Random) -> float:
    """Busy afternoons, lighter mornings, near-idle nights and weekends."""
    if at.weekday() >= 5 or not 8 <= at.hour < 19:
        return 0.02 if rng.random() < 0.4 else 0.0
    return (1.7 if 13 <= at.hour < 17 else 0.6) * rng.uniform(0.8, 1.2)


def steady_hour_spend(at: datetime, rng: random.Random) -> float:
    spend = 2.0 * rng.uniform(0.8, 1.2)
    return spend * 12 if SPIKE <= at < SPIKE + timedelta(hours=1) else spend


def traffic(seed: int = 19) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for tenant, spend_of in (("office", office_hour_spend), ("steady", steady_hour_spend)):
        for n in range(DAYS * 24):
            at = MONDAY + timedelta(hours=n)
            spend = spend_of(at, rng)
            calls = max(1, round(spend * 10)) if spend else 0
            for i in range(calls):
                cost = Decimal(str(round(spend / calls, 6)))
                rows.append(
                    LedgerRow(
                        request_id=f"{tenant}-{n}-{i}",
                        timestamp=at + timedelta(seconds=(3600 * i) // calls + rng.randint(0, 9)),
                        tenant_id=tenant,
                        team_id="search",
                        user_id=f"u{i % 7}",
                        workflow_id="answer",
                        provider="openai",
                        model="gpt-4o",
                        input_tokens=1000,
                        output_tokens=200,
                        request_count=1,
                        status_code=200,
                        cost_usd=cost,
                        source_partition=0,
                        source_offset=len(rows),
                        ingested_at=at,
                    ).model_dump()
                )
    return rows


def run_monitor(rows: list[dict[str, Any]], batch: int = 25) -> list[Finding]:
    """The rows of each tenant in event-time order, `batch` to a list, as the worker
    counts a tenant's costed partition."""
    config = SpendConfig.model_validate({"detectors": {"online": {"enabled": False}}})
    tables, monitor = SpendTables({}, {}, {}), SpendMonitor(config)
    findings: list[Finding] = []
    events = sorted(rows, key=lambda r: r["timestamp"])
    for tenant in ("office", "steady"):
        own = [costed_event(r, 0) for r in events if r["tenant_id"] == tenant]
        for start in range(0, len(own), batch):
            result = tables.apply(tenant, own[start : start + batch])
            findings += monitor.observe(tables, tenant, result)
    return findings


def test_every_rolling_median_figure_is_what_its_query_returns(
    ledger_db: ClickHouseHandle,
) -> None:
    rows = traffic()
    keep_rows_of(ledger_db.client, rows)  # dated from a fixed Monday
    insert(ledger_db, rows)
    findings = [f for f in run_monitor(rows) if f.detector == "rolling_median"]

    # The office-hours tenant is never paged; the steady tenant's spike is.
    assert {f.key.split("/")[0] for f in findings} == {"tenant:steady"}
    assert any(f.key == "tenant:steady" and f.window_start == SPIKE for f in findings)
    for finding in findings:
        result = ledger_db.client.query(finding.evidence["query"])
        (row,) = result.named_results()
        evidence = finding.evidence
        assert row["observed"] == finding.value == evidence["spend_usd"]
        assert row["median_usd"] == evidence["median_usd"]
        assert row["same_hour_median_usd"] == evidence["same_hour_median_usd"]
        assert row["baseline_usd"] == evidence["baseline"]
        assert row["threshold_usd"] == finding.threshold
        assert abs(float(row["ratio"]) - evidence["ratio"]) < 1e-9
        assert row["active_hours"] == evidence["active_hours"]
        if finding.key == "tenant:steady":
            # Why it moved: the parts sum to the change to the cent; one model, the
            # same calls' size and price: the spike is volume (calls).
            parts = {k: Decimal(v) for k, v in evidence["why_it_moved_usd"].items()}
            assert sum(parts.values()) == Decimal(evidence["why_it_moved_change_usd"])
            assert max(parts, key=lambda k: parts[k]) == "volume"


def runaway_rows() -> list[dict[str, Any]]:
    """A tenant with a $3,000 month spending evenly, then $120 an hour from noon."""
    rows = []
    for m in range(24 * 60):
        at = MONDAY + timedelta(minutes=m, seconds=17)
        rows.append(
            LedgerRow(
                request_id=f"burn-{m}",
                timestamp=at,
                tenant_id="burner",
                provider="openai",
                model="gpt-4o",
                input_tokens=1000,
                output_tokens=200,
                request_count=1,
                status_code=200,
                cost_usd=Decimal("0.07") if m < 12 * 60 else Decimal("2.00"),
                source_partition=0,
                source_offset=m,
                ingested_at=at,
            ).model_dump()
        )
    return rows


def test_every_burn_rate_figure_is_what_its_query_returns(ledger_db: ClickHouseHandle) -> None:
    rows = runaway_rows()
    keep_rows_of(ledger_db.client, rows)  # dated from a fixed Monday
    insert(ledger_db, rows)
    config = SpendConfig.model_validate(
        {
            "detectors": {"online": {"enabled": False}},
            "tenants": {"burner": {"monthly_budget_usd": "3000"}},
        }
    )
    tables, monitor = SpendTables({}, {}, {}), SpendMonitor(config)
    findings: list[Finding] = []
    events = [costed_event(r, 0) for r in rows]
    for start in range(0, len(events), 25):
        result = tables.apply("burner", events[start : start + 25])
        findings += monitor.observe(tables, "burner", result)
    burns = [f for f in findings if f.detector == "budget_burn_rate"]
    assert [f.severity for f in burns] == ["warning", "critical"]
    for finding in burns:
        (row,) = ledger_db.client.query(finding.evidence["query"]).named_results()
        evidence = finding.evidence
        assert row["short_spend_usd"] == evidence["short_spend_usd"]
        assert row["long_spend_usd"] == evidence["long_spend_usd"]
        assert evidence["short_rate_usd_per_hour"] == row["short_spend_usd"] / 1
        assert evidence["long_rate_usd_per_hour"] == row["long_spend_usd"] / 6
        assert row["month_spend_usd"] == evidence["month_spend_usd"]
