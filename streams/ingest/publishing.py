"""The ingest pipeline's outputs onto Kafka, through the Faust app's producer: costed
rows for the spend agent, dead letters for the dead-letter topic."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import orjson

from streams.settings import Settings

COSTED_ROWS_PER_MESSAGE = 500


def json_bytes(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


async def publish_costed(
    app: faust.App, settings: Settings, by_tenant: dict[str, list[dict[str, Any]]]
) -> None:
    """Messages of up to COSTED_ROWS_PER_MESSAGE rows per tenant, keyed by tenant:
    downstream tables are per tenant. Small enough for any broker's message limit."""
    outage = settings.fault_costed_outage_file
    if outage is not None and outage.exists():
        raise ConnectionError(f"injected costed publish failure ({outage} exists)")
    topic = app.topic(settings.costed_topic, value_serializer="raw", key_serializer="raw")
    pending = []
    for tenant, rows in by_tenant.items():
        for start in range(0, len(rows), COSTED_ROWS_PER_MESSAGE):
            chunk = rows[start : start + COSTED_ROWS_PER_MESSAGE]
            value = json_bytes(chunk)
            pending.append(await topic.send(key=tenant.encode(), value=value))
    await asyncio.gather(*pending)


async def publish_dead_letters(
    app: faust.App, settings: Settings, letters: list[dict[str, Any]]
) -> None:
    topic = app.topic(settings.dlq_topic, value_serializer="raw", key_serializer="raw")
    pending = [await topic.send(value=json_bytes(letter)) for letter in letters]
    await asyncio.gather(*pending)
