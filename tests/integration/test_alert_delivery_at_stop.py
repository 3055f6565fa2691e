"""A page still being retried when the worker stops is not dropped: the worker's stop
gives the delivery queue its few seconds, then records what is left as not delivered
before shutdown (the real slack-sdk client against a receiver on 127.0.0.1 that
answers 503 until the stop)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.ledger.remote import open_reader
from tests.helpers.receivers import (
    Received,
    Receiver,
    ReceiverLoop,
    Reply,
    pagerduty_ok,
    self_signed_tls,
)
from tests.helpers.waiting import wait_for
from tests.integration.test_alerting_e2e import DELIVERY_CONFIG, AlertingStack, answered, page

pytestmark = pytest.mark.integration


def unavailable(_: Received) -> Reply:
    return Reply(503, {}, "service unavailable")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[AlertingStack]:
    loop = ReceiverLoop()
    stack = AlertingStack(
        "stop",
        tmp_path / "stop",
        slack=loop.start(Receiver(unavailable)),
        # Never started: this test pages no critical alert.
        pagerduty=Receiver(pagerduty_ok, self_signed_tls(tmp_path)),
    )
    try:
        stack.start(DELIVERY_CONFIG)
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()
        loop.stop(stack.slack)
        loop.close()


def test_a_page_retried_at_the_stop_is_recorded_as_not_delivered(running: AlertingStack) -> None:
    prefix = page(running, "stopping", critical=False)
    wait_for(lambda: [r for r in answered(running, prefix)() if r[2] == "retrying"], timeout=60)

    began = time.monotonic()
    running.stop()  # SIGTERM, and the wait for the worker to exit
    stopped_in = time.monotonic() - began

    with open_reader(running.stack.settings) as reader:  # the data dir, the worker gone
        rows = reader.query(
            "SELECT outcome, reason FROM alert_deliveries FINAL "
            f"WHERE startsWith(fingerprint, '{prefix}') ORDER BY attempted_at"
        ).result_rows
    outcomes = [outcome for outcome, _ in rows]
    assert set(outcomes[:-1]) == {"retrying"}, rows
    assert rows[-1] == ("failed", "not delivered before shutdown"), rows
    # The queue's wait is bounded: the stop does not hang on a receiver that is down.
    assert stopped_in < 15
