"""Case 4, ClickHouse outage: every ledger write fails while the outage file exists (the
worker's fault hook; the sink's real retry and backoff path runs). Events published
meanwhile wait in Kafka (backpressure: nothing is committed past the stuck batch,
nothing is ledgered), /health answers 503 "degraded"; after the outage the worker
catches up and every total is exact."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.reliability.conftest import (
    OUTAGE_FILE_ENV,
    Expectation,
    FaultStack,
    Snapshot,
    make_events,
    tally_ledger,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "n, outage_s",
    [
        pytest.param(3_000, 5.0, id="5s"),
        pytest.param(
            30_000, 60.0, id="60s", marks=[pytest.mark.reliability, pytest.mark.timeout(900)]
        ),
    ],
)
def test_clickhouse_outage_degrades_health_loses_nothing_and_catches_up(
    case_stack: FaultStack, n: int, outage_s: float
) -> None:
    stack = case_stack
    outage = Path(stack.extra_env[OUTAGE_FILE_ENV])
    prefix = f"outage{n}-"
    events = make_events(n, seed=404, prefix=prefix)
    expected = Expectation.of(events)
    lines = [orjson.dumps(e) for e in events]
    third = n // 3
    before = Snapshot.take(stack, views=False)

    # A first third with ClickHouse up.
    stack.publish(lines[:third])
    stack.wait_consumed()
    rows_before_outage = len(stack.ledger_rows_by_id(f"{prefix}%"))

    # The outage: the rest is published while every write fails.
    outage.touch()
    health_seen: list[tuple[int, str]] = []
    ledger_during: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            status, body = stack.health()
            health_seen.append((status, body["status"]))
            time.sleep(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        remaining = lines[third:]
        pieces = 5
        for i in range(pieces):
            stack.publish(remaining[i::pieces])
            time.sleep(outage_s / pieces)
        committed_during = stack.committed()
        ledger_during.append(len(stack.ledger_rows_by_id(f"{prefix}%")))
        sink_failures = stack.health()[1]["sink_failures"]
    finally:
        outage.unlink(missing_ok=True)
    outage_seconds = time.monotonic() - started
    stack.wait_consumed(timeout=300)
    caught_up_s = time.monotonic() - started - outage_seconds
    stop.set()
    watcher.join()

    after = Snapshot.take(stack, views=False)
    in_stream = stack.wait_in_stream(expected.cost_by_tenant)
    tally = tally_ledger(
        f"ClickHouse outage {outage_s:.0f}s, N={n}",
        stack,
        expected,
        like=f"{prefix}%",
        sink_failures=sink_failures,
        degraded_polls=sum(1 for s in health_seen if s == (503, "degraded")),
        catch_up_seconds=f"{caught_up_s:.1f}",
    ).report()

    assert (503, "degraded") in health_seen
    assert sink_failures > 0
    # Backpressure: nothing ledgered during the outage, and the group did not commit
    # the messages published during it.
    assert ledger_during == [rows_before_outage] == [third]
    assert committed_during < sum(stack.targets.values())
    # After: healthy again, caught up, exact.
    status, body = stack.health()
    assert (status, body["status"]) == (200, "ok")
    assert tally.lost == 0
    assert tally.double_counted == 0
    assert before.stat(after, "ledgered") == n
    assert stack.ledger_cost(f"{prefix}%") == expected.cost
    assert in_stream == expected.cost_by_tenant
