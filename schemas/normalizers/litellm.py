"""LiteLLM `StandardLoggingPayload` (the `standard_logging_object` a LiteLLM
callback or the proxy's logging hooks receive).

LiteLLM reports usage in OpenAI form, but what its `prompt_tokens` contains
has changed between releases for providers that count cache tokens apart
(Anthropic, Bedrock): cache reads have long been added in; cache writes were
added, then not, then added again. So the cache counts are read explicitly:
- cache reads: `cache_read_input_tokens`, else
  `prompt_tokens_details.cached_tokens` (alternatives, never added);
- cache writes: `cache_creation_input_tokens`, else
  `prompt_tokens_details.cache_creation_tokens`;
and `prompt_tokens` is taken to include cache writes: the payloads LiteLLM
1.55.10, 1.65.0 and 1.110.2 logged for the same recorded Anthropic body all
have `prompt_tokens` = input + cache read + cache write, with or without
`prompt_tokens_details.cache_creation_tokens` (the
`litellm_anthropic_1_55`/`litellm_anthropic_current` fixtures). A
`prompt_tokens` smaller than its cache parts cannot include them, and they are
added (a release that left writes out); pass
`prompt_includes_cache_write=False` for a known release that left them out.

Usage is read from `metadata.usage_object`, else `response.usage`, else the
top-level `prompt_tokens`/`completion_tokens`. A LiteLLM cache hit
(`cache_hit: true`) made no provider call: its tokens are recorded as 0, with
the tag `litellm_cache_hit`. Failed calls (`status: "failure"`) are events
too (retry storms are made of them), with the HTTP status from
`error_information.error_code` when it is numeric. `startTime`/`endTime` are
epoch seconds in the proxy's payloads and datetime text in others
("2025-01-24 09:20:46.847371", naive UTC): both are read. The provider's
`service_tier` is read from the response (`response.service_tier`) or the
usage object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.normalizers._common import (
    NormalizationError,
    as_mapping,
    build_event,
    moment,
    money,
    optional_mapping,
    token_count,
)

# LiteLLM `custom_llm_provider` -> spendstream provider ids (the catalog's).
PROVIDER_IDS = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure",
    "azure_ai": "azure",
    "anthropic": "anthropic",
    "bedrock": "aws",
    "bedrock_converse": "aws",
    "sagemaker": "aws",
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "gemini": "google",
    "mistral": "mistral",
    "xai": "x-ai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
}


def normalize_litellm(
    body: Mapping[str, Any],
    *,
    prompt_includes_cache_write: bool = True,
    **ownership: Any,
) -> dict[str, Any]:
    body = as_mapping(body, "litellm body")
    metadata = optional_mapping(body.get("metadata"), "litellm metadata")
    raw_response = body.get("response")
    response: Mapping[str, Any] = raw_response if isinstance(raw_response, Mapping) else {}

    usage: Mapping[str, Any]
    if isinstance(metadata.get("usage_object"), Mapping):
        usage = metadata["usage_object"]
    elif isinstance(response.get("usage"), Mapping):
        usage = response["usage"]
    else:
        usage = body
    if usage.get("prompt_tokens") is None:
        raise NormalizationError("litellm payload has no prompt_tokens")

    prompt_details = optional_mapping(usage.get("prompt_tokens_details"), "prompt_tokens_details")
    completion_details = optional_mapping(
        usage.get("completion_tokens_details"), "completion_tokens_details"
    )
    prompt = token_count(usage.get("prompt_tokens"), "prompt_tokens")
    cache_read = usage.get("cache_read_input_tokens")
    if cache_read is None:
        cache_read = prompt_details.get("cached_tokens")
    cache_write = usage.get("cache_creation_input_tokens")
    if cache_write is None:
        cache_write = prompt_details.get("cache_creation_tokens")
    cached = token_count(cache_read, "cache_read_input_tokens")
    written = token_count(cache_write, "cache_creation_input_tokens")
    output = token_count(usage.get("completion_tokens"), "completion_tokens")
    reasoning = token_count(completion_details.get("reasoning_tokens"), "reasoning_tokens")

    input_tokens = prompt
    if prompt < cached:
        input_tokens += cached
    # A count smaller than its own parts cannot include them, whatever the
    # release or the caller's override says.
    if not prompt_includes_cache_write or input_tokens < cached + written:
        input_tokens += written

    extra: dict[str, Any] = {}
    if body.get("cache_hit") is True:
        input_tokens = cached = written = output = reasoning = 0
        extra["tags"] = {"litellm_cache_hit": "true"}

    start, end = body.get("startTime"), body.get("endTime")
    timestamp = moment(start, "startTime") if start is not None else None
    if timestamp is not None and end is not None:
        elapsed = moment(end, "endTime") - timestamp
        if elapsed.total_seconds() >= 0:
            extra["latency_ms"] = round(elapsed.total_seconds() * 1000)
    extra["reported_cost_usd"] = money(body.get("response_cost"))
    error = optional_mapping(body.get("error_information"), "error_information")
    code = error.get("error_code")
    if body.get("status") == "failure" and isinstance(code, str) and code.isdigit():
        extra["status_code"] = int(code)
    elif isinstance(code, int) and not isinstance(code, bool):
        extra["status_code"] = code
    extra["team_id"] = metadata.get("user_api_key_team_id")
    extra["user_id"] = metadata.get("user_api_key_user_id") or body.get("end_user") or None
    extra["api_key_id"] = metadata.get("user_api_key_hash")

    return build_event(
        format_name="litellm",
        provider=_provider(body),
        model=_model(body, response),
        request_id=body.get("id"),
        timestamp=timestamp,
        input_tokens=input_tokens,
        cached_tokens=cached,
        cache_write_tokens=written,
        output_tokens=output,
        reasoning_tokens=reasoning,
        service_tier=response.get("service_tier") or usage.get("service_tier"),
        extra=extra,
        ownership=ownership,
    )


def _provider(body: Mapping[str, Any]) -> str | None:
    raw = body.get("custom_llm_provider")
    if not isinstance(raw, str):
        info = optional_mapping(body.get("model_map_information"), "model_map_information")
        value = info.get("model_map_value")
        raw = value.get("litellm_provider") if isinstance(value, Mapping) else None
    if not isinstance(raw, str):
        return None
    return PROVIDER_IDS.get(raw, raw)


def _model(body: Mapping[str, Any], response: Mapping[str, Any]) -> Any:
    # The provider's answer names the exact model that ran; `model` is what
    # the client asked for, possibly a proxy alias.
    answered = response.get("model")
    if isinstance(answered, str) and answered:
        return answered
    info = optional_mapping(body.get("model_map_information"), "model_map_information")
    return info.get("model_map_key") or body.get("model")
