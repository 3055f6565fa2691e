"""Which acknowledgement a `POST /v1/events` without `?ack=` gets: durable (ledger) on
the embedded in-memory broker, broker ack on Kafka, and `?ack=` always wins."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.settings import Settings

pytestmark = pytest.mark.timeout(30)


class LedgerWaits:
    """A `wait_ledgered` that answers `ledgered` and keeps how often it was asked."""

    def __init__(self, ledgered: bool) -> None:
        self.ledgered = ledgered
        self.calls = 0

    async def __call__(self, positions: Sequence[tuple[int, int]], seconds: float) -> bool:
        self.calls += 1
        return self.ledgered


def test_the_embedded_broker_defaults_to_ledger_ack_and_kafka_to_broker_ack() -> None:
    embedded = Settings(log_epoch="embedded-x", log_epoch_started_at=datetime.now(UTC))
    assert embedded.in_memory_broker
    assert embedded.resolved_http_default_ack == "ledger"
    assert not Settings().in_memory_broker
    assert Settings().resolved_http_default_ack == "broker"
    assert Settings(http_default_ack="ledger").resolved_http_default_ack == "ledger"
    explicit = Settings(http_default_ack="broker", log_epoch_started_at=datetime.now(UTC))
    assert explicit.resolved_http_default_ack == "broker"


async def test_without_ack_the_default_waits_for_the_ledger(
    start_ingest: Any, usage_event: Any
) -> None:
    waits = LedgerWaits(ledgered=False)
    ingest = await start_ingest(wait_ledgered=waits, default_ack="ledger", durable_ack_seconds=0.1)
    response = await ingest.post(json=usage_event("d1"))
    assert response.status_code == 504
    assert response.json()["error"] == "not_yet_ledgered"
    assert waits.calls == 1

    waits.ledgered = True
    response = await ingest.post(json=usage_event("d2"))
    assert response.status_code == 202
    assert response.json()["ack"] == "ledger"
    assert waits.calls == 2


async def test_ack_broker_opts_out_of_the_durable_default(
    start_ingest: Any, usage_event: Any
) -> None:
    waits = LedgerWaits(ledgered=False)
    ingest = await start_ingest(wait_ledgered=waits, default_ack="ledger")
    response = await ingest.post(json=usage_event("b1"), params={"ack": "broker"})
    assert response.status_code == 202
    assert response.json()["ack"] == "broker"
    assert waits.calls == 0
    assert [e["request_id"] for e in ingest.published.events] == ["b1"]


async def test_ack_ledger_without_a_ledger_to_wait_for_is_refused(
    start_ingest: Any, usage_event: Any
) -> None:
    ingest = await start_ingest()
    response = await ingest.post(json=usage_event("n1"), params={"ack": "ledger"})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_parameter"
    assert ingest.published.events == []
