"""Case 1, re-delivery and replay: the same N events published three times, then once
more shuffled, must leave every total exactly where one clean pass leaves it — the
ledger, every materialized view (and the rollup state the views were fed), and the
in-stream month totals the worker serves at /v1/limits."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest

from tests.reliability.conftest import Expectation, FaultStack, make_events, tally_ledger

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "n",
    [
        pytest.param(5_000, id="5k"),
        pytest.param(100_000, id="100k", marks=[pytest.mark.reliability, pytest.mark.timeout(900)]),
    ],
)
def test_events_published_three_times_and_shuffled_count_once_everywhere(
    fault_stack: Any, n: int
) -> None:
    events = make_events(n, seed=101, prefix="redeliver-")
    expected = Expectation.of(events)
    lines = [orjson.dumps(e) for e in events]
    shuffled = list(lines)
    random.Random(7).shuffle(shuffled)
    messages = lines * 3 + shuffled

    stack: FaultStack = fault_stack()
    started = time.monotonic()
    stack.publish(messages)
    stack.wait_consumed(timeout=120 + n / 200)
    consumed_s = time.monotonic() - started

    stats = stack.stats()
    views = stack.view_totals()
    in_stream = stack.wait_in_stream(expected.cost_by_tenant)
    tally = tally_ledger(
        f"redelivery x3 + shuffled, N={n}",
        stack,
        expected,
        like="redeliver-%",
        messages=len(messages),
        duplicates_dropped=stats["duplicates"],
        views=len(views),
        seconds=f"{consumed_s:.0f}",
    )
    # A view counting a duplicate shows more requests than events.
    tally.double_counted += sum(
        max(0, requests - expected.requests)
        for _, requests in views.values()
        if requests is not None
    )
    tally.report()

    assert tally.lost == 0
    assert tally.double_counted == 0
    assert stack.ledger_cost() == expected.cost
    assert (stats["messages"], stats["ledgered"], stats["duplicates"]) == (4 * n, n, 3 * n)
    # Every view, and every rollup state table before the dirty-day fallback: one pass.
    assert {"tenant_daily", "team_daily", "workflow_daily", "model_daily"} <= set(views)
    wrong = {
        name: total
        for name, total in views.items()
        if total[0] != expected.cost or total[1] not in (None, expected.requests)
    }
    assert wrong == {}, f"views differing from a single pass ({expected.cost}): {wrong}"
    assert stack.dirty_days() == 0  # no duplicate ever reached a materialized view
    assert in_stream == expected.cost_by_tenant
