"""HTTP ingest tests run the real handlers on a real aiohttp server bound to
127.0.0.1 and talk to it with a real HTTP client (httpx). `publish` is a
recorder: the Kafka side is the lead's callable, tested in
test_kafka_publish.py against the embedded broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from streams.http_ingest import IngestHandler, Publish
from streams.http_ingest.handler import EVENTS_PATH, TRACES_PATH
from streams.http_ingest.keys import IngestKeyStore


@dataclass
class Recorder:
    """A `publish` callable that keeps what it was given, or fails on demand."""

    events: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    fail: bool = False

    async def __call__(self, events: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.fail:
            raise ConnectionError("broker unavailable")
        self.events.extend(events)
        self.dead_letters.extend(rejected)


@dataclass
class Ingest:
    """A running server: its base URL, its handler, and what it published."""

    url: str
    handler: IngestHandler
    published: Recorder
    client: httpx.AsyncClient

    async def post(
        self,
        path: str = "/v1/events",
        *,
        key: str | None = None,
        content: bytes | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        return await self.client.post(
            self.url + path, content=content, json=json, headers=all_headers, params=params
        )


StartIngest = Callable[..., Awaitable[Ingest]]


@pytest.fixture
def key_store(tmp_path: Path) -> IngestKeyStore:
    return IngestKeyStore(tmp_path / "ingest_keys.json")


@pytest.fixture
async def start_ingest() -> AsyncIterator[StartIngest]:
    """`await start_ingest(key_store=..., **handler_options)` → a running `Ingest`
    (`auto_decompress=False`: an aiohttp server that leaves gzip to the handler)."""
    servers: list[TestServer] = []
    clients: list[httpx.AsyncClient] = []

    async def start(
        key_store: IngestKeyStore | None = None,
        publish: Publish | None = None,
        auto_decompress: bool = True,
        **options: Any,
    ) -> Ingest:
        recorder = Recorder()
        handler = IngestHandler(publish or recorder, key_store, **options)
        app = web.Application()
        app.router.add_post(EVENTS_PATH, handler.handle_events)
        app.router.add_post(TRACES_PATH, handler.handle_traces)
        server = TestServer(app, host="127.0.0.1", auto_decompress=auto_decompress)
        await server.start_server()
        servers.append(server)
        client = httpx.AsyncClient(timeout=10)
        clients.append(client)
        url = str(server.make_url("")).rstrip("/")
        return Ingest(url, handler, recorder, client)

    yield start
    for client in clients:
        await client.aclose()
    for server in servers:
        await server.close()


def _usage_event(request_id: str, **fields: Any) -> dict[str, Any]:
    event = {
        "request_id": request_id,
        "timestamp": "2025-06-01T12:00:00Z",
        "tenant_id": "acme",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1200,
        "cached_tokens": 1000,
        "output_tokens": 80,
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


@pytest.fixture
def usage_event() -> Callable[..., dict[str, Any]]:
    """A valid canonical event dict; a field given as None is left out."""
    return _usage_event
