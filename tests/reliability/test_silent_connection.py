"""Case: the worker's producer connection stops answering. A proxy in front of the real
broker lets one Produce request of the worker's Faust producer through and then
forwards nothing more on that connection (tests/reliability/silencing_proxy.py).
aiokafka keeps one produce request in flight per broker, so every costed publish of
the ingest and every table write of the spend agent waits on that answer → the
request times out (streams/runtime/faust_config.py PRODUCER_REQUEST_TIMEOUT_SECONDS, not Faust's 20
minutes), the producer reconnects, the failed step is retried, and the ledger and the
in-stream totals are exact."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from streams.ports import free_port
from streams.runtime.faust_config import PRODUCER_REQUEST_TIMEOUT_SECONDS
from tests.reliability.conftest import Expectation, FaultStack, make_events, tally_ledger
from tests.reliability.silencing_proxy import SilencingProxy, fault_stack_behind

pytestmark = pytest.mark.integration

FIRST, SECOND = 300, 300


def publish(stack: FaultStack, events: list[dict[str, object]]) -> None:
    stack.publish(
        [orjson.dumps(e) for e in events], keys=[str(e["request_id"]).encode() for e in events]
    )


def test_a_producer_connection_that_stops_answering_costs_one_request_timeout(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    prefix = "silent-"
    events = make_events(FIRST + SECOND, seed=91, prefix=prefix)
    proxy = SilencingProxy(free_port(), free_port(), client_prefix=b"faust").start()
    stack = fault_stack_behind(proxy, data_dir)
    try:
        assert stack.bootstrap.endswith(f":{proxy.listen_port}")
        publish(stack, events[:FIRST])
        stack.wait_consumed(timeout=120)

        proxy.arm()
        publish(stack, events[FIRST:])
        deadline = time.monotonic() + 30
        while not proxy.silenced:
            assert time.monotonic() < deadline, "the worker's producer never produced"
            time.sleep(0.1)
        silenced_at = time.monotonic()
        # Faust's default would hold every write for 1200 s; a few timeouts' worth here.
        stack.wait_consumed(timeout=4 * PRODUCER_REQUEST_TIMEOUT_SECONDS)
        recovered_s = time.monotonic() - silenced_at

        ledger = stack.ledger_month_by_tenant(f"{prefix}%")
        in_stream = stack.wait_in_stream(ledger, timeout=60)
        retried = stack.logged("ingest batch failed (") + stack.logged(
            "spend table changelog write failed ("
        )
        # The spend agent waited on its table writes, with costed messages past its
        # progress: no consumer skip, nothing to read again.
        reread = stack.logged("reading again from offset")
        tally = tally_ledger(
            "worker's producer connection silenced mid-request",
            stack,
            Expectation.of(events),
            like=f"{prefix}%",
            restarts=stack.restarts,
            recovered_s=round(recovered_s, 1),
            retried_steps=len(retried),
            costed_rereads=len(reread),
        ).report()
        assert tally.lost == 0
        assert tally.double_counted == 0
        assert in_stream == ledger
        assert retried, "no publish or table write was retried: the silence did not bite"
        assert not reread, reread
    finally:
        stack.stop()
        proxy.stop()
