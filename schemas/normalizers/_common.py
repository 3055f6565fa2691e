"""Shared pieces of the normalizers: the error type, strict token parsing and
the assembly of the canonical event dict from body-derived values plus the
ownership fields the caller passes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas.usage_event import TOKEN_FIELDS, UsageEvent


class NormalizationError(ValueError):
    """A provider body that cannot be mapped onto the canonical event.

    The ingest edge turns it into a dead letter with reason
    `normalization_failed`; the message says what was missing or wrong.
    """


# Everything but the token counts may come from the caller. Token counts come
# only from the body: letting a caller patch them would bypass the mapping.
OWNERSHIP_FIELDS = frozenset(UsageEvent.model_fields) - TOKEN_FIELDS


def as_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise NormalizationError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def optional_mapping(value: Any, what: str) -> Mapping[str, Any]:
    """A details object that providers omit or send as null reads as empty."""
    if value is None:
        return {}
    return as_mapping(value, what)


def token_count(value: Any, field: str) -> int:
    """A count from a provider body: absent/null is 0, anything not a
    non-negative whole number is an error (never silently truncated)."""
    if value is None:
        return 0
    # bool is an int subclass: `true` as a token count is a broken body.
    if isinstance(value, bool):
        raise NormalizationError(f"{field} must be a whole number, got a boolean")
    if isinstance(value, int):
        count = value
    elif isinstance(value, float) and value.is_integer():
        count = int(value)
    else:
        raise NormalizationError(f"{field} must be a whole number, got {value!r}")
    if count < 0:
        raise NormalizationError(f"{field} is negative ({count})")
    return count


def first_present(mapping: Mapping[str, Any], keys: Iterable[str]) -> Any:
    """The value of the first key that is present and not null.

    Used where a provider spells one count several ways: the spellings repeat
    the same number, so they are alternatives and must never be added.
    """
    for key in keys:
        value = mapping.get(key)
        if value is not None:
            return value
    return None


def has_any(mapping: Mapping[str, Any], keys: Iterable[str]) -> bool:
    return any(mapping.get(key) is not None for key in keys)


def moment(value: Any, field: str) -> datetime:
    """A time as sources write it: epoch seconds (int or float), a datetime, or
    text in ISO 8601 / RFC 3339 with `T` or a space ("2025-01-24 09:20:46.847371",
    "2025-01-24T09:20:46Z"); naive means UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise NormalizationError(f"{field} is not a date-time: {value[:64]!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return epoch_seconds(value, field)


def epoch_seconds(value: Any, field: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NormalizationError(f"{field} must be epoch seconds, got {value!r}")
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise NormalizationError(f"{field} is out of range: {value!r}") from exc


def epoch_nanos(value: Any, field: str) -> datetime:
    nanos = int_like(value, field)
    try:
        return datetime.fromtimestamp(nanos / 1e9, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise NormalizationError(f"{field} is out of range: {value!r}") from exc


def int_like(value: Any, field: str) -> int:
    # OTLP/JSON carries 64-bit integers as decimal strings.
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise NormalizationError(f"{field} must be an integer, got {value!r}")


def money(value: Any) -> Decimal | None:
    """A provider-reported cost as Decimal, going through str so a float like
    0.1 stays 0.1 rather than its binary expansion. The reported cost is only
    kept for reconciliation, so an unreadable one is dropped, not fatal."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    return amount


def build_event(
    *,
    format_name: str,
    provider: str | None,
    model: str | None,
    request_id: str | None,
    timestamp: Any,
    input_tokens: int,
    output_tokens: int = 0,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    service_tier: Any = None,
    batch: bool = False,
    extra: Mapping[str, Any] | None = None,
    ownership: Mapping[str, Any],
) -> dict[str, Any]:
    """The canonical event dict: values read from the body, then the caller's
    ownership fields on top (the caller knows better who owns the call, and
    may pin `model` or `provider`, e.g. `provider="azure"` for an OpenAI body).

    Two exceptions, because the body knows better: the `service_tier` a
    response names (the tier that served the call) wins over the caller's (the
    tier requested), and a body that says it is a batch result stays `batch`.

    `None` ownership values are skipped so callers can pass optional fields
    through without filtering them.
    """
    unknown = sorted(set(ownership) - OWNERSHIP_FIELDS)
    if unknown:
        # A typo such as `tenant=` would otherwise vanish silently and the
        # event would be dead-lettered later for a missing tenant_id.
        raise TypeError(f"unknown event field(s) for {format_name}: {', '.join(unknown)}")

    event: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "request_id": request_id,
        "timestamp": timestamp,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": cached_tokens,
        "cache_write_tokens": cache_write_tokens,
        "reasoning_tokens": reasoning_tokens,
        "cache_write_1h_tokens": cache_write_1h_tokens,
    }
    body_tags: dict[str, str] = {}
    for key, value in (extra or {}).items():
        if value is None:
            continue
        if key == "tags":
            body_tags.update(value)
        else:
            event[key] = value

    for key, value in ownership.items():
        if value is None:
            continue
        if key == "tags":
            if not isinstance(value, Mapping):
                raise TypeError("tags must be a mapping of strings to strings")
            body_tags.update(value)
        else:
            event[key] = value
    if body_tags:
        event["tags"] = body_tags
    if isinstance(service_tier, str) and service_tier.strip():
        event["service_tier"] = service_tier
    if batch:
        event["batch"] = True

    for required, hint in (
        ("provider", "pass provider=..."),
        ("model", "pass model=..."),
        ("request_id", "pass request_id=..."),
    ):
        value = event.get(required)
        if not isinstance(value, str) or not value.strip():
            raise NormalizationError(f"{format_name} body has no {required}; {hint}")
    if event["timestamp"] is None:
        # A normalizer runs when the call finished, so "now" is the call's
        # time to within the caller's own latency.
        event["timestamp"] = datetime.now(UTC)
    return event


def last_with(events: Any, keys: tuple[str, ...], what: str) -> Mapping[str, Any]:
    """The last streamed event that carries one of `keys`: streamed usage is
    cumulative, so the last value is the total and deltas are never summed."""
    if not isinstance(events, list):
        raise NormalizationError(f"{what} 'events' must be a JSON array")
    for event in reversed(events):
        if isinstance(event, Mapping) and has_any(event, keys):
            return event
    raise NormalizationError(f"no {what} stream event carries {' or '.join(keys)}")
