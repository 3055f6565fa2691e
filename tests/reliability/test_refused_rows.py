"""A row that passes decoding but that ClickHouse refuses, on the real worker.

The refusal is ClickHouse's own: a CHECK constraint on `usage_ledger`, added through the
worker's statement path (the data dir is the worker's), refuses one event's row with
VIOLATED_CONSTRAINT, a data error. The sink halves the batch until that row is alone:
the good events are ledgered, the refused one is a dead letter (`ledger_insert_failed`,
ClickHouse's error as its message) in the dead-letter table and on the dead-letter
topic like every other, and no in-stream total counts it: `/v1/limits` for its tenant
equals the ledger's sum, because costed events go out only after the ledger write took
their rows (streams/ingest/pipeline.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from streams.auth import read_tokens
from streams.ledger.isolation import REFUSED_REASON
from streams.ledger.peer import PeerClickHouseClient
from tests.helpers.stack import read_topic
from tests.reliability.conftest import Expectation, FaultStack, event_cost, make_events

pytestmark = pytest.mark.integration

POISON_ID = "refused-poison-1"


@pytest.mark.timeout(600)
def test_a_row_clickhouse_refuses_is_a_dead_letter_and_counts_in_no_total(
    fault_stack: Any,
) -> None:
    stack: FaultStack = fault_stack()
    peer = PeerClickHouseClient(stack.url, read_tokens(stack.settings.data_dir)["peer"])
    try:
        peer.command(
            "ALTER TABLE usage_ledger ADD CONSTRAINT refuse_poison "
            f"CHECK request_id != '{POISON_ID}'"
        )
    finally:
        peer.close()

    good = make_events(400, seed=2202, prefix="refused-")
    tenant = good[0]["tenant_id"]
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    # This month, a priced model: counted in the tenant's month total if it got there.
    poison = dict(good[0], request_id=POISON_ID, timestamp=now)
    assert event_cost(poison) > 0
    lines = [orjson.dumps(e) for e in good]
    lines.insert(len(lines) // 2, orjson.dumps([good[1], poison, good[2]]))  # one message
    where = stack.publish(lines)[len(lines) // 2]
    stack.wait_consumed(timeout=300)

    rows = stack.ledger_rows_by_id("refused-%")
    assert set(rows) == Expectation.of(good).ids  # every good one, the poison not
    assert all(n == 1 for n in rows.values())

    # The dead letter: in the table, at the poison's position, with ClickHouse's error.
    [(reason, message, request_id, letter_tenant)] = stack.query(
        "SELECT reason, message, request_id, tenant_id FROM dead_letters FINAL "
        f"WHERE partition = {where[0]} AND offset = {where[1]} AND element_index = 1"
    )
    assert (reason, request_id, letter_tenant) == (REFUSED_REASON, POISON_ID, tenant)
    assert "VIOLATED_CONSTRAINT" in message, message
    # ... and on the dead-letter topic, as every dead letter.
    on_topic = [
        orjson.loads(value)
        for value in asyncio.run(read_topic(stack.bootstrap, stack.settings.dlq_topic))
    ]
    [published] = [letter for letter in on_topic if letter.get("request_id") == POISON_ID]
    assert (published["reason"], published["message"]) == (REFUSED_REASON, message)

    # No in-stream total counts it: the tenant's month equals the ledger's sum.
    [(ledger_month,)] = stack.query(
        "SELECT toString(sum(cost_usd)) FROM usage_ledger FINAL "
        f"WHERE tenant_id = '{tenant}' AND toYYYYMM(timestamp) = toYYYYMM(now('UTC'))"
    )
    deadline = time.monotonic() + 60
    while (in_stream := stack.month_to_date(tenant)) != Decimal(ledger_month):
        assert time.monotonic() < deadline, (in_stream, ledger_month, event_cost(poison))
        time.sleep(0.5)
    status, health = stack.health()
    assert (status, health["status"]) == (200, "ok")
