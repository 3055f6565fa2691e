-- The cost ledger: one row per model call. Read with FINAL for exactly one row per
-- request_id; the pipeline keeps duplicates out before insert, and the replacing
-- engine collapses the rare re-insert of an already durable batch.
-- Columns mirror schemas.ledger.LedgerRow, in the same order.
CREATE TABLE IF NOT EXISTS usage_ledger
(
    request_id String,
    timestamp DateTime64(3, 'UTC'),
    tenant_id LowCardinality(String),
    team_id LowCardinality(String),
    user_id String,
    feature_name LowCardinality(String),
    workflow_id LowCardinality(String),
    workflow_run_id String,
    workflow_name LowCardinality(String),
    prompt_template_version LowCardinality(String),
    environment LowCardinality(String),
    api_key_id String,
    provider LowCardinality(String),
    model LowCardinality(String),
    input_tokens UInt32,
    output_tokens UInt32,
    cached_tokens UInt32,
    cache_write_tokens UInt32,
    reasoning_tokens UInt32,
    request_count UInt32,
    latency_ms Nullable(UInt32),
    status_code Nullable(UInt16),
    retry_count UInt32,
    retry_of String,
    reported_cost_usd Nullable(Decimal(38, 18)),
    tags Map(String, String),
    cost_input_usd Decimal(38, 18),
    cost_cached_input_usd Decimal(38, 18),
    cost_cache_write_usd Decimal(38, 18),
    cost_output_usd Decimal(38, 18),
    cost_reasoning_usd Decimal(38, 18),
    cost_usd Decimal(38, 18),
    price_input_per_mtok Decimal(38, 12),
    price_cached_input_per_mtok Decimal(38, 12),
    price_cache_write_per_mtok Decimal(38, 12),
    price_output_per_mtok Decimal(38, 12),
    price_reasoning_per_mtok Decimal(38, 12),
    price_source LowCardinality(String),
    cost_status LowCardinality(String),
    source_topic LowCardinality(String),
    source_partition Int32,
    source_offset Int64,
    ingested_at DateTime64(3, 'UTC'),
    INDEX idx_timestamp timestamp TYPE minmax GRANULARITY 4,
    INDEX idx_tenant tenant_id TYPE set(1000) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY request_id
SETTINGS non_replicated_deduplication_window = 1000;
