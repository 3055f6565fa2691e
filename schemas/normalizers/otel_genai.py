"""OpenTelemetry GenAI spans (semantic conventions for generative AI).

The body is one span, either flat (what `SpendstreamSpanExporter` builds from
an SDK `ReadableSpan`)::

    {"name": ..., "trace_id": "<32 hex>", "span_id": "<16 hex>",
     "start_time_unix_nano": int, "end_time_unix_nano": int,
     "attributes": {"gen_ai.usage.input_tokens": 10, ...},
     "resource": {"service.name": ...}}

or an OTLP/JSON span (`traceId`, `spanId`, `startTimeUnixNano`, attributes as
`[{"key": ..., "value": {"intValue": "10"}}]`, `resource` as an OTLP resource).
A bare attribute map (keys `gen_ai.*`) is accepted too.

Attribute names have drifted; each count is read from the first spelling
present (spellings are alternatives, never added):
- input: `gen_ai.usage.input_tokens`, deprecated `gen_ai.usage.prompt_tokens`;
- output: `gen_ai.usage.output_tokens`, deprecated `gen_ai.usage.completion_tokens`;
- cache read: `gen_ai.usage.cache_read.input_tokens`, deprecated
  `gen_ai.usage.cache_read_input_tokens`, `gen_ai.usage.input_tokens.cached`;
- cache write: `gen_ai.usage.cache_creation.input_tokens`,
  `gen_ai.usage.cache_write.input_tokens`, deprecated
  `gen_ai.usage.cache_creation_input_tokens`, `gen_ai.usage.input_tokens.cache_write`;
- reasoning: `gen_ai.usage.reasoning.output_tokens`,
  `gen_ai.usage.output_tokens.reasoning`, `gen_ai.usage.reasoning_tokens`;
- provider: `gen_ai.provider.name`, deprecated `gen_ai.system`;
- model: `gen_ai.response.model`, else `gen_ai.request.model`;
- service tier: `openai.response.service_tier` or
  `anthropic.response.service_tier` (the tier that served the call, as the
  OpenAI instrumentations and the Anthropic SDK's own spans write it), else
  `openai.request.service_tier`.

The conventions say input/output SHOULD include cache and reasoning tokens,
but some instrumentations (Anthropic ones especially) emit the provider's
exclusive count. The count is taken as exclusive, and the parts added, when
the parts exceed it, or when a reported total equals the exclusive sum.

Only model-call spans are usage: `invoke_agent`, `create_agent`,
`execute_tool` and similar spans may carry aggregated usage of the calls below
them, and counting them would count those calls twice.

Ownership can ride on the span as `spendstream.<field>` attributes (e.g.
`spendstream.workflow_run_id`); fields passed by the caller win over them.
The request id is `gen_ai.response.id`, else the trace and span ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from schemas.normalizers._common import (
    OWNERSHIP_FIELDS,
    NormalizationError,
    as_mapping,
    build_event,
    epoch_nanos,
    first_present,
    has_any,
    moment,
    token_count,
)

INPUT_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ_KEYS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.input_tokens.cached",
)
CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.input_tokens.cache_write",
)
REASONING_KEYS = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.output_tokens.reasoning",
    "gen_ai.usage.reasoning_tokens",
)
TOTAL_KEYS = ("gen_ai.usage.total_tokens", "llm.usage.total_tokens")
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system")
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model")
SERVICE_TIER_KEYS = (
    "openai.response.service_tier",
    "anthropic.response.service_tier",
    "openai.request.service_tier",
)
OWNERSHIP_PREFIX = "spendstream."

# Operations whose spans wrap model calls rather than being one.
NON_MODEL_OPERATIONS = frozenset(
    {"invoke_agent", "create_agent", "execute_tool", "invoke_workflow", "execute_task"}
)

# gen_ai.provider.name / gen_ai.system values (lowercased) -> spendstream
# provider ids (the ids of the price catalog).
PROVIDER_IDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "deepseek": "deepseek",
    "groq": "groq",
    "cohere": "cohere",
    "perplexity": "perplexity",
}


def is_model_call_span(attributes: Mapping[str, Any]) -> bool:
    """True when a span's attributes describe one model call with usage."""
    operation = attributes.get("gen_ai.operation.name")
    if operation in NON_MODEL_OPERATIONS:
        return False
    return has_any(attributes, INPUT_KEYS)


def normalize_otel_genai(body: Mapping[str, Any], **ownership: Any) -> dict[str, Any]:
    body = as_mapping(body, "otel_genai body")
    if "attributes" in body:
        attrs = _attributes(body["attributes"])
        resource = _resource_attributes(body.get("resource"))
    elif any(isinstance(k, str) and k.startswith("gen_ai.") for k in body):
        attrs, resource = dict(body), {}
    else:
        raise NormalizationError("otel_genai body has no attributes")

    operation = attrs.get("gen_ai.operation.name")
    if operation in NON_MODEL_OPERATIONS:
        raise NormalizationError(
            f"span is a '{operation}' span, not a model call; its usage would count "
            "the model-call spans under it twice"
        )
    if not has_any(attrs, INPUT_KEYS):
        raise NormalizationError("span has no gen_ai.usage.input_tokens")

    inp = token_count(first_present(attrs, INPUT_KEYS), "gen_ai.usage.input_tokens")
    out = token_count(first_present(attrs, OUTPUT_KEYS), "gen_ai.usage.output_tokens")
    cached = token_count(first_present(attrs, CACHE_READ_KEYS), "cache_read.input_tokens")
    written = token_count(first_present(attrs, CACHE_WRITE_KEYS), "cache_creation.input_tokens")
    reasoning = token_count(first_present(attrs, REASONING_KEYS), "reasoning.output_tokens")
    total = first_present(attrs, TOTAL_KEYS)
    total_count = token_count(total, "gen_ai.usage.total_tokens") if total is not None else None

    cache_parts = cached + written
    if cache_parts and (
        cache_parts > inp or (total_count is not None and total_count == inp + out + cache_parts)
    ):
        inp += cache_parts
    if reasoning > out:
        out += reasoning

    provider_raw = first_present(attrs, PROVIDER_KEYS)
    provider = None
    if isinstance(provider_raw, str):
        # Older instrumentations capitalise it (Traceloop's wrote gen_ai.system "Anthropic").
        provider = PROVIDER_IDS.get(provider_raw.lower(), provider_raw.lower())

    trace_id = _hex_id(first_present(body, ("trace_id", "traceId")))
    span_id = _hex_id(first_present(body, ("span_id", "spanId")))
    request_id = attrs.get("gen_ai.response.id")
    if not request_id and span_id:
        request_id = f"{trace_id}-{span_id}" if trace_id else span_id

    start = first_present(body, ("start_time_unix_nano", "startTimeUnixNano", "start_time"))
    end = first_present(body, ("end_time_unix_nano", "endTimeUnixNano", "end_time"))
    extra: dict[str, Any] = {}
    timestamp = _span_time(start, "start_time") if start is not None else None
    if timestamp is not None and end is not None:
        elapsed = _span_time(end, "end_time") - timestamp
        if elapsed.total_seconds() >= 0:
            extra["latency_ms"] = elapsed // timedelta(milliseconds=1)
    status = attrs.get("http.response.status_code")
    if isinstance(status, int) and not isinstance(status, bool):
        extra["status_code"] = status
    environment = first_present(
        {**resource, **attrs}, ("deployment.environment.name", "deployment.environment")
    )
    if isinstance(environment, str):
        extra["environment"] = environment
    user = first_present(attrs, ("user.id", "enduser.id"))
    if isinstance(user, str):
        extra["user_id"] = user
    extra.update(_span_ownership(attrs))

    return build_event(
        format_name="otel_genai",
        provider=provider,
        model=first_present(attrs, MODEL_KEYS),
        request_id=request_id,
        timestamp=timestamp,
        input_tokens=inp,
        cached_tokens=cached,
        cache_write_tokens=written,
        output_tokens=out,
        reasoning_tokens=reasoning,
        service_tier=first_present(attrs, SERVICE_TIER_KEYS),
        extra=extra,
        ownership=ownership,
    )


def _span_time(value: Any, field: str) -> datetime:
    """Epoch nanoseconds (OTLP: an integer or its decimal string), or ISO 8601 text,
    which some span exporters write ("2025-06-01T10:00:00.123456Z")."""
    if isinstance(value, str) and not value.isdigit():
        return moment(value, field)
    return epoch_nanos(value, field)


def _span_ownership(attrs: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in attrs.items():
        if not key.startswith(OWNERSHIP_PREFIX):
            continue
        field = key.removeprefix(OWNERSHIP_PREFIX)
        if field in OWNERSHIP_FIELDS and field != "tags":
            found[field] = value
    return found


def _hex_id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return format(value, "x")
    if isinstance(value, str) and value:
        return value.lower()
    return None


def _attributes(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, list):
        # OTLP/JSON: [{"key": ..., "value": {"<type>Value": ...}}, ...]
        out: dict[str, Any] = {}
        for item in raw:
            if isinstance(item, Mapping) and isinstance(item.get("key"), str):
                out[item["key"]] = _any_value(item.get("value"))
        return out
    raise NormalizationError("span attributes must be an object or an OTLP attribute list")


def _resource_attributes(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping) and "attributes" in raw:
        return _attributes(raw["attributes"])
    return _attributes(raw)


def _any_value(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    if "intValue" in value:
        raw = value["intValue"]
        # OTLP/JSON encodes int64 as a decimal string.
        if isinstance(raw, str):
            try:
                return int(raw)
            except ValueError as exc:
                raise NormalizationError(f"bad OTLP intValue {raw!r}") from exc
        return raw
    for key in ("stringValue", "doubleValue", "boolValue", "bytesValue"):
        if key in value:
            return value[key]
    if "arrayValue" in value:
        return [_any_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return _attributes((value["kvlistValue"] or {}).get("values", []))
    return None
