"""T5: `spendstream dev` to the first event in the ledger.

    python -m bench.cold_start [--quick]

Starts `spendstream dev --data-dir <tmp>` (no --simulate), publishes one event to the
broker named in its first stdout line as soon as that line appears, and polls the
worker's /stats until `ledgered` is 1 (counted once the ledger write returned); the
figure is seconds from starting the process. `spendstream query "SELECT count() FROM
usage_ledger"` then confirms the row through the worker. Finally dev gets SIGINT and
must exit 0 leaving none of its child processes behind. --quick changes nothing
(one cold start is already small).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import alive, descendants, emit, events, loadavg, spendstream_command
from streams.ports import free_port

TARGET_S = 5.0
FIRST_LINE = re.compile(r"broker (\S+?),.*?workers? (http://[\d.:]+)")


async def publish_one(bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        event = next(events(1, seed=55))
        await producer.send_and_wait(topic, orjson.dumps(event))
    finally:
        await producer.stop()


def worker_timeline(worker_url: str, started_wall: float) -> dict[str, float]:
    """The worker's own start moments (`/stats` `started`), in seconds from the `dev`
    start: where the cold start's seconds go."""
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        moments = httpx.get(f"{worker_url}/stats", timeout=5).json()["started"]
        return {name: round(at - started_wall, 2) for name, at in moments.items()}
    return {}


def cold_start(timeout: float = 120.0) -> dict[str, Any]:
    from streams.settings import Settings

    topic = Settings().usage_topic
    tmp = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    started_wall = time.time()
    process = subprocess.Popen(
        [
            *spendstream_command(),
            "dev",
            "--data-dir",
            str(tmp / "data"),
            "--port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    result: dict[str, Any] = {}
    children: list[int] = []
    try:
        match = None
        while match is None:
            if process.poll() is not None:
                raise RuntimeError(f"dev exited {process.returncode}: {process.stderr.read()}")
            if time.monotonic() - started > timeout:
                raise TimeoutError("dev printed no first line")
            match = next((FIRST_LINE.search(line) for _, line in lines[:1]), None)
            time.sleep(0.01)
        result["first_line_s"] = round(lines[0][0] - started, 2)
        bootstrap, worker_url = match.group(1), match.group(2)
        asyncio.run(publish_one(bootstrap, topic))
        result["published_s"] = round(time.monotonic() - started, 2)
        ledgered = 0
        while ledgered < 1:
            if time.monotonic() - started > timeout:
                raise TimeoutError("the event never reached the ledger")
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                ledgered = int(httpx.get(f"{worker_url}/stats", timeout=2).json()["ledgered"])
            if ledgered < 1:
                time.sleep(0.05)
        result["first_event_in_ledger_s"] = round(time.monotonic() - started, 2)
        result["worker_timeline_s"] = worker_timeline(worker_url, started_wall)
        query = subprocess.run(
            [
                *spendstream_command(),
                "query",
                "SELECT count() AS n FROM usage_ledger",
                "--data-dir",
                str(tmp / "data"),
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        result["query_output"] = query.stdout.strip()[:200] or query.stderr.strip()[:200]
        result["query_confirms_one_row"] = bool(re.search(r"\b1\b", query.stdout))
        children = descendants(process.pid)
        result["children_while_running"] = len(children)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
            result["killed_after_sigint_timeout"] = True
        reader.join(5)
        time.sleep(0.5)
        leftovers = [pid for pid in children if alive(pid)]
        shutil.rmtree(tmp, ignore_errors=True)
    result["exit_code_after_sigint"] = code
    result["leftover_children"] = leftovers
    result["clean_exit"] = code == 0 and not leftovers
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="T5 cold start of spendstream dev")
    parser.add_argument("--quick", action="store_true", help="same as without")
    parser.parse_args()
    load = loadavg()
    try:
        result = cold_start()
    except (RuntimeError, TimeoutError) as exc:
        result = {"error": str(exc)}
    seconds = result.get("first_event_in_ledger_s")
    emit(
        {
            "benchmark": "cold_start",
            "target": f"spendstream dev to the first event in the ledger <= {TARGET_S:.0f} s",
            "seconds": seconds,
            "pass": seconds is not None and seconds <= TARGET_S and result.get("clean_exit"),
            **result,
        },
        load,
    )


if __name__ == "__main__":
    main()
