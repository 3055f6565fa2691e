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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from streams.auth import ensure_tokens
from streams.data_dir import open_private_log, private_dir, use_private_umask
from streams.embedded.broker import EmbeddedBroker
from streams.embedded.processes import child_env, spawn, stop
from streams.errors import SpendstreamError
from streams.kafka.admin import ensure_topics
from streams.kafka.group_progress import GroupProgress, GroupProgressReader
from streams.kafka.topics import INGEST_GROUP, topic_specs
from streams.ports import free_port
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
    # Before the broker exists: every row of this epoch is ingested after it. None: the
    # workers treat the broker as Kafka, whose log outlives them (its changelogs hold
    # the spend state; streams/spend/coverage.py).
    log_epoch_started_at: datetime | None = field(default_factory=lambda: datetime.now(UTC))
    peer_token: str = field(init=False)

    def __post_init__(self) -> None:
        use_private_umask()  # ledger, dead letters, logs: readable by their owner only
        private_dir(self.settings.data_dir)
        # The workers find the same tokens in the data dir; generated at the first start.
        tokens, _ = ensure_tokens(
            self.settings.data_dir, self.settings.analyst_token, self.settings.peer_token
        )
        self.peer_token = tokens.peer.get_secret_value()
        self.broker = EmbeddedBroker(log_file=self.settings.data_dir / "broker.log")

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def start_broker(self) -> None:
        self.broker.start()
        self.create_topics()

    def create_topics(self) -> None:
        asyncio.run(ensure_topics(self.bootstrap, topic_specs(self.settings)))

    def start(self, count: int, web_port: int | None = None) -> list[WorkerProcess]:
        """The broker, then the workers as `start_workers`; the first worker is spawned
        with the broker and loads its modules (seconds) while the broker starts and the
        topics are created (it waits for the broker and creates any topic missing
        itself)."""
        self.broker.spawn()
        owner = self.start_worker(web_port=web_port)
        self.broker.wait_listening()
        self.create_topics()
        return self._when_ready(owner, count)

    def start_workers(self, count: int, web_port: int | None = None) -> list[WorkerProcess]:
        """The first worker owns the embedded data dir (and listens on `web_port` if
        given); the others write and read through it (chdb lets one process own a
        path). All share one consumer group."""
        return self._when_ready(self.start_worker(web_port=web_port), count)

    def _when_ready(self, owner: WorkerProcess, count: int) -> list[WorkerProcess]:
        self.wait_ready(owner)
        peers = [self.start_worker(peer_of=owner) for _ in range(count - 1)]
        for peer in peers:
            self.wait_ready(peer)
        return [owner, *peers]

    def start_worker(
        self,
        extra_env: dict[str, str] | None = None,
        peer_of: WorkerProcess | None = None,
        web_port: int | None = None,
    ) -> WorkerProcess:
        web_port = web_port or free_port()
        clickhouse_url = self.settings.resolved_clickhouse_url
        peer_env = {"SPENDSTREAM_PEER_TOKEN": self.peer_token}
        if peer_of is not None:
            clickhouse_url = f"spendstream+http://127.0.0.1:{peer_of.web_port}"
            peer_env["SPENDSTREAM_CLICKHOUSE_PASSWORD"] = self.peer_token
        env = child_env(
            SPENDSTREAM_KAFKA_BOOTSTRAP=self.bootstrap,
            SPENDSTREAM_DATA_DIR=str(self.settings.data_dir.resolve()),
            SPENDSTREAM_CLICKHOUSE_URL=clickhouse_url,
            SPENDSTREAM_LOG_EPOCH=self.log_epoch,
            SPENDSTREAM_WEB_PORT=str(web_port),
            SPENDSTREAM_TOPIC_PARTITIONS=str(self.settings.topic_partitions),
            **self._file_env(),
            **self._epoch_env(),
            **peer_env,
            **(extra_env or {}),
        )
        log_name = "worker.log" if not self.workers else f"worker-{len(self.workers) + 1}.log"
        log = open_private_log(self.settings.data_dir / log_name)
        process = spawn(
            [sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log, stderr=log
        )
        worker = WorkerProcess(process, web_port)
        self.workers.append(worker)
        return worker

    def _epoch_env(self) -> dict[str, str]:
        started = self.log_epoch_started_at
        return {} if started is None else {"SPENDSTREAM_LOG_EPOCH_STARTED_AT": started.isoformat()}

    def _file_env(self) -> dict[str, str]:
        """The files the stack was started with (`dev --pricing/--config`), absolute,
        so that every worker uses them whatever its working directory."""
        files = {
            "SPENDSTREAM_PRICING_FILE": self.settings.pricing_file,
            "SPENDSTREAM_CONFIG_FILE": self.settings.config_file,
        }
        return {name: str(path.resolve()) for name, path in files.items() if path is not None}

    def wait_ready(self, worker: WorkerProcess, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while worker.stats() is None:
            if worker.process.poll() is not None:
                raise_worker_failed(self.settings.data_dir, worker.process.returncode)
            if time.monotonic() > deadline:
                raise TimeoutError("worker did not start")
            time.sleep(0.1)

    def stop_workers(self) -> None:
        """SIGTERM each worker (the last started first) and wait while it drains what
        the broker holds (streams/runtime/drain.py) and stops."""
        # Here, not at the top: Faust's import is a second `dev` would wait for at start.
        from streams.faust_ext.worker import STOP_DEADLINE_SECONDS

        timeout = self.settings.stop_drain_seconds + STOP_DEADLINE_SECONDS + 5
        for worker in reversed(self.workers):
            stop(worker.process, timeout=timeout)
        self.workers.clear()

    def stop(self) -> None:
        self.stop_workers()
        self.broker.stop()


async def group_progress(bootstrap: str, topic: str, targets: Mapping[int, int]) -> GroupProgress:
    """How far the ingest group has committed towards `targets` (partition → offset)."""
    reader = GroupProgressReader(bootstrap, INGEST_GROUP, topic)
    await reader.start()
    try:
        return await reader.read(targets)
    finally:
        await reader.stop()


def raise_worker_failed(data_dir: Path, code: int | None) -> None:
    tail = ""
    log_path = data_dir / "worker.log"
    if log_path.exists():
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        tail = lines[-1] if lines else ""
    raise SpendstreamError(f"worker exited with code {code}: {tail}")
