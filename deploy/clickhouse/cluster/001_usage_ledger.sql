-- Cluster variant of sql/001_usage_ledger.sql: the same columns (a test keeps them
-- equal), stored in `usage_ledger_local` (ReplicatedReplacingMergeTree, one per
-- shard, replicated within the shard) and read and written through the
-- Distributed table `usage_ledger`, the name spendstream uses.
--
-- Sharding by cityHash64(request_id) is what keeps "nothing counted twice" on a
-- cluster: every copy of a request_id lands on the same shard, where the replacing
-- engine collapses it and `SELECT ... FINAL` through the Distributed table returns
-- exactly one row per request_id. Never shard the ledger by anything else.
--
-- The last statement records the file as applied, so the worker's migration
-- runner skips the single-node sql/001_usage_ledger.sql.
-- Apply once, on any one node, as a user with DDL rights (ON CLUSTER runs it on all):
--   clickhouse-client --host <node> --user spendstream --ask-password --multiquery < deploy/clickhouse/cluster/001_usage_ledger.sql
-- Needs ClickHouse Keeper (or ZooKeeper) and the macros {cluster}, {shard} and
-- {replica} on every node; see docs/deployment.md, "ClickHouse cluster variant".

CREATE TABLE IF NOT EXISTS usage_ledger_local ON CLUSTER '{cluster}'
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/usage_ledger_local', '{replica}')
PARTITION BY toYYYYMM(timestamp)
ORDER BY request_id
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS usage_ledger ON CLUSTER '{cluster}'
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
    ingested_at DateTime64(3, 'UTC')
)
ENGINE = Distributed('{cluster}', currentDatabase(), usage_ledger_local, cityHash64(request_id));

INSERT INTO schema_migrations (name, checksum)
SELECT '001_usage_ledger.sql', 'cluster:deploy/clickhouse/cluster/001_usage_ledger.sql'
WHERE (SELECT count() FROM schema_migrations WHERE name = '001_usage_ledger.sql') = 0;
