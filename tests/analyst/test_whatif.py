"""What-if: a period re-priced under a scenario, against figures computed by hand,
and nothing written.

The ledger holds four calls of provider `acme`, priced from a pricing file
(USD per MTok): big = input 10, cached 1, output 30; small = input 1, cached 0.1,
output 3; big at the flex tier = input 5, cached 0.5, output 15.

    r1 t1 classify  big    1000 in,        100 out: 10,000 + 3,000           = 0.013
    r2 t1 summarize big    2000 in (1000 cached), 200 out:
                                    10,000 + 1,000 + 6,000                   = 0.017
    r3 t2 classify  big     500 in,         50 out: 5,000 + 1,500            = 0.0065
    r4 t2 classify  small  4000 in,        400 out: 4,000 + 1,200            = 0.0052
                                                                    actual     0.0417
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from schemas.ledger import LEDGER_COLUMNS
from schemas.scenario import Scenario
from schemas.usage_event import UsageEvent
from streams.analyst.periods import date_range
from streams.analyst.whatif import WhatIf, render, what_if
from streams.cost.catalog import PriceCatalog
from streams.cost.rows import SourcePosition, price_event
from tests.helpers.retention import keep_rows_of

D = Decimal
AT = datetime(2026, 11, 10, 12, tzinfo=UTC)
PERIOD = date_range("2026-11-10", "2026-11-10")
PRICES = """\
prices:
  - {provider: acme, model: big, input: 10, cached_input: 1, output: 30}
  - {provider: acme, model: big, service_tier: flex, input: 5, cached_input: 0.5, output: 15}
  - {provider: acme, model: small, input: 1, cached_input: 0.1, output: 3}
"""
CALLS = [
    ("r1", "t1", "classify", "big", 1000, 0, 100),
    ("r2", "t1", "summarize", "big", 2000, 1000, 200),
    ("r3", "t2", "classify", "big", 500, 0, 50),
    ("r4", "t2", "classify", "small", 4000, 0, 400),
]


@pytest.fixture
def pricing(tmp_path: Path) -> Path:
    path = tmp_path / "rates.yaml"
    path.write_text(PRICES)
    return path


def ledger_rows(pricing: Path) -> list[list[Any]]:
    catalog = PriceCatalog.load(pricing)
    rows = []
    for request_id, tenant, workflow, model, tokens_in, cached, tokens_out in CALLS:
        event = UsageEvent.model_validate(
            {
                "request_id": request_id,
                "timestamp": AT.isoformat(),
                "tenant_id": tenant,
                "workflow_id": workflow,
                "provider": "acme",
                "model": model,
                "input_tokens": tokens_in,
                "cached_tokens": cached,
                "output_tokens": tokens_out,
            },
            context={"now": AT},
        )
        row = price_event(catalog, event, SourcePosition("spendstream.usage", 0, 0), AT)
        rows.append([row[c] for c in LEDGER_COLUMNS])
    return rows


@pytest.fixture
def ledger(ch: Client, pricing: Path) -> Client:
    keep_rows_of(ch, [{"timestamp": AT}])  # a fixed date, kept past the raw TTL
    ch.insert("usage_ledger", ledger_rows(pricing), column_names=list(LEDGER_COLUMNS))
    return ch


def figures(report: WhatIf, group: str) -> dict[str, tuple[Decimal, Decimal, int]]:
    return {line.key: (line.actual, line.scenario, line.affected) for line in report.lines(group)}


def scenario(**fields: Any) -> Scenario:
    return Scenario.model_validate(fields)


def test_a_model_swap_for_one_workflow(ledger: Client, pricing: Path) -> None:
    swap = scenario(substitutions=[{"from": "acme/big", "to": "small", "workflow_id": "classify"}])
    report = what_if(ledger, PriceCatalog.load(pricing), swap, PERIOD)
    # r1 on small: 1,000 + 300 = 0.0013; r3: 500 + 150 = 0.00065; r2 (summarize) and
    # r4 (already small) unchanged: 0.0013 + 0.017 + 0.00065 + 0.0052 = 0.02415.
    total = report.total
    assert (total.actual, total.scenario, total.difference) == (
        D("0.0417"),
        D("0.02415"),
        D("-0.01755"),
    )
    assert (total.calls, total.affected, total.unpriced) == (4, 2, 0)
    assert figures(report, "workflow") == {
        "classify": (D("0.0247"), D("0.00715"), 2),
        "summarize": (D("0.017"), D("0.017"), 0),
    }
    assert figures(report, "tenant") == {
        "t1": (D("0.030"), D("0.0183"), 1),
        "t2": (D("0.0117"), D("0.00585"), 1),
    }
    assert figures(report, "model") == {
        "acme/big": (D("0.0365"), D("0.01895"), 2),
        "acme/small": (D("0.0052"), D("0.0052"), 0),
    }


def test_a_model_swap_for_one_tenant(ledger: Client, pricing: Path) -> None:
    swap = scenario(substitutions=[{"from": "big", "to": "small", "tenant_id": "t2"}])
    report = what_if(ledger, PriceCatalog.load(pricing), swap, PERIOD)
    # Only r3: 0.0065 -> 0.00065, so 0.0417 - 0.00585.
    assert (report.total.scenario, report.total.affected) == (D("0.03585"), 1)


def test_a_cache_hit_rate(ledger: Client, pricing: Path) -> None:
    half = scenario(cache_hit_rate="0.5", pricing=str(pricing))
    report = what_if(ledger, PriceCatalog.load(pricing), half, PERIOD)
    # r1: 500 x 10 + 500 x 1 + 3,000 = 0.0085; r2 already half cached: 0.017;
    # r3: 250 x 10 + 250 x 1 + 1,500 = 0.00425; r4: 2,000 x 1 + 2,000 x 0.1 + 1,200 = 0.0034
    assert (report.total.scenario, report.total.affected) == (D("0.03315"), 3)
    assert figures(report, "workflow")["summarize"] == (D("0.017"), D("0.017"), 0)


def test_a_service_tier_and_a_price_card(ledger: Client, pricing: Path, tmp_path: Path) -> None:
    flex = scenario(service_tier="flex", pricing=str(pricing))
    report = what_if(ledger, PriceCatalog.load(pricing), flex, PERIOD)
    # big at flex: r1 5,000 + 1,500 = 0.0065; r2 5,000 + 500 + 3,000 = 0.0085;
    # r3 2,500 + 750 = 0.00325; small has no flex entry: r4 unchanged 0.0052.
    assert (report.total.scenario, report.total.affected) == (D("0.02345"), 3)

    card = tmp_path / "card.yaml"
    card.write_text("prices:\n  - {provider: acme, model: big, input: 20, output: 60}\n")
    doubled = what_if(ledger, PriceCatalog.load(card), scenario(pricing=str(card)), PERIOD)
    # Big doubles (r2's 1,000 cached at the input price, the card has no cached price):
    # r1 0.026, r2 2,000 x 20 + 200 x 60 = 0.052, r3 0.013; small is not on the card
    # and has no catalog price: it keeps its actual cost and counts as unpriced.
    assert (doubled.total.scenario, doubled.total.affected, doubled.total.unpriced) == (
        D("0.0962"),
        3,
        1,
    )


def test_whatif_never_writes(ledger: Client, pricing: Path) -> None:
    def counts() -> list[Any]:
        return ledger.query(
            "SELECT (SELECT count() FROM usage_ledger), (SELECT count() FROM cost_corrections)"
        ).result_rows

    before = counts()
    what_if(ledger, PriceCatalog.load(pricing), scenario(service_tier="flex"), PERIOD)
    assert counts() == before == [(4, 0)]


def test_the_table_names_the_scenario(ledger: Client, pricing: Path) -> None:
    swap = scenario(substitutions=[{"from": "big", "to": "small"}], cache_hit_rate="0.6")
    text = render(what_if(ledger, PriceCatalog.load(pricing), swap, PERIOD), "table")
    assert text.startswith("What if, 2026-11-10 – 2026-11-10: big -> small; cache hit rate 60")
    assert "By workflow" in text and "By model" in text
