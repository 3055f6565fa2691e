"""decode_message: message bytes → events, or rejections with the documented reason codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.payload import RAW_PAYLOAD_LIMIT, truncate_payload
from schemas.usage_event import MAX_MESSAGE_BYTES
from streams.ingest.decoding import REASONS, Rejection, decode_message

NOW = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)


def event(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": "req-1",
        "timestamp": "2025-03-04T10:00:00Z",
        "tenant_id": "acme",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1200,
        "output_tokens": 300,
    }
    data.update(fields)
    return data


def without(field: str) -> dict[str, Any]:
    data = event()
    del data[field]
    return data


def rejected(raw: bytes) -> Rejection:
    decoded = decode_message(raw, now=NOW)
    assert decoded.events == []
    assert len(decoded.rejections) == 1
    return decoded.rejections[0]


def test_one_valid_object_is_one_event() -> None:
    decoded = decode_message(orjson.dumps(event()), now=NOW)
    assert [e.request_id for e in decoded.events] == ["req-1"]
    assert decoded.rejections == []
    assert decoded.units == 1


def test_an_array_is_one_event_per_element() -> None:
    raw = orjson.dumps([event(request_id=f"r{i}") for i in range(3)])
    decoded = decode_message(raw, now=NOW)
    assert [e.request_id for e in decoded.events] == ["r0", "r1", "r2"]
    assert decoded.units == 3


BAD_MESSAGES: list[tuple[str, bytes]] = [
    ("malformed_json", b'{"request_id": "r1", "timestamp": '),
    ("malformed_json", b'{"request_id": "r\xff\xfe"}'),
    ("malformed_json", b'{"request_id": "r1", "input_tokens": NaN}'),
    ("malformed_json", b"{'request_id': 'r1'}"),
    ("malformed_json", b""),
    ("not_an_object", b"42"),
    ("not_an_object", b'"an event"'),
    ("not_an_object", b"null"),
    ("empty_batch", b"[]"),
    ("missing_field", orjson.dumps(without("input_tokens"))),
    ("missing_field", orjson.dumps(without("timestamp"))),
    ("empty_field", orjson.dumps(event(tenant_id=""))),
    ("empty_field", orjson.dumps(event(model="   "))),
    ("token_count_out_of_range", orjson.dumps(event(input_tokens=-1))),
    ("token_count_out_of_range", orjson.dumps(event(output_tokens=10_000_001))),
    # Beyond 64 bits: orjson reads the integer as a float.
    ("token_count_out_of_range", orjson.dumps(event()).replace(b"300", b"1" + b"0" * 30)),
    ("duplicate_key", orjson.dumps(event())[:-1] + b',"input_tokens":900000}'),
    ("duplicate_key", orjson.dumps(event())[:-1] + b', "input_tokens" : 9}'),
    ("duplicate_key", orjson.dumps(event(tags={"team": "a"}))[:-2] + b',"team":"b"}}'),
    # A key written with escapes cannot hide from the check.
    ("duplicate_key", orjson.dumps(event())[:-1] + rb',"input_\u0074okens":9}'),
    (
        "token_breakdown_inconsistent",
        orjson.dumps(event(cached_tokens=1000, cache_write_tokens=201)),
    ),
    ("token_breakdown_inconsistent", orjson.dumps(event(reasoning_tokens=301))),
    ("timestamp_invalid", orjson.dumps(event(timestamp="last tuesday"))),
    ("timestamp_invalid", orjson.dumps(event(timestamp=1741082400000.5))),
    ("timestamp_in_future", orjson.dumps(event(timestamp="2025-03-05T12:00:01Z"))),
    ("timestamp_too_old", orjson.dumps(event(timestamp="1970-01-01T00:00:00Z"))),
    ("timestamp_too_old", orjson.dumps(event(timestamp=0))),
    ("schema_violation", orjson.dumps(event(input_tokens="1200"))),
    ("schema_violation", orjson.dumps(event(input_tokens=True))),
    ("schema_violation", orjson.dumps(event(tags={"k": 1}))),
]


@pytest.mark.parametrize(("reason", "raw"), BAD_MESSAGES)
def test_bad_message_gets_its_reason_and_keeps_its_raw_payload(reason: str, raw: bytes) -> None:
    rejection = rejected(raw)
    assert rejection.reason == reason
    assert rejection.element_index == -1
    assert rejection.raw_payload == raw.decode("utf-8", errors="replace")
    assert rejection.message and "\n" not in rejection.message


def test_every_documented_reason_is_reachable() -> None:
    covered = {reason for reason, _ in BAD_MESSAGES} | {"oversize"}
    assert covered == set(REASONS)


def test_missing_field_message_names_every_missing_field() -> None:
    data = without("input_tokens")
    del data["model"]
    rejection = rejected(orjson.dumps(data))
    assert rejection.reason == "missing_field"
    assert "model" in rejection.message and "input_tokens" in rejection.message


def test_rejection_carries_request_and_tenant_ids_when_readable() -> None:
    rejection = rejected(
        orjson.dumps(event(request_id="r-77", tenant_id="globex", input_tokens=-5))
    )
    assert (rejection.request_id, rejection.tenant_id) == ("r-77", "globex")
    anonymous = rejected(orjson.dumps(event(request_id=12, tenant_id=None, input_tokens=-5)))
    assert (anonymous.request_id, anonymous.tenant_id) == ("", "")


def test_future_check_uses_the_given_now() -> None:
    raw = orjson.dumps(event(timestamp="2025-03-05T12:00:01Z"))
    assert rejected(raw).reason == "timestamp_in_future"
    later = decode_message(raw, now=NOW + timedelta(seconds=1))
    assert [e.request_id for e in later.events] == ["req-1"]


def test_message_of_exactly_one_mib_is_parsed() -> None:
    body = orjson.dumps(event())
    raw = body + b" " * (MAX_MESSAGE_BYTES - len(body))
    assert len(raw) == MAX_MESSAGE_BYTES
    assert len(decode_message(raw, now=NOW).events) == 1


def test_message_over_one_mib_is_rejected_unparsed_with_a_truncated_payload() -> None:
    body = orjson.dumps(event())
    raw = body + b" " * (MAX_MESSAGE_BYTES + 1 - len(body))
    rejection = rejected(raw)
    assert rejection.reason == "oversize"
    assert str(MAX_MESSAGE_BYTES + 1) in rejection.message
    assert rejection.raw_payload == raw[:RAW_PAYLOAD_LIMIT].decode()
    # Unparsed: an oversize message that is not even JSON is still "oversize".
    assert rejected(b"{" * (MAX_MESSAGE_BYTES + 1)).reason == "oversize"


def test_raw_payload_of_a_large_rejected_message_is_truncated_to_64_kib() -> None:
    raw = orjson.dumps(without("input_tokens") | {"notes": "x" * 200_000})
    rejection = rejected(raw)
    assert rejection.reason == "missing_field"
    assert len(rejection.raw_payload) == RAW_PAYLOAD_LIMIT == 64 * 1024
    assert rejection.raw_payload == raw[:RAW_PAYLOAD_LIMIT].decode()


def test_array_elements_are_judged_one_by_one_with_their_index() -> None:
    elements: list[Any] = [
        event(request_id="ok-0"),
        without("input_tokens") | {"request_id": "bad-1"},
        5,
        event(request_id="bad-3", input_tokens=-1),
        event(request_id="ok-4"),
    ]
    decoded = decode_message(orjson.dumps(elements), now=NOW)
    assert [e.request_id for e in decoded.events] == ["ok-0", "ok-4"]
    assert [(r.element_index, r.reason) for r in decoded.rejections] == [
        (1, "missing_field"),
        (2, "not_an_object"),
        (3, "token_count_out_of_range"),
    ]
    assert decoded.units == 5
    # Each element's dead letter holds that element, not the whole array.
    assert orjson.loads(decoded.rejections[0].raw_payload)["request_id"] == "bad-1"
    assert decoded.rejections[1].raw_payload == "5"
    assert decoded.rejections[2].request_id == "bad-3"


def test_only_the_array_element_with_a_repeated_key_is_rejected() -> None:
    repeated = orjson.dumps(event(request_id="r2"))[:-1] + b',"model":"gpt-4o"}'
    raw = b"[" + orjson.dumps(event()) + b"," + repeated + b"]"
    decoded = decode_message(raw, now=NOW)
    assert [e.request_id for e in decoded.events] == ["req-1"]
    assert [(r.reason, r.element_index) for r in decoded.rejections] == [("duplicate_key", 1)]
    assert "'model'" in decoded.rejections[0].message


def test_keys_that_only_look_repeated_are_accepted() -> None:
    # A string value holding `":`, escapes and spacing send the message to the exact check.
    for raw in (
        orjson.dumps(event(tags={"note": 'say "hi": twice'})),
        orjson.dumps(event(user_id="cafe")).replace(b'"cafe"', rb'"caf\u00e9"'),
        orjson.dumps(event()).replace(b'"model":', b'"model" :'),
    ):
        decoded = decode_message(raw, now=NOW)
        assert decoded.rejections == [], raw
        assert len(decoded.events) == 1


def test_text_fields_are_dropped_from_decoded_events() -> None:
    raw = orjson.dumps(event(prompt="SECRET", messages=[{"content": "SECRET"}], output="SECRET"))
    (decoded,) = decode_message(raw, now=NOW).events
    assert "SECRET" not in decoded.model_dump_json()


def test_a_dead_letter_never_keeps_prompt_or_completion_text() -> None:
    canary = "CANARY-do-not-store"
    bad = event(input_tokens=-1, prompt=canary, completion=canary)
    bad["messages"] = [{"role": "user", "content": canary}]
    bad["tags"] = {"input": canary}
    for raw in (
        orjson.dumps(bad),  # a rejected event
        b"[" + orjson.dumps(event()) + b"," + orjson.dumps(bad) + b"]",  # an element
        orjson.dumps(bad)[:-30],  # not JSON any more: cut before the text
    ):
        decoded = decode_message(raw, now=NOW)
        assert decoded.rejections, raw
        for rejection in decoded.rejections:
            assert canary not in rejection.raw_payload
            assert canary not in rejection.message
    kept = rejected(orjson.dumps(bad)).raw_payload
    assert orjson.loads(kept)["input_tokens"] == -1  # the rest of the payload is kept


OTLP_TEXT = "CANARY-otlp-prompt-text"


@pytest.mark.parametrize(
    "payload",
    [
        # OTLP JSON as exported: attributes are key/value objects.
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "name": "chat gpt-4o",
                                    "attributes": [
                                        {"key": name, "value": {"stringValue": OTLP_TEXT}}
                                        for name in (
                                            "gen_ai.prompt",
                                            "gen_ai.completion",
                                            "gen_ai.input.messages",
                                            "gen_ai.output.messages",
                                            "gen_ai.prompt.0.content",
                                        )
                                    ]
                                    + [
                                        {
                                            "key": "gen_ai.usage.input_tokens",
                                            "value": {"intValue": 5},
                                        }
                                    ],
                                }
                            ]
                        }
                    ]
                }
            ]
        },
        # A span flattened by HTTP ingest, rejected by validation.
        {
            "name": "chat",
            "attributes": {
                "gen_ai.input.messages": OTLP_TEXT,
                "gen_ai.output.messages": OTLP_TEXT,
                "gen_ai.system_instructions": OTLP_TEXT,
                "input.value": OTLP_TEXT,
                "gen_ai.usage.input_tokens": 5,
            },
        },
    ],
    ids=["otlp-json", "flat-span"],
)
def test_dead_letters_keep_no_span_text(payload: dict[str, Any]) -> None:
    kept = truncate_payload(orjson.dumps(payload))
    assert OTLP_TEXT not in kept
    assert "gen_ai.usage.input_tokens" in kept  # the usage survives


def test_a_binary_body_is_cut_before_its_first_text_attribute() -> None:
    body = b"\x0a\x0dgen_ai.prompt\x12\x17" + OTLP_TEXT.encode()
    assert OTLP_TEXT not in truncate_payload(body)
