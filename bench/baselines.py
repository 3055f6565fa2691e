"""Baselines for T1 and T2, measured from the same embedded broker as the pipeline.

(a) `raw_consume`: a plain aiokafka consumer (default settings, partitions assigned,
    no group) that `json.loads` every message; events/s from the first fetch (the
    consumer already started and assigned) to the last message decoded.
(b) `bare_faust`: a Faust agent in a child process with DEFAULT settings except the
    broker, `broker_session_timeout=6` (the embedded broker answers JoinGroup after
    half the session timeout: the 60 s default would only delay the start), a free
    web port on 127.0.0.1 and a temporary datadir (so it neither collides with other
    workers nor writes into the work tree). It only `json.loads` each message; events/s
    from its first message to its Nth.

    python -m bench.baselines [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import CpuTrace, batched_messages, emit, loadavg, single_messages
from streams.embedded.processes import spawn, stop
from streams.ports import free_port

BASELINE_TOPIC = "bench.baseline"


async def raw_consume(bootstrap: str, topic: str, targets: dict[int, int]) -> dict[str, Any]:
    """Consume every message up to `targets` (partition → end offset) and json.loads it."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in targets]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {
            tp.partition: target for tp, target in zip(partitions, targets.values(), strict=True)
        }
        remaining = {p: t for p, t in remaining.items() if t > 0}
        events = messages = 0
        started = time.perf_counter()
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    document = json.loads(record.value)
                    events += len(document) if isinstance(document, list) else 1
                    messages += 1
                if records and records[-1].offset + 1 >= remaining.get(tp.partition, 0):
                    remaining.pop(tp.partition, None)
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {
        "events": events,
        "messages": messages,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds) if seconds > 0 else None,
    }


# --- (b) the bare Faust agent, in its own process ---------------------------------------


def faust_child(bootstrap: str, topic: str, count: int, out: str, app_id: str) -> None:
    import faust

    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        broker_session_timeout=6.0,
        web_port=free_port(),
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        datadir=tempfile.mkdtemp(prefix="bench-faust-"),
    )
    source = app.topic(topic, value_serializer="raw")
    state: dict[str, Any] = {"n": 0, "first": None}

    @app.agent(source)
    async def bare(stream: Any) -> None:
        async for value in stream:
            json.loads(value)
            state["n"] += 1
            if state["n"] == 1:
                state["first"] = time.perf_counter()
            if state["n"] == count:
                last = time.perf_counter()
                Path(out).write_text(
                    json.dumps({"first": state["first"], "last": last, "count": count})
                )

    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def bare_faust(bootstrap: str, topic: str, count: int, timeout: float = 600.0) -> dict[str, Any]:
    """Run the bare agent over `count` pre-published single-event messages."""
    out = Path(tempfile.mkdtemp(prefix="bench-bare-")) / "result.json"
    app_id = f"bench-bare-{int(time.time() * 1000)}"
    started = time.monotonic()
    process = spawn(
        [
            sys.executable,
            "-m",
            "bench.baselines",
            "faust-child",
            bootstrap,
            topic,
            str(count),
            str(out),
            app_id,
        ],
        stdout=open(out.with_name("child.log"), "wb"),  # noqa: SIM115
        stderr=__import__("subprocess").STDOUT,
    )
    trace = CpuTrace({"faust": process.pid})
    try:
        while not out.exists():
            trace.sample()
            if process.poll() is not None:
                tail = out.with_name("child.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"bare Faust child exited {process.returncode}: {tail}")
            if time.monotonic() - started > timeout:
                raise TimeoutError("bare Faust agent did not finish")
            time.sleep(0.1)
        trace.sample()
    finally:
        stop(process, timeout=15)
    result = json.loads(out.read_text())
    seconds = result["last"] - result["first"]
    # perf_counter is CLOCK_MONOTONIC on Linux: the child's times compare with ours.
    return {
        "events": count,
        "seconds": round(seconds, 3),
        "events_per_s": round((count - 1) / seconds) if seconds > 0 else None,
        "start_to_first_s": round(result["first"] - started, 1),
        "cpu_share": trace.share("faust", result["first"], result["last"]),
        "settings": "defaults; broker, broker_session_timeout=6, web_port, datadir",
    }


async def publish_to(bootstrap: str, topic: str, messages: list[bytes]) -> dict[int, int]:
    from streams.embedded.replay import publish
    from streams.kafka.admin import TopicSpec, ensure_topics

    await ensure_topics(bootstrap, [TopicSpec(topic, 4)])
    return await publish(bootstrap, topic, messages)


def main() -> None:
    parser = argparse.ArgumentParser(description="T1/T2 baselines alone")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from streams.embedded.broker import EmbeddedBroker

    load = loadavg()
    batched_events = 20_000 if args.quick else 200_000
    single_events = 10_000 if args.quick else 50_000
    with EmbeddedBroker() as broker:
        batched = batched_messages(batched_events)
        targets = asyncio.run(publish_to(broker.bootstrap, BASELINE_TOPIC + ".batched", batched))
        raw_batched = asyncio.run(
            raw_consume(broker.bootstrap, BASELINE_TOPIC + ".batched", targets)
        )
        single = single_messages(single_events)
        targets = asyncio.run(publish_to(broker.bootstrap, BASELINE_TOPIC + ".single", single))
        raw_single = asyncio.run(raw_consume(broker.bootstrap, BASELINE_TOPIC + ".single", targets))
        faust = bare_faust(broker.bootstrap, BASELINE_TOPIC + ".single", single_events)
    emit(
        {
            "benchmark": "baselines",
            "raw_aiokafka_batched_100": raw_batched,
            "raw_aiokafka_single": raw_single,
            "bare_faust_single": faust,
        },
        load,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "faust-child":
        _, _, bootstrap, topic, count, out, app_id = sys.argv
        faust_child(bootstrap, topic, int(count), out, app_id)
    else:
        main()
