"""On Kafka the spend state lives in the changelogs; when they are lost it is rebuilt
from the ledger (streams/spend/coverage.py), exactly.

The worker runs as on Kafka (no log epoch start: the broker's log outlives it) on the
real stack. After its changelog topics are deleted and its consumer group is sent back
to the costed log's start (a new group, as a new application id would be), after a
plain restart, and after the whole broker is replaced, each tenant's `/v1/limits` month
total equals the ledger's `sum(cost_usd)` to the Decimal: no tenant empty, none
counted twice.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DeleteGroupsRequest

from streams.kafka.topics import APP_ID
from tests.reliability.conftest import Expectation, FaultStack, make_events, tally_ledger

pytestmark = pytest.mark.integration

COSTED_TOPIC = "spendstream.costed"


PROGRESS_CHANGELOG = f"{APP_ID}-costed_progress-changelog"


async def lose_changelogs(bootstrap: str, only: str | None = None) -> list[str]:
    """Delete every changelog topic (or `only` that one) and, with all of them, the spend
    agent's consumer group: the next worker finds no spend state and reads the costed
    log from its start, every row of which the ledger already holds."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        changelogs = [t for t in await admin.list_topics() if t.endswith("-changelog")]
        if only is not None:
            changelogs = [t for t in changelogs if t == only]
        await admin.delete_topics(changelogs)
        if only is None:
            # A new consumer group: no committed costed offsets. aiokafka's admin client
            # has no call for DeleteGroups; its request goes to the group's coordinator.
            coordinator = await admin.find_coordinator(APP_ID)
            request = DeleteGroupsRequest([APP_ID])
            response = await admin._send_request_to_node(coordinator, request)
            assert [tuple(r) for r in response.results] == [(APP_ID, 0)], response
    finally:
        await admin.close()
    return changelogs


def publish(stack: FaultStack, events: list[dict[str, Any]]) -> None:
    stack.publish([orjson.dumps(e) for e in events])
    stack.wait_consumed()


def assert_exact(stack: FaultStack, when: str, report: dict[str, int]) -> dict[str, Decimal]:
    ledger = stack.ledger_month_by_tenant("cl-%")
    assert ledger, "no ledger rows"
    seen = stack.wait_in_stream(ledger)
    off = {t: (seen[t], ledger[t]) for t in ledger if seen[t] != ledger[t]}
    report[f"tenants off after: {when}"] = len(off)
    assert not off, f"{when}: in-stream month (left) against the ledger (right): {off}"
    return ledger


def test_spend_state_is_rebuilt_from_the_ledger_when_the_changelogs_are_lost(
    fault_stack: Any,
) -> None:
    stack: FaultStack = fault_stack(kafka=True)
    report: dict[str, int] = {}
    first = make_events(600, seed=71, prefix="cl-")
    publish(stack, first)
    ledger = assert_exact(stack, "the first events", report)
    assert ledger == Expectation.of(first).cost_by_tenant

    # Changelogs lost and a new group: the tables must not start empty, and the costed
    # events read again must not count on top of the ledger's rows.
    stack.stack.stop_workers()
    assert asyncio.run(lose_changelogs(stack.bootstrap))
    stack.start_worker()
    assert_exact(stack, "changelogs and group lost", report)
    stats = stack.stats()
    assert stats["costed_in_ledger_base"] > 0, stats  # the costed log was read again
    report["costed rows skipped (in the base)"] = stats["costed_in_ledger_base"]
    assert stack.logged("its changelog holds no mark")

    # Counting goes on from there, and a restart with the changelogs kept reads the
    # same base below the same marks: nothing twice.
    second = make_events(300, seed=72, prefix="cl-")
    publish(stack, second)
    ledger = assert_exact(stack, "more events", report)
    expected = Expectation.of(first + second)
    assert ledger == expected.cost_by_tenant
    marks = len(stack.logged("its changelog holds no mark"))
    stack.stack.stop_workers()
    stack.start_worker()
    assert_exact(stack, "a restart, changelogs kept", report)
    assert len(stack.logged("its changelog holds no mark")) == marks

    # Only the marks' changelog lost (the others recover their values): those values
    # are dropped and the partitions begin again from the ledger, not counted twice.
    stack.stack.stop_workers()
    assert asyncio.run(lose_changelogs(stack.bootstrap, only=PROGRESS_CHANGELOG))
    stack.start_worker()
    assert_exact(stack, "the marks' changelog lost alone", report)
    dropped = [line for line in stack.logged("recovered values dropped")][marks:]
    assert any("(0 recovered" not in line for line in dropped), dropped

    # A new broker: every topic and offset gone, the ledger kept.
    stack.stack.stop_workers()
    stack.stack.broker.stop()
    stack.stack.start_broker()
    stack.targets.clear()
    stack.start_worker()
    assert_exact(stack, "the broker replaced", report)

    tally_ledger(
        "Kafka changelogs lost, truncated or new", stack, expected, "cl-%", **report
    ).report()
