"""`dev` and `replay` stop, whatever their worker waits on: here, a ledger write the
worker retries because ClickHouse "is down" (the real retry path, through the sink's
outage hook). After SIGINT, SIGTERM or SIGKILL of the parent, no child process
outlives it and the data dir is free for the next command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from streams.errors import DataDirInUseError
from streams.ledger.connect import ensure_data_dir_free
from streams.settings import chdb_url_for
from tests.helpers.stack import write_ndjson
from tests.helpers.waiting import wait_for
from tests.integration.test_dev_workers import children_running

pytestmark = pytest.mark.integration

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]


def event(request_id: str) -> dict[str, object]:
    return {
        "request_id": request_id,
        "timestamp": "2026-01-05T10:00:00Z",
        "tenant_id": "acme",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 100,
    }


def alive(pid: int) -> bool:
    """Running, or a zombie leader whose other threads still run (they hold its files)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
        threads = len(list(Path(f"/proc/{pid}/task").iterdir()))
    except OSError:
        return False
    return "\nState:\tZ" not in state or threads > 1


def data_dir_free(data_dir: Path) -> bool:
    try:
        ensure_data_dir_free(chdb_url_for(data_dir))
    except DataDirInUseError:
        return False
    return True


def stop_and_check(
    parent: subprocess.Popen[bytes], children: list[int], sig: int, data_dir: Path
) -> float:
    started = time.monotonic()
    os.kill(parent.pid, sig)
    parent.wait(timeout=60)
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=30, interval=0.1)
    wait_for(lambda: data_dir_free(data_dir), timeout=10, interval=0.1)
    return time.monotonic() - started


def outage_env(tmp_path: Path) -> dict[str, str]:
    outage = tmp_path / "clickhouse-down"
    outage.touch()
    return {**os.environ, "SPENDSTREAM_FAULT_SINK_OUTAGE_FILE": str(outage)}


@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_dev_stops_while_its_worker_retries_a_write(tmp_path: Path, sig: int) -> None:
    data_dir = tmp_path / "data"
    dev = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "dev", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=outage_env(tmp_path),
    )
    try:
        assert dev.stdout is not None
        first = dev.stdout.readline().decode()
        port = re.search(r"http://127\.0\.0\.1:(\d+)", first)
        assert port, first
        url = f"http://127.0.0.1:{port.group(1)}"
        children = children_running(dev.pid, "streams.cli") + children_running(dev.pid, "broker")
        assert len(children) == 2, children
        # The ledger is failing writes: only the broker can acknowledge the event.
        answer = httpx.post(
            f"{url}/v1/events?ack=broker", content=orjson.dumps(event("stop-dev-1"))
        )
        assert answer.status_code == 202, answer.text
        wait_for(lambda: httpx.get(f"{url}/health").status_code == 503, timeout=120)
        elapsed = stop_and_check(dev, children, sig, data_dir)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
    assert elapsed < 30


@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_replay_stops_while_its_worker_retries_a_write(tmp_path: Path, sig: int) -> None:
    data_dir = tmp_path / "data"
    source = write_ndjson(tmp_path / "events.ndjson", [orjson.dumps(event("stop-replay-1"))])
    replay = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "replay", str(source), "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=outage_env(tmp_path),
    )
    try:
        children = wait_for(
            lambda: (
                len(
                    found := children_running(replay.pid, "streams.cli")
                    + children_running(replay.pid, "broker")
                )
                == 2
                and found
            ),
            timeout=60,
            interval=0.1,
        )

        def retrying() -> bool:
            log = data_dir / "worker.log"
            return log.exists() and "ledger write to usage_ledger failed" in log.read_text(
                errors="replace"
            )

        wait_for(retrying, timeout=120)
        elapsed = stop_and_check(replay, children, sig, data_dir)
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()
    assert elapsed < 30
