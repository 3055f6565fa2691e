"""The publish callable behind HTTP ingest: validated events onto the usage topic,
rejected items into the dead-letter topic and table, awaited until acknowledged."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from typing import Any

import faust
import orjson

from schemas.usage_event import MAX_MESSAGE_BYTES
from streams.ledger.sink import ClickHouseLedgerSink
from streams.settings import Settings

EVENTS_PER_MESSAGE = 500
HTTP_SOURCE = "http"
_sequence = itertools.count()


def chunk_events(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """JSON-array messages of at most EVENTS_PER_MESSAGE events and well under 1 MiB."""
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 2
    for event in events:
        encoded = len(orjson.dumps(event, default=str)) + 1
        if current and (
            len(current) >= EVENTS_PER_MESSAGE or size + encoded > MAX_MESSAGE_BYTES // 2
        ):
            chunks.append(current)
            current, size = [], 2
        current.append(event)
        size += encoded
    if current:
        chunks.append(current)
    return chunks


def http_dead_letter_row(letter: dict[str, Any], log_epoch: str) -> dict[str, Any]:
    # No Kafka position: a per-process unique sequence keeps rows distinct under FINAL.
    received = letter.get("received_at")
    return {
        "log_epoch": log_epoch,
        "topic": HTTP_SOURCE,
        "partition": -1,
        "offset": time.time_ns() + next(_sequence),
        "element_index": int(letter.get("element_index", -1)),
        "reason": str(letter["reason"]),
        "message": str(letter["message"]),
        "raw_payload": str(letter.get("raw_payload", "")),
        "payload_bytes": int(letter.get("payload_bytes", 0)),
        "request_id": str(letter.get("request_id") or ""),
        "tenant_id": str(letter.get("tenant_id") or ""),
        "received_at": datetime.fromisoformat(received) if received else datetime.now(UTC),
    }


class HttpIngestPublisher:
    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        sink_getter: Any,
        count_dead_letters: Any = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.sink_getter = sink_getter
        self.count_dead_letters = count_dead_letters

    async def __call__(
        self, events: list[dict[str, Any]], dead_letters: list[dict[str, Any]]
    ) -> list[tuple[int, int]]:
        """Returns the (partition, offset) of each usage message, as the broker
        acknowledged it: what a durable-ack request waits to see ledgered."""
        usage = self.app.topic(
            self.settings.usage_topic, value_serializer="raw", key_serializer="raw"
        )
        sent = [
            await usage.send(
                key=str(chunk[0]["request_id"]).encode(),
                value=orjson.dumps(chunk, default=str),
            )
            for chunk in chunk_events(events)
        ]
        pending = list(sent)
        if dead_letters:
            rows = [
                http_dead_letter_row(letter, self.settings.log_epoch) for letter in dead_letters
            ]
            dlq = self.app.topic(
                self.settings.dlq_topic, value_serializer="raw", key_serializer="raw"
            )
            pending += [await dlq.send(value=orjson.dumps(row, default=str)) for row in rows]
            sink: ClickHouseLedgerSink | None = await self.sink_getter()
            if sink is None:
                raise RuntimeError("ClickHouse is not connected")
            await sink.write([], rows)
            if self.count_dead_letters is not None:
                self.count_dead_letters(rows)
        acknowledged = await asyncio.gather(*pending)
        return [(int(m.partition), int(m.offset)) for m in acknowledged[: len(sent)]]
