"""OpenAI Chat Completions and Responses bodies.

Both APIs count cache hits (`cached_tokens`) and cache writes
(`cache_write_tokens`, newer) inside `prompt_tokens`/`input_tokens`, and
`reasoning_tokens` inside `completion_tokens`/`output_tokens`: the canonical
semantics already, so no arithmetic. The `*_tokens_details` objects can be
absent or null (older models, compatible servers): their counts read as 0.

Accepted bodies:
- a Chat Completion (`object: "chat.completion"`) or the last streamed chunk
  that carries `usage` (`stream_options: {"include_usage": true}`);
- a Response (`object: "response"`) or a streamed `response.completed` /
  `response.incomplete` / `response.failed` event wrapping one;
- `{"events": [...]}`: a recorded stream; the last event carrying usage wins;
- a line of a Batch API output file (`{"custom_id": ..., "response":
  {"status_code": 200, "body": {...}}}`): the body inside, as `batch`.

The response's `service_tier` (the tier that served the call: `default`,
`flex`, `priority`, `scale`) is read; it wins over a tier the caller passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.normalizers._common import (
    NormalizationError,
    as_mapping,
    build_event,
    epoch_seconds,
    last_with,
    optional_mapping,
    token_count,
)

PROVIDER = "openai"


def normalize_openai(body: Mapping[str, Any], **ownership: Any) -> dict[str, Any]:
    """Either OpenAI shape, told apart by its usage field names."""
    usage = optional_mapping(_unwrap(body, "openai").get("usage"), "openai usage")
    if "prompt_tokens" in usage:
        return normalize_openai_chat(body, **ownership)
    if "input_tokens" in usage:
        return normalize_openai_responses(body, **ownership)
    raise NormalizationError(
        "openai body has no usage with prompt_tokens (Chat) or input_tokens (Responses)"
    )


def normalize_openai_chat(body: Mapping[str, Any], **ownership: Any) -> dict[str, Any]:
    body, batch = _batch_line(body, "openai_chat")
    body = _unwrap(body, "openai_chat")
    usage = _usage(body, "openai_chat", "prompt_tokens")
    prompt = optional_mapping(usage.get("prompt_tokens_details"), "prompt_tokens_details")
    completion = optional_mapping(
        usage.get("completion_tokens_details"), "completion_tokens_details"
    )
    created = body.get("created")
    return build_event(
        format_name="openai_chat",
        provider=PROVIDER,
        model=body.get("model"),
        request_id=body.get("id"),
        timestamp=epoch_seconds(created, "created") if created is not None else None,
        input_tokens=token_count(usage.get("prompt_tokens"), "usage.prompt_tokens"),
        cached_tokens=token_count(prompt.get("cached_tokens"), "cached_tokens"),
        cache_write_tokens=token_count(prompt.get("cache_write_tokens"), "cache_write_tokens"),
        output_tokens=token_count(usage.get("completion_tokens"), "usage.completion_tokens"),
        reasoning_tokens=token_count(completion.get("reasoning_tokens"), "reasoning_tokens"),
        service_tier=body.get("service_tier"),
        batch=batch.is_batch,
        extra=batch.extra,
        ownership=ownership,
    )


def normalize_openai_responses(body: Mapping[str, Any], **ownership: Any) -> dict[str, Any]:
    body, batch = _batch_line(body, "openai_responses")
    body = _unwrap(body, "openai_responses")
    usage = _usage(body, "openai_responses", "input_tokens")
    inp = optional_mapping(usage.get("input_tokens_details"), "input_tokens_details")
    out = optional_mapping(usage.get("output_tokens_details"), "output_tokens_details")
    created = body.get("created_at")
    return build_event(
        format_name="openai_responses",
        provider=PROVIDER,
        model=body.get("model"),
        request_id=body.get("id"),
        timestamp=epoch_seconds(created, "created_at") if created is not None else None,
        input_tokens=token_count(usage.get("input_tokens"), "usage.input_tokens"),
        cached_tokens=token_count(inp.get("cached_tokens"), "cached_tokens"),
        cache_write_tokens=token_count(inp.get("cache_write_tokens"), "cache_write_tokens"),
        output_tokens=token_count(usage.get("output_tokens"), "usage.output_tokens"),
        reasoning_tokens=token_count(out.get("reasoning_tokens"), "reasoning_tokens"),
        service_tier=body.get("service_tier"),
        batch=batch.is_batch,
        extra=batch.extra,
        ownership=ownership,
    )


BATCH_KEY = "custom_id"


class _Batch:
    def __init__(self, is_batch: bool = False, status_code: Any = None) -> None:
        self.is_batch = is_batch
        self.extra = {"status_code": status_code} if isinstance(status_code, int) else {}


def _batch_line(body: Any, fmt: str) -> tuple[Mapping[str, Any], _Batch]:
    """A Batch API output line's response body, or the body itself."""
    body = as_mapping(body, f"{fmt} body")
    if BATCH_KEY not in body:
        return body, _Batch()
    response = body.get("response")
    if response is None:
        error = optional_mapping(body.get("error"), "batch error")
        raise NormalizationError(
            f"{fmt} batch line {body.get(BATCH_KEY)!r} has no response "
            f"(error {error.get('code') or 'unknown'}): a failed request is not billed"
        )
    response = as_mapping(response, "batch response")
    inner = as_mapping(response.get("body"), "batch response body")
    return inner, _Batch(True, response.get("status_code"))


def _unwrap(body: Any, fmt: str) -> Mapping[str, Any]:
    body = as_mapping(body, f"{fmt} body")
    if BATCH_KEY in body:
        body = _batch_line(body, fmt)[0]
    if "events" in body and "usage" not in body:
        body = last_with(body["events"], ("usage", "response"), fmt)
    # Responses streaming: {"type": "response.completed", "response": {...}}.
    inner = body.get("response")
    if isinstance(inner, Mapping) and "usage" not in body:
        body = inner
    return body


def _usage(body: Mapping[str, Any], fmt: str, required: str) -> Mapping[str, Any]:
    usage = body.get("usage")
    if usage is None:
        raise NormalizationError(
            f"{fmt} body has no usage (a streamed chunk without usage? "
            "request it with stream_options.include_usage)"
        )
    usage = as_mapping(usage, f"{fmt} usage")
    if usage.get(required) is None:
        raise NormalizationError(f"{fmt} usage has no {required}")
    return usage
