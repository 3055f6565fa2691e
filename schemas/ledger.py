"""Rows of the ClickHouse cost ledger, the dead-letter table and the re-pricing
corrections.

These models are the column specification: `sql/001_usage_ledger.sql` (with
the columns later migrations add at its end, `sql/041_price_context.sql` and
`sql/042_estimates.sql`), `sql/002_dead_letters.sql` and
`sql/020_cost_corrections.sql` declare the same columns in the same order (a test
checks it), and the writers insert column lists in `LEDGER_COLUMNS`,
`DEAD_LETTER_COLUMNS` and `CORRECTION_COLUMNS` order.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# estimated: no price for the model; `estimated_cost_usd` holds an estimate from
# its closest priced relative (docs/pricing.md) and `cost_usd` stays 0.
CostStatus = Literal["priced", "unpriced", "estimated"]


class LedgerRow(BaseModel):
    """One priced model call. `usage_ledger FINAL` holds one per request_id."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    timestamp: datetime
    tenant_id: str
    team_id: str = ""
    user_id: str = ""
    feature_name: str = ""
    workflow_id: str = ""
    workflow_run_id: str = ""
    workflow_name: str = ""
    prompt_template_version: str = ""
    environment: str = ""
    api_key_id: str = ""
    provider: str
    model: str
    input_tokens: int
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    request_count: int = 1
    latency_ms: int | None = None
    status_code: int | None = None
    retry_count: int = 0
    retry_of: str = ""
    reported_cost_usd: Decimal | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    cost_input_usd: Decimal = Decimal(0)
    cost_cached_input_usd: Decimal = Decimal(0)
    cost_cache_write_usd: Decimal = Decimal(0)
    cost_output_usd: Decimal = Decimal(0)
    cost_reasoning_usd: Decimal = Decimal(0)
    cost_usd: Decimal = Decimal(0)
    price_input_per_mtok: Decimal = Decimal(0)
    price_cached_input_per_mtok: Decimal = Decimal(0)
    price_cache_write_per_mtok: Decimal = Decimal(0)
    price_output_per_mtok: Decimal = Decimal(0)
    price_reasoning_per_mtok: Decimal = Decimal(0)
    price_source: str = ""
    cost_status: CostStatus = "unpriced"
    source_topic: str = ""
    source_partition: int = -1
    source_offset: int = -1
    ingested_at: datetime
    cache_write_1h_tokens: int = 0
    service_tier: str = ""
    batch: bool = False
    price_cache_write_1h_per_mtok: Decimal = Decimal(0)
    estimated_cost_usd: Decimal = Decimal(0)
    estimate_source: str = ""


class DeadLetterRow(BaseModel):
    """One rejected message, or one rejected element of a JSON array message."""

    model_config = ConfigDict(frozen=True)

    log_epoch: str
    topic: str
    partition: int
    offset: int
    element_index: int = -1  # -1: the whole message was rejected
    reason: str
    message: str
    raw_payload: str
    payload_bytes: int
    request_id: str = ""
    tenant_id: str = ""
    received_at: datetime


class CostCorrectionRow(BaseModel):
    """One re-pricing of one request: its cost before and after, per component, and
    the delta the views add to the ledger's cost."""

    model_config = ConfigDict(frozen=True)

    correction_id: str
    request_id: str
    timestamp: datetime
    tenant_id: str
    team_id: str
    user_id: str
    feature_name: str
    workflow_id: str
    workflow_run_id: str
    workflow_name: str
    environment: str
    provider: str
    model: str
    request_count: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    old_cost_input_usd: Decimal
    old_cost_cached_input_usd: Decimal
    old_cost_cache_write_usd: Decimal
    old_cost_output_usd: Decimal
    old_cost_reasoning_usd: Decimal
    old_cost_usd: Decimal
    new_cost_input_usd: Decimal
    new_cost_cached_input_usd: Decimal
    new_cost_cache_write_usd: Decimal
    new_cost_output_usd: Decimal
    new_cost_reasoning_usd: Decimal
    new_cost_usd: Decimal
    delta_cost_input_usd: Decimal
    delta_cost_cached_input_usd: Decimal
    delta_cost_cache_write_usd: Decimal
    delta_cost_output_usd: Decimal
    delta_cost_reasoning_usd: Decimal
    delta_cost_usd: Decimal
    new_price_input_per_mtok: Decimal
    new_price_cached_input_per_mtok: Decimal
    new_price_cache_write_per_mtok: Decimal
    new_price_output_per_mtok: Decimal
    new_price_reasoning_per_mtok: Decimal
    old_price_source: str
    new_price_source: str
    old_cost_status: CostStatus
    new_cost_status: CostStatus
    reason: str
    corrected_at: datetime


LEDGER_COLUMNS: tuple[str, ...] = tuple(LedgerRow.model_fields)
DEAD_LETTER_COLUMNS: tuple[str, ...] = tuple(DeadLetterRow.model_fields)
CORRECTION_COLUMNS: tuple[str, ...] = tuple(CostCorrectionRow.model_fields)
