"""`spendstream replay` packs NDJSON lines into JSON arrays, as a gateway batches,
and sends any line that is not a JSON object alone, untouched."""

from __future__ import annotations

import orjson

from streams.embedded.replay import EVENTS_PER_MESSAGE, MESSAGE_BYTES, pack_by_tenant
from streams.ingest.decoding import decode_message


def pack_lines(lines: list[bytes]) -> list[bytes]:
    """The messages of lines that name no tenant: one key, every line in file order."""
    messages, keys = pack_by_tenant(lines)
    assert set(keys) <= {b""}
    return messages


def line(i: int, pad: int = 0) -> bytes:
    return orjson.dumps({"request_id": f"r{i}", "note": "x" * pad})


def test_objects_are_packed_a_hundred_to_a_message_in_order() -> None:
    lines = [line(i) for i in range(250)]
    messages = pack_lines(lines)
    assert [len(orjson.loads(m)) for m in messages] == [EVENTS_PER_MESSAGE, 100, 50]
    unpacked = [e["request_id"] for m in messages for e in orjson.loads(m)]
    assert unpacked == [f"r{i}" for i in range(250)]


def test_a_line_that_is_not_an_object_goes_alone_and_untouched() -> None:
    lines = [line(0), b"{not json", line(1), b"[1, 2]", b"42", line(2)]
    messages = pack_lines(lines)
    assert messages == [
        line(0),  # a batch of one is the line itself
        b"{not json",
        line(1),
        b"[1, 2]",
        b"42",
        line(2),
    ]
    assert decode_message(b"{not json").rejections[0].reason == "malformed_json"


def test_messages_stay_under_the_size_bound() -> None:
    big = [line(i, pad=60_000) for i in range(20)]
    messages = pack_lines(big)
    assert all(len(m) <= MESSAGE_BYTES + EVENTS_PER_MESSAGE for m in messages)
    assert sum(len(orjson.loads(m)) for m in messages) == 20
    assert len(messages) > 1


def test_each_tenant_is_packed_apart_in_order_and_keyed_by_tenant() -> None:
    lines = [
        orjson.dumps({"request_id": f"r{i}", "tenant_id": "acme" if i % 3 else "beta"})
        for i in range(9)
    ] + [b"{not json"]
    messages, keys = pack_by_tenant(lines)
    assert keys == [b"beta", b"acme", b""]
    assert [e["request_id"] for e in orjson.loads(messages[0])] == ["r0", "r3", "r6"]
    assert [e["request_id"] for e in orjson.loads(messages[1])] == [
        "r1",
        "r2",
        "r4",
        "r5",
        "r7",
        "r8",
    ]
    assert messages[2] == b"{not json"
