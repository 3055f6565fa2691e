"""HTTP ingest's durable acknowledgement: latency of `POST /v1/events?ack=ledger`
(answered 202 once the events are ledgered: the embedded broker's default) against
`?ack=broker` (202 once the broker holds them), on the embedded stack.

    python -m bench.durable_ack [--requests N] [--events N] [--rate EVENTS_PER_S]

One producer posts `--requests` requests of `--events` events one after the other,
first with `ack=broker`, then with `ack=ledger`, to one worker (embedded broker,
chdb in a temporary data dir); each request's wall time is measured at the client.
The durable figure is bounded below by the ingest consumer's batching: a batch is read
at least every 0.2 s (`MIN_BATCH_INTERVAL_SECONDS`) and written in one insert.

With `--rate` the simulator of `spendstream dev --simulate` publishes that many events
per second alongside (0: none). `broker_ack_to_ledger` is the crash window of the
in-memory broker: for each `ack=broker` request, the time from its answer (the broker
holds the events) to its events' ledger rows (`max(ingested_at)`, stamped when the
ingest batch is priced, just before its insert), so slightly short of the write's end.
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


def measure(
    url: str, ack: str, requests: int, events: int, answered_at: dict[str, float] | None = None
) -> dict[str, Any]:
    """Latencies of `requests` sequential requests; `answered_at` gets each request's
    prefix and the wall-clock time its answer arrived."""
    query = f"?ack={ack}"
    times: list[float] = []
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for n in range(requests):
            prefix = f"{ack}-{n}"
            payload = body(prefix, events)
            started = time.perf_counter()
            answer = client.post(f"/v1/events{query}", json=payload)
            times.append(time.perf_counter() - started)
            if answered_at is not None:
                answered_at[prefix] = time.time()
            code = f"{answer.status_code} {answer.json().get('ack', '')}".strip()
            statuses[code] = statuses.get(code, 0) + 1
    return {"statuses": statuses, **percentiles(times)}


def broker_ack_to_ledger(url: str, data_dir: Path, answered_at: dict[str, float]) -> dict[str, Any]:
    """Per `ack=broker` request: its answer to its last event's ledger row."""
    from streams.auth import analyst_token_for
    from streams.ledger.remote import RemoteQueryClient

    client = RemoteQueryClient(url, analyst_token_for(data_dir, None))
    sql = (
        "SELECT arrayStringConcat(arraySlice(splitByChar('-', request_id), 1, 2), '-') AS r, "
        "toUnixTimestamp64Milli(max(ingested_at)), count() FROM usage_ledger FINAL "
        "WHERE startsWith(request_id, 'broker-') GROUP BY r"
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            rows = {r: (int(ms), int(n)) for r, ms, n in client.query(sql).result_rows}
            if len(rows) >= len(answered_at) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        client.close()
    lags = [rows[r][0] / 1000 - at for r, at in answered_at.items() if r in rows]
    return {"requests_ledgered": len(lags), **percentiles(lags)}


def main() -> None:
    parser = argparse.ArgumentParser(description="durable-ack HTTP ingest latency")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, help="simulated events/s alongside")
    args = parser.parse_args()
    from streams.embedded.dev import Simulator
    from streams.embedded.stack import EmbeddedStack
    from streams.settings import Settings

    load = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-durable-"))
    settings = Settings(data_dir=tmp / "data")
    stack = EmbeddedStack(settings)
    simulator = None
    answered_at: dict[str, float] = {}
    try:
        stack.start_broker()
        worker = stack.start_worker()
        stack.wait_ready(worker)
        url = f"http://127.0.0.1:{worker.web_port}"
        if args.rate > 0:
            simulator = Simulator(stack.bootstrap, settings.usage_topic, args.rate)
            simulator.start()
        # The first durable answer waits for the group join: warm up first.
        measure(url, "ledger", 3, args.events)
        broker = measure(url, "broker", args.requests, args.events, answered_at)
        ledger = measure(url, "ledger", args.requests, args.events)
        window = broker_ack_to_ledger(url, settings.data_dir, answered_at)
    finally:
        if simulator is not None:
            simulator.stop()
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    emit(
        {
            "benchmark": "durable_ack",
            "requests": args.requests,
            "events_per_request": args.events,
            "simulated_events_per_s": args.rate,
            "ack_broker": broker,
            "ack_ledger": ledger,
            "broker_ack_to_ledger": window,
            "pass": set(ledger["statuses"]) == {"202 ledger"}
            and set(broker["statuses"]) == {"202 broker"},
        },
        load,
    )


if __name__ == "__main__":
    main()
