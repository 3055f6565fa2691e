"""T3: alert latency, from publishing the event that crosses a threshold to the page
arriving at the receiver, with the pipeline under load.

    python -m bench.alert_latency [--rate 2000] [--trials 20] [--quick]

Method: the embedded broker and a real worker (`EmbeddedStack`, what `spendstream dev`
runs) with a spend config whose warning route is a Slack incoming webhook on
127.0.0.1 (a plain HTTP server in a thread of this process, so publish and arrival
times come from one monotonic clock). The real slack-sdk client in the worker posts
the page. A background producer publishes the simulator's normal traffic at `--rate`
events/s (JSON arrays of up to 100 events, one Kafka message per 50 ms tick at
2000 events/s, as a gateway batches) for
the whole run. Each trial publishes ONE event, a $2.50 call in a new workflow run of
a workflow whose run-cost threshold is $1: `RunCostDetector` fires on the first event
over the threshold, and a new run id makes each trial a new incident (one page each).
The latency is receiver arrival minus the moment before the trial's send; the next
trial starts after the page arrived. One warm-up trial (first Slack client use) is not
counted. p50 and p99 are nearest-rank percentiles: with 20 trials p99 is the slowest.
A page that does not arrive within 30 s ends the run: it is counted as 30 s (a lower
bound) and reported in `timed_out`.

The result line also says whether the worker kept up with the load over the trials
(events it ingested per second), since a worker that falls behind measures its
backlog, not its latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from bench.common import emit, loadavg
from streams.embedded.simulate import TrafficGenerator
from streams.embedded.stack import EmbeddedStack, WorkerProcess
from streams.ports import free_port
from streams.settings import Settings

TOPIC = "spendstream.usage"
TICK_SECONDS = 0.05
MESSAGE_EVENTS = 100
PAGE_TIMEOUT_SECONDS = 30.0
CATCH_UP_SECONDS = 60.0
BENCH_TENANT = "bench-latency"
BENCH_WORKFLOW = "bench-threshold"

CONFIG = """
workflows:
  run_threshold_usd:
    {workflow}: "1.00"    # one $2.50 call crosses it (a warning: Slack)
alerting:
  cooldown_minutes: 60
routing:
  console: false          # the console notifier would print every page to the worker log
  warning:
    slack:
      webhook_url: http://127.0.0.1:{port}/services/T0/B0/bench
"""


class SlackWebhook:
    """An incoming-webhook receiver: records (monotonic arrival, fingerprint) per post."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: dict[str, float] = {}
        self.posts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.monotonic()
                receiver.record(body, arrived)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per page on stderr would only be noise

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def record(self, body: bytes, arrived: float) -> None:
        try:
            text = str(orjson.loads(body).get("text", ""))
        except (orjson.JSONDecodeError, AttributeError):
            text = ""
        with self._lock:
            self.posts += 1
            # The summary names the run: "run <run id> of workflow ...".
            for word in text.split():
                if word.startswith("bench-run-"):
                    self.arrivals.setdefault(word, arrived)

    def arrival(self, run_id: str) -> float | None:
        with self._lock:
            return self.arrivals.get(run_id)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def threshold_event(run_id: str) -> dict[str, Any]:
    """A gpt-4o call of 1M input tokens ($2.50) in its own run."""
    return {
        "request_id": f"req-{run_id}",
        "timestamp": datetime.now(UTC).isoformat(),
        "tenant_id": BENCH_TENANT,
        "team_id": "bench",
        "user_id": "bench-user",
        "workflow_id": BENCH_WORKFLOW,
        "workflow_run_id": run_id,
        "provider": "openai",
        "model": "gpt-4o",
        "input_tokens": 1_000_000,
        "output_tokens": 10,
    }


class Load:
    """The background producer: `rate` events/s of normal simulated traffic."""

    def __init__(self, producer: AIOKafkaProducer, rate: float) -> None:
        self.producer = producer
        self.rate = rate
        self.sent = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        generator = TrafficGenerator(seed=3)
        due, last = 0.0, time.monotonic()
        while not self.stop.is_set():
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            due += self.rate * (now - last)
            last = now
            count = int(due)
            due -= count
            moment = datetime.now(UTC)
            # At most MESSAGE_EVENTS per message, also when a late tick catches up.
            while count > 0:
                size = min(count, MESSAGE_EVENTS)
                batch = [generator.event(moment) for _ in range(size)]
                await self.producer.send(TOPIC, orjson.dumps(batch))
                self.sent += size
                count -= size


def stats(worker: WorkerProcess) -> dict[str, Any]:
    return dict(httpx.get(f"http://127.0.0.1:{worker.web_port}/stats", timeout=5).json())


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        await asyncio.sleep(0.1)  # each check is an HTTP request to the worker


async def page_arrival(webhook: SlackWebhook, run_id: str) -> float | None:
    deadline = time.monotonic() + PAGE_TIMEOUT_SECONDS
    while (arrival := webhook.arrival(run_id)) is None:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.002)
    return arrival


async def measure(
    stack: EmbeddedStack, worker: WorkerProcess, webhook: SlackWebhook, rate: float, trials: int
) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=0)
    await producer.start()
    load = Load(producer, rate)
    load_task = asyncio.create_task(load.run())
    latencies: list[float] = []
    timed_out = 0
    try:
        # Let the worker join its group and work off what queued meanwhile (within a
        # second of the load) before the clock runs; one that never catches up is
        # measured anyway, and the result line says it did not keep up.
        await wait_until(lambda: stats(worker)["events"] > 0, 120, "no event ingested")
        with contextlib.suppress(TimeoutError):
            await wait_until(
                lambda: stats(worker)["events"] >= load.sent - rate, CATCH_UP_SECONDS, ""
            )
        await asyncio.sleep(2)
        started, sent_before = time.monotonic(), load.sent
        events_before = stats(worker)["events"]
        for trial in range(trials + 1):  # trial 0 is the warm-up
            run_id = f"bench-run-{trial:03d}-{time.time_ns()}"
            sent_at = time.monotonic()
            await (await producer.send(TOPIC, orjson.dumps(threshold_event(run_id))))
            arrival = await page_arrival(webhook, run_id)
            ingested_now = stats(worker)["events"]
            took = (arrival - sent_at) if arrival is not None else None
            print(
                f"trial {trial}: {f'{took:.3f} s' if took is not None else 'timed out'} "
                f"(load published {load.sent}, worker ingested {ingested_now})",
                file=sys.stderr,
            )
            if took is None:
                # The worker is behind its load: later pages would wait longer still,
                # so stop; the timeout stands in as a lower bound for this trial.
                timed_out += 1
                latencies.append(PAGE_TIMEOUT_SECONDS)
                break
            if trial:
                latencies.append(took)
            await asyncio.sleep(0.5)  # pages do not overlap; load keeps flowing meanwhile
        elapsed = time.monotonic() - started
        published = (load.sent - sent_before) / elapsed
        ingested = (stats(worker)["events"] - events_before) / elapsed
    finally:
        load.stop.set()
        await load_task
        await producer.stop()
    latencies.sort()
    return {
        "metric": "alert_latency",
        "p50_s": round(percentile(latencies, 50), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "trials": len(latencies),
        "load_events_per_s": rate,
        "min_s": round(latencies[0], 3),
        "max_s": round(latencies[-1], 3),
        "timed_out": timed_out,  # > 0: p99 is a lower bound (the page timeout)
        "load_published_events_per_s": round(published, 1),
        "worker_ingested_events_per_s": round(ingested, 1),
        # Ingesting at least 95 % of what was published: the latencies are the
        # pipeline's, not a growing backlog's.
        "worker_kept_up": timed_out == 0 and ingested >= 0.95 * published,
        "slack_posts": webhook.posts,
    }


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="background events/s")
    parser.add_argument("--trials", type=int, default=20, help="threshold crossings timed")
    parser.add_argument("--quick", action="store_true", help="5 trials (harness check)")
    args = parser.parse_args()
    trials = 5 if args.quick else args.trials
    load_before = loadavg()

    webhook = SlackWebhook()
    webhook.start()
    root = Path(tempfile.mkdtemp(prefix="bench-alert-latency-"))
    config = root / "spend.yaml"
    config.write_text(CONFIG.format(workflow=BENCH_WORKFLOW, port=webhook.port))
    stack = EmbeddedStack(Settings(data_dir=root / "data"))
    try:
        stack.start_broker()
        worker = stack.start_worker(
            {
                "SPENDSTREAM_CONFIG_FILE": str(config),
            }
        )
        stack.wait_ready(worker, timeout=120)
        result = asyncio.run(measure(stack, worker, webhook, args.rate, trials))
    except BaseException:
        print(f"failed; worker log and data kept in {root}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(root, ignore_errors=True)
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
        webhook.stop()
    emit(result, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
