"""POST /v1/events on a real aiohttp server, through a real HTTP client."""

from __future__ import annotations

import asyncio
import doctest
import functools
import gzip
import json
from typing import Any

import orjson
import pytest

import streams.http_ingest.rate_limit
from streams.http_ingest.keys import IngestKeyStore
from streams.ingest.decoding import decode_message

pytestmark = pytest.mark.timeout(30)


@functools.cache
def gzip_bomb() -> bytes:
    """20 MB of JSON whitespace in about 20 KB of gzip."""
    return gzip.compress(b"[" + b" " * 20_000_000 + b"]", compresslevel=9)


async def test_a_single_object_is_accepted_and_published(
    start_ingest: Any, usage_event: Any
) -> None:
    ingest = await start_ingest()
    response = await ingest.post(json=usage_event("r1", prompt="secret prompt text"))

    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "rejected": 0, "errors": [], "ack": "broker"}
    [event] = ingest.published.events
    assert event["request_id"] == "r1"
    assert event["timestamp"] == "2025-06-01T12:00:00Z"
    assert "prompt" not in event
    # What is published is what the worker accepts from the usage topic.
    decoded = decode_message(orjson.dumps([event]))
    assert (len(decoded.events), decoded.rejections) == (1, [])
    assert ingest.published.dead_letters == []


async def test_an_array_is_accepted_item_by_item(start_ingest: Any, usage_event: Any) -> None:
    ingest = await start_ingest()
    batch = [usage_event("a1"), usage_event("a2", input_tokens=-5), usage_event("a3")]
    response = await ingest.post(json=batch)

    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    assert [(e["index"], e["reason"]) for e in answer["errors"]] == [
        (1, "token_count_out_of_range")
    ]
    assert [e["request_id"] for e in ingest.published.events] == ["a1", "a3"]
    [letter] = ingest.published.dead_letters
    assert letter["reason"] == "token_count_out_of_range"
    assert letter["element_index"] == 1
    assert letter["request_id"] == "a2"
    assert json.loads(letter["raw_payload"])["input_tokens"] == -5
    assert letter["source"] == "/v1/events"


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/json"])
async def test_ndjson_by_content_type_or_detected(
    start_ingest: Any, usage_event: Any, content_type: str
) -> None:
    ingest = await start_ingest()
    lines = [json.dumps(usage_event(f"n{i}")) for i in range(3)]
    body = "\n".join([lines[0], "", lines[1], "{not json", lines[2]]) + "\n"
    response = await ingest.post(content=body.encode(), headers={"Content-Type": content_type})

    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (3, 1)
    # Items are numbered without blank lines: the broken line is the third item.
    assert [(e["index"], e["reason"]) for e in answer["errors"]] == [(2, "malformed_json")]
    assert [e["request_id"] for e in ingest.published.events] == ["n0", "n1", "n2"]
    assert ingest.published.dead_letters[0]["raw_payload"] == "{not json"


async def test_gzip_bodies_are_decompressed(start_ingest: Any, usage_event: Any) -> None:
    ingest = await start_ingest()
    body = gzip.compress(orjson.dumps([usage_event(f"g{i}") for i in range(50)]))
    response = await ingest.post(
        content=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status_code == 202
    assert response.json()["accepted"] == 50
    assert len(ingest.published.events) == 50


async def test_a_raw_body_over_the_limit_is_413(start_ingest: Any, usage_event: Any) -> None:
    ingest = await start_ingest(max_body_bytes=10_000)
    body = orjson.dumps([usage_event(f"big{i}") for i in range(100)])
    assert len(body) > 10_000
    response = await ingest.post(content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert ingest.published.calls == 0


async def test_a_body_streamed_without_length_is_cut_at_the_limit(
    start_ingest: Any,
    usage_event: Any,
) -> None:
    ingest = await start_ingest(max_body_bytes=10_000)

    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 1000  # no Content-Length: chunked transfer encoding

    response = await ingest.client.post(ingest.url + "/v1/events", content=chunks())
    assert response.status_code == 413
    assert ingest.published.calls == 0


async def test_a_gzip_bomb_is_413_on_its_decompressed_size(
    start_ingest: Any, usage_event: Any
) -> None:
    ingest = await start_ingest(max_body_bytes=100_000)
    bomb = gzip_bomb()
    assert len(bomb) < 100_000  # under the limit on the wire
    response = await ingest.post(
        content=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert "decompressed" in response.json()["message"]
    assert ingest.published.calls == 0


async def test_more_items_than_allowed_is_413(start_ingest: Any, usage_event: Any) -> None:
    ingest = await start_ingest(max_events_per_request=5)
    response = await ingest.post(json=[usage_event(f"c{i}") for i in range(6)])
    assert response.status_code == 413
    assert response.json()["error"] == "too_many_events"
    assert ingest.published.calls == 0


async def test_a_body_that_is_not_json_is_400_and_dead_lettered(
    start_ingest: Any,
    usage_event: Any,
) -> None:
    ingest = await start_ingest()
    response = await ingest.post(content=b"{oops", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "index": -1,
            "reason": "malformed_json",
            "message": response.json()["errors"][0]["message"],
        }
    ]
    [letter] = ingest.published.dead_letters
    assert (letter["reason"], letter["raw_payload"]) == ("malformed_json", "{oops")
    assert ingest.published.events == []


async def test_a_broken_gzip_body_is_400(start_ingest: Any, usage_event: Any) -> None:
    ingest = await start_ingest()
    compressed = gzip.compress(orjson.dumps(usage_event("t1")))
    broken = compressed[:10] + bytes(b ^ 0xFF for b in compressed[10:20]) + compressed[20:]
    response = await ingest.post(
        content=broken, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert response.status_code == 400
    assert ingest.published.events == []


@pytest.mark.parametrize("auto_decompress", [True, False])
async def test_gzip_limits_hold_whoever_decompresses(
    start_ingest: Any, usage_event: Any, auto_decompress: bool
) -> None:
    # aiohttp decompresses request bodies unless the server is started with
    # auto_decompress=False; then the handler inflates them itself.
    ingest = await start_ingest(max_body_bytes=100_000, auto_decompress=auto_decompress)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    events = gzip.compress(orjson.dumps([usage_event("z1"), usage_event("z2")]))
    two_members = events + gzip.compress(b" ")
    bomb = gzip_bomb()

    assert (await ingest.post(content=two_members, headers=headers)).json()["accepted"] == 2
    assert (await ingest.post(content=bomb, headers=headers)).status_code == 413
    assert (await ingest.post(content=events[:-20], headers=headers)).status_code == 400
    assert [e["request_id"] for e in ingest.published.events] == ["z1", "z2"]


# br and zstd: aiohttp's parser answers 400 before any handler for an encoding it
# cannot decode itself, so brotli is a dependency and the handler says 415 (RFC 7694).
@pytest.mark.parametrize("encoding", ["lz4", "br", "compress"])
async def test_an_unsupported_content_encoding_is_415(
    start_ingest: Any, usage_event: Any, encoding: str
) -> None:
    ingest = await start_ingest()
    response = await ingest.post(content=b"{}", headers={"Content-Encoding": encoding})
    assert response.status_code == 415


async def test_missing_key_is_401(
    start_ingest: Any, usage_event: Any, key_store: IngestKeyStore
) -> None:
    key_store.create("acme")
    ingest = await start_ingest(key_store=key_store)
    response = await ingest.post(json=usage_event("k1"))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert ingest.published.calls == 0


async def test_wrong_and_malformed_keys_are_401(
    start_ingest: Any, usage_event: Any, key_store: IngestKeyStore
) -> None:
    key, token = key_store.create("acme")
    ingest = await start_ingest(key_store=key_store)
    good = token.get_secret_value()
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for bad in (forged, f"ssk_{key.key_id}", f"ssk_{key.key_id}_", "not-a-key"):
        response = await ingest.post(json=usage_event("k2"), key=bad)
        assert response.status_code == 401, bad
    assert ingest.published.calls == 0


async def test_revoked_key_is_401(
    start_ingest: Any, usage_event: Any, key_store: IngestKeyStore
) -> None:
    key, token = key_store.create("acme")
    ingest = await start_ingest(key_store=key_store)
    assert (await ingest.post(json=usage_event("v1"), key=token.get_secret_value())).is_success

    # Revoked through another store instance, as `spendstream keys revoke` does
    # from its own process while the worker serves.
    IngestKeyStore(key_store.path).revoke(key.key_id)
    response = await ingest.post(json=usage_event("v2"), key=token.get_secret_value())
    assert response.status_code == 401
    assert [e["request_id"] for e in ingest.published.events] == ["v1"]


async def test_forged_team_is_rejected_and_the_valid_items_accepted(
    start_ingest: Any, usage_event: Any, key_store: IngestKeyStore
) -> None:
    key, token = key_store.create("acme", team_id="search")
    ingest = await start_ingest(key_store=key_store)
    batch = [
        usage_event("f1", team_id="search"),
        usage_event("f2", team_id="payments"),
        usage_event("f3", tenant_id="globex"),
        usage_event("f4"),
    ]
    response = await ingest.post(json=batch, key=token.get_secret_value())

    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (2, 2)
    assert [(e["index"], e["reason"]) for e in answer["errors"]] == [
        (1, "ownership_mismatch"),
        (2, "ownership_mismatch"),
    ]
    assert "payments" in answer["errors"][0]["message"]
    assert [e["request_id"] for e in ingest.published.events] == ["f1", "f4"]
    letters = ingest.published.dead_letters
    assert [letter["reason"] for letter in letters] == ["ownership_mismatch"] * 2
    # The dead letter names the key's tenant, not the forged one.
    assert [letter["tenant_id"] for letter in letters] == ["acme", "acme"]
    assert {letter["ingest_key_id"] for letter in letters} == {key.key_id}


async def test_ownership_is_stamped_from_the_key(
    start_ingest: Any, usage_event: Any, key_store: IngestKeyStore
) -> None:
    _, token = key_store.create("acme", team_id="search", project="rerank")
    ingest = await start_ingest(key_store=key_store)
    response = await ingest.post(
        json=[
            usage_event("s1", tenant_id=None),
            usage_event("s2", tenant_id="", team_id="", tags={"env": "prod"}),
        ],
        key=token.get_secret_value(),
    )

    assert response.json()["accepted"] == 2
    stamped = ingest.published.events
    assert [(e["tenant_id"], e["team_id"]) for e in stamped] == [("acme", "search")] * 2
    assert stamped[0]["tags"] == {"project": "rerank"}
    assert stamped[1]["tags"] == {"env": "prod", "project": "rerank"}


async def test_a_tenant_wide_key_writes_any_team_of_its_tenant(
    start_ingest: Any, usage_event: Any, key_store: IngestKeyStore
) -> None:
    _, token = key_store.create("acme")
    ingest = await start_ingest(key_store=key_store)
    response = await ingest.post(
        json=[usage_event("w1", team_id="search"), usage_event("w2", team_id="payments")],
        key=token.get_secret_value(),
    )
    assert response.json()["accepted"] == 2
    assert [e["team_id"] for e in ingest.published.events] == ["search", "payments"]


async def test_a_key_over_its_rate_is_429_with_retry_after(
    start_ingest: Any, usage_event: Any, key_store: IngestKeyStore
) -> None:
    _, token = key_store.create("acme")
    _, other = key_store.create("acme")
    ingest = await start_ingest(key_store=key_store, rate_limit_per_key=(0.5, 2))
    statuses = [
        (await ingest.post(json=usage_event(f"r{i}"), key=token.get_secret_value())).status_code
        for i in range(2)
    ]
    limited = await ingest.post(json=usage_event("r2"), key=token.get_secret_value())

    assert statuses == [202, 202]
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"] == "rate_limited"
    # The limit is per key: another key is not held back.
    assert (await ingest.post(json=usage_event("o1"), key=other.get_secret_value())).is_success
    assert [e["request_id"] for e in ingest.published.events] == ["r0", "r1", "o1"]


OPENAI_CHAT = {
    "id": "chatcmpl-http-1",
    "object": "chat.completion",
    "created": 1748000000,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Summary text."}}],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


async def test_openai_usage_bodies_with_format_and_ownership_from_the_key(
    start_ingest: Any, usage_event: Any, key_store: IngestKeyStore
) -> None:
    _, token = key_store.create("acme", team_id="search")
    ingest = await start_ingest(key_store=key_store)
    response = await ingest.post(
        json=[OPENAI_CHAT, {"object": "chat.completion", "id": "x"}],
        key=token.get_secret_value(),
        params={"format": "openai", "workflow_id": "rerank"},
    )

    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    assert answer["errors"][0]["reason"] == "normalization_failed"
    [event] = ingest.published.events
    assert event["request_id"] == "chatcmpl-http-1"
    assert (event["input_tokens"], event["cached_tokens"], event["output_tokens"]) == (
        2006,
        1920,
        300,
    )
    assert (event["tenant_id"], event["team_id"], event["workflow_id"]) == (
        "acme",
        "search",
        "rerank",
    )
    assert "choices" not in event and "content" not in json.dumps(event)


async def test_ownership_from_query_parameters_without_keys(
    start_ingest: Any, usage_event: Any
) -> None:
    ingest = await start_ingest()
    response = await ingest.post(
        json=OPENAI_CHAT, params={"format": "openai_chat", "tenant_id": "acme", "team_id": "ml"}
    )
    assert response.json()["accepted"] == 1
    assert ingest.published.events[0]["team_id"] == "ml"


async def test_bad_query_parameters_are_400(start_ingest: Any, usage_event: Any) -> None:
    ingest = await start_ingest()
    unknown_format = await ingest.post(json=OPENAI_CHAT, params={"format": "openai_v9"})
    typo = await ingest.post(json=usage_event("q1"), params={"tenant": "acme"})
    assert (unknown_format.status_code, typo.status_code) == (400, 400)
    assert "openai_chat" in unknown_format.json()["message"]
    assert "tenant_id" in typo.json()["message"]
    assert ingest.published.calls == 0


async def test_a_failed_publish_is_503_so_the_producer_retries(
    start_ingest: Any,
    usage_event: Any,
) -> None:
    ingest = await start_ingest()
    ingest.published.fail = True
    response = await ingest.post(json=usage_event("p1"))
    assert response.status_code == 503
    assert "Retry-After" in response.headers


async def test_a_body_above_aiohttps_default_client_max_size_is_accepted(
    start_ingest: Any, usage_event: Any
) -> None:
    # The worker's aiohttp app keeps its 1 MiB client_max_size; this endpoint's
    # own limit (5 MiB) applies instead.
    ingest = await start_ingest()
    batch = [usage_event(f"l{i}", feature_name="x" * 200) for i in range(3000)]
    body = orjson.dumps(batch)
    assert 1024 * 1024 < len(body) < 5 * 1024 * 1024
    response = await ingest.post(content=body, headers={"Content-Type": "application/json"})
    assert response.json()["accepted"] == 3000
    assert len(ingest.published.events) == 3000


async def test_the_error_list_is_capped(start_ingest: Any) -> None:
    ingest = await start_ingest()
    response = await ingest.post(json=[1] * 1001)
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (0, 1001)
    assert len(answer["errors"]) == 1000 and answer["errors_truncated"] is True
    assert answer["errors"][0]["reason"] == "not_an_object"
    assert len(ingest.published.dead_letters) == 1001


def test_module_examples() -> None:
    # Every example runs (an example deleted or no longer collected fails here too).
    assert doctest.testmod(streams.http_ingest.rate_limit) == (0, 5)  # (failed, attempted)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"request_id": "d1", "request_id": "d2"}', "application/json"),
        (b'[{"request_id": "d1", "tenant_id": "a", "tenant_id": "b"}]', "application/json"),
        (b'{"request_id": "d1", "tags": {"k": "1", "k": "2"}}\n{"x": 1}\n', "application/x-ndjson"),
    ],
    ids=["object", "array-element", "ndjson-nested"],
)
async def test_a_repeated_key_is_a_duplicate_key_dead_letter(
    start_ingest: Any, body: bytes, content_type: str
) -> None:
    ingest = await start_ingest()
    response = await ingest.post(content=body, headers={"Content-Type": content_type})
    reasons = [error["reason"] for error in response.json()["errors"]]
    assert "duplicate_key" in reasons
    assert ingest.published.events == []
    assert "duplicate_key" in [letter["reason"] for letter in ingest.published.dead_letters]


async def test_a_body_that_trickles_in_is_cut_off_with_408(start_ingest: Any) -> None:
    ingest = await start_ingest(body_read_seconds=0.5)
    host, port = ingest.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=10)
    finally:
        writer.close()
    assert status.startswith(b"HTTP/1.1 408"), status
