"""What a stored payload (a dead letter's `raw_payload`) may keep: at most 64 KiB, and
never prompt or completion text, under any of the names instrumentations use."""

from __future__ import annotations

from typing import Any

import orjson

from schemas.usage_event import DROPPED_TEXT_FIELDS

RAW_PAYLOAD_LIMIT = 64 * 1024


def truncate_payload(raw: bytes | str) -> str:
    """What a dead letter keeps of a payload: at most 64 KiB, never prompt or completion
    text (the fields `UsageEvent` drops are removed here too)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="replace")
    raw = _without_text_fields(raw)
    return raw[:RAW_PAYLOAD_LIMIT].decode("utf-8", errors="replace")[:RAW_PAYLOAD_LIMIT]


# Span attributes that carry prompt or completion text (OpenTelemetry GenAI, old and
# new names; OpenLLMetry's indexed `gen_ai.prompt.0.content`; OpenInference).
TEXT_ATTRIBUTES = frozenset(
    {
        "gen_ai.prompt",
        "gen_ai.completion",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.tool.definitions",
        "llm.prompts",
        "llm.completions",
        "llm.input_messages",
        "llm.output_messages",
        "input.value",
        "output.value",
    }
)
_TEXT_PREFIXES = tuple(f"{name}." for name in TEXT_ATTRIBUTES)
_TEXT_MARKERS = (
    *(f'"{name}"'.encode() for name in DROPPED_TEXT_FIELDS),
    *(name.encode() for name in TEXT_ATTRIBUTES),
)


def is_text_key(key: str) -> bool:
    return key in DROPPED_TEXT_FIELDS or key in TEXT_ATTRIBUTES or key.startswith(_TEXT_PREFIXES)


def _without_text_fields(raw: bytes) -> bytes:
    if not any(marker in raw for marker in _TEXT_MARKERS):
        return raw
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Not JSON (or protobuf): where the text starts and ends is unknown, so keep
        # nothing after the first field that may hold it.
        cut = min(raw.find(marker) for marker in _TEXT_MARKERS if marker in raw)
        return raw[:cut] + b"...(cut: a text field follows)"
    return orjson.dumps(_drop_text(document))


def _drop_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_text(v) for k, v in value.items() if not is_text_key(k)}
    if isinstance(value, list):
        # OTLP JSON writes attributes as [{"key": "gen_ai.prompt", "value": {...}}].
        return [
            _drop_text(v)
            for v in value
            if not (isinstance(v, dict) and isinstance(v.get("key"), str) and is_text_key(v["key"]))
        ]
    return value
