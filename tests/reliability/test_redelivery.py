"""Case 1, re-delivery and replay: the same N events published three times, then once
more shuffled, must leave every total exactly where one clean pass leaves it — the
ledger, every materialized view (and the rollup state tables the views are fed), and
the in-stream month totals the worker serves at /v1/limits."""

from __future__ import annotations

import random
import time

import orjson
import pytest

from tests.reliability.conftest import (
    Expectation,
    FaultStack,
    Snapshot,
    make_events,
    tally_ledger,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "n",
    [
        pytest.param(5_000, id="5k"),
        pytest.param(
            100_000, id="100k", marks=[pytest.mark.reliability, pytest.mark.timeout(1200)]
        ),
    ],
)
def test_events_published_three_times_and_shuffled_count_once_everywhere(
    case_stack: FaultStack, n: int
) -> None:
    stack = case_stack
    prefix = f"redeliver{n}-"
    events = make_events(n, seed=101, prefix=prefix)
    expected = Expectation.of(events)
    lines = [orjson.dumps(e) for e in events]
    shuffled = list(lines)
    random.Random(7).shuffle(shuffled)
    messages = lines * 3 + shuffled

    before = Snapshot.take(stack)
    started = time.monotonic()
    stack.publish(messages)
    stack.wait_consumed(timeout=120 + n / 100)
    consumed_s = time.monotonic() - started
    after = Snapshot.take(stack)
    views = before.view_deltas(after)
    in_stream = stack.wait_in_stream(expected.cost_by_tenant)

    tally = tally_ledger(
        f"redelivery x3 + shuffled, N={n}",
        stack,
        expected,
        like=f"{prefix}%",
        messages=len(messages),
        duplicates_dropped=before.stat(after, "duplicates"),
        views_checked=len(views),
        seconds=f"{consumed_s:.0f}",
    )
    # A view that counted a duplicate shows more requests than there are events.
    tally.double_counted += max(
        (requests - expected.requests for _, requests in views.values() if requests is not None),
        default=0,
    )
    tally.report()

    assert tally.lost == 0
    assert tally.double_counted == 0
    assert stack.ledger_cost(f"{prefix}%") == expected.cost
    counts = [before.stat(after, k) for k in ("messages", "ledgered", "duplicates")]
    assert counts == [4 * n, n, 3 * n]
    # Every view, and every rollup state table read without the dirty-day fallback.
    assert {"tenant_daily", "team_daily", "workflow_daily", "model_daily"} <= set(views)
    wrong = {
        name: delta
        for name, delta in views.items()
        if delta[0] != expected.cost or delta[1] not in (None, expected.requests)
    }
    assert wrong == {}, f"views that differ from one pass ({expected.cost}): {wrong}"
    assert stack.dirty_days() == 0  # no duplicate ever reached a materialized view
    assert in_stream == expected.cost_by_tenant
