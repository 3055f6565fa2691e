"""HTTP ingest's durable acknowledgement: latency of `POST /v1/events?ack=ledger`
(answered 202 once the events are ledgered: the embedded broker's default) against
`?ack=broker` (202 once the broker holds them), on the embedded stack.

    python -m bench.durable_ack [--requests N] [--events N]

One producer posts `--requests` requests of `--events` events one after the other,
first with `ack=broker`, then with `ack=ledger`, to one worker (embedded broker,
chdb in a temporary data dir); each request's wall time is measured at the client.
The durable figure is bounded below by the ingest consumer's batching: a batch is read
at least every 0.2 s (`MIN_BATCH_INTERVAL_SECONDS`) and written in one insert.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import emit, loadavg


def body(prefix: str, count: int) -> list[dict[str, Any]]:
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return [
        {
            "request_id": f"{prefix}-{i}",
            "timestamp": at,
            "tenant_id": f"bench-{i % 10}",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 800 + i,
            "output_tokens": 120,
        }
        for i in range(count)
    ]


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
        "max_ms": round(ms[-1], 1),
    }


def measure(url: str, ack: str, requests: int, events: int) -> dict[str, Any]:
    query = f"?ack={ack}"
    times: list[float] = []
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for n in range(requests):
            payload = body(f"{ack}-{n}", events)
            started = time.perf_counter()
            answer = client.post(f"/v1/events{query}", json=payload)
            times.append(time.perf_counter() - started)
            code = f"{answer.status_code} {answer.json().get('ack', '')}".strip()
            statuses[code] = statuses.get(code, 0) + 1
    return {"statuses": statuses, **percentiles(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description="durable-ack HTTP ingest latency")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--events", type=int, default=100)
    args = parser.parse_args()
    from streams.embedded.stack import EmbeddedStack
    from streams.settings import Settings

    load = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-durable-"))
    stack = EmbeddedStack(Settings(data_dir=tmp / "data"))
    try:
        stack.start_broker()
        worker = stack.start_worker()
        stack.wait_ready(worker)
        url = f"http://127.0.0.1:{worker.web_port}"
        # The first durable answer waits for the group join: warm up first.
        measure(url, "ledger", 3, args.events)
        broker = measure(url, "broker", args.requests, args.events)
        ledger = measure(url, "ledger", args.requests, args.events)
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    emit(
        {
            "benchmark": "durable_ack",
            "requests": args.requests,
            "events_per_request": args.events,
            "ack_broker": broker,
            "ack_ledger": ledger,
            "pass": set(ledger["statuses"]) == {"202 ledger"}
            and set(broker["statuses"]) == {"202 broker"},
        },
        load,
    )


if __name__ == "__main__":
    main()
