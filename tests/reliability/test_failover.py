"""Case 6, failover: two workers in one consumer group on the embedded broker
(`spendstream dev --workers 2`: the first owns the chdb data dir, the peer writes and
reads through it). The peer is SIGKILLed mid-stream; the owner takes over its
partitions after the session timeout → the final ledger is exact and the in-stream
totals (all partitions on the owner by then) equal it.

Killing the owner instead is not a failover on the embedded stack: it is the only
process that can open the ledger (peers' writes back off until it returns)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from streams.embedded.stack import WorkerProcess
from tests.helpers.waiting import wait_for
from tests.reliability.conftest import Expectation, FaultStack, make_events, tally_ledger

# Two worker starts and a takeover (~100 s): run by `make reliability` only.
pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def assigned(worker: WorkerProcess) -> list[str]:
    stats = worker.stats() or {}
    return list(stats.get("assigned", []))


N = 10_000


@pytest.fixture(scope="module")
def failed_over(tmp_path_factory: pytest.TempPathFactory) -> Any:
    n = N
    prefix = f"failover{n}-"
    events = make_events(n, seed=606, prefix=prefix)
    lines = [orjson.dumps(e) for e in events]
    # Duplicates keyed by request_id, as the SDK sends them: a copy lands on the
    # partition of its original, whichever worker owns it.
    duplicates = lines[: n // 5]
    keys = [e["request_id"].encode() for e in events] + [
        e["request_id"].encode() for e in events[: n // 5]
    ]

    data_dir = tmp_path_factory.mktemp("failover") / "data"
    data_dir.mkdir()
    stack = FaultStack(data_dir)
    try:
        owner = stack.worker
        peer = stack.stack.start_worker(peer_of=owner)
        stack.stack.wait_ready(peer, timeout=120)
        wait_for(lambda: assigned(owner) and assigned(peer), timeout=120)
        split = (len(assigned(owner)), len(assigned(peer)))

        stack.publish(lines + duplicates, keys=keys)
        wait_for(lambda: (peer.stats() or {}).get("messages", 0) > 0, timeout=60)
        time.sleep(1.0)  # mid-stream
        peer_read = (peer.stats() or {}).get("messages", 0)
        peer.process.kill()
        peer.process.wait(timeout=30)
        killed_at = time.monotonic()
        wait_for(lambda: len(assigned(owner)) == 4, timeout=120)
        takeover_s = time.monotonic() - killed_at
        stack.wait_consumed(timeout=600)
        ledger_by_tenant = stack.ledger_month_by_tenant(f"{prefix}%")
        yield {
            "stack": stack,
            "n": n,
            "prefix": prefix,
            "expected": Expectation.of(events),
            "split": split,
            "peer_read": peer_read,
            "takeover_s": takeover_s,
            "ledger_by_tenant": ledger_by_tenant,
            "in_stream": stack.wait_in_stream(ledger_by_tenant, timeout=60),
        }
    finally:
        stack.stop()


def test_owner_takes_over_and_the_ledger_is_exact(failed_over: dict[str, Any]) -> None:
    run = failed_over
    stack: FaultStack = run["stack"]
    prefix = run["prefix"]
    raw_rows, distinct = stack.query(
        f"SELECT count(), uniqExact(request_id) FROM usage_ledger WHERE request_id LIKE '{prefix}%'"
    )[0]
    tally = tally_ledger(
        f"failover, peer SIGKILLed of 2 workers, N={run['n']}",
        stack,
        run["expected"],
        like=f"{prefix}%",
        partitions_owner_peer="/".join(map(str, run["split"])),
        peer_read_before_kill=run["peer_read"],
        takeover_seconds=f"{run['takeover_s']:.1f}",
    ).report()

    assert run["split"][0] > 0 and run["split"][1] > 0  # the group really was shared
    assert tally.lost == 0
    assert tally.double_counted == 0
    assert int(raw_rows) == int(distinct) == run["n"]
    assert stack.dirty_days() == 0
    assert stack.ledger_cost(f"{prefix}%") == run["expected"].cost
    assert run["ledger_by_tenant"] == run["expected"].cost_by_tenant


def test_in_stream_totals_equal_the_ledger_after_failover(failed_over: dict[str, Any]) -> None:
    assert failed_over["in_stream"] == failed_over["ledger_by_tenant"]


def test_owner_stays_healthy(failed_over: dict[str, Any]) -> None:
    stack: FaultStack = failed_over["stack"]
    assert stack.worker.process.poll() is None
    assert httpx.get(f"{stack.url}/health", timeout=10).status_code == 200
