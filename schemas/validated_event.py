"""A validated usage event as a compiled struct: `UsageEvent`'s fields, names, order and
defaults, without a pydantic model per event. The worker's batch decoder
(streams/ingest/batch_validation.py) produces it and the pricing reads it; it lives
beside the contract so that both may import it (tests/ingest/test_batch_validation.py
checks it mirrors the model)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec

from schemas.usage_event import UsageEvent

__all__ = ["ValidatedEvent"]


class ValidatedEvent(msgspec.Struct, frozen=True, gc=False):
    """A `UsageEvent`'s fields, as the model would hold them (same names, order and
    defaults: tests/ingest/test_batch_validation.py), without a model per event."""

    request_id: str
    timestamp: datetime
    tenant_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    service_tier: str = ""
    batch: bool = False
    team_id: str = ""
    user_id: str = ""
    feature_name: str = ""
    workflow_id: str = ""
    workflow_run_id: str = ""
    workflow_name: str = ""
    prompt_template_version: str = ""
    environment: str = ""
    api_key_id: str = ""
    request_count: int = 1
    latency_ms: int | None = None
    status_code: int | None = None
    retry_count: int = 0
    retry_of: str = ""
    reported_cost_usd: Decimal | None = None
    tags: dict[str, str] = {}

    @classmethod
    def of(cls, event: UsageEvent) -> ValidatedEvent:
        return cls(**event.__dict__)
