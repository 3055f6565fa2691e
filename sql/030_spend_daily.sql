-- Spend per day and every attribution dimension, with the cost split by token class:
-- the base of chargeback and of the FOCUS export (spend_daily_uncorrected holds
-- usage only; FOCUS lists the corrections as their own rows).
-- Exact under re-delivery: see 022_ledger_day_check.sql and docs/analyst.md.

CREATE TABLE IF NOT EXISTS spend_daily_state
(
    day Date,
    tenant_id LowCardinality(String),
    team_id LowCardinality(String),
    feature_name LowCardinality(String),
    environment LowCardinality(String),
    workflow_id LowCardinality(String),
    workflow_name LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    requests SimpleAggregateFunction(sum, UInt64),
    successful_requests SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    retries SimpleAggregateFunction(sum, UInt64),
    input_tokens SimpleAggregateFunction(sum, UInt64),
    output_tokens SimpleAggregateFunction(sum, UInt64),
    cached_tokens SimpleAggregateFunction(sum, UInt64),
    cache_write_tokens SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens SimpleAggregateFunction(sum, UInt64),
    cost_input_usd SimpleAggregateFunction(sum, Decimal(38, 18)),
    cost_cached_input_usd SimpleAggregateFunction(sum, Decimal(38, 18)),
    cost_cache_write_usd SimpleAggregateFunction(sum, Decimal(38, 18)),
    cost_output_usd SimpleAggregateFunction(sum, Decimal(38, 18)),
    cost_reasoning_usd SimpleAggregateFunction(sum, Decimal(38, 18)),
    cost_usd SimpleAggregateFunction(sum, Decimal(38, 18))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name, provider, model)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_daily_mv TO spend_daily_state AS
SELECT
    day,
    tenant_id,
    team_id,
    feature_name,
    environment,
    workflow_id,
    workflow_name,
    provider,
    model,
    sum(requests) AS requests,
    sum(successful_requests) AS successful_requests,
    sum(errors) AS errors,
    sum(retries) AS retries,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_input_usd) AS cost_input_usd,
    sum(cost_cached_input_usd) AS cost_cached_input_usd,
    sum(cost_cache_write_usd) AS cost_cache_write_usd,
    sum(cost_output_usd) AS cost_output_usd,
    sum(cost_reasoning_usd) AS cost_reasoning_usd,
    sum(cost_usd) AS cost_usd
FROM ledger_facts
GROUP BY day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name, provider, model;

-- The same rollup from the deduplicated ledger: backfill and dirty-day source.
CREATE VIEW IF NOT EXISTS spend_daily_recompute AS
SELECT
    day,
    tenant_id,
    team_id,
    feature_name,
    environment,
    workflow_id,
    workflow_name,
    provider,
    model,
    sum(requests) AS requests,
    sum(successful_requests) AS successful_requests,
    sum(errors) AS errors,
    sum(retries) AS retries,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_input_usd) AS cost_input_usd,
    sum(cost_cached_input_usd) AS cost_cached_input_usd,
    sum(cost_cache_write_usd) AS cost_cache_write_usd,
    sum(cost_output_usd) AS cost_output_usd,
    sum(cost_reasoning_usd) AS cost_reasoning_usd,
    sum(cost_usd) AS cost_usd
FROM ledger_facts_final
GROUP BY day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name, provider, model;

INSERT INTO spend_daily_state
SELECT * FROM spend_daily_recompute
WHERE (SELECT count() FROM spend_daily_state) = 0;

-- Clean days from the rollup, dirty days recomputed from the deduplicated ledger.
-- The IN set is built before reading and used for index analysis: with no
-- dirty day the recompute branch reads nothing from the ledger.
CREATE VIEW IF NOT EXISTS spend_daily_uncorrected AS
SELECT
    day,
    tenant_id,
    team_id,
    feature_name,
    environment,
    workflow_id,
    workflow_name,
    provider,
    model,
    sum(requests) AS requests,
    sum(successful_requests) AS successful_requests,
    sum(errors) AS errors,
    sum(retries) AS retries,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_input_usd) AS cost_input_usd,
    sum(cost_cached_input_usd) AS cost_cached_input_usd,
    sum(cost_cache_write_usd) AS cost_cache_write_usd,
    sum(cost_output_usd) AS cost_output_usd,
    sum(cost_reasoning_usd) AS cost_reasoning_usd,
    sum(cost_usd) AS cost_usd
FROM
(
    SELECT
        day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name,
        provider, model, requests, successful_requests, errors, retries, input_tokens,
        output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_input_usd,
        cost_cached_input_usd, cost_cache_write_usd, cost_output_usd, cost_reasoning_usd,
        cost_usd
    FROM spend_daily_state
    WHERE day NOT IN (SELECT day FROM ledger_dirty_days)
    UNION ALL
    SELECT
        day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name,
        provider, model, requests, successful_requests, errors, retries, input_tokens,
        output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_input_usd,
        cost_cached_input_usd, cost_cache_write_usd, cost_output_usd, cost_reasoning_usd,
        cost_usd
    FROM spend_daily_recompute
    WHERE day IN (SELECT day FROM ledger_dirty_days)
)
GROUP BY day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name, provider, model;

-- Usage plus the re-pricing deltas: the corrected totals.
CREATE VIEW IF NOT EXISTS spend_daily AS
SELECT
    day,
    tenant_id,
    team_id,
    feature_name,
    environment,
    workflow_id,
    workflow_name,
    provider,
    model,
    sum(requests) AS requests,
    sum(successful_requests) AS successful_requests,
    sum(errors) AS errors,
    sum(retries) AS retries,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_input_usd) AS cost_input_usd,
    sum(cost_cached_input_usd) AS cost_cached_input_usd,
    sum(cost_cache_write_usd) AS cost_cache_write_usd,
    sum(cost_output_usd) AS cost_output_usd,
    sum(cost_reasoning_usd) AS cost_reasoning_usd,
    sum(cost_usd) AS cost_usd
FROM
(
    SELECT
        day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name,
        provider, model, requests, successful_requests, errors, retries, input_tokens,
        output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_input_usd,
        cost_cached_input_usd, cost_cache_write_usd, cost_output_usd, cost_reasoning_usd,
        cost_usd
    FROM spend_daily_uncorrected
    UNION ALL
    SELECT
        toDate(timestamp) AS day,
        tenant_id,
        team_id,
        feature_name,
        environment,
        workflow_id,
        workflow_name,
        provider,
        model,
        toUInt64(0) AS requests,
        toUInt64(0) AS successful_requests,
        toUInt64(0) AS errors,
        toUInt64(0) AS retries,
        toUInt64(0) AS input_tokens,
        toUInt64(0) AS output_tokens,
        toUInt64(0) AS cached_tokens,
        toUInt64(0) AS cache_write_tokens,
        toUInt64(0) AS reasoning_tokens,
        sum(delta_cost_input_usd) AS cost_input_usd,
        sum(delta_cost_cached_input_usd) AS cost_cached_input_usd,
        sum(delta_cost_cache_write_usd) AS cost_cache_write_usd,
        sum(delta_cost_output_usd) AS cost_output_usd,
        sum(delta_cost_reasoning_usd) AS cost_reasoning_usd,
        sum(delta_cost_usd) AS cost_usd
    FROM cost_corrections FINAL
    GROUP BY day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name, provider, model
)
GROUP BY day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name, provider, model;
