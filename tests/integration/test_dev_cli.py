"""The commands the README promises, run as a user runs them: `spendstream dev
--simulate` (what `make run` starts), `simulate`, `migrate`; how `dev` stops (workers
before the broker they commit to) and that its children die with it on SIGKILL."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from streams.embedded.broker import EmbeddedBroker
from streams.embedded.simulate import daily_rhythm
from streams.ingest.decoding import decode_message
from streams.kafka.admin import ensure_topics
from streams.kafka.topics import topic_specs
from streams.ledger.connect import ensure_data_dir_free
from streams.ports import free_port
from streams.settings import Settings, chdb_url_for
from tests.helpers.stack import (
    analyst_headers,
    children_running,
    query_json,
    read_topic,
    spendstream,
)
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

STATUS = re.compile(
    r"^spend today \$([\d,.]+|-) \| month to date \$([\d,.]+|-) \| ledger rows ([\d,]+|-) \| "
    r"dead letters ([\d,]+|-) \| open incidents (\d+|-) \| [\d,.]+ events/s \| (ok|DEGRADED)$"
)
ALERT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d ALERT \[")


class Dev:
    """`spendstream dev` as a child process; its stdout lines collected by a thread."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "streams.cli", "dev", "--data-dir", str(data_dir)),
                *("--port", str(free_port()), *args),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def banner(self) -> str:
        return wait_for(lambda: self.lines and self.lines[0], timeout=120)

    def children(self) -> dict[str, int]:
        """The broker's and the worker's pids, once both run."""

        def both() -> dict[str, int] | None:
            broker = children_running(self.process.pid, "broker")
            worker = children_running(self.process.pid, "worker")
            return {"broker": broker[0], "worker": worker[0]} if broker and worker else None

        return wait_for(both, timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def dev_factory(tmp_path: Path) -> Iterator[list[Dev]]:
    started: list[Dev] = []
    yield started
    for dev in started:
        dev.stop()


def gone(pid: int) -> bool:
    """Exited and reaped, or a zombie nobody has reaped yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


def test_dev_simulate_prints_its_status_and_the_ledger_grows(
    tmp_path: Path, dev_factory: list[Dev]
) -> None:
    dev = Dev(tmp_path / "data", "--simulate", "--rate", "100")
    dev_factory.append(dev)
    banner = dev.banner()
    assert banner.startswith("spendstream dev: broker 127.0.0.1:"), banner
    assert "(Ctrl-C to stop)" in banner

    def ledger_rows() -> list[int]:
        return [
            int(m.group(3).replace(",", ""))
            for line in dev.lines[1:]
            if (m := STATUS.match(line)) and m.group(3) != "-"
        ]

    # Once a second a status line; its ledger rows climb as the simulator publishes.
    rows = wait_for(lambda: (seen := ledger_rows()) and seen[-1] > 0 and seen, timeout=180)
    wait_for(lambda: ledger_rows()[-1] > rows[-1], timeout=60)
    # Status lines, and alert lines above them should a detector fire.
    assert all(STATUS.match(line) or ALERT.match(line) for line in dev.lines[1:]), dev.lines[1:]
    [url] = re.findall(r"worker (http://127\.0\.0\.1:\d+)", banner)
    body = orjson.dumps({"sql": "SELECT count() FROM usage_ledger"})
    auth = analyst_headers(tmp_path / "data")
    answer = httpx.post(f"{url}/v1/query", content=body, headers=auth, timeout=30)
    [[count]] = answer.json()["rows"]
    assert int(count) >= rows[-1]

    dev.process.send_signal(signal.SIGINT)
    assert dev.process.wait(timeout=90) == 0
    # The simulator stops first, then the workers drain what the broker holds.
    wait_for(lambda: any(line.startswith("stopping: ") for line in dev.lines), timeout=10)
    assert any(line.endswith("every usage message is ledgered") for line in dev.lines), dev.lines


def test_ctrl_c_stops_the_worker_before_the_broker(tmp_path: Path, dev_factory: list[Dev]) -> None:
    """The worker commits its offsets to the broker as it stops: the broker must outlive it."""
    dev = Dev(tmp_path / "data")
    dev_factory.append(dev)
    dev.banner()
    pids = dev.children()
    exits: dict[str, float] = {}

    def watch() -> None:
        deadline = time.monotonic() + 90
        while len(exits) < 2 and time.monotonic() < deadline:
            for name, pid in pids.items():
                if name not in exits and gone(pid):
                    exits[name] = time.monotonic()
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    dev.process.send_signal(signal.SIGINT)
    code = dev.process.wait(timeout=90)
    watcher.join()
    assert code == 0
    assert set(exits) == {"broker", "worker"}
    assert exits["worker"] < exits["broker"]


def test_children_die_with_dev_on_sigkill(tmp_path: Path, dev_factory: list[Dev]) -> None:
    dev = Dev(tmp_path / "data")
    dev_factory.append(dev)
    dev.banner()
    pids = dev.children()
    os.kill(dev.process.pid, signal.SIGKILL)  # no handler runs in the parent
    dev.process.wait(timeout=30)
    # The data dir is free for the next `dev` as soon as the parent is reaped: its
    # worker is killed with it, not left stopping gracefully with the lock held
    # (what failed case 16's restart right after a SIGKILL with "data dir in use").
    ensure_data_dir_free(chdb_url_for(tmp_path / "data"))
    wait_for(lambda: all(gone(pid) for pid in pids.values()), timeout=60)


def test_migrate_applies_every_migration_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = sorted(p.name for p in (Path(__file__).parents[2] / "sql").glob("*.sql"))
    first = spendstream("migrate", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr.decode()
    assert first.stdout.decode().strip() == (
        f"applied {len(files)} migration(s): " + ", ".join(files)
    )
    again = spendstream("migrate", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout.decode().strip() == "applied 0 migration(s)"
    tables = query_json(
        data_dir, "SELECT name FROM system.tables WHERE database = currentDatabase()"
    )
    names = {t["name"] for t in tables}
    assert {"usage_ledger", "dead_letters", "alerts", "tenant_daily", "focus_charges"} <= names


def test_simulate_publishes_valid_events_at_its_rate(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, data_dir=tmp_path)
        asyncio.run(ensure_topics(broker.bootstrap, topic_specs(settings)))
        result = spendstream(
            "simulate", "--bootstrap", broker.bootstrap, "--rate", "100", "--duration", "3",
            "--seed", "7",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
        topic = settings.usage_topic
        values = asyncio.run(read_topic(broker.bootstrap, topic))
    decoded = [decode_message(v, datetime.now(UTC)) for v in values]
    events = [e for d in decoded for e in d.events]
    assert [r for d in decoded for r in d.rejections] == []
    # Every event it says it published is on the topic: 100 events/s for 3 s, shaped
    # by the hour's place in the daily rhythm.
    assert result.stdout.decode().strip() == f"published {len(events)} events to {topic}"
    expected = 100 * 3 * daily_rhythm(datetime.now(UTC))
    assert 0.7 * expected <= len(events) <= 1.1 * expected + 1, (len(events), expected)
    assert len({e.request_id for e in events}) == len(events)
    assert len({e.tenant_id for e in events}) > 1 and len({e.model for e in events}) > 1
