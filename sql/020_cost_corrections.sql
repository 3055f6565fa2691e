-- Re-pricing corrections: one row per corrected request and price change. History
-- stays in usage_ledger untouched; a request's effective cost is its ledger cost
-- plus the deltas of its corrections, so the audit trail shows what changed and
-- when. The dimensions are copied from the ledger row so that every view can add
-- the deltas without a join (and after the raw row has expired).
-- correction_id is derived from the request and the cost before/after, so a
-- retried insert of the same correction collapses under FINAL. No TTL: kept
-- as long as the rollups it corrects.
CREATE TABLE IF NOT EXISTS cost_corrections
(
    correction_id String,
    request_id String,
    timestamp DateTime64(3, 'UTC'),
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
    request_count UInt32,
    input_tokens UInt32,
    output_tokens UInt32,
    cached_tokens UInt32,
    cache_write_tokens UInt32,
    reasoning_tokens UInt32,
    old_cost_input_usd Decimal(38, 18),
    old_cost_cached_input_usd Decimal(38, 18),
    old_cost_cache_write_usd Decimal(38, 18),
    old_cost_output_usd Decimal(38, 18),
    old_cost_reasoning_usd Decimal(38, 18),
    old_cost_usd Decimal(38, 18),
    new_cost_input_usd Decimal(38, 18),
    new_cost_cached_input_usd Decimal(38, 18),
    new_cost_cache_write_usd Decimal(38, 18),
    new_cost_output_usd Decimal(38, 18),
    new_cost_reasoning_usd Decimal(38, 18),
    new_cost_usd Decimal(38, 18),
    delta_cost_input_usd Decimal(38, 18),
    delta_cost_cached_input_usd Decimal(38, 18),
    delta_cost_cache_write_usd Decimal(38, 18),
    delta_cost_output_usd Decimal(38, 18),
    delta_cost_reasoning_usd Decimal(38, 18),
    delta_cost_usd Decimal(38, 18),
    new_price_input_per_mtok Decimal(38, 12),
    new_price_cached_input_per_mtok Decimal(38, 12),
    new_price_cache_write_per_mtok Decimal(38, 12),
    new_price_output_per_mtok Decimal(38, 12),
    new_price_reasoning_per_mtok Decimal(38, 12),
    old_price_source LowCardinality(String),
    new_price_source LowCardinality(String),
    old_cost_status LowCardinality(String),
    new_cost_status LowCardinality(String),
    reason String,
    corrected_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (request_id, correction_id)
SETTINGS non_replicated_deduplication_window = 1000;
