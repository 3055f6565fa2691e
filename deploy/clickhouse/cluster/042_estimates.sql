-- Cluster variant of sql/042_estimates.sql: the estimate columns added to every
-- shard's `usage_ledger_local` and to the Distributed table `usage_ledger`. The
-- view estimated_spend_daily needs cost_corrections, which has no cluster variant
-- yet (docs/deployment.md): create it with the other views' cluster counterparts.
-- Apply once, on any one node, after 041_price_context.sql:
--   clickhouse-client --host <node> --user spendstream --ask-password --multiquery < deploy/clickhouse/cluster/042_estimates.sql

ALTER TABLE usage_ledger_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS estimated_cost_usd Decimal(38, 18),
    ADD COLUMN IF NOT EXISTS estimate_source LowCardinality(String);

ALTER TABLE usage_ledger ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS estimated_cost_usd Decimal(38, 18),
    ADD COLUMN IF NOT EXISTS estimate_source LowCardinality(String);

INSERT INTO schema_migrations (name, checksum)
SELECT '042_estimates.sql', 'cluster:deploy/clickhouse/cluster/042_estimates.sql'
WHERE (SELECT count() FROM schema_migrations WHERE name = '042_estimates.sql') = 0;
