"""`UsageConsumer` on the real embedded broker (tansu) and the real ClickHouse (chdb),
outside a worker process: batches are published, then written, then committed.

While ClickHouse refuses the ledger insert (the table detached: a real UNKNOWN_TABLE
error) the consumer has published the costed events, holds the batch, and commits
nothing; once the table is back the rows land and only then the offsets move.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.cost.catalog import PriceCatalog
from streams.embedded.broker import EmbeddedBroker
from streams.embedded.replay import publish
from streams.ingest import consumer as consumer_module
from streams.ingest.consumer import UsageConsumer
from streams.ingest.dedupe import RequestIdFilter
from streams.ingest.pipeline import IngestPipeline
from streams.kafka.admin import ensure_topics
from streams.kafka.topics import INGEST_GROUP, topic_specs
from streams.ledger.connect import ClickHouseHandle
from streams.ledger.sink import ClickHouseExecutor, ClickHouseLedgerSink
from streams.settings import Settings
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def line(request_id: str) -> bytes:
    return orjson.dumps(
        {
            "request_id": request_id,
            "timestamp": NOW.isoformat(),
            "tenant_id": "acme",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 1000,
            "output_tokens": 100,
        }
    )


@pytest.fixture
async def executor(ledger_db: ClickHouseHandle) -> AsyncIterator[ClickHouseExecutor]:
    pool = ClickHouseExecutor(ledger_db.client)
    yield pool
    pool.shutdown()


class Running:
    def __init__(self, settings: Settings, executor: ClickHouseExecutor) -> None:
        self.settings = settings
        self.executor = executor
        self.sink = ClickHouseLedgerSink(executor, backoff_initial=0.05, backoff_max=0.2)
        self.costed: list[str] = []
        self.pipeline = IngestPipeline(
            PriceCatalog.load(None),
            RequestIdFilter(),
            self.sink,
            log_epoch="test",
            publish_costed=self._publish_costed,
        )
        self.assigned = 0
        self.consumer = UsageConsumer(
            settings,
            open_pipeline=self._open,
            before_batch=self._nothing,
            on_assigned=self._on_assigned,
        )
        self.ledger: list[str] = []

    async def _open(self) -> IngestPipeline:
        return self.pipeline

    async def _nothing(self) -> None:
        return None

    def _on_assigned(self) -> None:
        self.assigned += 1

    async def _publish_costed(self, by_tenant: dict[str, list[dict[str, Any]]]) -> None:
        self.costed += [e["request_id"] for rows in by_tenant.values() for e in rows]

    async def consume_all(self, ids: list[str]) -> None:
        """Publish an event per id, start the consumer, and wait until every one is
        ledgered and every offset committed."""
        ends = await publish(
            self.settings.kafka_bootstrap, self.settings.usage_topic, [line(i) for i in ids]
        )
        await self.consumer.start()

        async def ledgered_and_committed() -> bool:
            return await self.ledger_ids() == ids and await self.committed() == ends

        await wait_until(ledgered_and_committed, timeout=60, interval=0.1)

    async def ledger_ids(self) -> list[str]:
        result = await self.executor.run(
            self.executor.client.query, "SELECT request_id FROM usage_ledger ORDER BY request_id"
        )
        self.ledger = [str(r[0]) for r in result.result_rows]
        return self.ledger

    async def committed(self) -> dict[int, int]:
        """The group's committed offset per usage partition, as the broker answers
        (tansu does not answer the admin client's OffsetFetch: a group member asks)."""
        topic = self.settings.usage_topic
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=INGEST_GROUP,
            enable_auto_commit=False,
        )
        await reader.start()
        try:
            await reader.topics()  # fetches metadata
            found = {
                p: await reader.committed(TopicPartition(topic, p))
                for p in sorted(reader.partitions_for_topic(topic) or ())
            }
        finally:
            await reader.stop()
        return {p: offset for p, offset in found.items() if offset is not None}


@pytest.fixture
async def running(
    broker: EmbeddedBroker, executor: ClickHouseExecutor, tmp_path: Path
) -> AsyncIterator[Running]:
    # A topic of this test's own: the module's broker serves every test here.
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        data_dir=tmp_path,
        usage_topic=f"usage-{tmp_path.name}",
        batch_within_seconds=0.1,
    )
    await ensure_topics(broker.bootstrap, topic_specs(settings))
    made = Running(settings, executor)
    yield made
    await made.consumer.stop()


async def test_every_event_is_ledgered_then_its_offset_committed(running: Running) -> None:
    ids = [f"u-{i:03d}" for i in range(200)]
    await running.consume_all(ids)
    assert sorted(running.costed) == ids
    assert running.assigned >= 1


async def test_a_large_fetch_is_prepared_in_parts_each_event_ledgered_once(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "PREPARE_PART_BYTES", 1500)  # ~6 messages
    prepared: list[int] = []
    prepare = running.pipeline.prepare

    def prepare_counted(messages: list[Any], in_flight: Any) -> Any:
        prepared.append(sum(len(m.value) for m in messages))
        return prepare(messages, in_flight)

    monkeypatch.setattr(running.pipeline, "prepare", prepare_counted)
    ids = [f"p-{i:03d}" for i in range(200)]
    await running.consume_all(ids)
    assert sorted(running.costed) == ids  # each once
    assert len(prepared) >= 200 * len(line("p-000")) // 1500 and max(prepared) <= 1500


def test_parts_keep_the_order_and_a_larger_message_goes_alone() -> None:
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    records = {
        tp0: [SimpleNamespace(value=b"a" * 4), SimpleNamespace(value=b"b" * 4)],
        tp1: [SimpleNamespace(value=b"c" * 20), SimpleNamespace(value=b"d" * 3)],
    }
    parts = list(consumer_module._parts(records, 10))
    values = [{tp.partition: [r.value[:1] for r in rs] for tp, rs in p.items()} for p in parts]
    assert values == [{0: [b"a", b"b"]}, {1: [b"c"]}, {1: [b"d"]}]


async def test_nothing_is_committed_while_clickhouse_refuses_the_write(running: Running) -> None:
    first = [f"w-a{i:02d}" for i in range(20)]
    bootstrap, topic = running.settings.kafka_bootstrap, running.settings.usage_topic
    ends = await publish(bootstrap, topic, [line(i) for i in first])
    await running.consumer.start()

    async def caught_up() -> bool:
        return await running.ledger_ids() == first and await running.committed() == ends

    await wait_until(caught_up, timeout=60, interval=0.1)

    client = running.executor.client
    await running.executor.run(client.command, "DETACH TABLE usage_ledger")
    try:
        held = [f"w-b{i:02d}" for i in range(20)]
        later = await publish(bootstrap, topic, [line(i) for i in held])
        # The write fails on ClickHouse's own error: nothing of the batch goes downstream
        # (costed events follow the durable write) and nothing is committed.
        await wait_until(lambda: running.sink.stats.failures >= 3, timeout=60)
        assert "(UNKNOWN_TABLE)" in running.sink.stats.last_error
        assert not set(held) & set(running.costed)
        assert await running.committed() == ends  # nothing committed past the durable rows
    finally:
        await running.executor.run(client.command, "ATTACH TABLE usage_ledger")

    async def landed() -> bool:
        return await running.ledger_ids() == sorted(first + held)

    await wait_until(landed, timeout=60, interval=0.1)
    await wait_until(lambda: set(held) <= set(running.costed), timeout=30)
    ends.update(later)

    async def committed() -> bool:
        return await running.committed() == ends

    await wait_until(committed, timeout=30, interval=0.1)


async def test_a_wait_for_the_ledger_during_the_start_is_answered_once_ledgered(
    running: Running,
) -> None:
    # An HTTP request with ack=ledger that the worker takes while its ingest consumer
    # starts (the web server answers first) waits; it used to fail with a 500, asking
    # a consumer with no group coordinator yet for committed offsets.
    ends = await publish(
        running.settings.kafka_bootstrap, running.settings.usage_topic, [line("s-000")]
    )
    [(partition, end)] = ends.items()
    starting = asyncio.create_task(running.consumer.start())
    while running.consumer.consumer is None:
        await asyncio.sleep(0)
    assert not running.consumer.joined.is_set()
    assert await running.consumer.wait_ledgered([(partition, end - 1)], 60)
    await starting
    assert await running.ledger_ids() == ["s-000"]
