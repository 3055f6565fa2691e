"""Message bytes → validated `UsageEvent`s plus one `Rejection` per bad message or element.

Shared by the worker, `replay` (to count what it publishes) and HTTP ingest, so
every path applies the same rules and the same reason codes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.payload import truncate_payload
from schemas.usage_event import MAX_MESSAGE_BYTES, TOKEN_FIELDS, UsageEvent

REQUIRED_FIELDS = tuple(name for name, f in UsageEvent.model_fields.items() if f.is_required())

# The reason codes a dead letter can carry (documented in the README).
REASONS = (
    "oversize",
    "malformed_json",
    "duplicate_key",
    "not_an_object",
    "empty_batch",
    "missing_field",
    "empty_field",
    "token_count_out_of_range",
    "token_breakdown_inconsistent",
    "timestamp_invalid",
    "timestamp_in_future",
    "timestamp_too_old",
    "schema_violation",
)
# HTTP ingest adds `ownership_mismatch` (an event claims another tenant or team than its
# key) and `normalization_failed` (a provider-shaped body could not be mapped).


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str
    raw_payload: str
    element_index: int = -1  # -1: the whole message
    request_id: str = ""
    tenant_id: str = ""


@dataclass(frozen=True)
class DecodedMessage:
    events: list[UsageEvent]
    rejections: list[Rejection]

    @property
    def units(self) -> int:
        """Events plus rejections: what this message must become in ledger or dead letters."""
        return len(self.events) + len(self.rejections)


def parse_message(raw: bytes) -> list[Any] | Rejection:
    """The JSON elements of one message (an object is a one-element list), or why not."""
    document = _document(raw)
    if isinstance(document, Rejection):
        return document
    return elements_without_repeated_keys(raw, document)


def parse_messages(raws: Sequence[bytes]) -> list[list[Any] | Rejection]:
    """`parse_message` of each of `raws`. The screen for repeated keys looks at the whole
    batch at once (one-event messages paid more for it than for their parse), and at
    each message only when it finds something to look at: each message's count of
    keys in its bytes is at least its parsed document's, so equal sums mean equal
    counts."""
    documents = [_document(raw) for raw in raws]
    parsed = [
        (raw, doc)
        for raw, doc in zip(raws, documents, strict=True)
        if not isinstance(doc, Rejection)
    ]
    # A parsed message's bytes end with "}" or "]" (and spacing): joining them makes
    # no key mark across two messages.
    joined = b"".join(raw for raw, _ in parsed)
    if not _may_repeat_keys(joined, [doc for _, doc in parsed]):
        return [
            doc if isinstance(doc, Rejection) else [doc] if isinstance(doc, dict) else doc
            for doc in documents
        ]
    return [
        doc if isinstance(doc, Rejection) else elements_without_repeated_keys(raw, doc)
        for raw, doc in zip(raws, documents, strict=True)
    ]


def _document(raw: bytes) -> dict[str, Any] | list[Any] | Rejection:
    """The parsed JSON object or array of one message, or why not (repeated keys not
    looked at)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejection(
            "oversize",
            f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES} bytes",
            truncate_payload(raw),
        )
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("malformed_json", f"not valid JSON: {exc}", truncate_payload(raw))
    if isinstance(document, list) and not document:
        return Rejection("empty_batch", "the JSON array holds no events", truncate_payload(raw))
    if isinstance(document, dict | list):
        return document
    return Rejection(
        "not_an_object",
        f"expected a JSON object or an array of objects, got {type(document).__name__}",
        truncate_payload(raw),
    )


def elements_without_repeated_keys(raw: bytes, document: dict[str, Any] | list[Any]) -> Any:
    """The elements of a parsed JSON object or array (`raw` its bytes), each element with
    a key repeated in one of its objects replaced by its `duplicate_key` Rejection; for
    an object, that Rejection alone. Shared by the Kafka path and HTTP ingest."""
    if isinstance(document, dict):
        if _may_repeat_keys(raw, document):
            [repeated] = _repeated_keys(raw)
            if repeated is not None:
                return _duplicate_key_rejection(repeated, raw)
        return [document]
    if not _may_repeat_keys(raw, document):
        return document
    elements: list[Any] = list(document)
    for index, key in enumerate(_repeated_keys(raw)):
        if key is not None:
            payload = orjson.dumps(elements[index])
            elements[index] = _duplicate_key_rejection(key, payload, index)
    return elements


# A JSON key is a string followed by a colon: in compact JSON, `":`. orjson keeps the
# last of repeated keys, so a producer and the pipeline could disagree on what was sent.
_WHITESPACE_COLONS = (b'" :', b'"\t:', b'"\n:', b'"\r:')


def _may_repeat_keys(raw: bytes, document: Any) -> bool:
    """A cheap screen: True unless the keys in `raw` are provably all distinct (as
    many `":` in the bytes as in the parsed document written out again)."""
    if b"\\u" in raw or any(colon in raw for colon in _WHITESPACE_COLONS):
        return True  # escapes or spacing could hide a key from the count: check exactly
    return raw.count(b'":') > orjson.dumps(document).count(b'":')


class _CheckedObject(dict[str, Any]):
    repeated: str | None = None


def _collect_pairs(pairs: list[tuple[str, Any]]) -> _CheckedObject:
    obj = _CheckedObject(pairs)
    if len(obj) != len(pairs):
        obj.repeated = _first_repeated(key for key, _ in pairs)
    else:
        obj.repeated = next(filter(None, map(_repeated_inside, obj.values())), None)
    return obj


def _first_repeated(keys: Iterable[str]) -> str | None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return None


def _repeated_inside(value: Any) -> str | None:
    if isinstance(value, _CheckedObject):
        return value.repeated
    if isinstance(value, list):
        return next(filter(None, map(_repeated_inside, value)), None)
    return None


def _repeated_keys(raw: bytes) -> list[str | None]:
    """Per top-level element, the first key repeated within it (at any depth), if any."""
    document = json.loads(raw, object_pairs_hook=_collect_pairs)
    elements = document if isinstance(document, list) else [document]
    return [_repeated_inside(element) for element in elements]


def _duplicate_key_rejection(key: str, payload: bytes, index: int = -1) -> Rejection:
    return Rejection(
        "duplicate_key",
        f"the key {key[:64]!r} appears twice in one object: which value was meant is unknown",
        truncate_payload(payload),
        index,
    )


def classify(exc: ValidationError) -> tuple[str, str]:
    """A reason code and a one-line message for a failed validation."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    kind = first["type"]
    if kind == "missing":
        missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing"]
        return "missing_field", f"missing required field(s): {', '.join(missing)}"
    message = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in errors[:3]
    )
    if field == "timestamp":
        if "future" in first["msg"]:
            return "timestamp_in_future", message
        if "too old" in first["msg"]:
            return "timestamp_too_old", message
        return "timestamp_invalid", message
    if field in TOKEN_FIELDS and kind in ("greater_than_equal", "less_than_equal"):
        return "token_count_out_of_range", message
    if field in TOKEN_FIELDS and _beyond_64_bits(first.get("input")):
        # orjson reads an integer beyond 64 bits as a float: still a count out of range.
        return "token_count_out_of_range", f"{field}: {first.get('input')!r} is beyond 64 bits"
    if not field and kind == "value_error":
        return "token_breakdown_inconsistent", message
    if kind == "string_too_short" and field in REQUIRED_FIELDS:
        return "empty_field", message
    return "schema_violation", message


def _beyond_64_bits(value: Any) -> bool:
    return isinstance(value, float) and value.is_integer() and abs(value) >= 2**63


def _identity(element: dict[str, Any]) -> tuple[str, str]:
    request_id, tenant_id = element.get("request_id"), element.get("tenant_id")
    return (
        request_id[:256] if isinstance(request_id, str) else "",
        tenant_id[:256] if isinstance(tenant_id, str) else "",
    )


def validate_elements(
    elements: list[Any],
    now: datetime,
    raw: bytes | None = None,
    timestamp_floor: datetime | None = None,
) -> DecodedMessage:
    events: list[UsageEvent] = []
    rejections: list[Rejection] = []
    context = {"now": now, "timestamp_floor": timestamp_floor}
    for index, element in enumerate(elements):
        outcome = validate_element(element, index, len(elements), context, raw)
        if isinstance(outcome, Rejection):
            rejections.append(outcome)
        else:
            events.append(outcome)
    return DecodedMessage(events, rejections)


def validate_element(
    element: Any, index: int, count: int, context: dict[str, Any], raw: bytes | None
) -> UsageEvent | Rejection:
    """Element `index` of a message's `count` elements (`raw` the message's bytes)
    validated by the model, or its Rejection. `context`: `now`, `timestamp_floor`."""
    single = count == 1
    element_index = -1 if single else index
    if isinstance(element, Rejection):
        return replace(element, element_index=element_index)
    if not isinstance(element, dict):
        payload = raw if single and raw is not None else orjson.dumps(element)
        return Rejection(
            "not_an_object",
            f"array element {index} is {type(element).__name__}, not an object",
            truncate_payload(payload),
            element_index,
        )
    try:
        return UsageEvent.model_validate(element, context=context)
    except ValidationError as exc:
        reason, message = classify(exc)
        payload = raw if single and raw is not None else orjson.dumps(element)
        request_id, tenant_id = _identity(element)
        return Rejection(
            reason, message, truncate_payload(payload), element_index, request_id, tenant_id
        )


def decode_message(
    raw: bytes, now: datetime | None = None, timestamp_floor: datetime | None = None
) -> DecodedMessage:
    """Validate one Kafka message: events to price, rejections to dead-letter."""
    parsed = parse_message(raw)
    if isinstance(parsed, Rejection):
        return DecodedMessage([], [parsed])
    return validate_elements(parsed, now or datetime.now(UTC), raw, timestamp_floor)
