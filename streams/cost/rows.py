"""Turn validated events into ledger rows: the cost engine applied in the hot path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from schemas.usage_event import UsageEvent
from schemas.validated_event import ValidatedEvent
from streams.cost.catalog import (
    STANDARD,
    ZERO_COST,
    CostBreakdown,
    PriceCatalog,
    PriceContext,
    UnitPrices,
)

# A usage event as the model validated it, or as the worker's compiled validator did.
Event = UsageEvent | ValidatedEvent

_EVENT_FIELDS = (
    "request_id",
    "timestamp",
    "tenant_id",
    "team_id",
    "user_id",
    "feature_name",
    "workflow_id",
    "workflow_run_id",
    "workflow_name",
    "prompt_template_version",
    "environment",
    "api_key_id",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cache_write_1h_tokens",
    "service_tier",
    "batch",
    "request_count",
    "latency_ms",
    "status_code",
    "retry_count",
    "retry_of",
    "reported_cost_usd",
    "tags",
)


@dataclass(frozen=True)
class SourcePosition:
    topic: str
    partition: int
    offset: int
    index: int = 0  # the event's place in its message (a JSON array holds many)


def _cost(event: Event, prices: UnitPrices) -> CostBreakdown:
    return prices.cost(
        event.input_tokens,
        event.cached_tokens,
        event.cache_write_tokens,
        event.output_tokens,
        event.reasoning_tokens,
        event.cache_write_1h_tokens,
    )


def ledger_row(
    event: Event,
    prices: UnitPrices | None,
    position: SourcePosition,
    ingested_at: datetime,
    estimate: UnitPrices | None = None,
) -> dict[str, Any]:
    """One `usage_ledger` row as a dict keyed by `LEDGER_COLUMNS` (Decimals kept exact).

    Without `prices`, the cost is 0 and the call is 'unpriced', or 'estimated' when
    `estimate` (a relative's prices) gives `estimated_cost_usd`, kept apart from
    `cost_usd`."""
    estimated, estimate_source = ZERO_COST.input, ""
    if prices is None:
        cost, unit, source, status = ZERO_COST, None, "", "unpriced"
        if estimate is not None:
            estimated, estimate_source, status = (
                _cost(event, estimate).total,
                estimate.source,
                "estimated",
            )
    else:
        cost = _cost(event, prices)
        unit, source, status = prices.for_input(event.input_tokens), prices.source, "priced"
    row = _event_columns(event)
    row.update(_price_columns(unit, source, status, position.topic, ingested_at, estimate_source))
    row.update(_cost_columns(cost, position, estimated))
    return row


def _event_columns(event: Event) -> dict[str, Any]:
    if isinstance(event, ValidatedEvent):
        return msgspec.structs.asdict(event)
    # A validated model's __dict__ holds exactly its fields (extra="ignore"): one C-level copy.
    return dict(event.__dict__)


def _price_columns(
    unit: UnitPrices | None,
    source: str,
    status: str,
    topic: str,
    ingested_at: datetime,
    estimate_source: str,
) -> dict[str, Any]:
    """The columns every call priced (or left unpriced) by the same prices shares."""
    return {
        "price_input_per_mtok": unit.input if unit else ZERO_COST.input,
        "price_cached_input_per_mtok": unit.cached_input if unit else ZERO_COST.input,
        "price_cache_write_per_mtok": unit.cache_write if unit else ZERO_COST.input,
        "price_output_per_mtok": unit.output if unit else ZERO_COST.input,
        "price_reasoning_per_mtok": unit.reasoning if unit else ZERO_COST.input,
        "price_cache_write_1h_per_mtok": unit.cache_write_1h_price if unit else ZERO_COST.input,
        "price_source": source,
        "cost_status": status,
        "source_topic": topic,
        "ingested_at": ingested_at,
        "estimate_source": estimate_source,
    }


def _cost_columns(
    cost: CostBreakdown, position: SourcePosition, estimated: Decimal
) -> dict[str, Any]:
    return {
        "cost_input_usd": cost.input,
        "cost_cached_input_usd": cost.cached_input,
        "cost_cache_write_usd": cost.cache_write,
        "cost_output_usd": cost.output,
        "cost_reasoning_usd": cost.reasoning,
        "cost_usd": cost.total,
        "source_partition": position.partition,
        "source_offset": position.offset,
        "estimated_cost_usd": estimated,
    }


def _context(event: Event) -> PriceContext:
    return (
        PriceContext.of(event.service_tier, event.batch)
        if event.service_tier or event.batch
        else STANDARD
    )


def price_event(
    catalog: PriceCatalog, event: Event, position: SourcePosition, ingested_at: datetime
) -> dict[str, Any]:
    context = _context(event)
    prices = catalog.resolve(event.provider, event.model, event.timestamp, context)
    if prices is not None:
        return ledger_row(event, prices, position, ingested_at)
    estimate = catalog.estimate(event.provider, event.model, event.timestamp, context)
    return ledger_row(event, None, position, ingested_at, estimate)


def price_events(
    catalog: PriceCatalog,
    events: Sequence[Event],
    positions: Sequence[SourcePosition],
    ingested_at: datetime,
) -> list[dict[str, Any]]:
    """`price_event` for each of a batch's events (the same rows), resolving each
    distinct (provider, model, price context, UTC minute) once per batch: no price in
    the catalog, the overrides or the estimates changes within a minute (the finest
    period `CatalogPrices` resolves by). The shared price columns are built once per
    resolution; a call whose prices have input tiers, or that is not priced, takes
    `price_event`'s own path."""
    resolved: dict[tuple[Any, ...], UnitPrices | None] = {}
    shared: dict[tuple[int, str], dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for event, position in zip(events, positions, strict=True):
        at = event.timestamp
        # The minute of `at` (with its time zone: UTC from either validator).
        key = (
            event.provider,
            event.model,
            event.service_tier,
            event.batch,
            at.date(),
            at.hour,
            at.minute,
            at.tzinfo,
        )
        if key in resolved:
            prices = resolved[key]
        else:
            prices = resolved[key] = catalog.resolve(
                event.provider, event.model, at, _context(event)
            )
        if prices is None or prices.tiers:
            rows.append(price_event(catalog, event, position, ingested_at))
            continue
        columns = shared.get((id(prices), position.topic))
        if columns is None:
            columns = shared[(id(prices), position.topic)] = _price_columns(
                prices, prices.source, "priced", position.topic, ingested_at, ""
            )
        row = _event_columns(event)
        row.update(columns)
        row.update(_cost_columns(_cost(event, prices), position, ZERO_COST.input))
        rows.append(row)
    return rows


# What the spend agent needs of a ledger row; the costed topic carries only these.
COSTED_FIELDS = (
    "request_id",
    "timestamp",
    "tenant_id",
    "team_id",
    "user_id",
    "feature_name",
    "workflow_id",
    "workflow_run_id",
    "environment",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "request_count",
    "latency_ms",
    "status_code",
    "retry_count",
    "retry_of",
    "cost_usd",
    "cost_status",
    "estimated_cost_usd",
    "source_partition",
    "source_offset",
    # When the row was priced: a spend table rebuilt from the ledger holds the rows
    # ingested before its `since` (streams/spend/coverage.py), and skips their events.
    "ingested_at",
)


def costed_event(row: dict[str, Any], source_index: int, source_log: str = "") -> dict[str, Any]:
    """A ledger row as the costed topic carries it, with the event's place in its
    source message and the log it was read from (the cluster id of the usage topic's
    broker): the spend tables' re-delivery check needs all three, because a new log
    behind the same address (an in-memory broker restarted) starts its offsets at 0."""
    event = {name: row[name] for name in COSTED_FIELDS}
    event["source_index"] = source_index
    event["source_log"] = source_log
    return event
