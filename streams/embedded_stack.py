"""The embedded stack as child processes: the broker, and N workers that own the data dir.

Used by `spendstream dev` and `spendstream replay`. Children die with their
parent (PR_SET_PDEATHSIG) and are stopped with SIGTERM in reverse order.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from streams.app import APP_ID, topic_specs
from streams.broker import EmbeddedBroker, ensure_topics
from streams.errors import SpendstreamError
from streams.group_progress import GroupProgress, GroupProgressReader
from streams.processes import child_env, free_port, spawn, stop
from streams.settings import Settings


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    web_port: int

    def stats(self) -> dict[str, Any] | None:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.web_port}/stats", timeout=2)
            return dict(response.json()) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None


@dataclass
class EmbeddedStack:
    settings: Settings
    broker: EmbeddedBroker = field(init=False)
    workers: list[WorkerProcess] = field(default_factory=list)
    log_epoch: str = field(default_factory=lambda: f"embedded-{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker(log_file=self.settings.data_dir / "broker.log")

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def start_broker(self) -> None:
        self.broker.start()
        asyncio.run(ensure_topics(self.bootstrap, topic_specs(self.settings)))

    def start_worker(self, extra_env: dict[str, str] | None = None) -> WorkerProcess:
        web_port = free_port()
        env = child_env(
            SPENDSTREAM_KAFKA_BOOTSTRAP=self.bootstrap,
            SPENDSTREAM_DATA_DIR=str(self.settings.data_dir.resolve()),
            SPENDSTREAM_CLICKHOUSE_URL=self.settings.resolved_clickhouse_url,
            SPENDSTREAM_LOG_EPOCH=self.log_epoch,
            SPENDSTREAM_WEB_PORT=str(web_port),
            SPENDSTREAM_TOPIC_PARTITIONS=str(self.settings.topic_partitions),
            **(
                {"SPENDSTREAM_PRICING_FILE": str(self.settings.pricing_file.resolve())}
                if self.settings.pricing_file
                else {}
            ),
            **(extra_env or {}),
        )
        log = open(self.settings.data_dir / "worker.log", "ab")  # noqa: SIM115
        process = spawn(
            [sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log, stderr=log
        )
        worker = WorkerProcess(process, web_port)
        self.workers.append(worker)
        return worker

    def wait_ready(self, worker: WorkerProcess, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while worker.stats() is None:
            if worker.process.poll() is not None:
                raise_worker_failed(self.settings.data_dir, worker.process.returncode)
            if time.monotonic() > deadline:
                raise TimeoutError("worker did not start")
            time.sleep(0.1)

    async def progress(self, targets: Mapping[int, int]) -> GroupProgress:
        reader = GroupProgressReader(self.bootstrap, APP_ID, self.settings.usage_topic)
        await reader.start()
        try:
            return await reader.read(targets)
        finally:
            await reader.stop()

    def stop(self) -> None:
        for worker in reversed(self.workers):
            stop(worker.process, timeout=30)
        self.workers.clear()
        self.broker.stop()


def raise_worker_failed(data_dir: Path, code: int | None) -> None:
    tail = ""
    log_path = data_dir / "worker.log"
    if log_path.exists():
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        tail = lines[-1] if lines else ""
    raise SpendstreamError(f"worker exited with code {code}: {tail}")
