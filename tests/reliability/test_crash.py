"""Case 3, crash: SIGKILL the worker at random moments of a replay that mixes in
duplicates, restart it each time (the broker keeps the committed offsets) → the final
ledger is exactly the expected set of request_ids, with no duplicate row even without
FINAL, no duplicate reached a materialized view, and the in-stream month totals equal
the ledger's per tenant."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson
import pytest

from tests.reliability.conftest import Expectation, FaultStack, make_events, tally_ledger

pytestmark = pytest.mark.integration

# Small batches: more commits, more "ledgered but not committed" windows to hit.
ENV = {"SPENDSTREAM_BATCH_MAX_EVENTS": "250"}


def wait_consuming(stack: FaultStack, timeout: float = 60.0) -> bool:
    """Until this worker process has read a message (it joined the group)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = stack.worker.stats()
        if stats and stats["messages"] > 0:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    "n, kills",
    [
        pytest.param(4_000, 3, id="3-kills"),
        pytest.param(
            40_000, 20, id="20-kills", marks=[pytest.mark.reliability, pytest.mark.timeout(1200)]
        ),
    ],
)
def test_sigkill_at_random_moments_loses_nothing_and_counts_nothing_twice(
    fault_stack: Any, n: int, kills: int
) -> None:
    rng = random.Random(n * 31 + kills)
    prefix = f"crash{n}-"
    events = make_events(n, seed=303, prefix=prefix)
    expected = Expectation.of(events)
    lines = [orjson.dumps(e) for e in events]
    messages = lines + rng.sample(lines, n // 4)  # duplicates, before or after the original
    rng.shuffle(messages)
    chunks = [messages[i :: kills + 1] for i in range(kills + 1)]

    stack: FaultStack = fault_stack(ENV)
    stack.publish(chunks[0])
    moments = []
    for kill in range(kills):
        if rng.random() < 0.25:
            # During start-up: dedupe rebuild, group join, table recovery.
            delay = rng.uniform(0.0, 3.0)
            moment = "start-up"
        else:
            assert wait_consuming(stack), f"worker never consumed: {stack.log_tail()}"
            delay = rng.uniform(0.0, 2.0)
            moment = "mid-stream"
        time.sleep(delay)
        read = (stack.worker.stats() or {}).get("messages", 0)
        stack.kill_worker()
        moments.append(f"{moment}+{delay:.1f}s({read} read)")
        stack.start_worker()
        stack.publish(chunks[kill + 1])
    stack.wait_consumed(timeout=300)

    ledger_by_tenant = stack.ledger_month_by_tenant(f"{prefix}%")
    in_stream = stack.wait_in_stream(ledger_by_tenant)
    raw_rows, distinct = stack.query(
        "SELECT count(), uniqExact(request_id) FROM usage_ledger "
        f"WHERE request_id LIKE '{prefix}%'"
    )[0]
    tally = tally_ledger(
        f"crash, {kills} SIGKILLs, N={n}",
        stack,
        expected,
        like=f"{prefix}%",
        messages=len(messages),
        restarts=stack.restarts,
        in_stream_tenants_off=sum(in_stream[t] != ledger_by_tenant[t] for t in ledger_by_tenant),
    )
    tally.report()
    print("kill moments:", ", ".join(moments))

    assert tally.lost == 0
    assert tally.double_counted == 0
    assert int(raw_rows) == int(distinct) == n  # without FINAL: no duplicate row at all
    assert stack.dirty_days() == 0  # no duplicate block reached a materialized view
    assert stack.ledger_cost(f"{prefix}%") == expected.cost
    assert ledger_by_tenant == expected.cost_by_tenant
    assert in_stream == ledger_by_tenant
