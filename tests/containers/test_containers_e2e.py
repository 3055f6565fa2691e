"""End to end on the production engines: Apache Kafka (KRaft) and a ClickHouse server in
containers, with the real worker. Runs where a Docker engine answers
(`make test-containers`); skipped, with that reason, where none does."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cost.catalog import PriceCatalog
from streams.embedded.replay import publish
from streams.embedded.simulate import TrafficGenerator
from streams.ports import free_port

pytestmark = pytest.mark.containers

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8.8.26"


def docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


if not docker_engine_answers():
    pytest.skip("no Docker engine answers here (docker ping failed)", allow_module_level=True)


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[str, Any]]:
    from testcontainers.community.clickhouse import ClickHouseContainer
    from testcontainers.community.kafka import KafkaContainer

    with (
        KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka,
        ClickHouseContainer(
            CLICKHOUSE_IMAGE, username="spendstream", password="secret", dbname="default"
        ) as clickhouse,
    ):
        yield kafka.get_bootstrap_server(), clickhouse


def test_worker_on_kafka_and_clickhouse_server(engines: tuple[str, Any], tmp_path: Path) -> None:
    import clickhouse_connect

    bootstrap, clickhouse = engines
    host = clickhouse.get_container_host_ip()
    port = clickhouse.get_exposed_port(8123)
    env = dict(
        os.environ,
        SPENDSTREAM_KAFKA_BOOTSTRAP=bootstrap,
        SPENDSTREAM_CLICKHOUSE_URL=f"http://spendstream@{host}:{port}/default",
        SPENDSTREAM_CLICKHOUSE_PASSWORD="secret",
        SPENDSTREAM_DATA_DIR=str(tmp_path),
        SPENDSTREAM_WEB_PORT=str(free_port()),
        SPENDSTREAM_SESSION_TIMEOUT_SECONDS="10",
    )
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env)
    try:
        now = datetime.now(UTC)
        generator = TrafficGenerator(seed=3)
        events = [generator.event(now) for _ in range(500)]
        lines = [orjson.dumps(e) for e in events + events[:50]]
        asyncio.run(publish(bootstrap, "spendstream.usage", lines))
        client = clickhouse_connect.get_client(
            host=host, port=int(port), username="spendstream", password="secret"
        )
        deadline = time.monotonic() + 180
        count = 0
        while time.monotonic() < deadline:
            try:
                count = client.query("SELECT count() FROM usage_ledger").result_rows[0][0]
            except Exception:
                count = 0
            if count >= 500:
                break
            time.sleep(1)
        catalog = PriceCatalog.load(None)
        expected = Decimal(0)
        for e in events:
            prices = catalog.resolve(e["provider"], e["model"], now)
            assert prices is not None
            expected += prices.cost(
                e["input_tokens"], e["cached_tokens"], 0, e["output_tokens"], e["reasoning_tokens"]
            ).total
        total = client.query("SELECT count(), sum(cost_usd) FROM usage_ledger FINAL").result_rows[0]
        assert total == (500, expected)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
