"""UsageEvent: each validation rule of the event contract, accepted and rejected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.usage_event import DROPPED_TEXT_FIELDS, MAX_TOKENS_PER_CALL, UsageEvent

NOW = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
REQUIRED = ("request_id", "timestamp", "tenant_id", "provider", "model", "input_tokens")
REQUIRED_STRINGS = ("request_id", "tenant_id", "provider", "model")
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def event(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": "req-1",
        "timestamp": "2025-03-04T10:00:00Z",
        "tenant_id": "acme",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1200,
    }
    data.update(fields)
    return data


def validate(data: dict[str, Any], now: datetime = NOW) -> UsageEvent:
    return UsageEvent.model_validate(data, context={"now": now})


def rejection(data: dict[str, Any], now: datetime = NOW) -> ErrorDetails:
    with pytest.raises(ValidationError) as caught:
        validate(data, now)
    return caught.value.errors()[0]


def test_minimal_event_is_accepted_with_documented_defaults() -> None:
    e = validate(event())
    assert (e.output_tokens, e.cached_tokens, e.cache_write_tokens, e.reasoning_tokens) == (
        0,
        0,
        0,
        0,
    )
    assert e.request_count == 1
    assert e.retry_count == 0
    assert e.tags == {}
    assert e.team_id == ""
    assert e.latency_ms is None
    assert e.reported_cost_usd is None


@pytest.mark.parametrize("field", REQUIRED)
def test_each_required_field_missing_is_rejected(field: str) -> None:
    data = event()
    del data[field]
    error = rejection(data)
    assert error["type"] == "missing"
    assert error["loc"] == (field,)


@pytest.mark.parametrize("value", ["", "   "])
@pytest.mark.parametrize("field", REQUIRED_STRINGS)
def test_required_strings_must_be_non_empty(field: str, value: str) -> None:
    error = rejection(event(**{field: value}))
    assert error["type"] == "string_too_short"
    assert error["loc"] == (field,)


def test_strings_are_stripped() -> None:
    assert validate(event(tenant_id="  acme  ")).tenant_id == "acme"


def test_string_longer_than_256_characters_is_rejected() -> None:
    assert validate(event(request_id="r" * 256)).request_id == "r" * 256
    assert rejection(event(request_id="r" * 257))["type"] == "string_too_long"


def _with_token(field: str, value: Any) -> dict[str, Any]:
    # Large parts need large totals, or the breakdown rule fires instead of the range rule.
    data = event(input_tokens=MAX_TOKENS_PER_CALL, output_tokens=MAX_TOKENS_PER_CALL)
    data[field] = value
    return data


@pytest.mark.parametrize("field", TOKEN_FIELDS)
@pytest.mark.parametrize("value", [0, 1, MAX_TOKENS_PER_CALL])
def test_token_count_in_range_is_accepted(field: str, value: int) -> None:
    assert getattr(validate(_with_token(field, value)), field) == value


@pytest.mark.parametrize("field", TOKEN_FIELDS)
@pytest.mark.parametrize(
    ("value", "kind"),
    [(-1, "greater_than_equal"), (MAX_TOKENS_PER_CALL + 1, "less_than_equal")],
)
def test_token_count_out_of_range_is_rejected(field: str, value: int, kind: str) -> None:
    error = rejection(_with_token(field, value))
    assert error["type"] == kind
    assert error["loc"] == (field,)


@pytest.mark.parametrize("field", TOKEN_FIELDS)
@pytest.mark.parametrize("value", [5.0, 5.5, "5", True, False, None])
def test_token_count_must_be_an_integer(field: str, value: Any) -> None:
    error = rejection(_with_token(field, value))
    assert error["type"] == "int_type"
    assert error["loc"] == (field,)


def test_cache_parts_may_equal_input() -> None:
    e = validate(event(input_tokens=1000, cached_tokens=600, cache_write_tokens=400))
    assert (e.cached_tokens, e.cache_write_tokens) == (600, 400)


def test_cache_parts_exceeding_input_are_rejected() -> None:
    error = rejection(event(input_tokens=1000, cached_tokens=600, cache_write_tokens=401))
    assert error["loc"] == ()
    assert "cached_tokens + cache_write_tokens exceeds input_tokens" in error["msg"]


def test_reasoning_may_equal_output() -> None:
    assert validate(event(output_tokens=500, reasoning_tokens=500)).reasoning_tokens == 500


def test_reasoning_exceeding_output_is_rejected() -> None:
    error = rejection(event(output_tokens=500, reasoning_tokens=501))
    assert error["loc"] == ()
    assert "reasoning_tokens exceeds output_tokens" in error["msg"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-03-04T10:00:00Z", datetime(2025, 3, 4, 10, 0, tzinfo=UTC)),
        ("2025-03-04T12:30:00+02:30", datetime(2025, 3, 4, 10, 0, tzinfo=UTC)),
        ("2025-03-04T05:00:00-05:00", datetime(2025, 3, 4, 10, 0, tzinfo=UTC)),
        ("2025-03-04T10:00:00.250Z", datetime(2025, 3, 4, 10, 0, 0, 250_000, tzinfo=UTC)),
        ("2025-03-04T10:00:00", datetime(2025, 3, 4, 10, 0, tzinfo=UTC)),
        (1741082400000, datetime(2025, 3, 4, 10, 0, tzinfo=UTC)),
        (1741082400123, datetime(2025, 3, 4, 10, 0, 0, 123_000, tzinfo=UTC)),
    ],
    ids=["z", "plus-offset", "minus-offset", "fraction", "naive", "epoch-ms", "epoch-ms-frac"],
)
def test_timestamp_forms_are_normalized_to_utc(raw: Any, expected: datetime) -> None:
    ts = validate(event(timestamp=raw)).timestamp
    assert ts == expected
    assert ts.utcoffset() == timedelta(0)
    assert ts.tzinfo is UTC


@pytest.mark.parametrize(
    "raw",
    ["yesterday", "", "2025-13-01T00:00:00Z", "2025-03-04T25:00:00Z", 1741082400000.0, True, None],
    ids=["word", "empty", "month-13", "hour-25", "float-ms", "bool", "null"],
)
def test_unparseable_timestamp_is_rejected(raw: Any) -> None:
    assert rejection(event(timestamp=raw))["loc"] == ("timestamp",)


def test_epoch_milliseconds_beyond_the_calendar_are_rejected() -> None:
    error = rejection(event(timestamp=10**20))
    assert error["loc"] == ("timestamp",)
    assert "out of range" in error["msg"]


@pytest.mark.parametrize(
    "form",
    [
        lambda t: t.isoformat(),
        lambda t: t.replace(tzinfo=None).isoformat(),
        lambda t: int(t.timestamp() * 1000),
    ],
    ids=["rfc3339", "naive", "epoch-ms"],
)
def test_timestamp_exactly_24_hours_ahead_is_accepted_one_second_more_is_not(form: Any) -> None:
    limit = NOW + timedelta(hours=24)
    assert validate(event(timestamp=form(limit))).timestamp == limit
    error = rejection(event(timestamp=form(limit + timedelta(seconds=1))))
    assert error["loc"] == ("timestamp",)
    assert "more than 24 hours in the future" in error["msg"]


def test_future_limit_is_relative_to_the_context_now() -> None:
    ts = "2025-03-06T00:00:00Z"  # 36 h after NOW
    with pytest.raises(ValidationError):
        validate(event(timestamp=ts), now=NOW)
    assert validate(event(timestamp=ts), now=NOW + timedelta(hours=12)).timestamp == datetime(
        2025, 3, 6, tzinfo=UTC
    )


def test_future_limit_without_context_uses_the_wall_clock() -> None:
    future = datetime.now(UTC) + timedelta(hours=25)
    with pytest.raises(ValidationError):
        UsageEvent.model_validate(event(timestamp=future.isoformat()))
    past = datetime.now(UTC) - timedelta(days=400)
    assert UsageEvent.model_validate(event(timestamp=past.isoformat())).timestamp == past


def test_text_fields_are_dropped() -> None:
    secrets: dict[str, Any] = {name: f"SECRET {name} text" for name in DROPPED_TEXT_FIELDS}
    secrets["messages"] = [{"role": "user", "content": "SECRET message"}]
    e = validate(event(**secrets))
    dumped = e.model_dump()
    for name in ("prompt", "completion", "messages", "input", "output"):
        assert name not in dumped
        assert not hasattr(e, name)
    assert "SECRET" not in e.model_dump_json()


def test_unknown_fields_are_ignored() -> None:
    assert "vendor_extra" not in validate(event(vendor_extra={"x": 1})).model_dump()


def test_event_is_immutable() -> None:
    e = validate(event())
    with pytest.raises(ValidationError):
        e.input_tokens = 5  # type: ignore[misc]


@pytest.mark.parametrize("value", [0, -1, 1_000_001, 2.0, True])
def test_request_count_out_of_range_or_not_integer_is_rejected(value: Any) -> None:
    assert rejection(event(request_count=value))["loc"] == ("request_count",)


def test_reported_cost_is_an_exact_decimal_and_never_negative_or_nan() -> None:
    assert validate(event(reported_cost_usd="0.000123")).reported_cost_usd == Decimal("0.000123")
    for bad in ("-0.01", "NaN", "Infinity"):
        assert rejection(event(reported_cost_usd=bad))["loc"] == ("reported_cost_usd",)


def test_tags_map_strings_to_strings_with_at_most_64_entries() -> None:
    tags = {f"k{i}": f"v{i}" for i in range(64)}
    assert validate(event(tags=tags)).tags == tags
    assert rejection(event(tags={**tags, "k64": "v"}))["loc"] == ("tags",)
    assert rejection(event(tags={"k": 1}))["loc"][0] == "tags"


@pytest.mark.parametrize("raw", [0, "1970-01-01T00:00:00Z", "1850-06-01T00:00:00Z", "0001-01-01"])
def test_a_timestamp_before_the_floor_is_too_old(raw: Any) -> None:
    with pytest.raises(ValidationError, match="too old"):
        validate(event(timestamp=raw))


def test_the_floor_comes_from_the_validation_context() -> None:
    data = event(timestamp="2021-06-01T00:00:00Z")
    validate(data)  # the default floor, 2020-01-01
    with pytest.raises(ValidationError, match="too old"):
        UsageEvent.model_validate(
            data, context={"now": NOW, "timestamp_floor": datetime(2022, 1, 1, tzinfo=UTC)}
        )


@pytest.mark.parametrize(
    ("reported", "stored"),
    [
        (7.750000000000001e-05, Decimal("0.000077500000000000")),
        (0.00022500000000000002, Decimal("0.000225000000000000")),
        ("0.0000000000000000005", Decimal("0.000000000000000000")),  # half to even
        ("0.0000000000000000015", Decimal("0.000000000000000002")),
        (12, Decimal("12.000000000000000000")),
    ],
)
def test_reported_cost_is_held_at_the_ledgers_scale(reported: Any, stored: Decimal) -> None:
    cost = validate(event(reported_cost_usd=reported)).reported_cost_usd
    assert cost == stored
    assert cost is not None and cost.as_tuple().exponent == -18
