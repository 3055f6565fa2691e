"""A request body → the items it carries: one JSON object, a JSON array, or
NDJSON (one JSON object per line).

NDJSON is chosen by Content-Type, or detected when the body is not one JSON
document but its first non-blank line is. A malformed NDJSON line rejects
that line only; a malformed JSON document rejects the whole request. Items
are numbered from 0 in request order (NDJSON: blank lines are not items).
Reason codes are those of the Kafka path (`streams.ingest.decoding.REASONS`).
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.ingest.decoding import Rejection, elements_without_repeated_keys, truncate_payload

NDJSON_CONTENT_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)

# An item is a parsed JSON value, or the rejection of an NDJSON line that did not parse.
Item = Any


def split_items(body: bytes, content_type: str) -> list[Item] | Rejection:
    """The items of `body`, or the rejection of the whole request."""
    if not body.strip():
        return Rejection("empty_batch", "the request body is empty", "")
    if content_type.lower() in NDJSON_CONTENT_TYPES:
        return _ndjson(body)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if _looks_like_ndjson(body):
            return _ndjson(body)
        return Rejection("malformed_json", f"not valid JSON: {exc}", truncate_payload(body))
    if isinstance(document, list) and not document:
        return Rejection("empty_batch", "the JSON array holds no events", truncate_payload(body))
    if isinstance(document, dict | list):
        # A repeated key is refused as on the Kafka path: which value was meant is unknown.
        elements = elements_without_repeated_keys(body, document)
        return [elements] if isinstance(elements, Rejection) else list(elements)
    return Rejection(
        "not_an_object",
        f"expected a JSON object, an array of objects or NDJSON, got {type(document).__name__}",
        truncate_payload(body),
    )


def _looks_like_ndjson(body: bytes) -> bool:
    first, newline, rest = body.strip().partition(b"\n")
    if not newline or not rest.strip():
        return False
    try:
        return isinstance(orjson.loads(first), dict)
    except orjson.JSONDecodeError:
        return False


def _ndjson(body: bytes) -> list[Item]:
    items: list[Item] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            document = orjson.loads(line)
            if isinstance(document, dict):
                checked = elements_without_repeated_keys(line, document)
                document = checked if isinstance(checked, Rejection) else checked[0]
            items.append(document)
        except orjson.JSONDecodeError as exc:
            items.append(
                Rejection(
                    "malformed_json",
                    f"line is not valid JSON: {exc}",
                    truncate_payload(line),
                    len(items),
                )
            )
    if not items:
        return [Rejection("empty_batch", "the NDJSON body holds no lines", "")]
    return items
