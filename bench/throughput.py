"""T1 and T2: events/s through the real worker against baselines from the same broker.

    python -m bench.throughput [--quick] [--only t1|t2] [--no-profile]

Method (both targets): every message is published first (`streams.replay.publish`,
which returns per-partition end offsets), the baseline consumes those same messages
from the same broker, and only then the real worker (`EmbeddedStack.start_worker`,
what `spendstream replay` runs) starts on the backlog. Its rate is measured between
the first time the consumer group's committed offsets move (start-up and group join
excluded) and the moment both agents are done: the ingest agent's committed offsets
reach the targets (ledger rows durable, since offsets are committed only after the
sink's write) and the spend agent's committed offsets on the costed topic stop moving
(spend tables and detectors done; "stopped" = unchanged for 3 s after ingest ends).
Publishing first keeps the producer off the 2 cores while the worker runs, and feeds
the worker exactly what the baseline consumed. The rate is events counted after the
first commit divided by that window; commits every 0.5 s make it slightly low
(± 0.5 s), which matters only for the --quick sizes.

T1: messages are JSON arrays of 100 distinct events; baseline (a) raw aiokafka + json.loads.
T2: one event per message; baseline (b) a bare Faust agent with default settings.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import profiling
from bench.baselines import bare_faust, raw_consume
from bench.common import CpuTrace, batched_messages, emit, loadavg, single_messages
from streams.app import APP_ID
from streams.embedded_stack import EmbeddedStack, raise_worker_failed
from streams.replay import ledger_totals, publish
from streams.settings import Settings

SETTLE_SECONDS = 3.0
POLL_SECONDS = 0.1


async def watch_worker(
    stack: EmbeddedStack,
    targets: dict[int, int],
    trace: CpuTrace,
    profile_path: Path | None,
    timeout: float,
) -> dict[str, Any]:
    """Poll the group's committed offsets on the usage and costed topics until done."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings = stack.settings
    worker = stack.workers[-1]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap, group_id=APP_ID, enable_auto_commit=False
    )
    await consumer.start()
    usage = {p: TopicPartition(settings.usage_topic, p) for p in targets}
    costed = [TopicPartition(settings.costed_topic, p) for p in range(settings.topic_partitions)]
    total = sum(targets.values())
    started = time.monotonic()
    first: tuple[float, int] | None = None
    ingest_done: float | None = None
    costed_seen, costed_changed = -1, started
    first_profile = None
    try:
        while True:
            if worker.process.poll() is not None:
                raise_worker_failed(settings.data_dir, worker.process.returncode)
            trace.sample()
            offsets = await asyncio.gather(*(consumer.committed(tp) for tp in usage.values()))
            done = sum(min(t, o or 0) for t, o in zip(targets.values(), offsets, strict=True))
            costed_now = sum(
                o or 0 for o in await asyncio.gather(*(consumer.committed(tp) for tp in costed))
            )
            now = time.monotonic()
            if costed_now != costed_seen:
                costed_seen, costed_changed = costed_now, now
            if first is None and done > 0:
                first = (now, done)
                if profile_path is not None:
                    first_profile = profiling.snapshot(profile_path)
            if ingest_done is None and done >= total:
                ingest_done = now
            if ingest_done is not None and now - max(ingest_done, costed_changed) >= SETTLE_SECONDS:
                break
            if now - started > timeout:
                raise TimeoutError(f"worker did not finish: {done}/{total} messages committed")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await consumer.stop()
    assert first is not None and ingest_done is not None
    return {
        "first_commit_at": first[0],
        "first_committed_messages": first[1],
        "ingest_done_at": ingest_done,
        "spend_done_at": max(costed_changed, ingest_done),
        "costed_committed": costed_seen,
        "first_profile": first_profile,
        "watch_started": started,
    }


def sink_seconds(metrics_text: str) -> tuple[float, int]:
    total = re.search(r"^spendstream_sink_batch_seconds_sum (\S+)", metrics_text, re.M)
    count = re.search(r"^spendstream_sink_batch_seconds_count (\S+)", metrics_text, re.M)
    return (float(total.group(1)) if total else 0.0, int(float(count.group(1))) if count else 0)


def run_target(
    name: str, events: int, per_message: int, profile: bool, timeout: float = 1800.0
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    settings = Settings(data_dir=tmp / "data")
    stack = EmbeddedStack(settings)
    profile_path = tmp / "profile.json" if profile else None
    result: dict[str, Any] = {"events": events, "events_per_message": per_message}
    try:
        stack.start_broker()
        messages = (
            batched_messages(events, per_message) if per_message > 1 else single_messages(events)
        )
        result["message_bytes_avg"] = round(sum(map(len, messages)) / len(messages))
        published = time.monotonic()
        targets = asyncio.run(publish(stack.bootstrap, settings.usage_topic, messages))
        result["publish_events_per_s"] = round(events / (time.monotonic() - published))
        del messages
        raw = asyncio.run(raw_consume(stack.bootstrap, settings.usage_topic, targets))
        result["baseline_raw_aiokafka"] = raw
        if per_message == 1:
            result["baseline_bare_faust"] = bare_faust(
                stack.bootstrap, settings.usage_topic, events
            )
        env = profiling.sampler_env(profile_path) if profile_path is not None else None
        worker_started = time.monotonic()
        worker = stack.start_worker(extra_env=env)
        stack.wait_ready(worker)
        assert stack.broker.process is not None
        trace = CpuTrace({"worker": worker.process.pid, "broker": stack.broker.process.pid})
        watch = asyncio.run(watch_worker(stack, targets, trace, profile_path, timeout))
        stats = worker.stats() or {}
        try:
            metrics = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            metrics = ""
        last_profile = profiling.snapshot(profile_path) if profile_path is not None else None
    finally:
        stack.stop()
    totals = ledger_totals(settings)
    shutil.rmtree(tmp, ignore_errors=True)

    total_messages = sum(targets.values())
    timed_events = (total_messages - watch["first_committed_messages"]) * per_message
    t0 = watch["first_commit_at"]
    ingest_s = watch["ingest_done_at"] - t0
    end_s = watch["spend_done_at"] - t0
    sink_s, sink_batches = sink_seconds(metrics)
    result.update(
        {
            "worker_start_to_first_commit_s": round(t0 - worker_started, 1),
            "timed_events": timed_events,
            "ingest_seconds": round(ingest_s, 2),
            "ingest_events_per_s": round(timed_events / ingest_s) if ingest_s > 0 else None,
            "end_to_end_seconds": round(end_s, 2),
            "events_per_s": round(timed_events / end_s) if end_s > 0 else None,
            "spend_agent_lag_s": round(watch["spend_done_at"] - watch["ingest_done_at"], 2),
            "cpu_share_worker": trace.share("worker", t0, watch["spend_done_at"]),
            "cpu_share_broker": trace.share("broker", t0, watch["spend_done_at"]),
            "sink_seconds_total": round(sink_s, 2),
            "sink_batches": sink_batches,
            "worker_stats": stats,
            "ledger_rows": totals.rows,
            "ledger_complete": totals.rows == events,
        }
    )
    if profile_path is not None:
        window = profiling.window(watch["first_profile"], last_profile)
        result["profile"] = profiling.summary(window)
    baseline = (
        result["baseline_bare_faust"] if per_message == 1 else result["baseline_raw_aiokafka"]
    )
    if result["events_per_s"] and baseline.get("events_per_s"):
        result["ratio"] = round(result["events_per_s"] / baseline["events_per_s"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="T1/T2 throughput against baselines")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["t1", "t2"])
    parser.add_argument("--no-profile", action="store_true", help="no stack sampler")
    args = parser.parse_args()
    load = loadavg()
    out: dict[str, Any] = {"benchmark": "throughput", "profiled": not args.no_profile}
    if args.only in (None, "t1"):
        t1 = run_target("t1", 20_000 if args.quick else 200_000, 100, not args.no_profile)
        t1["target"] = "events/s >= 0.5 x raw aiokafka + json.loads (batched messages of 100)"
        t1["pass"] = t1.get("ratio", 0) >= 0.5
        out["t1"] = t1
    if args.only in (None, "t2"):
        t2 = run_target("t2", 10_000 if args.quick else 50_000, 1, not args.no_profile)
        t2["target"] = "events/s >= 2 x bare Faust agent, default settings (one event/message)"
        t2["pass"] = t2.get("ratio", 0) >= 2.0
        out["t2"] = t2
    emit(out, load)


if __name__ == "__main__":
    main()
