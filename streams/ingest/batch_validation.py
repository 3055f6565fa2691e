"""A message's events validated by a compiled validator (msgspec), the pydantic model
deciding every element that validator cannot vouch for.

`UsageEvent` (and its JSON Schema) stays the contract. msgspec checks the field types
and bounds of a whole message's elements in one C call, about 25 times faster than
the model; an element is accepted on that path only when the model would accept it
with the same values: its strings carry no whitespace to strip, its timestamp and
reported cost pass the model's own field validators (pydantic TypeAdapters over the
same annotated types), and its token parts fit their totals (the model's rule,
`token_breakdown_problem`). Any element that fails a check, and every element of a
message that is not a list of objects, is validated by the model
(`decoding.validate_element`), so a rejected element gets exactly the model's reason
and message. tests/ingest/test_batch_validation.py checks both agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from pydantic import TypeAdapter, ValidationError

from schemas.usage_event import (
    MAX_TOKENS_PER_CALL,
    ReportedCost,
    Timestamp,
    UsageEvent,
    timestamp_in_utc_and_bounds,
    token_breakdown_problem,
)
from schemas.validated_event import ValidatedEvent
from streams.ingest.decoding import Rejection, parse_messages, validate_element

_Required = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Optional = Annotated[str, msgspec.Meta(max_length=256)]
_Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS_PER_CALL)]
_Tags = Annotated[dict[_Optional, _Optional], msgspec.Meta(max_length=64)]


class _Wire(msgspec.Struct, gc=False):
    """An element as msgspec checks it: the bounds of `UsageEvent`, strict types
    (no bool for an int, no float for an int), unknown fields ignored. The timestamp
    and the reported cost are checked afterwards by the model's own validators."""

    request_id: _Required
    timestamp: str | int
    tenant_id: _Required
    provider: _Required
    model: _Required
    input_tokens: _Tokens
    output_tokens: _Tokens = 0
    cached_tokens: _Tokens = 0
    cache_write_tokens: _Tokens = 0
    reasoning_tokens: _Tokens = 0
    cache_write_1h_tokens: _Tokens = 0
    service_tier: Annotated[str, msgspec.Meta(max_length=32)] = ""
    batch: bool = False
    team_id: _Optional = ""
    user_id: _Optional = ""
    feature_name: _Optional = ""
    workflow_id: _Optional = ""
    workflow_run_id: _Optional = ""
    workflow_name: _Optional = ""
    prompt_template_version: _Optional = ""
    environment: _Optional = ""
    api_key_id: _Optional = ""
    request_count: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)] | None = None
    status_code: Annotated[int, msgspec.Meta(ge=0, le=999)] | None = None
    retry_count: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    retry_of: _Optional = ""
    reported_cost_usd: Any = None
    tags: _Tags = {}


_STRING_FIELDS = tuple(name for name, f in UsageEvent.model_fields.items() if f.annotation is str)
_TIMESTAMPS = TypeAdapter(list[Timestamp])
_REPORTED_COST = TypeAdapter(ReportedCost)


def decode_batch_message(
    raw: bytes, now: datetime, timestamp_floor: datetime | None = None
) -> tuple[list[ValidatedEvent], list[Rejection]]:
    """`decoding.decode_message`'s outcome for one message (the same events, the same
    rejections in the same order), with events as `ValidatedEvent`s."""
    return decode_batch([raw], now, timestamp_floor)[0]


def decode_batch(
    raws: Sequence[bytes], now: datetime, timestamp_floor: datetime | None = None
) -> list[tuple[list[ValidatedEvent], list[Rejection]]]:
    """`decode_batch_message` for each of `raws`, the compiled checks run once over the
    elements of every message (one C call for a batch of one-event messages too)."""
    parsed = parse_messages(raws)
    taken = [
        (raw, message)
        for raw, message in zip(raws, parsed, strict=True)
        if not isinstance(message, Rejection)
    ]
    # Plainly spaced together (no message's bytes end in a quote) is each plainly spaced.
    every_plainly_spaced = _plainly_spaced(b"".join(raw for raw, _ in taken))
    elements: list[Any] = []
    spaced: list[bool] = []
    for raw, elements_of in taken:
        elements += elements_of
        spaced += [every_plainly_spaced or _plainly_spaced(raw)] * len(elements_of)
    vouched = iter(_vouched(elements, now, timestamp_floor, spaced))
    context: dict[str, Any] = {"now": now, "timestamp_floor": timestamp_floor}
    decoded: list[tuple[list[ValidatedEvent], list[Rejection]]] = []
    for raw, message in zip(raws, parsed, strict=True):
        if isinstance(message, Rejection):
            decoded.append(([], [message]))
            continue
        events: list[ValidatedEvent] = []
        rejections: list[Rejection] = []
        for index, element in enumerate(message):
            event = next(vouched)
            if event is not None:
                events.append(event)
                continue
            outcome = validate_element(element, index, len(message), context, raw)
            if isinstance(outcome, Rejection):
                rejections.append(outcome)
            else:
                events.append(ValidatedEvent.of(outcome))
        decoded.append((events, rejections))
    return decoded


def _plainly_spaced(raw: bytes) -> bool:
    """True when no string in `raw` can start or end with whitespace: ASCII, no escape
    (JSON escapes every ASCII whitespace but the space) and no space beside a quote."""
    return raw.isascii() and b"\\" not in raw and b'" ' not in raw and b' "' not in raw


def _vouched(
    elements: list[Any], now: datetime, floor: datetime | None, plainly_spaced: list[bool]
) -> list[ValidatedEvent | None]:
    """Per element, its event when the compiled checks vouch for it, else None.
    `plainly_spaced`: per element, whether its message passed `_plainly_spaced`."""
    wires: list[_Wire | None]
    try:
        wires = list(msgspec.convert(elements, list[_Wire]))
    except msgspec.ValidationError:
        wires = [_wire(element) for element in elements]
    times = _timestamps([w.timestamp if w is not None else None for w in wires])
    return [
        _event(wire, at, now, floor, spaced) if wire is not None and at is not None else None
        for wire, at, spaced in zip(wires, times, plainly_spaced, strict=True)
    ]


def _timestamps(stamps: list[str | int | None]) -> list[datetime | None]:
    """Each timestamp as the model's field validator reads it, None where it refuses
    it (or for None): one call for all, again for the rest after a refusal."""
    valid = [index for index, stamp in enumerate(stamps) if stamp is not None]
    times: list[datetime | None] = [None] * len(stamps)
    while valid:
        try:
            parsed = _TIMESTAMPS.validate_python([stamps[index] for index in valid])
        except ValidationError as exc:
            refused = {error["loc"][0] for error in exc.errors(include_url=False) if error["loc"]}
            kept = [index for n, index in enumerate(valid) if n not in refused]
            if len(kept) == len(valid):
                return times  # a refusal of no one element: the model decides them all
            valid = kept
            continue
        for index, at in zip(valid, parsed, strict=True):
            times[index] = at
        break
    return times


def _wire(element: Any) -> _Wire | None:
    try:
        return msgspec.convert(element, _Wire)
    except msgspec.ValidationError:
        return None


def _event(
    wire: _Wire, at: datetime, now: datetime, floor: datetime | None, plainly_spaced: bool
) -> ValidatedEvent | None:
    if not plainly_spaced and not _unspaced(wire):
        return None
    try:
        at = timestamp_in_utc_and_bounds(at, now, floor)
    except ValueError:
        return None
    if token_breakdown_problem(
        wire.input_tokens,
        wire.cached_tokens,
        wire.cache_write_tokens,
        wire.cache_write_1h_tokens,
        wire.output_tokens,
        wire.reasoning_tokens,
    ):
        return None
    reported = wire.reported_cost_usd
    if reported is not None:
        try:
            reported = _REPORTED_COST.validate_python(reported)
        except ValidationError:
            return None
    tier = wire.service_tier
    if tier and not tier.isascii():
        return None  # lower-casing may change its length: the model decides
    return ValidatedEvent(
        wire.request_id,
        at,
        wire.tenant_id,
        wire.provider,
        wire.model,
        wire.input_tokens,
        wire.output_tokens,
        wire.cached_tokens,
        wire.cache_write_tokens,
        wire.reasoning_tokens,
        wire.cache_write_1h_tokens,
        tier.lower(),
        wire.batch,
        wire.team_id,
        wire.user_id,
        wire.feature_name,
        wire.workflow_id,
        wire.workflow_run_id,
        wire.workflow_name,
        wire.prompt_template_version,
        wire.environment,
        wire.api_key_id,
        wire.request_count,
        wire.latency_ms,
        wire.status_code,
        wire.retry_count,
        wire.retry_of,
        reported,
        wire.tags,
    )


def _unspaced(wire: _Wire) -> bool:
    """No string of `wire` (its timestamp and reported cost as text, its tags) would
    change when stripped, as the model strips every string."""
    texts = [getattr(wire, name) for name in _STRING_FIELDS]
    texts += [*wire.tags, *wire.tags.values()]
    texts += [v for v in (wire.timestamp, wire.reported_cost_usd) if isinstance(v, str)]
    return all(text == text.strip() for text in texts)
