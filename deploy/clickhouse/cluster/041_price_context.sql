-- Cluster variant of sql/041_price_context.sql: the same columns added to every
-- shard's `usage_ledger_local` and to the Distributed table `usage_ledger`.
-- The last statement records the file as applied, so the worker's migration
-- runner skips the single-node sql/041_price_context.sql.
-- Apply once, on any one node, after 001_usage_ledger.sql:
--   clickhouse-client --host <node> --user spendstream --ask-password --multiquery < deploy/clickhouse/cluster/041_price_context.sql

ALTER TABLE usage_ledger_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt32,
    ADD COLUMN IF NOT EXISTS service_tier LowCardinality(String),
    ADD COLUMN IF NOT EXISTS batch Bool,
    ADD COLUMN IF NOT EXISTS price_cache_write_1h_per_mtok Decimal(38, 12) DEFAULT price_cache_write_per_mtok;

ALTER TABLE usage_ledger ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt32,
    ADD COLUMN IF NOT EXISTS service_tier LowCardinality(String),
    ADD COLUMN IF NOT EXISTS batch Bool,
    ADD COLUMN IF NOT EXISTS price_cache_write_1h_per_mtok Decimal(38, 12) DEFAULT price_cache_write_per_mtok;

INSERT INTO schema_migrations (name, checksum)
SELECT '041_price_context.sql', 'cluster:deploy/clickhouse/cluster/041_price_context.sql'
WHERE (SELECT count() FROM schema_migrations WHERE name = '041_price_context.sql') = 0;
