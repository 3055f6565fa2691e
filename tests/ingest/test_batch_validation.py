"""The compiled batch validator agrees with the model (the contract) on every input:
the same events with the same values, the same rejections with the same reasons,
messages and payloads, in the same order; and it vouches for canonical events by itself."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.usage_event import UsageEvent
from schemas.validated_event import ValidatedEvent
from streams.ingest.batch_validation import (
    _vouched,
    decode_batch,
    decode_batch_message,
)
from streams.ingest.decoding import decode_message
from tests.ingest.test_decoding import BAD_MESSAGES, NOW, event
from tests.reliability.test_poison import (
    DUPLICATE_KEYS,
    HUGE_BEYOND_64BIT,
    POISON,
    hostile_messages,
    json_values,
)


def assert_agree(raw: bytes, now: datetime = NOW, floor: datetime | None = None) -> None:
    expected = decode_message(raw, now, floor)
    events, rejections = decode_batch_message(raw, now, floor)
    assert [msgspec.structs.asdict(e) for e in events] == [e.__dict__ for e in expected.events]
    assert rejections == expected.rejections


def assert_batch_agrees(raws: list[bytes], now: datetime = NOW) -> None:
    """Decoded together, each message is decoded as the model decodes it alone."""
    expected = [decode_message(raw, now) for raw in raws]
    decoded = decode_batch(raws, now)
    assert [[msgspec.structs.asdict(e) for e in events] for events, _ in decoded] == [
        [e.__dict__ for e in message.events] for message in expected
    ]
    assert [rejections for _, rejections in decoded] == [m.rejections for m in expected]


def test_the_struct_has_the_models_fields_in_order_with_its_defaults() -> None:
    assert ValidatedEvent.__struct_fields__ == tuple(UsageEvent.model_fields)
    required = {n: f"value of {n}" for n, f in UsageEvent.model_fields.items() if f.is_required()}
    defaulted = msgspec.structs.asdict(ValidatedEvent(**required))
    for name, field in UsageEvent.model_fields.items():
        if not field.is_required():
            assert defaulted[name] == field.get_default(call_default_factory=True), name
    with pytest.raises(TypeError):
        ValidatedEvent(**dict(list(required.items())[:-1]))


CANONICAL = [
    event(),
    event(timestamp=1741082400000),
    event(timestamp="2025-03-04T10:00:00.123456+05:30"),
    event(timestamp="2025-03-04T10:00:00"),
    event(service_tier="PRIORITY", batch=True),
    event(tags={"team": "search", "": ""}, reported_cost_usd=0.00022500000000000002),
    event(reported_cost_usd="1.5", latency_ms=None, status_code=200, retry_of="req-0"),
    event(cached_tokens=1000, cache_write_tokens=200, cache_write_1h_tokens=200),
    event(prompt="secret text", completion="more", unknown={"nested": [1, 2]}),
]


@pytest.mark.parametrize("fields", CANONICAL)
def test_canonical_events_are_vouched_for_without_the_model(fields: dict[str, Any]) -> None:
    [vouched] = _vouched([fields], NOW, None, plainly_spaced=[True])
    assert vouched is not None
    assert (
        msgspec.structs.asdict(vouched)
        == UsageEvent.model_validate(fields, context={"now": NOW}).__dict__
    )


@pytest.mark.parametrize(("reason", "raw"), BAD_MESSAGES)
def test_the_decoding_tests_bad_messages_get_the_same_rejections(reason: str, raw: bytes) -> None:
    assert_agree(raw)


# A tombstone (no value) never reaches decoding: the consumer dead-letters it.
@pytest.mark.parametrize("kind", sorted(k for k, (m, _) in POISON.items() if m is not None))
def test_the_poison_kinds_get_the_same_outcome(kind: str) -> None:
    message, _ = POISON[kind]
    assert message is not None
    assert_agree(message, now=datetime.now(UTC))


def test_repeated_keys_and_integers_beyond_64_bits_get_the_same_rejections() -> None:
    assert_agree(DUPLICATE_KEYS, now=datetime.now(UTC))
    assert_agree(HUGE_BEYOND_64BIT, now=datetime.now(UTC))


WHITESPACE_AND_TEXT = [
    event(tenant_id=" acme"),
    event(model="gpt-4o-mini\t"),
    event(team_id="\u00a0search"),
    event(user_id="usér"),
    event(tags={" k": "v", "k": "w"}),
    event(tags={"k": "v\u2003"}),
    event(timestamp=" 2025-03-04T10:00:00Z"),
    event(reported_cost_usd=" 1.5 "),
    event(service_tier=" Flex "),
    event(service_tier="\u0130" * 32),
    event(request_id="x" * 256, workflow_name="é" * 256),
    event(request_id="x" * 257),
    event(tenant_id="   "),
]


@pytest.mark.parametrize("fields", WHITESPACE_AND_TEXT)
def test_strings_to_strip_or_beyond_ascii_get_the_models_values(fields: dict[str, Any]) -> None:
    assert_agree(orjson.dumps(fields))
    assert_agree(orjson.dumps([fields, event(request_id="req-2")]))


def test_a_spaced_json_document_is_decided_the_same() -> None:
    import json

    assert_agree(json.dumps([event(), event(tenant_id=" acme ", request_id="r2")]).encode())


def test_the_timestamp_floor_and_now_apply_alike() -> None:
    floor = datetime(2025, 3, 4, 11, tzinfo=UTC)
    assert_agree(orjson.dumps([event(), event(timestamp="2025-03-04T11:30:00Z")]), floor=floor)
    assert_agree(orjson.dumps(event(timestamp="2025-03-05T12:00:00Z")))
    assert_agree(orjson.dumps(event(timestamp="2025-03-05T12:00:00.000001Z")))


# Values a field may take: valid, at a bound, beyond it, of another type.
FIELD_VALUES: dict[str, Any] = {
    "timestamp": st.one_of(
        st.integers(min_value=-(2**40), max_value=2**45),
        st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2030, 1, 1)).map(
            lambda d: d.isoformat()
        ),
        st.datetimes(
            min_value=datetime(2019, 1, 1),
            max_value=datetime(2026, 1, 1),
            timezones=st.just(UTC),
        ).map(lambda d: d.isoformat().replace("+00:00", "Z")),
        json_values,
    ),
    "input_tokens": st.integers(min_value=-2, max_value=10_000_002) | json_values,
    "output_tokens": st.integers(min_value=-2, max_value=10_000_002) | json_values,
    "cached_tokens": st.integers(min_value=0, max_value=3_000) | json_values,
    "cache_write_tokens": st.integers(min_value=0, max_value=3_000),
    "cache_write_1h_tokens": st.integers(min_value=0, max_value=3_000),
    "reasoning_tokens": st.integers(min_value=0, max_value=3_000),
    "request_count": st.integers(min_value=-1, max_value=1_000_001) | json_values,
    "latency_ms": st.none() | st.integers(min_value=-1, max_value=86_400_001),
    "status_code": st.none() | st.integers(min_value=-1, max_value=1_000),
    "retry_count": st.integers(min_value=-1, max_value=1_000_001),
    "batch": st.booleans() | json_values,
    "service_tier": st.text(max_size=34) | json_values,
    "tenant_id": st.text(max_size=258) | json_values,
    "team_id": st.text(max_size=5) | json_values,
    "workflow_run_id": st.text(alphabet="ab -", max_size=258),
    "reported_cost_usd": st.one_of(
        st.none(),
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
        st.floats(),
        st.integers(min_value=-1, max_value=2 * 10**9),
    ),
    "tags": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=66) | json_values,
}


@st.composite
def events_with_fields_drawn(draw: Any) -> dict[str, Any]:
    fields = event(request_id=draw(st.text(max_size=6)))
    for name in draw(st.sets(st.sampled_from(sorted(FIELD_VALUES)), max_size=4)):
        fields[name] = draw(FIELD_VALUES[name])
    if draw(st.booleans()):
        fields.pop(draw(st.sampled_from(sorted(fields))))
    return fields


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(events_with_fields_drawn(), min_size=1, max_size=4))
def test_random_events_get_the_same_outcome(elements: list[dict[str, Any]]) -> None:
    raw = orjson.dumps(elements if len(elements) > 1 else elements[0])
    assert_agree(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile_messages)
def test_the_poison_cases_hostile_messages_get_the_same_outcome(message: bytes) -> None:
    assert_agree(message, now=datetime.now(UTC))


def test_a_reported_cost_is_held_at_the_ledgers_scale_on_both_paths() -> None:
    events, _ = decode_batch_message(
        orjson.dumps(event(reported_cost_usd=0.00022500000000000002)), NOW
    )
    assert events[0].reported_cost_usd == Decimal("0.000225000000000000")


def test_a_batch_of_messages_is_decoded_as_each_message_alone() -> None:
    raws = [raw for _, raw in BAD_MESSAGES]
    raws += [orjson.dumps(fields) for fields in CANONICAL + WHITESPACE_AND_TEXT]
    raws += [orjson.dumps(CANONICAL), orjson.dumps(WHITESPACE_AND_TEXT)]
    assert_batch_agrees(raws)
    assert_batch_agrees(raws[::-1])


@pytest.mark.parametrize("at", [0, 3, 7])
def test_one_compact_repeated_key_among_clean_messages_is_found(at: int) -> None:
    # Compact and ASCII like its neighbours: only the batch's count of keys tells.
    raws = [orjson.dumps(event(request_id=f"clean-{n}")) for n in range(8)]
    raws[at] = orjson.dumps(event(request_id="twice"))[:-1] + b',"input_tokens":9}'
    decoded = decode_batch(raws, NOW)
    assert [len(events) for events, _ in decoded] == [0 if n == at else 1 for n in range(8)]
    assert [r.reason for r in decoded[at][1]] == ["duplicate_key"]
    assert_batch_agrees(raws)


def test_one_message_spaced_beside_a_quote_is_left_to_the_model() -> None:
    raws = [orjson.dumps(event(request_id=f"clean-{n}")) for n in range(4)]
    raws.insert(2, orjson.dumps(event(request_id="spaced", tenant_id=" acme")))
    decoded = decode_batch(raws, NOW)
    assert [len(events) for events, _ in decoded] == [1] * 5
    assert decoded[2][0][0].tenant_id == "acme"  # stripped, as the model strips
    assert_batch_agrees(raws)


def test_one_refused_timestamp_leaves_the_others_to_the_compiled_checks() -> None:
    fields = [event(request_id=f"r{n}") for n in range(5)]
    fields[2]["timestamp"] = "last tuesday"
    [vouched] = [_vouched(fields, NOW, None, plainly_spaced=[True] * 5)]
    assert [v is not None for v in vouched] == [True, True, False, True, True]
    assert_batch_agrees([orjson.dumps(f) for f in fields] + [orjson.dumps(fields)])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(hostile_messages | events_with_fields_drawn().map(orjson.dumps), max_size=8))
def test_random_batches_of_messages_get_the_same_outcomes(raws: list[bytes]) -> None:
    assert_batch_agrees(raws, now=datetime.now(UTC))
