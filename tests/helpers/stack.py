"""The real `spendstream` command and the real embedded stack (tansu broker, a Faust
worker child process, ClickHouse through chdb), for tests that run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson


def spendstream(
    *args: str, stdin: bytes | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def query_json(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    result = spendstream("query", sql, "--data-dir", str(data_dir), "--format", "json")
    assert result.returncode == 0, result.stderr.decode()
    return list(orjson.loads(result.stdout))


def write_ndjson(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def analyst_headers(data_dir: Path) -> dict[str, str]:
    """The worker's analyst token (generated into the data dir at its first start)."""
    from streams.auth import analyst_token_for

    return {"Authorization": f"Bearer {analyst_token_for(data_dir, None)}"}


def analyst_client(url: str, data_dir: Path) -> Any:
    from streams.auth import analyst_token_for
    from streams.ledger.remote import RemoteQueryClient

    return RemoteQueryClient(url, analyst_token_for(data_dir, None))


class RunningStack:
    """The embedded broker and one worker child process, for tests that talk to both."""

    def __init__(
        self, data_dir: Path, extra_env: dict[str, str] | None = None, *, kafka: bool = False
    ) -> None:
        """`kafka`: the worker is told no log epoch start, as on Kafka, whose log
        outlives it; its spend state comes from the changelogs and their marks."""
        from streams.embedded.stack import EmbeddedStack
        from streams.settings import Settings

        self.settings = Settings(data_dir=data_dir)
        self.stack = EmbeddedStack(self.settings)
        if kafka:
            self.stack.log_epoch_started_at = None
        self.stack.start_broker()
        self.worker = self.stack.start_worker(extra_env)
        self.stack.wait_ready(self.worker)
        self.url = f"http://127.0.0.1:{self.worker.web_port}"

    @property
    def bootstrap(self) -> str:
        return self.stack.bootstrap

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        client = analyst_client(self.url, self.settings.data_dir)
        try:
            return list(client.query(sql).result_rows)
        finally:
            client.close()

    def stop(self) -> None:
        self.stack.stop()


def children_running(parent: int, word: str) -> list[int]:
    """Pids of `parent`'s child processes whose command line holds `word`."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == parent and word.encode() in cmdline:
            found.append(int(status.parent.name))
    return found


async def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every non-null value on `topic`, read from the start without a consumer group
    until a fetch returns nothing for a second."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    try:
        await consumer.topics()  # fetches metadata
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while batches := await consumer.getmany(timeout_ms=1000):
            values += [r.value for records in batches.values() for r in records if r.value]
    finally:
        await consumer.stop()
    return values
