"""Google Gemini `GenerateContentResponse` bodies (Gemini API and Vertex AI).

`promptTokenCount` already includes `cachedContentTokenCount`. Neither
`thoughtsTokenCount` nor `toolUsePromptTokenCount` is inside
`candidatesTokenCount`/`promptTokenCount`, so:
input = prompt + tool-use prompt, cached = cached content,
output = candidates + thoughts, reasoning = thoughts.

REST bodies use camelCase; the Python SDK's `model_dump()` gives snake_case:
both spellings are read. Accepted bodies: one response, the last streamed
chunk (usage there is cumulative), `{"events": [...]}` (last chunk with
usage wins), or a batch result line, read as `batch`: Vertex AI batch
prediction output (`{"request": ..., "response": {...}, "status": ""}`) or a
Gemini API batch (`{"key": ..., "response": {...}}`).

The tier that served the call: the Gemini API's `usageMetadata.serviceTier`
(`standard`, `flex`, `priority`), else Vertex AI's `usageMetadata.trafficType`,
where `ON_DEMAND_FLEX` / `ON_DEMAND_PRIORITY` are read as the `flex` /
`priority` tiers (other values, e.g. `ON_DEMAND`, `PROVISIONED_THROUGHPUT`, as
the standard price).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from schemas.normalizers._common import (
    NormalizationError,
    as_mapping,
    build_event,
    first_present,
    last_with,
    token_count,
)

PROVIDER = "google"
_USAGE_KEYS = ("usageMetadata", "usage_metadata")
_TRAFFIC_TIERS = {"ON_DEMAND_FLEX": "flex", "ON_DEMAND_PRIORITY": "priority"}


def _get(mapping: Mapping[str, Any], camel: str, snake: str) -> Any:
    return first_present(mapping, (camel, snake))


def normalize_gemini(body: Mapping[str, Any], **ownership: Any) -> dict[str, Any]:
    body = as_mapping(body, "gemini body")
    batch = _get(body, *_USAGE_KEYS) is None and isinstance(body.get("response"), Mapping)
    if batch:
        if body.get("status"):
            raise NormalizationError(f"gemini batch line failed: {str(body['status'])[:200]}")
        body = body["response"]
    if "events" in body and _get(body, *_USAGE_KEYS) is None:
        body = last_with(body["events"], _USAGE_KEYS, "gemini")
    usage = _get(body, *_USAGE_KEYS)
    if usage is None:
        raise NormalizationError("gemini body has no usageMetadata")
    usage = as_mapping(usage, "gemini usageMetadata")

    prompt = token_count(_get(usage, "promptTokenCount", "prompt_token_count"), "promptTokenCount")
    tool_prompt = token_count(
        _get(usage, "toolUsePromptTokenCount", "tool_use_prompt_token_count"),
        "toolUsePromptTokenCount",
    )
    cached = token_count(
        _get(usage, "cachedContentTokenCount", "cached_content_token_count"),
        "cachedContentTokenCount",
    )
    candidates = token_count(
        _get(usage, "candidatesTokenCount", "candidates_token_count"), "candidatesTokenCount"
    )
    thoughts = token_count(
        _get(usage, "thoughtsTokenCount", "thoughts_token_count"), "thoughtsTokenCount"
    )

    model = _get(body, "modelVersion", "model_version")
    if isinstance(model, str) and model.startswith("models/"):
        model = model.removeprefix("models/")
    traffic = _get(usage, "trafficType", "traffic_type")
    created = _get(body, "createTime", "create_time")
    if created is not None and not isinstance(created, str | datetime):
        raise NormalizationError(f"gemini createTime must be RFC 3339 text, got {created!r}")

    return build_event(
        format_name="gemini",
        provider=PROVIDER,
        model=model,
        request_id=_get(body, "responseId", "response_id"),
        timestamp=created,
        input_tokens=prompt + tool_prompt,
        cached_tokens=cached,
        output_tokens=candidates + thoughts,
        reasoning_tokens=thoughts,
        service_tier=_get(usage, "serviceTier", "service_tier")
        or (_TRAFFIC_TIERS.get(str(traffic).upper()) if traffic else None),
        batch=batch,
        ownership=ownership,
    )
