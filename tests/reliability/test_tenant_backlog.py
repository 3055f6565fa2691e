"""One tenant's backlog: 20,000 events of a single tenant published at once, so that the
worker's batches (5000 messages) hold thousands of rows of one tenant. Before commit
ac3d7f6 the costed message for such a batch outgrew the producer's 1 MB request limit,
the ingest agent raised, and Faust committed the batch anyway: 18,625 of 20,000 events
were lost while /health said "ok". Kept as a regression case."""

from __future__ import annotations

import orjson
import pytest

from tests.reliability.conftest import Expectation, FaultStack, Snapshot, make_events, tally_ledger

pytestmark = pytest.mark.integration


def test_a_single_tenants_backlog_is_ledgered_whole(case_stack: FaultStack) -> None:
    stack = case_stack
    prefix = "backlog-"
    events = make_events(20_000, seed=808, prefix=prefix)
    for event in events:
        event["tenant_id"] = f"{prefix}big-tenant"
    expected = Expectation.of(events)
    before = Snapshot.take(stack, views=False)
    stack.publish([orjson.dumps(e) for e in events])
    stack.wait_consumed(timeout=300)
    after = Snapshot.take(stack, views=False)
    in_stream = stack.wait_in_stream(expected.cost_by_tenant)
    tally = tally_ledger(
        "one tenant's backlog of 20000 events",
        stack,
        expected,
        like=f"{prefix}%",
        ledgered_by_worker=before.stat(after, "ledgered"),
    ).report()

    assert tally.lost == 0
    assert tally.double_counted == 0
    assert stack.health()[0] == 200
    assert stack.ledger_cost(f"{prefix}%") == expected.cost
    assert in_stream == expected.cost_by_tenant
