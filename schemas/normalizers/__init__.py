"""Normalizers: provider and tracing bodies -> the canonical usage event.

Each maps one body, plus the ownership fields the caller passes (tenant_id,
team_id, user_id, workflow_id, workflow_run_id, feature_name, environment,
request_id, timestamp, model, provider, tags, ...), to a dict that
`UsageEvent.model_validate` accepts. Token counts come only from the body and
follow the canonical semantics (input includes cache reads and writes, output
includes reasoning); fields the caller passes win over values read from the
body, and `None` values are ignored. No prompt or completion text is copied.

>>> event = normalize("anthropic", {"id": "msg_1", "model": "claude-sonnet-4-5",
...     "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 5}},
...     tenant_id="acme")
>>> event["input_tokens"], event["cached_tokens"], event["tenant_id"]
(100, 90, 'acme')

A body that cannot be normalized raises `NormalizationError` (a ValueError);
a misspelt ownership field raises TypeError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from schemas.normalizers._common import OWNERSHIP_FIELDS, NormalizationError
from schemas.normalizers.anthropic import normalize_anthropic
from schemas.normalizers.bedrock import normalize_bedrock
from schemas.normalizers.gemini import normalize_gemini
from schemas.normalizers.litellm import normalize_litellm
from schemas.normalizers.openai import (
    normalize_openai,
    normalize_openai_chat,
    normalize_openai_responses,
)
from schemas.normalizers.otel_genai import is_model_call_span, normalize_otel_genai

Normalizer = Callable[..., dict[str, Any]]

NORMALIZERS: dict[str, Normalizer] = {
    "openai": normalize_openai,
    "openai_chat": normalize_openai_chat,
    "openai_responses": normalize_openai_responses,
    "anthropic": normalize_anthropic,
    "gemini": normalize_gemini,
    "bedrock": normalize_bedrock,
    "otel_genai": normalize_otel_genai,
    "litellm": normalize_litellm,
}

# The names HTTP ingest (`?format=`) and `replay --format` accept.
FORMATS: tuple[str, ...] = tuple(NORMALIZERS)


def normalize(format: str, body: Mapping[str, Any], **ownership: Any) -> dict[str, Any]:
    """Map one `format` body to a canonical event dict (see module doc)."""
    try:
        normalizer = NORMALIZERS[format]
    except (KeyError, TypeError):
        raise NormalizationError(
            f"unknown format {format!r}; expected one of: {', '.join(FORMATS)}"
        ) from None
    return normalizer(body, **ownership)


__all__ = [
    "FORMATS",
    "NORMALIZERS",
    "OWNERSHIP_FIELDS",
    "NormalizationError",
    "is_model_call_span",
    "normalize",
    "normalize_anthropic",
    "normalize_bedrock",
    "normalize_gemini",
    "normalize_litellm",
    "normalize_openai",
    "normalize_openai_chat",
    "normalize_openai_responses",
    "normalize_otel_genai",
]
