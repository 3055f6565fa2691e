"""Case 2, poison input: hostile and malformed messages interleaved with valid events.
Each bad message (or bad element of an array) becomes a dead letter with the reason
for its kind, every valid event is ledgered at its exact cost, and the worker never
restarts: the same process answers /health "ok" at the end.

The hand-written kinds cover the issue's list; hypothesis adds random bytes, random
JSON documents and valid events with one field mutated or removed, all sent through
the same real worker (generation runs first, then one publish)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.usage_event import MAX_MESSAGE_BYTES
from streams.ingest.decoding import REASONS
from tests.reliability.conftest import (
    NOW,
    Expectation,
    FaultStack,
    Snapshot,
    Tally,
    event_cost,
)

pytestmark = pytest.mark.integration

TENANT = "poison-tenant"


def valid(request_id: str, **overrides: Any) -> dict[str, Any]:
    event = {
        "request_id": request_id,
        "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
        "tenant_id": TENANT,
        "team_id": "red-team",
        "workflow_id": "fuzz",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1200,
        "cached_tokens": 200,
        "output_tokens": 300,
    }
    event.update(overrides)
    return event


def bad(kind: str, **overrides: Any) -> bytes:
    return orjson.dumps(valid(f"poison-bad-{kind}", **overrides))


def raw_event(kind: str, field_json: str, *, repeat: bool = False) -> bytes:
    """An event whose last field is written as raw JSON text (what orjson cannot emit);
    it replaces the valid event's field of that name unless `repeat`."""
    name = field_json.split(":", 1)[0].strip('"')
    event = valid(f"poison-bad-{kind}")
    if not repeat:
        event.pop(name, None)
    return orjson.dumps(event)[:-1] + b"," + field_json.encode() + b"}"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


TOO_BIG = MAX_MESSAGE_BYTES + 1024

# kind → (message bytes, or None for a null value; the expected reason of each
# rejected element, by element_index, -1 for the whole message)
POISON: dict[str, tuple[bytes | None, dict[int, str]]] = {
    "truncated_json": (orjson.dumps(valid("poison-bad-trunc"))[:-9], {-1: "malformed_json"}),
    "trailing_garbage": (bad("trailing") + b" }{", {-1: "malformed_json"}),
    "tokens_as_string": (bad("tok-str", input_tokens="1200"), {-1: "schema_violation"}),
    "tokens_as_bool": (bad("tok-bool", input_tokens=True), {-1: "schema_violation"}),
    "tokens_as_float": (bad("tok-float", output_tokens=12.5), {-1: "schema_violation"}),
    "tenant_as_number": (bad("tenant-num", tenant_id=12345), {-1: "schema_violation"}),
    "tags_nested_object": (bad("tags", tags={"a": {"b": 1}}), {-1: "schema_violation"}),
    "request_count_zero": (bad("rc0", request_count=0), {-1: "schema_violation"}),
    "request_id_10k_chars": (
        orjson.dumps(valid("poison-bad-long" + "r" * 10_000)),
        {-1: "schema_violation"},
    ),
    "huge_int64_tokens": (bad("huge64", input_tokens=2**62), {-1: "token_count_out_of_range"}),
    "huge_reported_cost": (bad("huge-cost", reported_cost_usd=1e300), {-1: "schema_violation"}),
    "deep_nesting_5000": (nested(5000), {-1: "malformed_json"}),
    "deep_nesting_in_field": (
        raw_event("deep", '"tags":' + "[" * 5000 + "]" * 5000),
        {-1: "malformed_json"},
    ),
    "invalid_utf8": (
        bad("utf8", team_id="TEAM").replace(b"TEAM", b"\xff\xfe\xfd"),
        {-1: "malformed_json"},
    ),
    "lone_surrogate_escape": (
        raw_event("surrogate", '"user_id":"\\ud800"'),
        {-1: "malformed_json"},
    ),
    "byte_order_mark": (b"\xef\xbb\xbf" + bad("bom"), {-1: "malformed_json"}),
    "payload_over_1mib": (bad("big", prompt="x" * TOO_BIG), {-1: "oversize"}),
    "nan": (raw_event("nan", '"latency_ms":NaN'), {-1: "malformed_json"}),
    "infinity": (raw_event("inf", '"output_tokens":Infinity'), {-1: "malformed_json"}),
    "number_overflowing_to_infinity": (
        raw_event("1e999", '"reported_cost_usd":1e999'),
        {-1: "malformed_json"},
    ),
    "empty_message": (b"", {-1: "malformed_json"}),
    "whitespace_only": (b" \n\t ", {-1: "malformed_json"}),
    "null_value_tombstone": (None, {-1: "malformed_json"}),
    "json_number": (b"42", {-1: "not_an_object"}),
    "json_string": (b'"usage"', {-1: "not_an_object"}),
    "json_null": (b"null", {-1: "not_an_object"}),
    "array_of_scalars": (
        b'[1, "two", null]',
        {
            0: "not_an_object",
            1: "not_an_object",
            2: "not_an_object",
        },
    ),
    "empty_array": (b"[]", {-1: "empty_batch"}),
    "negative_tokens": (bad("neg", input_tokens=-5), {-1: "token_count_out_of_range"}),
    "tokens_over_limit": (bad("over", output_tokens=10_000_001), {-1: "token_count_out_of_range"}),
    "future_timestamp": (
        bad("future", timestamp=(NOW + timedelta(days=3)).isoformat()),
        {-1: "timestamp_in_future"},
    ),
    "timestamp_not_a_date": (bad("ts-text", timestamp="yesterday"), {-1: "timestamp_invalid"}),
    "timestamp_float_epoch": (bad("ts-float", timestamp=1.7e12), {-1: "timestamp_invalid"}),
    "timestamp_epoch_out_of_range": (bad("ts-range", timestamp=10**17), {-1: "timestamp_invalid"}),
    "cached_exceeds_input": (
        bad("cached", input_tokens=100, cached_tokens=500),
        {-1: "token_breakdown_inconsistent"},
    ),
    "reasoning_exceeds_output": (
        bad("reasoning", output_tokens=10, reasoning_tokens=50),
        {-1: "token_breakdown_inconsistent"},
    ),
    "only_request_id": (b'{"request_id": "poison-bad-only-id"}', {-1: "missing_field"}),
    "missing_model": (
        orjson.dumps({k: v for k, v in valid("poison-bad-nomodel").items() if k != "model"}),
        {-1: "missing_field"},
    ),
    "blank_tenant": (bad("blank", tenant_id="   "), {-1: "empty_field"}),
    "mixed_array": (
        orjson.dumps(
            [
                valid("poison-ok-mixed-0"),
                7,
                valid("poison-bad-mixed", input_tokens=-1),
                valid("poison-ok-mixed-3"),
            ]
        ),
        {1: "not_an_object", 2: "token_count_out_of_range"},
    ),
}
VALID_IN_POISON = ("poison-ok-mixed-0", "poison-ok-mixed-3")

# Findings 7 and 8, fixed. Duplicate keys: orjson keeps the last value, so a producer
# and this pipeline could disagree on what was sent (10 or 900,000 input tokens?).
DUPLICATE_KEYS = raw_event("dupkeys", '"input_tokens":900000', repeat=True)
# 10**30 parses as the float 1e30: it was dead-lettered as "schema_violation" where
# 2**62 gets token_count_out_of_range.
HUGE_BEYOND_64BIT = raw_event("huge128", '"output_tokens":1000000000000000000000000000000')

VALID_COUNT = 200
HYPOTHESIS_EXAMPLES = 300


# -- property-based inputs -----------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# request_id stays: a mutation to another valid string could repeat one, and a dropped
# duplicate is neither a ledger row nor a dead letter of its own.
FIELDS = (
    *(f for f in valid("x") if f != "request_id"),
    "reasoning_tokens",
    "request_count",
    "status_code",
    "tags",
    "latency_ms",
)


@st.composite
def mutated_events(draw: Any) -> bytes:
    """A valid event with one field replaced by random JSON, or removed."""
    event = valid("placeholder")
    name = draw(st.sampled_from(FIELDS))
    if draw(st.booleans()):
        event.pop(name, None)
    else:
        event[name] = draw(json_values)
    return orjson.dumps(event)


hostile_messages = st.one_of(
    st.binary(max_size=200),
    json_values.map(orjson.dumps),
    mutated_events(),
)


def generate_hostile(count: int) -> list[bytes]:
    found: list[bytes] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_messages)
    def collect(message: bytes) -> None:
        found.append(message)

    collect()
    # Unique request ids: a mutated event that stays valid is then ledgered once.
    return [m.replace(b'"placeholder"', f'"poison-hyp-{i}"'.encode()) for i, m in enumerate(found)]


# -- the case ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def poisoned(request: pytest.FixtureRequest) -> dict[str, Any]:
    stack: FaultStack = request.getfixturevalue("shared_stack")
    pid = stack.pid
    before = Snapshot.take(stack, views=False)

    valid_events = [valid(f"poison-ok-{i}", input_tokens=1000 + i) for i in range(VALID_COUNT)]
    hostile = generate_hostile(HYPOTHESIS_EXAMPLES)
    kinds: list[tuple[str, bytes | None]] = [(k, m) for k, (m, _) in POISON.items()]
    kinds += [("duplicate_keys", DUPLICATE_KEYS), ("huge_beyond_64bit", HUGE_BEYOND_64BIT)]
    kinds += [(f"hypothesis-{i}", m) for i, m in enumerate(hostile)]
    # Interleave: every bad message sits between valid ones, in a random order.
    messages: list[tuple[str, bytes | None]] = [
        (e["request_id"], orjson.dumps(e)) for e in valid_events
    ]
    for kind in kinds:
        messages.insert(random.Random(kind[0]).randrange(len(messages) + 1), kind)
    positions = stack.publish([m for _, m in messages])
    stack.wait_consumed(timeout=120)
    where = {name: pos for (name, _), pos in zip(messages, positions, strict=True)}
    after = Snapshot.take(stack, views=False)
    return {
        "stack": stack,
        "pid": pid,
        "before": before,
        "after": after,
        "where": where,
        "hostile": hostile,
        "valid": valid_events,
        "letters": stack.dead_letters(),
        "ledger": {
            str(r[0]): (Decimal(r[1]), str(r[2]), int(r[3]), int(r[4]))
            for r in stack.query(
                "SELECT request_id, cost_usd, cost_status, source_partition, source_offset "
                f"FROM usage_ledger FINAL WHERE tenant_id = '{TENANT}' "
                "OR startsWith(request_id, 'poison-')"
            )
        },
    }


def letters_at(run: dict[str, Any], kind: str) -> dict[int, str]:
    partition, offset = run["where"][kind]
    return {e: r for (p, o, e), r in run["letters"].items() if (p, o) == (partition, offset)}


def test_every_poison_kind_is_dead_lettered_with_its_reason(poisoned: dict[str, Any]) -> None:
    wrong = {}
    for kind, (_, reasons) in POISON.items():
        got = letters_at(poisoned, kind)
        if got != reasons:
            wrong[kind] = {"expected": reasons, "got": got}
    assert len(POISON) >= 15
    assert wrong == {}


def test_every_valid_event_is_ledgered_at_its_cost(poisoned: dict[str, Any]) -> None:
    run = poisoned
    ledger = run["ledger"]
    expected = Expectation.of(run["valid"])
    wanted = expected.ids | set(VALID_IN_POISON)
    rows = run["stack"].ledger_rows_by_id("poison-%")
    present = wanted & set(rows)
    Tally(
        "poison input",
        events_in=len(wanted),
        events_out=len(present),
        lost=len(wanted - present),
        double_counted=sum(n - 1 for n in rows.values()),
        extra={
            "poison kinds": len(POISON) + 2,
            "hypothesis messages": len(run["hostile"]),
            "dead letters": sum(run["before"].dead_letters(run["after"]).values()),
            "by reason": run["before"].dead_letters(run["after"]),
        },
    ).report()
    assert present == wanted
    assert all(n == 1 for n in rows.values())
    assert {e["request_id"]: ledger[e["request_id"]][0] for e in run["valid"]} == {
        e["request_id"]: event_cost(e) for e in run["valid"]
    }


def test_no_rejected_kind_reaches_the_ledger(poisoned: dict[str, Any]) -> None:
    leaked = sorted(
        rid
        for rid in poisoned["ledger"]
        if rid.startswith("poison-bad-") and rid not in ("poison-bad-dupkeys", "poison-bad-huge128")
    )
    assert leaked == []


def test_every_hypothesis_message_is_a_ledger_row_or_a_dead_letter(
    poisoned: dict[str, Any],
) -> None:
    run = poisoned
    ledgered_at = Counter((p, o) for _, _, p, o in run["ledger"].values())
    letters_by_position = Counter((p, o) for p, o, _ in run["letters"])
    unaccounted = []
    for i, message in enumerate(run["hostile"]):
        position = run["where"][f"hypothesis-{i}"]
        if ledgered_at[position] + letters_by_position[position] == 0:
            unaccounted.append(message[:80])
    assert unaccounted == []
    assert set(run["letters"].values()) <= set(REASONS)


def test_the_worker_never_restarted_and_is_healthy(poisoned: dict[str, Any]) -> None:
    stack: FaultStack = poisoned["stack"]
    assert stack.worker.process.poll() is None
    assert stack.pid == poisoned["pid"]
    worker_file = orjson.loads((stack.settings.data_dir / "worker.json").read_bytes())
    assert worker_file["pid"] == poisoned["pid"]  # written once, at the start
    status, body = stack.health()
    assert (status, body["status"]) == (200, "ok")


def test_dead_letter_counters_match_the_table(poisoned: dict[str, Any]) -> None:
    run = poisoned
    positions = set(run["where"].values())
    in_table = Counter(r for (p, o, _), r in run["letters"].items() if (p, o) in positions)
    assert Counter(run["before"].dead_letters(run["after"])) == in_table


def test_duplicate_json_keys_are_rejected(poisoned: dict[str, Any]) -> None:
    assert letters_at(poisoned, "duplicate_keys") == {-1: "duplicate_key"}
    assert "poison-bad-dupkeys" not in poisoned["ledger"]


def test_token_count_beyond_64_bits_is_out_of_range(poisoned: dict[str, Any]) -> None:
    assert letters_at(poisoned, "huge_beyond_64bit") == {-1: "token_count_out_of_range"}
