"""Anthropic Messages bodies.

Anthropic's `input_tokens` EXCLUDES `cache_read_input_tokens` and
`cache_creation_input_tokens`, so the canonical input is the sum of the three.
The `cache_creation` object (`ephemeral_5m_input_tokens`,
`ephemeral_1h_input_tokens`) splits the cache-write total by TTL; it is not
extra: its 1-hour part is `cache_write_1h_tokens`, priced at the 1-hour rate.
Thinking tokens are inside `output_tokens`; newer bodies count them in
`usage.output_tokens_details.thinking_tokens`, read as `reasoning_tokens`
(older bodies do not count them, and reasoning stays 0).

Compaction (server-side context management) samples twice in one request:
the top-level usage counts only the answering turn, and each
`usage.iterations[]` entry of `type: "compaction"` is the billed summarising
pass, with its own input, cache and output counts; those are added. Entries of
`type: "message"` are already in the top-level counts.

`usage.service_tier` names the tier that served the call (`standard`,
`priority`, or `batch` for a Message Batches result, read as `batch`).

Accepted bodies:
- a Message (`type: "message"`), also as returned by Bedrock InvokeModel and
  Vertex AI (pass `provider=`/`model=` there as needed);
- `{"events": [...]}`: the recorded stream events. `message_start` carries the
  id, model and initial usage; each `message_delta` carries cumulative usage,
  so later values replace earlier ones, never add to them;
- a line of a Message Batches results file (`{"custom_id": ..., "result":
  {"type": "succeeded", "message": {...}}}`): the message inside, as `batch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.normalizers._common import (
    NormalizationError,
    as_mapping,
    build_event,
    optional_mapping,
    token_count,
)

PROVIDER = "anthropic"


def normalize_anthropic(body: Mapping[str, Any], **ownership: Any) -> dict[str, Any]:
    body = as_mapping(body, "anthropic body")
    batch = "custom_id" in body and "result" in body
    if batch:
        body = _batch_message(body)
    if "events" in body and "usage" not in body:
        body = merge_stream_events(body["events"])
    usage = body.get("usage")
    if usage is None:
        raise NormalizationError("anthropic body has no usage")
    usage = as_mapping(usage, "anthropic usage")
    if usage.get("input_tokens") is None:
        raise NormalizationError("anthropic usage has no input_tokens")

    parts = [_counts(usage, "usage")] + [
        _counts(iteration, f"usage.iterations[{index}]")
        for index, iteration in enumerate(_compaction_iterations(usage))
    ]
    uncached, cache_read, cache_write, write_1h, output = (
        sum(column) for column in zip(*parts, strict=True)
    )

    output_details = optional_mapping(usage.get("output_tokens_details"), "output_tokens_details")
    tier = usage.get("service_tier")
    if tier == "batch":
        batch, tier = True, None
    return build_event(
        format_name="anthropic",
        provider=PROVIDER,
        model=body.get("model"),
        request_id=body.get("id"),
        timestamp=None,
        input_tokens=uncached + cache_read + cache_write,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
        output_tokens=output,
        reasoning_tokens=token_count(output_details.get("thinking_tokens"), "thinking_tokens"),
        service_tier=tier,
        batch=batch,
        ownership=ownership,
    )


def _counts(usage: Mapping[str, Any], where: str) -> tuple[int, int, int, int, int]:
    """(uncached input, cache read, cache write, 1-hour part of the write, output)."""
    uncached = token_count(usage.get("input_tokens"), f"{where}.input_tokens")
    cache_read = token_count(
        usage.get("cache_read_input_tokens"), f"{where}.cache_read_input_tokens"
    )
    split = optional_mapping(usage.get("cache_creation"), f"{where}.cache_creation")
    write_5m = token_count(split.get("ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens")
    write_1h = token_count(split.get("ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens")
    if usage.get("cache_creation_input_tokens") is not None:
        cache_write = token_count(
            usage["cache_creation_input_tokens"], f"{where}.cache_creation_input_tokens"
        )
    else:
        cache_write = write_5m + write_1h
    output = token_count(usage.get("output_tokens"), f"{where}.output_tokens")
    return uncached, cache_read, cache_write, write_1h, output


def _compaction_iterations(usage: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    iterations = usage.get("iterations")
    if iterations is None:
        return []
    if not isinstance(iterations, list):
        raise NormalizationError("usage.iterations must be a JSON array")
    return [
        as_mapping(item, "usage.iterations[]")
        for item in iterations
        if isinstance(item, Mapping) and item.get("type") == "compaction"
    ]


def _batch_message(line: Mapping[str, Any]) -> Mapping[str, Any]:
    result = as_mapping(line.get("result"), "batch result")
    if result.get("type") != "succeeded":
        raise NormalizationError(
            f"anthropic batch result {line.get('custom_id')!r} is {result.get('type')!r}, "
            "not 'succeeded': it has no usage and is not billed"
        )
    return as_mapping(result.get("message"), "batch result message")


def merge_stream_events(events: Any) -> dict[str, Any]:
    """A Message-shaped body from recorded stream events (see module doc)."""
    if not isinstance(events, list):
        raise NormalizationError("anthropic 'events' must be a JSON array")
    message: dict[str, Any] | None = None
    usage: dict[str, Any] = {}
    for event in events:
        if not isinstance(event, Mapping):
            continue
        kind = event.get("type")
        if kind == "message_start":
            start = as_mapping(event.get("message"), "message_start.message")
            message = dict(start)
            usage = dict(optional_mapping(start.get("usage"), "message_start usage"))
        elif kind == "message_delta" and event.get("usage") is not None:
            delta = as_mapping(event["usage"], "message_delta usage")
            # Cumulative counts: the latest value replaces the earlier one.
            usage.update({k: v for k, v in delta.items() if v is not None})
    if message is None:
        raise NormalizationError("anthropic stream has no message_start event")
    message["usage"] = usage
    return message
