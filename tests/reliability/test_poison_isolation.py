"""Case: one poison event in 10,000 good ones (issue 22). Each poison once stopped the
ledger for every tenant: the sink retried the failing insert for ever.

- an over-precise decimal: `reported_cost_usd` 7.750000000000001e-05, what float
  arithmetic gives (LiteLLM's costs look like it) — rounded to the ledger's 18 places
  at decode and ledgered;
- 101 months in one message — more partitions than one ClickHouse insert may create:
  written in chunks, every event ledgered (the rollups keep what the raw ledger's
  90-day TTL drops at insert);
- a 1970 timestamp — a dead letter, `timestamp_too_old`.

The good events are all ledgered at their exact cost, the poison is where it belongs,
the sink never retried (no batch stalled), and /health is ok afterwards."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tests.reliability.conftest import (
    NOW,
    Expectation,
    FaultStack,
    Tally,
    event_cost,
    make_events,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

GOOD = 10_000
TENANT = "isolation-poison"
PRECISE = 7.750000000000001e-05


def poison(request_id: str, timestamp: datetime, **overrides: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "timestamp": timestamp.isoformat(),
        "tenant_id": TENANT,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
        **overrides,
    }


def months_back(count: int) -> list[datetime]:
    year, month, out = NOW.year, NOW.month, []
    for _ in range(count):
        out.append(datetime(year, month, 1, 12, tzinfo=UTC))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out


@pytest.mark.timeout(900)
def test_one_poison_event_never_stops_the_ledger(fault_stack: Any) -> None:
    # A floor below the 101 months (the default, 2020, would refuse the oldest).
    stack: FaultStack = fault_stack({"SPENDSTREAM_TIMESTAMP_FLOOR": "2010-01-01T00:00:00Z"})
    good = make_events(GOOD, seed=2201, prefix="iso-")
    precise = poison("iso-poison-decimal", NOW, reported_cost_usd=PRECISE)
    months = [poison(f"iso-poison-month-{i}", m) for i, m in enumerate(months_back(101))]
    too_old = poison("iso-poison-1970", datetime(1970, 1, 1, tzinfo=UTC))
    messages: list[tuple[str, bytes]] = [(e["request_id"], orjson.dumps(e)) for e in good]
    for name, message in [
        ("decimal", orjson.dumps(precise)),
        ("months", orjson.dumps(months)),
        ("1970", orjson.dumps(too_old)),
    ]:
        messages.insert(random.Random(name).randrange(len(messages)), (name, message))

    _, health_before = stack.health()
    started = time.monotonic()
    positions = stack.publish([m for _, m in messages])
    stack.wait_consumed(timeout=300)
    elapsed = time.monotonic() - started
    where = dict(zip([name for name, _ in messages], positions, strict=True))

    status, health = stack.health()
    rows = stack.ledger_rows_by_id("iso-%")
    expected = Expectation.of(good)
    present = expected.ids & set(rows)
    ledger = {
        str(r[0]): Decimal(r[1])
        for r in stack.query(
            "SELECT request_id, cost_usd FROM usage_ledger FINAL "
            "WHERE startsWith(request_id, 'iso-')"
        )
    }
    (reported,) = stack.query(
        "SELECT toString(reported_cost_usd) FROM usage_ledger FINAL "
        "WHERE request_id = 'iso-poison-decimal'"
    )
    (month_requests,) = stack.query(
        "SELECT sum(requests), uniqExact(toStartOfMonth(day)) FROM tenant_daily_state "
        f"WHERE tenant_id = '{TENANT}'"
    )
    letters = stack.dead_letters()
    partition, offset = where["1970"]
    retries = health["sink_failures"] - health_before["sink_failures"]
    Tally(
        "poison isolation",
        events_in=len(expected.ids),
        events_out=len(present),
        lost=len(expected.ids - present),
        double_counted=sum(n - 1 for n in rows.values()),
        extra={
            "poison": "over-precise decimal, 101 months in one message, a 1970 timestamp",
            "sink retries": retries,
            "seconds": f"{elapsed:.1f}",
            "health": health["status"],
        },
    ).report()

    assert present == expected.ids
    assert all(n == 1 for n in rows.values())
    assert {rid: ledger[rid] for rid in expected.ids} == {
        e["request_id"]: event_cost(e) for e in good
    }
    # The decimal: ledgered, at the ledger's scale.
    assert Decimal(reported[0]) == Decimal("0.000077500000000000")
    assert ledger["iso-poison-decimal"] == event_cost(precise)
    # The 101 months: every event counted, in 101 months (the rollups have no TTL).
    assert (int(month_requests[0]) - 1, int(month_requests[1])) == (101, 101)
    # The 1970 event: a dead letter with its reason, not a row.
    assert letters[(partition, offset, -1)] == "timestamp_too_old"
    assert "iso-poison-1970" not in rows
    # Never stalled: no insert failed and was retried; healthy afterwards.
    assert retries == 0
    assert (status, health["status"]) == (200, "ok")
