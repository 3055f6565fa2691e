"""Case 3, crash: SIGKILL the worker at random moments of a replay that mixes in
duplicates, restart it each time (the in-memory broker stays up and keeps the
committed offsets) → the final ledger is exactly the expected set of request_ids,
with no duplicate row even without FINAL, no duplicate reached a materialized view,
and the in-stream month totals equal the ledger's per tenant."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tests.reliability.conftest import (
    Expectation,
    FaultStack,
    make_events,
    tally_ledger,
)

pytestmark = pytest.mark.integration

# Small batches: more commits, more "ledgered but not yet committed" windows to hit.
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


FAST = pytest.param((4_000, 3, True), id="3-kills")
VARIANTS = [
    FAST,
    pytest.param(
        (40_000, 20, True),
        id="20-kills",
        marks=[pytest.mark.reliability, pytest.mark.timeout(1800)],
    ),
    # Unkeyed duplicates: docs/reliability.md finding 1 (open) says a kill between the
    # costed publish and the ledger write of a batch holding a copy whose twin is in
    # another partition double-counts it in-stream. No marker: such a run fails here.
    pytest.param(
        (4_000, 3, False),
        id="3-kills-unkeyed",
        marks=[pytest.mark.reliability, pytest.mark.timeout(1800)],
    ),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every variant for the ledger and in-stream checks; the restart check of /v1/limits
    # once, on the fast variant (the same fixture instance: its cache key is the param).
    if "crashed" in metafunc.fixturenames:
        once = (
            metafunc.function.__name__
            == "test_limits_after_a_restart_answer_the_totals_from_before"
        )
        metafunc.parametrize("crashed", [FAST] if once else VARIANTS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def crashed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Keyed: published with the request_id as key, as the SDK sends single events, so a
    # duplicate lands in its first copy's partition. Unkeyed: any partition.
    n, kills, keyed = request.param
    rng = random.Random(n * 31 + kills)
    prefix = f"crash{n}{'' if keyed else 'u'}-"
    events = make_events(n, seed=303, prefix=prefix)
    lines = [orjson.dumps(e) for e in events]
    messages = lines + rng.sample(lines, n // 4)  # duplicates, before or after the original
    rng.shuffle(messages)
    chunks = [messages[i :: kills + 1] for i in range(kills + 1)]

    def publish(chunk: list[bytes]) -> None:
        keys = [orjson.loads(m)["request_id"].encode() for m in chunk] if keyed else None
        stack.publish(chunk, keys=keys)

    data_dir = tmp_path_factory.mktemp("crash") / "data"
    data_dir.mkdir()
    stack = FaultStack(data_dir, ENV)
    try:
        publish(chunks[0])
        moments = []
        for kill in range(kills):
            if rng.random() < 0.25:
                # During start-up: dedupe rebuild, group join, table recovery.
                moment, delay = "start-up", rng.uniform(0.0, 3.0)
            else:
                assert wait_consuming(stack), f"worker never consumed: {stack.log_tail()}"
                moment, delay = "mid-stream", rng.uniform(0.0, 2.0)
            time.sleep(delay)
            read = (stack.worker.stats() or {}).get("messages", 0)
            stack.kill_worker()
            moments.append(f"{moment}+{delay:.1f}s/{read} read")
            stack.start_worker()
            publish(chunks[kill + 1])
        stack.wait_consumed(timeout=600)
        ledger_by_tenant = stack.ledger_month_by_tenant(f"{prefix}%")
        yield {
            "stack": stack,
            "n": n,
            "kills": kills,
            "keyed": keyed,
            "prefix": prefix,
            "messages": len(messages),
            "moments": moments,
            "expected": Expectation.of(events),
            "ledger_by_tenant": ledger_by_tenant,
            "in_stream": stack.wait_in_stream(ledger_by_tenant, timeout=45),
        }
    finally:
        stack.stop()


def test_ledger_is_exactly_the_expected_set_after_sigkills(crashed: dict[str, Any]) -> None:
    stack: FaultStack = crashed["stack"]
    expected: Expectation = crashed["expected"]
    prefix = crashed["prefix"]
    raw_rows, distinct = stack.query(
        f"SELECT count(), uniqExact(request_id) FROM usage_ledger WHERE request_id LIKE '{prefix}%'"
    )[0]
    in_stream, ledger = crashed["in_stream"], crashed["ledger_by_tenant"]
    off = {t: in_stream[t] - ledger[t] for t in ledger if in_stream[t] != ledger[t]}
    tally = tally_ledger(
        f"crash, {crashed['kills']} SIGKILLs, N={crashed['n']}"
        + ("" if crashed["keyed"] else ", unkeyed duplicates"),
        stack,
        expected,
        like=f"{prefix}%",
        messages=crashed["messages"],
        restarts=stack.restarts,
        in_stream_usd_off=sum(off.values(), Decimal(0)),
    ).report()
    print("kill moments:", ", ".join(crashed["moments"]))

    assert tally.lost == 0
    assert tally.double_counted == 0
    assert int(raw_rows) == int(distinct) == crashed["n"]  # no duplicate row, even unmerged
    assert stack.dirty_days() == 0  # no duplicate block reached a materialized view
    assert stack.ledger_cost(f"{prefix}%") == expected.cost
    assert crashed["ledger_by_tenant"] == expected.cost_by_tenant


def test_in_stream_month_totals_equal_the_ledger_after_sigkills(crashed: dict[str, Any]) -> None:
    # Faust's consumer can skip costed messages after a restart; the spend agent reads
    # them again (streams/spend/progress.py). How often it had to, for the record:
    stack: FaultStack = crashed["stack"]
    print("costed partitions read again:", len(stack.logged("reading again from offset")))
    assert crashed["in_stream"] == crashed["ledger_by_tenant"]


def test_limits_after_a_restart_answer_the_totals_from_before(crashed: dict[str, Any]) -> None:
    stack: FaultStack = crashed["stack"]
    before = stack.in_stream_month_by_tenant(crashed["ledger_by_tenant"])
    stack.kill_worker()
    stack.start_worker()
    after = stack.in_stream_month_by_tenant(crashed["ledger_by_tenant"])
    print(
        f"restart: /v1/limits month totals {sum(before.values())} USD before, "
        f"{sum(after.values())} USD once the new worker has recovered its tables"
    )
    assert after == before
