-- Spend and traffic per tenant and team per UTC day.
-- Exact under re-delivery: see 022_ledger_day_check.sql and docs/analyst.md.

CREATE TABLE IF NOT EXISTS team_daily_state
(
    day Date,
    tenant_id LowCardinality(String),
    team_id LowCardinality(String),
    requests SimpleAggregateFunction(sum, UInt64),
    successful_requests SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    retries SimpleAggregateFunction(sum, UInt64),
    input_tokens SimpleAggregateFunction(sum, UInt64),
    output_tokens SimpleAggregateFunction(sum, UInt64),
    cached_tokens SimpleAggregateFunction(sum, UInt64),
    cache_write_tokens SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens SimpleAggregateFunction(sum, UInt64),
    cost_usd SimpleAggregateFunction(sum, Decimal(38, 18)),
    latency_ms_quantiles AggregateFunction(quantiles(0.5, 0.9, 0.99), UInt32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, tenant_id, team_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS team_daily_mv TO team_daily_state AS
SELECT
    day,
    tenant_id,
    team_id,
    sum(requests) AS requests,
    sum(successful_requests) AS successful_requests,
    sum(errors) AS errors,
    sum(retries) AS retries,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_usd) AS cost_usd,
    quantilesStateIf(0.5, 0.9, 0.99)(assumeNotNull(latency_ms), isNotNull(latency_ms)) AS latency_ms_quantiles
FROM ledger_facts
GROUP BY day, tenant_id, team_id;

-- The same rollup from the deduplicated ledger: backfill and dirty-day source.
CREATE VIEW IF NOT EXISTS team_daily_recompute AS
SELECT
    day,
    tenant_id,
    team_id,
    sum(requests) AS requests,
    sum(successful_requests) AS successful_requests,
    sum(errors) AS errors,
    sum(retries) AS retries,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_usd) AS cost_usd,
    quantilesStateIf(0.5, 0.9, 0.99)(assumeNotNull(latency_ms), isNotNull(latency_ms)) AS latency_ms_quantiles
FROM ledger_facts_final
GROUP BY day, tenant_id, team_id;

INSERT INTO team_daily_state
SELECT * FROM team_daily_recompute
WHERE (SELECT count() FROM team_daily_state) = 0;

-- Clean days from the rollup, dirty days recomputed from the deduplicated ledger.
-- The IN set is built before reading and used for index analysis: with no
-- dirty day the recompute branch reads nothing from the ledger.
-- Re-pricing deltas are added so every total is the corrected one.
CREATE VIEW IF NOT EXISTS team_daily AS
WITH quantilesMerge(0.5, 0.9, 0.99)(latency_ms_quantiles) AS q
SELECT
    day,
    tenant_id,
    team_id,
    sum(requests) AS requests,
    sum(successful_requests) AS successful_requests,
    sum(errors) AS errors,
    sum(retries) AS retries,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_usd) AS cost_usd,
    if(isNaN(q[1]), NULL, q[1]) AS latency_p50_ms,
    if(isNaN(q[2]), NULL, q[2]) AS latency_p90_ms,
    if(isNaN(q[3]), NULL, q[3]) AS latency_p99_ms
FROM
(
    SELECT
        day, tenant_id, team_id, requests, successful_requests, errors, retries, input_tokens,
        output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_usd,
        latency_ms_quantiles
    FROM team_daily_state
    WHERE day NOT IN (SELECT day FROM ledger_dirty_days)
    UNION ALL
    SELECT
        day, tenant_id, team_id, requests, successful_requests, errors, retries, input_tokens,
        output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_usd,
        latency_ms_quantiles
    FROM team_daily_recompute
    WHERE day IN (SELECT day FROM ledger_dirty_days)
    UNION ALL
    SELECT
        toDate(timestamp) AS day,
        tenant_id,
        team_id,
        toUInt64(0) AS requests,
        toUInt64(0) AS successful_requests,
        toUInt64(0) AS errors,
        toUInt64(0) AS retries,
        toUInt64(0) AS input_tokens,
        toUInt64(0) AS output_tokens,
        toUInt64(0) AS cached_tokens,
        toUInt64(0) AS cache_write_tokens,
        toUInt64(0) AS reasoning_tokens,
        sum(delta_cost_usd) AS cost_usd,
        quantilesStateIf(0.5, 0.9, 0.99)(toUInt32(0), 0) AS latency_ms_quantiles
    FROM cost_corrections FINAL
    GROUP BY day, tenant_id, team_id
)
GROUP BY day, tenant_id, team_id;
