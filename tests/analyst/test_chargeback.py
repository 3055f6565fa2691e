"""Chargeback totals equal the ledger total exactly, and the charged cents add up to
the month's total rounded to the cent (largest-remainder allocation)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import given
from hypothesis import strategies as st

from streams.analyst.chargeback import DIMENSIONS, build_chargeback, render
from streams.analyst.money import CENT, allocate_cents, to_cents
from streams.analyst.periods import month
from tests.analyst import ledger_data as data

NOVEMBER = month("2026-11")


@pytest.fixture(scope="module")
def events(module_ch: Client) -> list[dict[str, Any]]:
    events = data.make_events()
    data.insert(module_ch, events, token="batch-1")
    data.insert(module_ch, events[100:300], token="redelivered")  # must change nothing
    return [e for e in events if NOVEMBER.start <= e["timestamp"].date() <= NOVEMBER.end]


@pytest.mark.parametrize("by", sorted(DIMENSIONS))
def test_chargeback_adds_up_to_the_ledger_total(
    module_ch: Client, events: list[dict[str, Any]], by: str
) -> None:
    report = build_chargeback(module_ch, NOVEMBER, by)
    ledger_total = sum((e["cost_usd"] for e in events), Decimal(0))
    assert report.total == ledger_total
    assert report.charged_total == to_cents(ledger_total)
    expected = data.group(events, lambda e: (e[DIMENSIONS[by]],))
    assert {line.key: line.cost for line in report.lines} == {
        key: sums["cost_usd"] for (key,), sums in expected.items()
    }
    for line in report.lines:
        assert abs(line.charged - line.cost) < CENT
        assert line.charged == line.charged.quantize(CENT)


def test_csv_charged_column_sums_to_the_rounded_total(
    module_ch: Client, events: list[dict[str, Any]]
) -> None:
    report = build_chargeback(module_ch, NOVEMBER, "team")
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [row["team"] for row in rows] == [line.key for line in report.lines]
    assert sum(Decimal(row["charged_usd"]) for row in rows) == to_cents(report.total)
    assert sum(Decimal(row["cost_usd"]) for row in rows) == report.total


def test_markdown_states_the_total_and_the_rounding_rule(module_ch: Client) -> None:
    report = build_chargeback(module_ch, NOVEMBER, "environment")
    text = render(report, "md")
    assert f"**${to_cents(report.total):,.2f}**" in text
    assert "largest remainders" in text


amounts = st.decimals(min_value=-1000, max_value=100_000, places=18, allow_nan=False)


@given(st.lists(amounts, max_size=40))
def test_allocated_cents_sum_to_the_rounded_total(values: list[Decimal]) -> None:
    charged = allocate_cents(values)
    assert sum(charged, Decimal(0)) == to_cents(sum(values, Decimal(0)))
    for value, cents in zip(values, charged, strict=True):
        assert abs(cents - value) < CENT
