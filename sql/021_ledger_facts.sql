-- One normalized fact per ledger row, computed once for every rollup.
-- ledger_facts is a Null table: it stores nothing, it only fans each inserted
-- ledger block out to the rollup materialized views. ledger_facts_final is the
-- same normalization over `usage_ledger FINAL` (one row per request_id): the
-- exact source the views fall back to for a day whose rollups saw a duplicate.
-- The two SELECTs must stay identical apart from FINAL (a test compares them).
--
-- Outcome rules: a call is successful when status_code is 2xx or absent (usage
-- is reported for completed calls); an error when status_code is present and
-- not 2xx. A call is a retry when it names retry_of or has retry_count > 0.
CREATE TABLE IF NOT EXISTS ledger_facts
(
    request_id String,
    timestamp DateTime64(3, 'UTC'),
    day Date,
    hour DateTime('UTC'),
    tenant_id LowCardinality(String),
    team_id LowCardinality(String),
    user_id String,
    feature_name LowCardinality(String),
    workflow_id LowCardinality(String),
    workflow_run_id String,
    workflow_name LowCardinality(String),
    environment LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    requests UInt64,
    successful_requests UInt64,
    errors UInt64,
    retries UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cached_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    cost_input_usd Decimal(38, 18),
    cost_cached_input_usd Decimal(38, 18),
    cost_cache_write_usd Decimal(38, 18),
    cost_output_usd Decimal(38, 18),
    cost_reasoning_usd Decimal(38, 18),
    cost_usd Decimal(38, 18),
    latency_ms Nullable(UInt32)
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ledger_facts_mv TO ledger_facts AS
SELECT
    request_id,
    timestamp,
    toDate(timestamp) AS day,
    toDateTime(toStartOfHour(timestamp), 'UTC') AS hour,
    tenant_id,
    team_id,
    user_id,
    feature_name,
    workflow_id,
    workflow_run_id,
    workflow_name,
    environment,
    provider,
    model,
    toUInt64(request_count) AS requests,
    if(ifNull(status_code BETWEEN 200 AND 299, 1), requests, 0) AS successful_requests,
    if(ifNull(status_code BETWEEN 200 AND 299, 1), 0, requests) AS errors,
    toUInt64(retry_of != '' OR retry_count > 0) AS retries,
    toUInt64(input_tokens) AS input_tokens,
    toUInt64(output_tokens) AS output_tokens,
    toUInt64(cached_tokens) AS cached_tokens,
    toUInt64(cache_write_tokens) AS cache_write_tokens,
    toUInt64(reasoning_tokens) AS reasoning_tokens,
    cost_input_usd,
    cost_cached_input_usd,
    cost_cache_write_usd,
    cost_output_usd,
    cost_reasoning_usd,
    cost_usd,
    latency_ms
FROM usage_ledger;

CREATE VIEW IF NOT EXISTS ledger_facts_final AS
SELECT
    request_id,
    timestamp,
    toDate(timestamp) AS day,
    toDateTime(toStartOfHour(timestamp), 'UTC') AS hour,
    tenant_id,
    team_id,
    user_id,
    feature_name,
    workflow_id,
    workflow_run_id,
    workflow_name,
    environment,
    provider,
    model,
    toUInt64(request_count) AS requests,
    if(ifNull(status_code BETWEEN 200 AND 299, 1), requests, 0) AS successful_requests,
    if(ifNull(status_code BETWEEN 200 AND 299, 1), 0, requests) AS errors,
    toUInt64(retry_of != '' OR retry_count > 0) AS retries,
    toUInt64(input_tokens) AS input_tokens,
    toUInt64(output_tokens) AS output_tokens,
    toUInt64(cached_tokens) AS cached_tokens,
    toUInt64(cache_write_tokens) AS cache_write_tokens,
    toUInt64(reasoning_tokens) AS reasoning_tokens,
    cost_input_usd,
    cost_cached_input_usd,
    cost_cache_write_usd,
    cost_output_usd,
    cost_reasoning_usd,
    cost_usd,
    latency_ms
FROM usage_ledger FINAL;
