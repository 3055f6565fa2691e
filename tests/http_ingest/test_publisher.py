"""`chunk_events`: how the HTTP publisher cuts one request's events into usage-topic
messages (JSON arrays the worker's decoder reads), by count and by size."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.usage_event import MAX_MESSAGE_BYTES
from streams.http_ingest.publisher import EVENTS_PER_MESSAGE, chunk_events
from streams.ingest.decoding import decode_message


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": f"chunk-{i}",
        "timestamp": "2025-06-01T12:00:00Z",
        "tenant_id": "acme",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 10,
        **extra,
    }


def test_at_most_events_per_message_in_order() -> None:
    events = [event(i) for i in range(2 * EVENTS_PER_MESSAGE + 7)]
    chunks = chunk_events(events)
    assert [len(c) for c in chunks] == [EVENTS_PER_MESSAGE, EVENTS_PER_MESSAGE, 7]
    assert [e for c in chunks for e in c] == events


def test_large_events_are_cut_under_half_the_message_limit() -> None:
    # ~60 KB of tags each: about 8 fit in half a MiB, far fewer than the count bound.
    tags = {f"t{k}": "x" * 600 for k in range(100)}
    events = [event(i, tags=tags) for i in range(40)]
    chunks = chunk_events(events)
    assert len(chunks) > 1 and all(len(c) < EVENTS_PER_MESSAGE for c in chunks)
    assert all(len(orjson.dumps(c)) <= MAX_MESSAGE_BYTES // 2 for c in chunks)
    assert [e for c in chunks for e in c] == events


def test_an_event_larger_than_the_bound_goes_alone() -> None:
    huge = event(1, tags={"blob": "y" * (MAX_MESSAGE_BYTES // 2)})
    chunks = chunk_events([event(0), huge, event(2)])
    assert [[e["request_id"] for e in c] for c in chunks] == [
        ["chunk-0"],
        ["chunk-1"],
        ["chunk-2"],
    ]


def test_no_events_no_messages() -> None:
    assert chunk_events([]) == []


def test_each_message_is_what_the_worker_decodes() -> None:
    events = [event(i, output_tokens=i) for i in range(EVENTS_PER_MESSAGE + 1)]
    now = datetime.now(UTC)
    decoded = [decode_message(orjson.dumps(c), now) for c in chunk_events(events)]
    assert [r for d in decoded for r in d.rejections] == []
    assert [e.request_id for d in decoded for e in d.events] == [e["request_id"] for e in events]
