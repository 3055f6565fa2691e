"""A clean stop loses nothing: Ctrl-C of `spendstream dev` (the real embedded stack)
right after a burst of HTTP ingest. The worker refuses new requests with 503 and
Retry-After, ledgers what the in-memory broker holds, then exits; every event of a
request answered 202 is in the ledger after the stop. The burst asks for `?ack=broker`
(the embedded broker's default is durable ack): the drain is what ledgers it."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.stack import query_json
from tests.reliability.test_dev_restart import Dev

pytestmark = pytest.mark.integration

REQUESTS = 40
EVENTS_PER_REQUEST = 250
BROKER_ACK = "/v1/events?ack=broker"


def events(request: int) -> list[dict[str, Any]]:
    at = datetime.now(UTC) - timedelta(minutes=5)
    return [
        {
            "request_id": f"cs-{request}-{i}",
            "timestamp": at.isoformat(),
            "tenant_id": f"cs-tenant-{i % 3}",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 1000 + i,
            "output_tokens": 200,
        }
        for i in range(EVENTS_PER_REQUEST)
    ]


async def burst_then_stop(dev: Dev) -> tuple[set[str], list[httpx.Response]]:
    """The burst (all answered), Ctrl-C, then requests until the worker is gone: the
    request ids accepted, and the answers after the stop began."""
    accepted: set[str] = set()
    after_stop: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=dev.url, timeout=60) as client:
        batches = [events(n) for n in range(REQUESTS)]
        answers = await asyncio.gather(*(client.post(BROKER_ACK, json=b) for b in batches))
        for batch, answer in zip(batches, answers, strict=True):
            assert answer.status_code == 202, answer.text
            accepted |= {e["request_id"] for e in batch}
        dev.process.send_signal(signal.SIGINT)
        n = REQUESTS
        while dev.process.poll() is None:
            batch = events(n)
            n += 1
            try:
                answer = await client.post(BROKER_ACK, json=batch)
            except httpx.TransportError:
                break  # the worker has stopped listening
            after_stop.append(answer)
            if answer.status_code == 202:  # admitted before the worker took the signal
                accepted |= {e["request_id"] for e in batch}
            await asyncio.sleep(0.05)
    return accepted, after_stop


def test_ctrl_c_after_a_burst_ledgers_every_accepted_event_and_refuses_new_ones(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    config = tmp_path / "config.yaml"
    config.write_text("detectors: {online: {enabled: false}}\n")
    dev = Dev(data_dir, config)
    try:
        accepted, after_stop = asyncio.run(burst_then_stop(dev))
        code = dev.process.wait(timeout=120)
    finally:
        if dev.process.poll() is None:
            dev.process.kill()
    output = "".join(dev.lines)
    assert code == 0, output
    refused = [a for a in after_stop if a.status_code == 503]
    assert refused, [a.status_code for a in after_stop]
    assert all(a.headers.get("Retry-After") for a in refused)
    assert refused[0].json()["error"] == "stopping"
    # Once refused, refused until the end: nothing is taken in during the drain.
    first = after_stop.index(refused[0])
    assert all(a.status_code == 503 for a in after_stop[first:])
    ledgered = {
        row["request_id"]
        for row in query_json(
            data_dir,
            "SELECT request_id FROM usage_ledger FINAL WHERE startsWith(request_id, 'cs-')",
        )
    }
    lost = accepted - ledgered
    assert len(accepted) >= REQUESTS * EVENTS_PER_REQUEST
    assert not lost, f"{len(lost)} accepted events not in the ledger after the stop"
    assert "stopping: HTTP ingest answers 503 from now; draining" in output
    assert "every usage message is ledgered" in output, output
