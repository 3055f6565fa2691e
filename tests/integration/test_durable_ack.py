"""`POST /v1/events?ack=ledger` against the real stack (embedded broker, a worker child
process, chdb): the answer is 202 with `"ack": "ledger"` only once every accepted event is
a ledger row and every refused item a dead-letter row, so the ledger holds them the
moment it arrives. On the embedded broker it is the default; `?ack=broker` opts out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.helpers.stack import RunningStack

pytestmark = pytest.mark.integration


def events(prefix: str, count: int) -> list[dict[str, Any]]:
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return [
        {
            "request_id": f"{prefix}-{i}",
            "timestamp": at,
            "tenant_id": "durable",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 500 + i,
            "output_tokens": 50,
        }
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path_factory.mktemp("durable") / "data")
    try:
        yield running
    finally:
        running.stop()


def ledgered(stack: RunningStack, prefix: str) -> int:
    (count,) = stack.query(
        f"SELECT count() FROM usage_ledger FINAL WHERE startsWith(request_id, '{prefix}-')"
    )[0]
    return int(count)


def test_ack_ledger_answers_202_once_events_and_dead_letters_are_written(
    stack: RunningStack,
) -> None:
    batch = [*events("da", 300), {**events("da-bad", 1)[0], "input_tokens": -5}]
    answer = httpx.post(f"{stack.url}/v1/events?ack=ledger", json=batch, timeout=60)
    assert answer.status_code == 202, answer.text
    assert answer.json()["ack"] == "ledger"
    assert answer.json()["accepted"] == 300
    assert answer.json()["rejected"] == 1
    # No wait: the answer came after the write.
    assert ledgered(stack, "da") == 300
    (letters,) = stack.query(
        "SELECT count() FROM dead_letters FINAL WHERE request_id = 'da-bad-0'"
    )[0]
    assert int(letters) == 1


def test_durable_ack_is_the_default_on_the_embedded_broker(stack: RunningStack) -> None:
    answer = httpx.post(f"{stack.url}/v1/events", json=events("dflt", 200), timeout=60)
    assert answer.status_code == 202, answer.text
    assert answer.json()["ack"] == "ledger"
    assert ledgered(stack, "dflt") == 200


def test_ack_ledger_of_events_already_ledgered_answers_202_and_counts_nothing_twice(
    stack: RunningStack,
) -> None:
    batch = events("dd", 50)
    for _ in range(2):
        answer = httpx.post(f"{stack.url}/v1/events?ack=ledger", json=batch, timeout=60)
        assert answer.status_code == 202, answer.text
        assert answer.json()["ack"] == "ledger"
    assert ledgered(stack, "dd") == 50


def test_ack_broker_opts_out_and_an_unknown_ack_is_refused(stack: RunningStack) -> None:
    answer = httpx.post(f"{stack.url}/v1/events?ack=broker", json=events("dn", 1))
    assert answer.status_code == 202
    assert answer.json()["ack"] == "broker"
    refused = httpx.post(f"{stack.url}/v1/events?ack=disk", json=events("dx", 1))
    assert refused.status_code == 400
    assert refused.json()["error"] == "bad_parameter"
