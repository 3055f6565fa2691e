"""`spendstream replay` packs NDJSON lines into JSON arrays, as a gateway batches,
and sends any line that is not a JSON object alone, untouched."""

from __future__ import annotations

import orjson

from streams.embedded.replay import EVENTS_PER_MESSAGE, MESSAGE_BYTES, pack_lines
from streams.ingest.decoding import decode_message


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
