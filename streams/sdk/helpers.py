"""One-line recording of a provider response object.

    response = client.chat.completions.create(...)
    record_openai(response, tenant_id="acme", team_id="search", workflow_id="rerank")

The helpers take the SDK's response object (anything with `model_dump()` or
`to_dict()`) or the plain dict, normalize it (`schemas.normalizers`), and
queue the event on `producer=` or on the default producer set with
`set_default_producer`. Like `record()`, they never raise: a body that cannot
be normalized, a misspelt field or a missing producer is logged and they
return None; on success they return the event dict that was queued.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, TypedDict, Unpack

from schemas.normalizers import normalize
from schemas.usage_event import UsageEvent

log = logging.getLogger("spendstream.sdk")


class EventSink(Protocol):
    def record(self, event: UsageEvent | Mapping[str, Any]) -> bool: ...


class Ownership(TypedDict, total=False):
    """The fields a caller stamps on an event (all optional here; the
    contract requires `tenant_id`)."""

    tenant_id: str
    team_id: str
    user_id: str
    feature_name: str
    workflow_id: str
    workflow_run_id: str
    workflow_name: str
    prompt_template_version: str
    environment: str
    api_key_id: str
    request_id: str
    timestamp: Any
    provider: str
    model: str
    latency_ms: int
    status_code: int
    retry_count: int
    retry_of: str
    request_count: int
    tags: dict[str, str]


_default_producer: EventSink | None = None


def set_default_producer(producer: EventSink | None) -> None:
    """The producer the helpers use when no `producer=` is given."""
    global _default_producer
    _default_producer = producer


def response_body(response: Any) -> Mapping[str, Any]:
    """The JSON-like dict of an SDK response object (or the dict itself)."""
    if isinstance(response, Mapping):
        return response
    for method in ("model_dump", "to_dict"):
        dump = getattr(response, method, None)
        if callable(dump):
            body = dump()
            if isinstance(body, Mapping):
                return body
    raise TypeError(f"cannot read a response body from {type(response).__name__}")


def record_response(
    format: str,
    response: Any,
    *,
    producer: EventSink | None = None,
    **ownership: Unpack[Ownership],
) -> dict[str, Any] | None:
    """Normalize `response` as `format` and queue it; see the module doc."""
    sink = producer if producer is not None else _default_producer
    try:
        if sink is None:
            raise RuntimeError("no producer: pass producer= or call set_default_producer()")
        event = normalize(format, response_body(response), **ownership)
        return event if sink.record(event) else None
    except Exception as exc:
        log.error("spendstream: %s usage not recorded: %s", format, exc)
        return None


def record_openai(
    response: Any, *, producer: EventSink | None = None, **ownership: Unpack[Ownership]
) -> dict[str, Any] | None:
    """A Chat Completion or a Responses API response (or its last stream chunk)."""
    return record_response("openai", response, producer=producer, **ownership)


def record_anthropic(
    response: Any, *, producer: EventSink | None = None, **ownership: Unpack[Ownership]
) -> dict[str, Any] | None:
    """An Anthropic `Message` (e.g. `stream.get_final_message()` when streaming)."""
    return record_response("anthropic", response, producer=producer, **ownership)


def record_gemini(
    response: Any, *, producer: EventSink | None = None, **ownership: Unpack[Ownership]
) -> dict[str, Any] | None:
    """A google-genai `GenerateContentResponse` (or the last stream chunk)."""
    return record_response("gemini", response, producer=producer, **ownership)
