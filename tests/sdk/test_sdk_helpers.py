"""record_openai / record_anthropic / record_gemini, end to end over HTTP.

The provider SDKs are not dependencies of this project, so their response
objects are stood in for by pydantic models holding a documented body: the
helpers only rely on `model_dump()`, as the SDKs' objects provide it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from streams.sdk import (
    SpendstreamProducer,
    record_anthropic,
    record_gemini,
    record_openai,
    set_default_producer,
)

FIXTURES = Path(__file__).parents[1] / "schemas" / "normalizers" / "fixtures"


class SDKResponse(BaseModel):
    """A pydantic response object, as openai/anthropic/google-genai return."""

    model_config = ConfigDict(extra="allow")


def body(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text())["body"])


@pytest.fixture
def producer(ingest_server: Any) -> Iterator[SpendstreamProducer]:
    p = SpendstreamProducer.http(ingest_server.url, api_key="sk_helpers", linger_s=0.01)
    yield p
    p.close(timeout=2)


def test_record_openai_from_a_response_object(ingest_server: Any, producer: Any) -> None:
    response = SDKResponse.model_validate(body("openai_chat_cached"))
    event = record_openai(
        response, producer=producer, tenant_id="acme", team_id="search", workflow_id="rerank"
    )
    assert event is not None
    assert producer.flush(timeout=5)
    [sent] = ingest_server.delivered
    assert sent["request_id"] == "chatcmpl-E1mBQt42vYTsKNd5wnyJlT0db7v9S"
    assert (sent["input_tokens"], sent["cached_tokens"], sent["output_tokens"]) == (4020, 4012, 4)
    assert (sent["tenant_id"], sent["team_id"], sent["workflow_id"]) == ("acme", "search", "rerank")
    assert "choices" not in sent


def test_record_anthropic_and_gemini_with_the_default_producer(
    ingest_server: Any, producer: Any
) -> None:
    set_default_producer(producer)
    try:
        assert record_anthropic(body("anthropic_cache_read"), tenant_id="acme") is not None
        gemini = SDKResponse.model_validate(body("gemini_sdk_dump"))
        assert record_gemini(gemini, tenant_id="acme", workflow_run_id="run-9") is not None
    finally:
        set_default_producer(None)
    assert producer.flush(timeout=5)
    by_id = {e["request_id"]: e for e in ingest_server.delivered}
    anthropic = by_id["msg_01UUPT9QdZnZSRzcQJkjG25U"]
    assert (anthropic["input_tokens"], anthropic["cached_tokens"]) == (1114, 1111)
    gemini_event = by_id["nFP6aZ_4HPuU6dkP-uetwA0"]
    assert (gemini_event["output_tokens"], gemini_event["reasoning_tokens"]) == (82, 54)
    assert gemini_event["workflow_run_id"] == "run-9"


def test_helpers_never_raise_into_the_caller(
    producer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="spendstream.sdk")
    assert record_openai({"id": "x", "model": "m"}, producer=producer, tenant_id="t") is None
    assert record_anthropic(object(), producer=producer, tenant_id="t") is None
    assert record_gemini(body("gemini_thinking"), tenant_id="t") is None  # no producer set
    bad_field: Any = {"tenant": "acme"}
    assert record_openai(body("openai_responses"), producer=producer, **bad_field) is None
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "no usage" in messages and "no producer" in messages and "tenant" in messages
