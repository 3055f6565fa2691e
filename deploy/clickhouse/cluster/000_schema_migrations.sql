-- Cluster variant of the migration ledger that `spendstream migrate` keeps.
-- One replicated table on EVERY node of the cluster (one Keeper path for all shards),
-- so whichever node a worker or `spendstream migrate` connects to sees the same
-- applied files. Apply this file first, before 001 and 002.
-- Apply once, on any one node, as a user with DDL rights (ON CLUSTER runs it on all):
--   clickhouse-client --host <node> --user spendstream --ask-password --multiquery < deploy/clickhouse/cluster/000_schema_migrations.sql
-- Needs ClickHouse Keeper (or ZooKeeper) and the macros {cluster}, {shard} and
-- {replica} on every node; see docs/deployment.md, "ClickHouse cluster variant".

CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER '{cluster}'
(
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{database}/schema_migrations', '{shard}-{replica}')
ORDER BY name;
