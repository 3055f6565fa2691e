"""Re-pricing: recompute ledger costs under the current price catalog and record the
differences as correction rows (table `cost_corrections`), never rewriting the ledger.

A request's effective cost is its ledger cost plus the deltas of its earlier
corrections. A correction is written only where the catalog's cost differs from
the effective cost, so re-running with unchanged prices writes nothing. Unpriced
rows (cost 0, `cost_status = 'unpriced'`) get a correction as soon as their model
has a price; rows whose model has no price now are left as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.ledger import CORRECTION_COLUMNS
from streams.analyst.money import ZERO
from streams.analyst.periods import Period
from streams.cost.catalog import CostBreakdown, PriceCatalog, PriceContext
from streams.ledger.remote import Reader

COMPONENTS = ("input", "cached_input", "cache_write", "output", "reasoning")
INSERT_BATCH = 10_000

# Ledger rows of one day with their effective cost. The corrections are summed per
# request first; a LEFT JOIN without a match yields zero deltas and empty strings.
_EFFECTIVE_ROWS = """
SELECT
    l.request_id, l.timestamp, l.tenant_id, l.team_id, l.user_id, l.feature_name,
    l.workflow_id, l.workflow_run_id, l.workflow_name, l.environment, l.provider, l.model,
    l.request_count, l.input_tokens, l.output_tokens, l.cached_tokens, l.cache_write_tokens,
    l.reasoning_tokens,
    l.cost_input_usd + c.d_input,
    l.cost_cached_input_usd + c.d_cached_input,
    l.cost_cache_write_usd + c.d_cache_write,
    l.cost_output_usd + c.d_output,
    l.cost_reasoning_usd + c.d_reasoning,
    if(c.request_id = '', l.price_source, c.price_source),
    if(c.request_id = '', l.cost_status, c.cost_status),
    l.cache_write_1h_tokens, l.service_tier, l.batch
FROM
(
    SELECT * FROM usage_ledger FINAL
    WHERE timestamp >= {start:DateTime64(3, 'UTC')} AND timestamp < {end:DateTime64(3, 'UTC')}
) AS l
LEFT JOIN
(
    SELECT
        request_id,
        sum(delta_cost_input_usd) AS d_input,
        sum(delta_cost_cached_input_usd) AS d_cached_input,
        sum(delta_cost_cache_write_usd) AS d_cache_write,
        sum(delta_cost_output_usd) AS d_output,
        sum(delta_cost_reasoning_usd) AS d_reasoning,
        argMax(new_price_source, corrected_at) AS price_source,
        argMax(new_cost_status, corrected_at) AS cost_status
    FROM cost_corrections FINAL
    WHERE timestamp >= {start:DateTime64(3, 'UTC')} AND timestamp < {end:DateTime64(3, 'UTC')}
    GROUP BY request_id
) AS c ON l.request_id = c.request_id
SETTINGS join_use_nulls = 0
"""


@dataclass
class RepriceResult:
    period: Period
    rows_checked: int = 0
    corrections: int = 0
    newly_priced: int = 0
    still_unpriced: int = 0
    delta_usd: Decimal = ZERO
    by_model: dict[tuple[str, str], Decimal] = field(default_factory=dict)


def reprice(
    client: Client,
    catalog: PriceCatalog,
    period: Period,
    *,
    reason: str = "reprice",
    now: datetime | None = None,
) -> RepriceResult:
    """Write corrections for every request of `period` whose cost differs under `catalog`."""
    corrected_at = now or datetime.now(UTC)
    result = RepriceResult(period)
    batch: list[list[Any]] = []
    for day in period.days:
        for row in effective_rows(client, day):
            result.rows_checked += 1
            correction = _correction(catalog, row, reason, corrected_at, result)
            if correction is None:
                continue
            batch.append(correction)
            if len(batch) >= INSERT_BATCH:
                _insert(client, batch)
                batch = []
    if batch:
        _insert(client, batch)
    return result


def effective_rows(client: Client | Reader, day: date) -> Iterator[Sequence[Any]]:
    start = datetime.combine(day, datetime.min.time(), UTC)
    yield from client.query(
        _EFFECTIVE_ROWS, parameters={"start": start, "end": start + timedelta(days=1)}
    ).result_rows


DIMENSIONS = CORRECTION_COLUMNS[3:13]  # tenant_id … model, in the ledger's order


def _correction(
    catalog: PriceCatalog,
    row: Sequence[Any],
    reason: str,
    corrected_at: datetime,
    result: RepriceResult,
) -> list[Any] | None:
    request_id, timestamp = row[0], row[1]
    dims = dict(zip(DIMENSIONS, row[2:12], strict=True))
    request_count = row[12]
    input_tokens, output_tokens, cached, cache_write, reasoning = row[13:18]
    old = CostBreakdown(*row[18:23])
    old_source, old_status = row[23], row[24]
    cache_write_1h, service_tier, batch = row[25:28]
    at = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    context = PriceContext.of(service_tier, bool(batch))
    prices = catalog.resolve(dims["provider"], dims["model"], at, context)
    if prices is None:
        if old_status != "priced":
            result.still_unpriced += 1
        return None
    new = prices.cost(input_tokens, cached, cache_write, output_tokens, reasoning, cache_write_1h)
    if new == old:
        return None
    delta = new.total - old.total
    result.corrections += 1
    result.delta_usd += delta
    model_key = (dims["provider"], dims["model"])
    result.by_model[model_key] = result.by_model.get(model_key, ZERO) + delta
    if old_status != "priced":
        result.newly_priced += 1
    new_parts = [getattr(new, c) for c in COMPONENTS]
    old_parts = [getattr(old, c) for c in COMPONENTS]
    # Derived from what changed, so a retried insert of the same correction has
    # the same id and collapses under FINAL.
    identity = f"{request_id}|{old.total}|{new_parts}|{prices.source}"
    unit = prices.for_input(input_tokens)  # the tier that applied to this request
    return [
        hashlib.sha256(identity.encode()).hexdigest()[:32],
        request_id,
        at,
        *dims.values(),
        request_count,
        input_tokens,
        output_tokens,
        cached,
        cache_write,
        reasoning,
        *old_parts,
        old.total,
        *new_parts,
        new.total,
        *(n - o for n, o in zip(new_parts, old_parts, strict=True)),
        delta,
        *(getattr(unit, c) for c in COMPONENTS),
        old_source,
        prices.source,
        old_status,
        "priced",
        reason,
        corrected_at,
    ]


def _insert(client: Client, batch: list[list[Any]]) -> None:
    client.insert("cost_corrections", batch, column_names=list(CORRECTION_COLUMNS))
