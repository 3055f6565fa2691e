"""Case 7, broker loss: the embedded broker (tansu, memory storage) is SIGKILLed and
started again on the same port while the worker keeps running.

- Producers using the SDK lose nothing: events recorded while the broker is down wait
  in the SDK's queue and are delivered once it is back (aiokafka's own retries within
  its request timeout, then the SDK's backoff). The worker reconnects by itself.
- What the in-memory broker itself loses is every message it held that the worker had
  not consumed yet: acknowledged to the producer, gone with the process. A durable
  Kafka keeps them (and the committed offsets); see docs/reliability.md.
- The new broker's log is shorter than what the worker consumed from the old one. It
  answers fetches past its end with no records and no error, and takes commits past
  its end: the worker reads such a partition again from its start and never commits
  past the log's end (streams/ingest/consumer.py).
- The new broker's log has grown past the worker's positions before its first fetch
  (the worker's ingest consumer held in a proxy meanwhile): the fetch at the old
  position finds records; the new cluster id tells the worker the log is new, and it
  reads it from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.topics import INGEST_GROUP
from streams.ports import free_port
from streams.sdk import SpendstreamProducer
from tests.helpers.waiting import WaitTimeout, wait_for
from tests.reliability.conftest import (
    USAGE_TOPIC,
    Expectation,
    FaultStack,
    Tally,
    make_events,
    merge_targets,
    publish_positions,
    targets_of,
)
from tests.reliability.silencing_proxy import SilencingProxy, fault_stack_behind

# Several stack restarts (~2 min): run by `make reliability` only.
pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def kill_broker(stack: FaultStack) -> None:
    process = stack.stack.broker.process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    stack.stack.broker.process = None


def restart_broker(stack: FaultStack) -> None:
    """Same port, empty memory: every topic and committed offset is gone; the stack
    creates its topics again, as `spendstream dev` does at start."""
    stack.stack.start_broker()
    stack.targets.clear()


OUTAGE_S = 30.0


@pytest.fixture(scope="module")
def sdk_outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("broker-loss") / "data"
    data_dir.mkdir()
    stack = FaultStack(data_dir)
    try:
        yield sdk_traffic_across_broker_loss(stack, OUTAGE_S)
    finally:
        stack.stop()


def sdk_traffic_across_broker_loss(stack: FaultStack, outage_s: float) -> dict[str, Any]:
    """SDK traffic before, during and after a broker outage of `outage_s` seconds."""
    prefix = f"sdk{int(outage_s)}-"
    events = make_events(3_000, seed=707, prefix=prefix)
    before, during, after = events[:1000], events[1000:2000], events[2000:]
    errors: list[tuple[str, int]] = []
    # Retries sized to the outage: the default budget (8 retries, backoff up to 10 s)
    # rides out roughly 11-23 s of outage on top of aiokafka's own 10 s request timeout;
    # 12 retries ride out about a minute.
    retries = 8 if outage_s < 20 else 12
    producer = SpendstreamProducer.kafka(
        stack.bootstrap,
        max_retries=retries,
        on_error=lambda exc, n: errors.append((repr(exc)[:200], n)),
    )
    pid = stack.pid
    # The producer's aiokafka logs every failed reconnect while the broker is down.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        for event in before:
            producer.record(event)
        assert producer.flush(timeout=30)
        wait_for(lambda: len(stack.ledger_rows_by_id(f"{prefix}%")) == len(before), timeout=90)

        kill_broker(stack)
        started = time.monotonic()
        for i, event in enumerate(during):
            producer.record(event)
            if i % 100 == 99:
                time.sleep(outage_s / 10)
        stats_during = producer.stats
        restart_broker(stack)
        down_s = time.monotonic() - started

        for event in after:
            producer.record(event)
        delivered = producer.flush(timeout=120)
    finally:
        closed = producer.close(timeout=30)
        aiokafka_log.setLevel(level)
    return {
        "stack": stack,
        "events": events,
        "in_new_log": asyncio.run(read_log(stack.bootstrap)),
        "outage_s": down_s,
        "pid": pid,
        "stats_during": stats_during,
        "stats": producer.stats,
        "delivered": delivered and closed,
        "errors": errors,
    }


def test_sdk_events_recorded_while_the_broker_is_down_are_delivered_after(
    sdk_outage: dict[str, Any],
) -> None:
    """The SDK's side: every event recorded after the broker died is in the new
    broker's log (read back with a plain consumer), none given up, none dropped."""
    run = sdk_outage
    stats = run["stats"]
    later = {e["request_id"] for e in run["events"][1000:]}
    in_log = set(run["in_new_log"])
    Tally(
        f"broker loss {run['outage_s']:.0f}s, SDK delivery to the new broker",
        events_in=len(later),
        events_out=len(later & in_log),
        lost=len(later - in_log),
        double_counted=sum(
            len(places) - 1 for rid, places in run["in_new_log"].items() if rid in later
        ),
        extra={
            "sdk sent": stats.sent,
            "sdk retries": stats.retries,
            "sdk failed": stats.failed,
            "queued while down": run["stats_during"].queued,
        },
    ).report()

    assert run["stats_during"].sent == 1000  # nothing got through while the broker was down
    assert run["delivered"] and run["errors"] == []
    assert (stats.recorded, stats.sent, stats.failed, stats.dropped) == (3000, 3000, 0, 0)
    assert later <= in_log


def test_the_worker_rides_out_the_broker_restart(sdk_outage: dict[str, Any]) -> None:
    stack: FaultStack = sdk_outage["stack"]
    assert stack.worker.process.poll() is None
    assert stack.pid == sdk_outage["pid"] and stack.restarts == 0
    assert stack.health()[0] == 200


# -- what the in-memory broker loses --------------------------------------------------


@pytest.fixture(scope="module")
def unconsumed_loss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh stack. The worker is frozen (SIGSTOP) while M events are acknowledged by the
    broker; the broker dies and comes back; the worker resumes (SIGCONT). Then, as a new
    `spendstream dev` would, a fresh worker with a new log epoch takes over."""
    data_dir = tmp_path_factory.mktemp("unconsumed") / "data"
    data_dir.mkdir()
    stack = FaultStack(data_dir)
    try:
        yield paused_across_broker_restart(stack)
    finally:
        stack.stop()


def paused_across_broker_restart(stack: FaultStack) -> dict[str, Any]:
    prefix = "unconsumed-"
    seen = make_events(500, seed=901, prefix=f"{prefix}seen-")
    held = make_events(700, seed=902, prefix=f"{prefix}held-")
    after = make_events(500, seed=903, prefix=f"{prefix}after-")
    stack.publish([orjson.dumps(e) for e in seen])
    stack.wait_consumed()
    wait_for(lambda: len(stack.ledger_rows_by_id(f"{prefix}seen-%")) == len(seen), timeout=60)

    paused_pid = stack.pid
    os.kill(paused_pid, signal.SIGSTOP)
    try:
        stack.publish([orjson.dumps(e) for e in held])  # acknowledged, never consumed
        kill_broker(stack)
        restart_broker(stack)
    finally:
        os.kill(paused_pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while stack.worker.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    exit_code = stack.worker.process.poll()
    crash = stack.log_tail(1) if exit_code is not None else ""

    stack.kill_worker()
    stack.stack.log_epoch = f"{stack.stack.log_epoch}-after-broker-loss"
    stack.start_worker()
    stack.publish([orjson.dumps(e) for e in after])
    stack.wait_consumed()
    wait_for(lambda: len(stack.ledger_rows_by_id(f"{prefix}after-%")) == len(after), timeout=120)
    ledger_by_tenant = stack.ledger_month_by_tenant(f"{prefix}%")
    return {
        "stack": stack,
        "prefix": prefix,
        "seen": seen,
        "held": held,
        "after": after,
        "exit_code": exit_code,
        "crash": crash,
        "ledger_by_tenant": ledger_by_tenant,
        "in_stream": stack.wait_in_stream(ledger_by_tenant, timeout=20),
    }


def test_in_memory_broker_loses_at_most_the_acknowledged_unconsumed_messages(
    unconsumed_loss: dict[str, Any],
) -> None:
    """Held messages are lost with the broker, unless the paused worker's fetch had
    already carried them into its socket: the broker answers a waiting fetch while the
    worker is stopped, and the worker ledgers them on resume. Either way, once."""
    run = unconsumed_loss
    stack: FaultStack = run["stack"]
    rows = stack.ledger_rows_by_id(f"{run['prefix']}%")
    held = {e["request_id"] for e in run["held"]}
    kept = {e["request_id"] for e in run["seen"] + run["after"]}
    lost_held = len(held - set(rows))
    Tally(
        "in-memory broker dies holding unconsumed messages",
        events_in=len(held) + len(kept),
        events_out=len(set(rows) & (held | kept)),
        lost=lost_held + len(kept - set(rows)),
        double_counted=sum(n - 1 for n in rows.values()),
        extra={
            "acknowledged but unconsumed": len(held),
            "of which lost with the broker (by design)": lost_held,
            "in-stream month USD after restart": sum(run["in_stream"].values()),
            "ledger month USD": sum(run["ledger_by_tenant"].values()),
        },
    ).report()

    assert kept <= set(rows)  # consumed before, or published after: all ledgered
    assert all(n == 1 for n in rows.values())


def test_a_paused_worker_survives_a_broker_restart(unconsumed_loss: dict[str, Any]) -> None:
    assert unconsumed_loss["exit_code"] is None, unconsumed_loss["crash"]


# -- a new log shorter than the old one ---------------------------------------------


@pytest.fixture(scope="module")
def shorter_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """400 events consumed (about 100 per partition), the broker restarted under the
    running worker, then 40 new events of the same tenants: the new log ends far before
    the positions the worker holds, whatever the timing, and is read from its start.
    A malformed message opens partition 0 of each log: two dead letters at one place."""
    data_dir = tmp_path_factory.mktemp("shorter-log") / "data"
    data_dir.mkdir()
    stack = FaultStack(data_dir)
    try:
        old = make_events(400, seed=911, prefix="shorter-old-")
        new = make_events(40, seed=912, prefix="shorter-new-")
        for event in new:  # the old tenants: their in-stream marks refer to the old log
            event["tenant_id"] = event["tenant_id"].replace("shorter-new-", "shorter-old-")
        poison_a = publish_to(stack, [b'{"request_id": "broker-poison-a", '], 0)[0]
        stack.publish([orjson.dumps(e) for e in old])
        stack.wait_consumed()
        wait_for(lambda: len(stack.ledger_rows_by_id("shorter-old-%")) == len(old), timeout=60)
        consumed = dict(stack.targets)
        kill_broker(stack)
        restart_broker(stack)
        poison_b = publish_to(stack, [b'{"request_id": "broker-poison-b", '], 0)[0]
        stack.publish([orjson.dumps(e) for e in new])
        deadline = time.monotonic() + 90
        while len(stack.ledger_rows_by_id("shorter-new-%")) < len(new):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        ledger_by_tenant = stack.ledger_month_by_tenant("shorter-old-%")
        yield {
            "stack": stack,
            "new": new,
            "expected": Expectation.of(old + new),
            "consumed_from_old_log": consumed,
            "new_log_ends": dict(stack.targets),
            "ledgered": stack.ledger_rows_by_id("shorter-new-%"),
            "committed": stack.committed_offsets(),
            "poison_positions": (poison_a, poison_b),
            "ledger_by_tenant": ledger_by_tenant,
            "in_stream": stack.wait_in_stream(ledger_by_tenant, timeout=30),
        }
    finally:
        stack.stop()


def test_the_worker_reads_a_new_shorter_log_from_its_start(shorter_log: dict[str, Any]) -> None:
    run = shorter_log
    assert all(end < run["consumed_from_old_log"][p] for p, end in run["new_log_ends"].items()), (
        "the new log must end before the old positions for this case to mean anything"
    )
    new = {e["request_id"] for e in run["new"]}
    Tally(
        "broker restarted, new log shorter than the old positions",
        events_in=len(new),
        events_out=len(new & set(run["ledgered"])),
        lost=len(new - set(run["ledgered"])),
        double_counted=sum(n - 1 for n in run["ledgered"].values()),
        extra={"old positions": run["consumed_from_old_log"], "new ends": run["new_log_ends"]},
    ).report()
    assert set(run["ledgered"]) == new
    assert all(n == 1 for n in run["ledgered"].values())


def test_the_worker_never_commits_past_the_new_log_end(shorter_log: dict[str, Any]) -> None:
    run = shorter_log
    stack: FaultStack = run["stack"]
    assert stack.worker.process.poll() is None
    for partition, committed in run["committed"].items():
        assert committed is None or committed <= run["new_log_ends"].get(partition, 0), (
            partition,
            committed,
        )


# -- a new log that grew past the old positions before the worker's first fetch ------


@pytest.fixture(scope="module")
def grown_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """400 events consumed (about 100 per usage partition). The worker's ingest consumer
    is then held in a proxy (its requests wait, its connections stay up) while the
    broker is restarted under it and 1,200 new events fill the new log far past every
    position the worker holds; then it is released. Its first fetch from the new log
    asks for its old position, where the new log has records: nothing in the fetch
    answer tells it the log is a new one."""
    data_dir = tmp_path_factory.mktemp("grown-log") / "data"
    data_dir.mkdir()
    proxy = SilencingProxy(free_port(), free_port(), client_prefix=INGEST_GROUP.encode())
    proxy.start()
    stack = fault_stack_behind(proxy, data_dir)
    try:
        old = make_events(400, seed=921, prefix="grown-old-")
        new = make_events(1_200, seed=922, prefix="grown-new-")
        stack.publish([orjson.dumps(e) for e in old])
        stack.wait_consumed()
        wait_for(lambda: len(stack.ledger_rows_by_id("grown-old-%")) == len(old), timeout=60)
        consumed = dict(stack.targets)
        proxy.hold()
        try:
            kill_broker(stack)
            restart_broker(stack)
            stack.publish([orjson.dumps(e) for e in new])
            new_log_ends = dict(stack.targets)
        finally:
            proxy.release()
        with contextlib.suppress(WaitTimeout):
            wait_for(lambda: len(stack.ledger_rows_by_id("grown-new-%")) >= len(new), timeout=120)
        yield {
            "stack": stack,
            "new": new,
            "consumed_from_old_log": consumed,
            "new_log_ends": new_log_ends,
            "ledgered": stack.ledger_rows_by_id("grown-new-%"),
        }
    finally:
        stack.stop()
        proxy.stop()


def test_the_worker_reads_a_new_log_grown_past_its_position_from_its_start(
    grown_log: dict[str, Any],
) -> None:
    run = grown_log
    old, ends = run["consumed_from_old_log"], run["new_log_ends"]
    if not all(ends.get(p, 0) > position for p, position in old.items()):
        raise RuntimeError(f"the new log must end past the old positions: {old} {ends}")
    new = {e["request_id"] for e in run["new"]}
    Tally(
        "broker restarted, new log grown past the old positions before the first fetch",
        events_in=len(new),
        events_out=len(new & set(run["ledgered"])),
        lost=len(new - set(run["ledgered"])),
        double_counted=sum(n - 1 for n in run["ledgered"].values()),
        extra={"old positions": old, "new ends": ends},
    ).report()
    assert len(new - set(run["ledgered"])) == 0
    assert all(n == 1 for n in run["ledgered"].values())


def test_in_stream_totals_equal_the_ledger_after_a_broker_restart(
    shorter_log: dict[str, Any],
) -> None:
    """The new log's costed events name their source log (the broker's cluster id), so
    the tables' marks of the old log, at higher positions, do not skip them; the spend
    agent reads the new costed log from its start (streams/spend/agent.py). The table
    recovery on the new broker ends: it reads each changelog up to the end the broker's
    fetches serve, not to a listed end beyond it (streams/faust_ext/app.py;
    tests/faust_ext/test_log_ends.py)."""
    require_complete_ledger(shorter_log)
    if any(total.is_nan() for total in shorter_log["in_stream"].values()):
        raise WaitTimeout("the in-stream tables were still recovering")
    assert shorter_log["in_stream"] == shorter_log["ledger_by_tenant"]


class IncompleteLedger(Exception):
    """The ledger missed events: a failure of its own, not the one a case names."""


def require_complete_ledger(run: dict[str, Any]) -> None:
    """The cases above compare with a complete ledger. An incomplete one is a failure of
    its own (test_the_worker_reads_a_new_shorter_log_from_its_start), raised as another
    exception type so that the report names it."""
    if run["ledger_by_tenant"] != run["expected"].cost_by_tenant:
        raise IncompleteLedger("the worker missed events after the broker restart")


def test_dead_letters_before_and_after_a_broker_restart_are_both_kept(
    shorter_log: dict[str, Any],
) -> None:
    """Dead letters are keyed (log_epoch, topic, partition, offset, element_index): the
    worker takes a log epoch of the new cluster when the broker's cluster id changes, so
    the new log's dead letter at the old one's position is a row of its own."""
    stack: FaultStack = shorter_log["stack"]
    before, after = shorter_log["poison_positions"]
    require_complete_ledger(shorter_log)
    if before != after:
        raise RuntimeError(f"the two poison messages are not at one place: {before} {after}")
    wait_for(lambda: stack.stats()["dead_letters"].get("malformed_json", 0) >= 2, timeout=60)
    rows = stack.query(
        "SELECT raw_payload FROM dead_letters FINAL WHERE raw_payload LIKE '%broker-poison-%'"
    )
    assert len(rows) == 2


async def read_log(bootstrap: str) -> dict[str, list[tuple[int, int]]]:
    """request_id → its (partition, offset) copies in the usage topic of the (new)
    broker, read from the start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    copies: dict[str, list[tuple[int, int]]] = {}
    try:
        await consumer.topics()  # fetches metadata
        partitions = consumer.partitions_for_topic(USAGE_TOPIC) or set()
        consumer.assign([TopicPartition(USAGE_TOPIC, p) for p in partitions])
        idle = 0
        while idle < 3:
            batches = await consumer.getmany(timeout_ms=500)
            idle = 0 if batches else idle + 1
            for messages in batches.values():
                for message in messages:
                    try:
                        document = orjson.loads(message.value)
                    except orjson.JSONDecodeError:
                        continue  # this module's own poison messages
                    for event in document if isinstance(document, list) else [document]:
                        place = (message.partition, message.offset)
                        copies.setdefault(event["request_id"], []).append(place)
    finally:
        await consumer.stop()
    return copies


def publish_to(stack: FaultStack, lines: list[bytes], partition: int) -> list[tuple[int, int]]:
    positions = asyncio.run(publish_positions(stack.bootstrap, lines, partition=partition))
    merge_targets(stack.targets, targets_of(positions))
    return positions
