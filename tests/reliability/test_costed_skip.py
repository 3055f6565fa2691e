"""Case: the spend agent's consumer skips costed messages. While the worker is down its
consumer group's committed offset on the costed topic is moved past the log end, as
Faust's own commits can move it (its gap handling counts offsets it never delivered as
acknowledged; after table recovery it once stopped delivering a partition, see
streams/spend/progress.py) → the agent reads the skipped messages again from its own
progress record, and the in-stream month totals equal the ledger."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from streams.faust_ext.app import fetched_log_ends
from streams.kafka.topics import APP_ID
from tests.reliability.conftest import Expectation, FaultStack, make_events, tally_ledger

pytestmark = pytest.mark.integration

SKIPPED = 2  # messages per costed partition the group's offset jumps over
FIRST, SECOND = 300, 300


class SameProtocolAssignor(RoundRobinPartitionAssignor):
    """Faust's protocol name: the broker keeps a group's protocol after its members
    are gone, and a consumer of another cannot join it."""

    name = "faust"


async def move_spend_offsets_past_the_end(
    bootstrap: str, costed_topic: str, skip: int
) -> dict[int, int]:
    """Commit, for the spend agent's group, each costed partition's log end + `skip`,
    as a member of the group (the broker refuses commits from outside it)."""
    consumer = AIOKafkaConsumer(
        costed_topic,
        bootstrap_servers=bootstrap,
        group_id=APP_ID,
        enable_auto_commit=False,
        partition_assignment_strategy=(SameProtocolAssignor,),
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            assert time.monotonic() < deadline, "never joined the spend agent's group"
            await consumer.getmany(timeout_ms=200)
        partitions = sorted(consumer.assignment())
        listed = await consumer.end_offsets(partitions)
        ends = await fetched_log_ends(
            bootstrap, {(tp.topic, tp.partition): listed[tp] for tp in partitions}
        )
        moved = {tp.partition: int(ends[(tp.topic, tp.partition)] or 0) + skip for tp in partitions}
        await consumer.commit({tp: moved[tp.partition] for tp in partitions})
        return moved
    finally:
        await consumer.stop()


def publish(stack: FaultStack, events: list[dict[str, Any]]) -> None:
    stack.publish(
        [orjson.dumps(e) for e in events], keys=[str(e["request_id"]).encode() for e in events]
    )


def test_costed_messages_skipped_by_the_consumer_are_counted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    prefix = "skip-"
    events = make_events(FIRST + SECOND, seed=77, prefix=prefix)
    stack = FaultStack(data_dir)
    try:
        publish(stack, events[:FIRST])
        stack.wait_consumed(timeout=300)
        ledger = stack.ledger_month_by_tenant(f"{prefix}%")
        assert stack.wait_in_stream(ledger, timeout=60) == ledger

        stack.kill_worker()
        moved = asyncio.run(
            move_spend_offsets_past_the_end(stack.bootstrap, stack.settings.costed_topic, SKIPPED)
        )
        stack.start_worker()
        publish(stack, events[FIRST:])
        stack.wait_consumed(timeout=300)

        ledger = stack.ledger_month_by_tenant(f"{prefix}%")
        # The case is the count, not its latency: a loaded CI machine gets three times
        # the stall checks' two rounds (10 s) plus a rebalance.
        in_stream = stack.wait_in_stream(ledger, timeout=180)
        found = stack.logged("reading again from offset")
        off = sum(
            (in_stream[t] - ledger[t] for t in ledger if in_stream[t] != ledger[t]), Decimal(0)
        )
        tally = tally_ledger(
            f"spend group's costed offsets moved {SKIPPED} past the log end",
            stack,
            Expectation.of(events),
            like=f"{prefix}%",
            restarts=stack.restarts,
            costed_rereads=len(found),
            in_stream_usd_off=off,
        ).report()
        assert tally.lost == 0
        assert tally.double_counted == 0
        print(f"spend group moved to {moved}; the worker logged {len(found)} re-reads:")
        for line in found:
            print("  ", line[-120:])
        stats = stack.get("/stats").json()
        seen = {k: stats.get(k) for k in ("ledgered", "spend_rows", "costed_rewinds", "started")}
        assert in_stream == ledger, f"worker: {seen}; log: {stack.log_tail(15)}"
        assert found, "no costed partition was read again: the skip was not injected"
    finally:
        stack.stop()
