"""AWS Bedrock Converse / ConverseStream bodies.

`usage.inputTokens` EXCLUDES `cacheReadInputTokens` and
`cacheWriteInputTokens` (`totalTokens` = input + output + both), so the
canonical input is the sum. Some wire bodies repeat the cache counts as
`cacheReadInputTokenCount`/`cacheWriteInputTokenCount`: the two spellings are
the same number, so the first present is read and they are never added.

The model is not in the body: pass `model=` (the `modelId` of the request);
a `modelId` key that a logger put in the body is used otherwise. boto3 adds
`ResponseMetadata`, which gives the request id, HTTP status, retry attempts
and date. `cacheDetails` entries with `ttl: "1h"` are the 1-hour part of the
cache writes; `serviceTier` (`{"type": "flex"}`, or the InvokeModel header's
plain string) is the tier that served the call.

Accepted bodies: a Converse response, a ConverseStream `metadata` event
(`{"metadata": {"usage": ..., "metrics": ...}}`), `{"events": [...]}` (the
event carrying `metadata` wins), or a line of a batch inference output file
(`{"recordId": ..., "modelInput": ..., "modelOutput": ...}`), read as `batch`:
its `modelOutput` is a Converse response (Converse jobs) or the model's
InvokeModel body; an Anthropic Messages body there goes through the Anthropic
normalizer, as provider `aws`. A line with `error` instead was not billed.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from schemas.normalizers._common import (
    NormalizationError,
    as_mapping,
    build_event,
    first_present,
    last_with,
    optional_mapping,
    token_count,
)
from schemas.normalizers.anthropic import normalize_anthropic

PROVIDER = "aws"

_CACHE_READ_KEYS = ("cacheReadInputTokens", "cacheReadInputTokenCount")
_CACHE_WRITE_KEYS = ("cacheWriteInputTokens", "cacheWriteInputTokenCount")


def normalize_bedrock(body: Mapping[str, Any], **ownership: Any) -> dict[str, Any]:
    body = as_mapping(body, "bedrock body")
    batch = "recordId" in body and ("modelOutput" in body or "error" in body)
    if batch:
        body = _batch_output(body)
        if "input_tokens" in optional_mapping(body.get("usage"), "modelOutput usage"):
            # an Anthropic model's InvokeModel body
            return normalize_anthropic(body, **{"provider": PROVIDER, "batch": True, **ownership})
    if "events" in body and "usage" not in body:
        body = last_with(body["events"], ("metadata",), "bedrock")
    # ConverseStream puts usage and metrics inside its final `metadata` event.
    stream_meta = body.get("metadata")
    source = as_mapping(stream_meta, "metadata") if isinstance(stream_meta, Mapping) else body

    usage = source.get("usage")
    if usage is None:
        raise NormalizationError("bedrock body has no usage")
    usage = as_mapping(usage, "bedrock usage")
    if usage.get("inputTokens") is None:
        raise NormalizationError("bedrock usage has no inputTokens")

    uncached = token_count(usage.get("inputTokens"), "usage.inputTokens")
    cache_read = token_count(first_present(usage, _CACHE_READ_KEYS), "cacheReadInputTokens")
    cache_write = token_count(first_present(usage, _CACHE_WRITE_KEYS), "cacheWriteInputTokens")

    extra: dict[str, Any] = {}
    metrics = optional_mapping(source.get("metrics"), "metrics")
    if metrics.get("latencyMs") is not None:
        extra["latency_ms"] = token_count(metrics["latencyMs"], "metrics.latencyMs")

    tier = source.get("serviceTier") or body.get("serviceTier")
    if isinstance(tier, Mapping):
        tier = tier.get("type")

    response_meta = optional_mapping(body.get("ResponseMetadata"), "ResponseMetadata")
    if response_meta.get("HTTPStatusCode") is not None:
        extra["status_code"] = response_meta["HTTPStatusCode"]
    if response_meta.get("RetryAttempts") is not None:
        extra["retry_count"] = response_meta["RetryAttempts"]
    headers = optional_mapping(response_meta.get("HTTPHeaders"), "HTTPHeaders")

    return build_event(
        format_name="bedrock",
        provider=PROVIDER,
        model=body.get("modelId"),
        request_id=response_meta.get("RequestId") or headers.get("x-amzn-requestid"),
        timestamp=_http_date(headers.get("date")),
        input_tokens=uncached + cache_read + cache_write,
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=_cache_write_1h(usage.get("cacheDetails")),
        output_tokens=token_count(usage.get("outputTokens"), "usage.outputTokens"),
        service_tier=tier,
        batch=batch,
        extra=extra,
        ownership=ownership,
    )


def _batch_output(line: Mapping[str, Any]) -> Mapping[str, Any]:
    output = line.get("modelOutput")
    if output is None:
        error = optional_mapping(line.get("error"), "batch error")
        raise NormalizationError(
            f"bedrock batch record {line.get('recordId')!r} failed "
            f"({error.get('errorCode') or 'unknown'}): a failed record is not billed"
        )
    output = dict(as_mapping(output, "modelOutput"))
    # A Converse response has no id of its own: the record's id names the call.
    output.setdefault("ResponseMetadata", {"RequestId": line.get("recordId")})
    return output


def _cache_write_1h(details: Any) -> int:
    if not isinstance(details, list):
        return 0
    total = 0
    for detail in details:
        if isinstance(detail, Mapping) and detail.get("ttl") == "1h":
            total += token_count(detail.get("inputTokens"), "cacheDetails.inputTokens")
    return total


def _http_date(value: Any) -> Any:
    if not isinstance(value, str):
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        # The date header only refines the timestamp; without it "now" is
        # within the call's latency, so a malformed header is not fatal.
        return None
