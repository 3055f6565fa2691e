"""The provider rules one at a time, and how bad bodies fail."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.normalizers import (
    FORMATS,
    NormalizationError,
    is_model_call_span,
    normalize,
)
from schemas.usage_event import UsageEvent


def event(fmt: str, body: Any, **ownership: Any) -> UsageEvent:
    ownership.setdefault("tenant_id", "acme")
    return UsageEvent.model_validate(normalize(fmt, body, **ownership))


def tokens(e: UsageEvent) -> tuple[int, int, int, int, int]:
    return (
        e.input_tokens,
        e.cached_tokens,
        e.cache_write_tokens,
        e.output_tokens,
        e.reasoning_tokens,
    )


# -- OpenAI ---------------------------------------------------------------


def test_openai_null_details_read_as_zero() -> None:
    body = {
        "id": "c1",
        "model": "gpt-4o-mini",
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 3,
            "prompt_tokens_details": None,
            "completion_tokens_details": None,
        },
    }
    assert tokens(event("openai_chat", body)) == (5, 0, 0, 3, 0)


def test_openai_cache_write_tokens_are_already_inside_the_prompt_count() -> None:
    body = {
        "id": "r1",
        "model": "gpt-5",
        "usage": {
            "input_tokens": 5000,
            "input_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 3000},
            "output_tokens": 10,
        },
    }
    assert tokens(event("openai_responses", body)) == (5000, 1000, 3000, 10, 0)


def test_openai_format_detects_chat_and_responses() -> None:
    chat = {"id": "c", "model": "m", "usage": {"prompt_tokens": 7, "completion_tokens": 1}}
    responses = {"id": "r", "model": "m", "usage": {"input_tokens": 9, "output_tokens": 2}}
    assert tokens(event("openai", chat)) == (7, 0, 0, 1, 0)
    assert tokens(event("openai", responses)) == (9, 0, 0, 2, 0)


def test_openai_stream_chunk_without_usage_says_how_to_get_it() -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [],
        "usage": None,
    }
    with pytest.raises(NormalizationError, match="include_usage"):
        normalize("openai_chat", chunk, tenant_id="t")


def test_openai_recorded_stream_takes_the_chunk_with_usage() -> None:
    chunks = [
        {"id": "c", "model": "m", "choices": [{"delta": {"content": "Hi"}}], "usage": None},
        {
            "id": "c",
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2},
        },
    ]
    assert tokens(event("openai_chat", {"events": chunks})) == (4, 0, 0, 2, 0)


# -- Anthropic ------------------------------------------------------------


def test_anthropic_cache_breakdown_alone_gives_the_write_total() -> None:
    body = {
        "id": "m1",
        "model": "claude-sonnet-4-5",
        "usage": {
            "input_tokens": 10,
            "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 200},
            "output_tokens": 1,
        },
    }
    e = event("anthropic", body)
    assert tokens(e) == (510, 0, 500, 1, 0)
    assert e.cache_write_1h_tokens == 200 and e.tags == {}


def test_anthropic_stream_usage_is_cumulative_not_summed() -> None:
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "m2",
                "model": "claude-haiku-4-5",
                "usage": {"input_tokens": 30, "cache_read_input_tokens": 1000, "output_tokens": 1},
            },
        },
        {"type": "message_delta", "usage": {"output_tokens": 10}},
        {"type": "message_delta", "usage": {"output_tokens": 42, "cache_read_input_tokens": 1000}},
    ]
    assert tokens(event("anthropic", {"events": events})) == (1030, 1000, 0, 42, 0)


def test_anthropic_stream_without_message_start_fails() -> None:
    with pytest.raises(NormalizationError, match="message_start"):
        normalize("anthropic", {"events": [{"type": "message_delta", "usage": {}}]})


# -- Bedrock --------------------------------------------------------------


def test_bedrock_count_spelling_alone_is_read() -> None:
    body = {
        "usage": {
            "inputTokens": 5,
            "outputTokens": 2,
            "cacheReadInputTokenCount": 100,
            "cacheWriteInputTokenCount": 50,
        },
        "ResponseMetadata": {"RequestId": "req-1"},
    }
    assert tokens(event("bedrock", body, model="amazon.nova-pro-v1:0")) == (155, 100, 50, 2, 0)


def test_bedrock_without_model_asks_for_it() -> None:
    body = {"usage": {"inputTokens": 1, "outputTokens": 1}, "ResponseMetadata": {"RequestId": "r"}}
    with pytest.raises(NormalizationError, match=r"no model; pass model="):
        normalize("bedrock", body, tenant_id="t")


def test_bedrock_stream_metadata_event_alone() -> None:
    body = {
        "metadata": {"usage": {"inputTokens": 3, "outputTokens": 4}, "metrics": {"latencyMs": 9}}
    }
    e = event("bedrock", body, model="m", request_id="r")
    assert tokens(e) == (3, 0, 0, 4, 0) and e.latency_ms == 9


# -- Gemini ---------------------------------------------------------------


def test_gemini_stream_takes_the_last_cumulative_chunk() -> None:
    chunks = [
        {
            "responseId": "g1",
            "modelVersion": "gemini-2.5-flash",
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 3},
        },
        {
            "responseId": "g1",
            "modelVersion": "gemini-2.5-flash",
            "usageMetadata": {
                "promptTokenCount": 10,
                "candidatesTokenCount": 9,
                "thoughtsTokenCount": 5,
            },
        },
    ]
    assert tokens(event("gemini", {"events": chunks})) == (10, 0, 0, 14, 5)


def test_gemini_without_usage_metadata_fails() -> None:
    with pytest.raises(NormalizationError, match="usageMetadata"):
        normalize("gemini", {"responseId": "g", "modelVersion": "m", "candidates": []})


# -- OpenTelemetry GenAI --------------------------------------------------


def _span(**attrs: Any) -> dict[str, Any]:
    base = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.response.id": "msg_x",
    }
    return {"span_id": "00f067aa0ba902b7", "attributes": {**base, **attrs}}


@pytest.mark.parametrize(
    "write_key",
    [
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    ],
)
def test_otel_cache_write_spellings_are_all_read(write_key: str) -> None:
    span = _span(
        **{"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 5, write_key: 400}
    )
    assert tokens(event("otel_genai", span)) == (1000, 0, 400, 5, 0)


def test_otel_two_spellings_of_one_count_are_not_added() -> None:
    span = _span(
        **{
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.prompt_tokens": 1000,
            "gen_ai.usage.cache_read.input_tokens": 600,
            "gen_ai.usage.cache_read_input_tokens": 600,
        }
    )
    assert tokens(event("otel_genai", span)) == (1000, 600, 0, 0, 0)


def test_otel_exclusive_input_is_detected_by_the_reported_total() -> None:
    # 100 + 50 (output) + 300 (cache read) = 450 = total: input excluded the cache.
    span = _span(
        **{
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 50,
            "gen_ai.usage.cache_read.input_tokens": 300,
            "gen_ai.usage.total_tokens": 450,
        }
    )
    assert tokens(event("otel_genai", span)) == (400, 300, 0, 50, 0)


def test_otel_inclusive_input_is_kept() -> None:
    span = _span(
        **{
            "gen_ai.usage.input_tokens": 400,
            "gen_ai.usage.output_tokens": 50,
            "gen_ai.usage.cache_read.input_tokens": 300,
            "gen_ai.usage.total_tokens": 450,
        }
    )
    assert tokens(event("otel_genai", span)) == (400, 300, 0, 50, 0)


def test_otel_agent_spans_are_not_usage() -> None:
    span = _span(**{"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 10})
    assert not is_model_call_span(span["attributes"])
    with pytest.raises(NormalizationError, match="invoke_agent"):
        normalize("otel_genai", span, tenant_id="t")


def test_otel_span_without_usage_fails() -> None:
    with pytest.raises(NormalizationError, match="input_tokens"):
        normalize("otel_genai", _span(), tenant_id="t")


def test_otel_bare_attribute_map_and_provider_ids() -> None:
    attrs = {
        "gen_ai.system": "aws.bedrock",
        "gen_ai.request.model": "amazon.nova-lite-v1:0",
        "gen_ai.response.id": "b1",
        "gen_ai.usage.input_tokens": 3,
    }
    assert event("otel_genai", attrs).provider == "aws"


def test_otel_caller_ownership_wins_over_span_attributes() -> None:
    span = _span(
        **{
            "gen_ai.usage.input_tokens": 1,
            "spendstream.team_id": "from-span",
            "spendstream.workflow_id": "wf-span",
        }
    )
    e = event("otel_genai", span, team_id="from-caller")
    assert (e.team_id, e.workflow_id) == ("from-caller", "wf-span")


# -- LiteLLM --------------------------------------------------------------


def _litellm(usage: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": "l1",
        "model": "claude-sonnet-4-5",
        "custom_llm_provider": "anthropic",
        "metadata": {"usage_object": usage},
        **fields,
    }


def test_litellm_prompt_tokens_include_cache_writes_unless_told_otherwise() -> None:
    # LiteLLM 1.55.10 and 1.65.0 add writes into prompt_tokens without reporting
    # prompt_tokens_details.cache_creation_tokens (litellm_anthropic_1_55): they are in.
    usage = {
        "prompt_tokens": 2404,
        "completion_tokens": 1,
        "cache_read_input_tokens": 1800,
        "cache_creation_input_tokens": 556,
    }
    assert event("litellm", _litellm(usage)).input_tokens == 2404
    excluded = event("litellm", _litellm(usage), prompt_includes_cache_write=False)
    assert excluded.input_tokens == 2960


def test_litellm_prompt_smaller_than_its_parts_gets_them_added() -> None:
    usage = {
        "prompt_tokens": 1848,
        "completion_tokens": 1,
        "cache_read_input_tokens": 1800,
        "cache_creation_input_tokens": 556,
    }
    assert event("litellm", _litellm(usage)).input_tokens == 2404


def test_litellm_cache_hit_made_no_provider_call() -> None:
    usage = {"prompt_tokens": 900, "completion_tokens": 80}
    e = event("litellm", _litellm(usage, cache_hit=True, response_cost=0.0))
    assert tokens(e) == (0, 0, 0, 0, 0)
    assert e.tags == {"litellm_cache_hit": "true"}


def test_litellm_failed_call_keeps_its_status() -> None:
    body = _litellm(
        {"prompt_tokens": 0, "completion_tokens": 0},
        status="failure",
        error_information={"error_code": "429", "error_class": "RateLimitError"},
    )
    assert event("litellm", body).status_code == 429


def test_litellm_provider_ids_follow_the_catalog() -> None:
    body = _litellm({"prompt_tokens": 1, "completion_tokens": 1}, custom_llm_provider="bedrock")
    assert event("litellm", body).provider == "aws"


# -- common behaviour -----------------------------------------------------


def test_normalization_error_is_a_value_error() -> None:
    assert issubclass(NormalizationError, ValueError)


def test_unknown_format_lists_the_known_ones() -> None:
    with pytest.raises(NormalizationError, match="otel_genai"):
        normalize("cohere", {}, tenant_id="t")
    assert "litellm" in FORMATS and "openai_chat" in FORMATS


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_body_that_is_not_an_object_fails(fmt: str) -> None:
    with pytest.raises(NormalizationError, match="JSON object"):
        normalize(fmt, ["not", "an", "object"], tenant_id="t")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [(-5, "negative"), (True, "boolean"), ("12", "whole number"), (1.5, "whole number")],
)
def test_bad_token_counts_fail_with_the_field_name(value: Any, message: str) -> None:
    body = {"id": "c", "model": "m", "usage": {"prompt_tokens": value, "completion_tokens": 1}}
    with pytest.raises(NormalizationError, match=f"prompt_tokens.*{message}"):
        normalize("openai_chat", body, tenant_id="t")


def test_integral_floats_are_accepted() -> None:
    body = {"id": "c", "model": "m", "usage": {"prompt_tokens": 12.0, "completion_tokens": 1}}
    assert event("openai_chat", body).input_tokens == 12


def test_misspelt_ownership_field_is_a_type_error() -> None:
    body = {"id": "c", "model": "m", "usage": {"prompt_tokens": 1}}
    with pytest.raises(TypeError, match="tenant"):
        normalize("openai_chat", body, tenant="acme")
    with pytest.raises(TypeError, match="input_tokens"):
        normalize("openai_chat", body, tenant_id="acme", input_tokens=5)


def test_caller_fields_win_and_none_is_ignored() -> None:
    body = {"id": "body-id", "model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": 1}}
    e = event(
        "openai_chat",
        body,
        request_id="caller-id",
        provider="azure",
        team_id=None,
        tags={"region": "eu"},
    )
    assert (e.request_id, e.provider, e.model, e.team_id) == (
        "caller-id",
        "azure",
        "gpt-4o-2024-08-06",
        "",
    )
    assert e.tags == {"region": "eu"}


def test_missing_request_id_is_not_invented() -> None:
    # A random id would defeat dedupe: a re-sent body would count twice.
    body = {"model": "m", "usage": {"prompt_tokens": 1}}
    with pytest.raises(NormalizationError, match="request_id"):
        normalize("openai_chat", body, tenant_id="t")


def test_gemini_api_service_tier_wins_over_vertex_traffic_type() -> None:
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
    body = {"responseId": "g1", "modelVersion": "gemini-2.5-flash"}
    flex = event("gemini", {**body, "usageMetadata": {**usage, "serviceTier": "flex"}})
    assert flex.service_tier == "flex"
    vertex = event("gemini", {**body, "usageMetadata": {**usage, "trafficType": "ON_DEMAND"}})
    assert vertex.service_tier == ""
    snake = event("gemini", {**body, "usage_metadata": {**usage, "service_tier": "PRIORITY"}})
    assert snake.service_tier == "priority"  # lower-cased by the event


def test_a_caller_tier_yields_to_the_response_tier_and_batch_is_kept() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-5",
        "service_tier": "flex",
        "usage": {"prompt_tokens": 10, "completion_tokens": 2},
    }
    assert event("openai", body, service_tier="priority").service_tier == "flex"
    no_tier = {k: v for k, v in body.items() if k != "service_tier"}
    assert event("openai", no_tier, service_tier="priority").service_tier == "priority"
    assert event("openai", no_tier, batch=True).batch is True


def test_otel_span_times_as_nanoseconds_or_iso_text() -> None:
    attrs = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.response.id": "r1",
    }
    iso = event(
        "otel_genai",
        {
            "attributes": attrs,
            "start_time": "2025-06-01T10:00:00.250000Z",
            "end_time": "2025-06-01T10:00:01.750000Z",
        },
    )
    assert (iso.timestamp.isoformat(), iso.latency_ms) == ("2025-06-01T10:00:00.250000+00:00", 1500)
    nanos = event(
        "otel_genai",
        {"attributes": attrs, "startTimeUnixNano": "1748772000250000000",
         "endTimeUnixNano": "1748772001750000000"},
    )  # fmt: skip
    assert (nanos.timestamp, nanos.latency_ms) == (iso.timestamp, 1500)
