"""Admin calls that work against any Kafka broker: create the topics we mean, wait for
the broker to answer, tell which cluster answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.errors import BrokerUnavailableError


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


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


class ClusterIdentity:
    """Which cluster answers at a bootstrap address. The same address answering with
    another cluster id is another cluster, whose logs are not the ones read so far: for
    the embedded in-memory broker (a new id at each start), a restart with every log
    new and offsets from 0. One metadata request per call (about 0.2 ms on 127.0.0.1)."""

    def __init__(self, bootstrap: str, client_id: str) -> None:
        self.admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=10000
        )

    async def start(self) -> None:
        await self.admin.start()

    async def stop(self) -> None:
        await self.admin.close()

    async def cluster_id(self) -> str:
        return str((await self.admin.describe_cluster())["cluster_id"])
