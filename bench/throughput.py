"""T1 and T2: events/s through the real worker against baselines from the same broker.

    python -m bench.throughput [--quick] [--only t1|t2] [--no-profile]
        [--worker-env KEY=VALUE] [--t1-env KEY=VALUE] [--t2-env KEY=VALUE]

The worker runs with the project's settings unless environment overrides are given
(e.g. `--t1-env SPENDSTREAM_BATCH_MAX_EVENTS=20`); the result line records them.

Method (both targets): every message is published first (`streams.embedded.replay.publish`,
which returns per-partition end offsets), the baseline consumes those same messages
from the same broker, and only then the real worker (`EmbeddedStack.start_worker`,
what `spendstream replay` runs) starts on the backlog. Publishing first keeps the
producer off the 2 cores while the worker runs and feeds the worker exactly what the
baseline consumed. The clock starts at the first batch the worker made durable
(/stats `messages` > 0: start-up and group join excluded) and stops when both agents
are done: /stats counts every message processed, the ingest group's committed offsets
reach the targets, and the spend agent's committed offsets on the costed topic have stopped
moving (unchanged for 3 s after ingest ended: spend tables and detectors done). The
rate is the events after the first durable batch divided by that window; the 0.5 s
commit interval makes it slightly low, which matters only at the --quick sizes.
Committed offsets alone are not trusted (/stats must agree with them), so a stall is
reported with the worker's last log line.

T1: messages are JSON arrays of 100 distinct events; baseline (a) raw aiokafka + json.loads.
T2: one event per message; baseline (b) a bare Faust agent with default settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import profiling
from bench.baselines import bare_faust, raw_consume
from bench.common import (
    CpuTrace,
    batched_messages,
    emit,
    last_error,
    loadavg,
    single_messages,
)
from streams.embedded.processes import stop
from streams.embedded.replay import ledger_totals, publish
from streams.embedded.stack import EmbeddedStack, raise_worker_failed
from streams.kafka.topics import APP_ID, INGEST_GROUP
from streams.settings import Settings

SETTLE_SECONDS = 3.0
POLL_SECONDS = 0.1
STALL_SECONDS = 30.0


class WorkerStalled(RuntimeError):
    pass


async def watch_worker(
    stack: EmbeddedStack,
    targets: dict[int, int],
    trace: CpuTrace,
    profile_path: Path | None,
    timeout: float,
) -> dict[str, Any]:
    """Poll the worker's /stats (messages made durable) and the group's committed offsets
    on the usage and costed topics until both agents are done."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings = stack.settings
    worker = stack.workers[-1]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap, group_id=INGEST_GROUP, enable_auto_commit=False
    )
    spend_consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap, group_id=APP_ID, enable_auto_commit=False
    )
    await consumer.start()
    await spend_consumer.start()
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.web_port}", timeout=5)
    usage = {p: TopicPartition(settings.usage_topic, p) for p in targets}
    costed = [TopicPartition(settings.costed_topic, p) for p in range(settings.topic_partitions)]
    total = sum(targets.values())
    started = time.monotonic()
    first: tuple[float, int] | None = None
    ingest_done: float | None = None
    costed_seen, costed_changed = -1, started
    durable_seen, durable_changed = -1, started
    first_profile = None
    spy: profiling.PySpy | None = None
    spy_binary = profiling.py_spy_binary() if profile_path is not None else None
    stats: dict[str, Any] = {}
    try:
        while True:
            if worker.process.poll() is not None:
                raise_worker_failed(settings.data_dir, worker.process.returncode)
            trace.sample()
            offsets = await asyncio.gather(*(consumer.committed(tp) for tp in usage.values()))
            committed = sum(min(t, o or 0) for t, o in zip(targets.values(), offsets, strict=True))
            costed_now = sum(
                o or 0
                for o in await asyncio.gather(*(spend_consumer.committed(tp) for tp in costed))
            )
            with contextlib.suppress(httpx.HTTPError, ValueError):
                stats = (await http.get("/stats")).json()
            durable = int(stats.get("messages", 0))  # counted once the sink's write returned
            now = time.monotonic()
            if costed_now != costed_seen:
                costed_seen, costed_changed = costed_now, now
            if durable != durable_seen:
                durable_seen, durable_changed = durable, now
            if first is None and durable > 0:
                first = (now, int(stats.get("events", 0)))
                if profile_path is not None:
                    first_profile = profiling.snapshot(profile_path)
                if spy_binary is not None and profile_path is not None:
                    spy = profiling.PySpy(
                        spy_binary, worker.process.pid, profile_path.with_suffix(".spy")
                    )
            if ingest_done is None and durable >= total and committed >= total:
                ingest_done = now
            if ingest_done is not None and now - max(ingest_done, costed_changed) >= SETTLE_SECONDS:
                break
            if committed >= total and durable < total and now - durable_changed > STALL_SECONDS:
                raise WorkerStalled(
                    f"offsets committed for all {total} messages but only {durable} processed "
                    f"(nothing for {STALL_SECONDS:.0f} s): {last_error(settings.data_dir)}"
                )
            if now - started > timeout:
                raise TimeoutError(f"worker did not finish: {durable}/{total} messages durable")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        spy_window = spy.stop() if spy is not None else None
        await http.aclose()
        await consumer.stop()
        await spend_consumer.stop()
    assert first is not None and ingest_done is not None
    return {
        "first_durable_at": first[0],
        "first_durable_events": first[1],
        "ingest_done_at": ingest_done,
        "spend_done_at": max(costed_changed, ingest_done),
        "costed_committed": costed_seen,
        "first_profile": first_profile,
        "spy_window": spy_window,
    }


async def topic_census(bootstrap: str) -> dict[str, dict[str, int]]:
    """Messages and bytes (key + value) in every topic, read back after the run."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: dict[str, dict[str, int]] = {}
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in await consumer.topics()
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        empty = 0
        while empty < 2:
            batches = await consumer.getmany(timeout_ms=1000)
            empty = 0 if batches else empty + 1
            for tp, records in batches.items():
                entry = out.setdefault(tp.topic, {"messages": 0, "bytes": 0})
                entry["messages"] += len(records)
                entry["bytes"] += sum(len(r.value or b"") + len(r.key or b"") for r in records)
    finally:
        await consumer.stop()
    return dict(sorted(out.items()))


def sink_seconds(metrics_text: str) -> tuple[float, int]:
    total = re.search(r"^spendstream_sink_batch_seconds_sum (\S+)", metrics_text, re.M)
    count = re.search(r"^spendstream_sink_batch_seconds_count (\S+)", metrics_text, re.M)
    return (float(total.group(1)) if total else 0.0, int(float(count.group(1))) if count else 0)


def run_target(
    name: str,
    events: int,
    per_message: int,
    profile: bool,
    worker_env: dict[str, str] | None = None,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    settings = Settings(data_dir=tmp / "data")
    stack = EmbeddedStack(settings)
    profile_path = tmp / "profile.json" if profile else None
    result: dict[str, Any] = {"events": events, "events_per_message": per_message}
    if worker_env:
        result["worker_env"] = worker_env
    watch: dict[str, Any] | None = None
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
        env = dict(worker_env or {})
        if profile_path is not None:
            env.update(profiling.sampler_env(profile_path))
            if profiling.py_spy_binary() is not None:
                env["BENCH_PROFILE_STACKS"] = "0"  # py-spy samples; keep thread CPU only
        worker_started = time.monotonic()
        worker = stack.start_worker(extra_env=env)
        stack.wait_ready(worker)
        assert stack.broker.process is not None
        trace = CpuTrace({"worker": worker.process.pid, "broker": stack.broker.process.pid})
        try:
            watch = asyncio.run(watch_worker(stack, targets, trace, profile_path, timeout))
        except (WorkerStalled, TimeoutError) as exc:
            result["error"] = str(exc)
        stats = worker.stats() or {}
        try:
            metrics = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            metrics = ""
        last_profile = profiling.snapshot(profile_path) if profile_path is not None else None
        for running in stack.workers:
            stop(running.process, timeout=30)
        stack.workers.clear()
        result["kafka_topics"] = asyncio.run(topic_census(stack.bootstrap))
    finally:
        stack.stop()
    totals = ledger_totals(settings)
    shutil.rmtree(tmp, ignore_errors=True)
    sink_s, sink_batches = sink_seconds(metrics)
    result.update(
        {
            "worker_stats": stats,
            "sink_seconds_total": round(sink_s, 2),
            "sink_batches": sink_batches,
            "ledger_rows": totals.rows,
            "ledger_complete": totals.rows == events,
        }
    )
    if watch is None:
        result["events_per_s"] = None
        return result

    timed_events = events - watch["first_durable_events"]
    t0 = watch["first_durable_at"]
    ingest_s = watch["ingest_done_at"] - t0
    end_s = watch["spend_done_at"] - t0
    result.update(
        {
            "worker_start_to_first_durable_batch_s": round(t0 - worker_started, 1),
            "timed_events": timed_events,
            "ingest_seconds": round(ingest_s, 2),
            "ingest_events_per_s": round(timed_events / ingest_s) if ingest_s > 0 else None,
            "end_to_end_seconds": round(end_s, 2),
            "events_per_s": round(timed_events / end_s) if end_s > 0 else None,
            "spend_agent_lag_s": round(watch["spend_done_at"] - watch["ingest_done_at"], 2),
            "cpu_share_worker": trace.share("worker", t0, watch["spend_done_at"]),
            "cpu_share_broker": trace.share("broker", t0, watch["spend_done_at"]),
        }
    )
    if profile_path is not None:
        window = profiling.window(watch["first_profile"], last_profile)
        if watch.get("spy_window"):
            # py-spy for where the time goes; the in-process sampler for exact thread CPU.
            cpu = window.get("thread_cpu", {})
            system = window.get("thread_sys", {})
            result["profile"] = [
                *profiling.summary(watch["spy_window"]),
                "CPU seconds per thread in the window (from /proc): "
                + ", ".join(f"{k} {v} s (kernel {system.get(k, 0.0)} s)" for k, v in cpu.items()),
            ]
        else:
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
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the worker, e.g. SPENDSTREAM_BATCH_MAX_EVENTS=20",
    )
    parser.add_argument("--t1-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--t2-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    t1_env = {**worker_env, **dict(item.split("=", 1) for item in args.t1_env)}
    t2_env = {**worker_env, **dict(item.split("=", 1) for item in args.t2_env)}
    load = loadavg()
    out: dict[str, Any] = {"benchmark": "throughput", "profiled": not args.no_profile}
    if args.only in (None, "t1"):
        t1 = run_target("t1", 20_000 if args.quick else 200_000, 100, not args.no_profile, t1_env)
        t1["target"] = "events/s >= 0.5 x raw aiokafka + json.loads (batched messages of 100)"
        t1["pass"] = t1.get("ratio", 0) >= 0.5
        out["t1"] = t1
    if args.only in (None, "t2"):
        t2 = run_target("t2", 10_000 if args.quick else 50_000, 1, not args.no_profile, t2_env)
        t2["target"] = "events/s >= 2 x bare Faust agent, default settings (one event/message)"
        t2["pass"] = t2.get("ratio", 0) >= 2.0
        out["t2"] = t2
    emit(out, load)


if __name__ == "__main__":
    main()
