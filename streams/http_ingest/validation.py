"""Items of one request → canonical events to publish and rejections to
dead-letter, by the rules of the Kafka path.

Each item goes through, in order: the provider normalizer when the request
names a `format`; the request's fields (query parameters) set on top; the
ingest key's ownership (`ownership.apply_scope`); and last
`streams.ingest.decoding.validate_elements`, the validation the worker applies to
Kafka messages, so an event accepted here is never dead-lettered there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson

from schemas.normalizers import normalize
from streams.http_ingest.keys import KeyScope
from streams.http_ingest.ownership import OwnershipMismatch, apply_scope
from streams.ingest.decoding import Rejection, truncate_payload, validate_elements

NORMALIZATION_FAILED = "normalization_failed"


@dataclass(frozen=True)
class Outcome:
    events: list[dict[str, Any]]
    """Validated canonical events as JSON-ready dicts."""
    rejections: list[Rejection]
    """One per refused item; `element_index` is the item's index in the request."""


def _raw(item: Any) -> bytes:
    return orjson.dumps(item, default=str)


def validate_items(
    items: Sequence[Any],
    *,
    now: datetime,
    format: str | None = None,
    fields: Mapping[str, str] | None = None,
    scope: KeyScope | None = None,
) -> Outcome:
    events: list[dict[str, Any]] = []
    rejections: list[Rejection] = []
    fields = dict(fields or {})

    def reject(index: int, item: Any, reason: str, message: str) -> None:
        claimed = item.get("tenant_id") if isinstance(item, dict) else None
        request_id = item.get("request_id") if isinstance(item, dict) else None
        rejections.append(
            Rejection(
                reason,
                message,
                truncate_payload(_raw(item)),
                index,
                request_id[:256] if isinstance(request_id, str) else "",
                # The key's tenant is who sent it; a claimed one may be forged.
                scope.tenant_id if scope else (claimed if isinstance(claimed, str) else ""),
            )
        )

    for index, item in enumerate(items):
        if isinstance(item, Rejection):
            tenant = scope.tenant_id if scope else item.tenant_id
            rejections.append(replace(item, element_index=index, tenant_id=tenant))
            continue
        if not isinstance(item, dict):
            reject(index, item, "not_an_object", f"item {index} is {type(item).__name__}")
            continue
        try:
            element = normalize(format, item, **fields) if format else {**item, **fields}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # NormalizationError is a ValueError; the others mean a body shaped
            # unlike anything the normalizer knows, which is still bad input.
            reject(index, item, NORMALIZATION_FAILED, f"{format}: {exc}")
            continue
        if scope is not None:
            try:
                element = apply_scope(element, scope)
            except OwnershipMismatch as exc:
                reject(index, item, exc.reason, str(exc))
                continue
        decoded = validate_elements([element], now, _raw(item))
        for event in decoded.events:
            events.append(event.model_dump(mode="json", exclude_defaults=True))
        for rejection in decoded.rejections:
            tenant = scope.tenant_id if scope else rejection.tenant_id
            rejections.append(replace(rejection, element_index=index, tenant_id=tenant))
    return Outcome(events, rejections)
