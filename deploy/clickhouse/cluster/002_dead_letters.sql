-- Cluster variant of sql/002_dead_letters.sql: the same columns (a test keeps them
-- equal), stored in `dead_letters_local` (ReplicatedReplacingMergeTree) and read and
-- written through the Distributed table `dead_letters`.
--
-- Sharded by the message's position in the log, a function of the sort key, so a
-- re-delivered message's dead letter lands on the shard that holds the earlier one
-- and replaces it there.
-- Apply once, on any one node, as a user with DDL rights (ON CLUSTER runs it on all):
--   clickhouse-client --host <node> --user spendstream --ask-password --multiquery < deploy/clickhouse/cluster/002_dead_letters.sql
-- Needs ClickHouse Keeper (or ZooKeeper) and the macros {cluster}, {shard} and
-- {replica} on every node; see docs/deployment.md, "ClickHouse cluster variant".

CREATE TABLE IF NOT EXISTS dead_letters_local ON CLUSTER '{cluster}'
(
    log_epoch LowCardinality(String),
    topic LowCardinality(String),
    partition Int32,
    offset Int64,
    element_index Int32,
    reason LowCardinality(String),
    message String,
    raw_payload String,
    payload_bytes UInt32,
    request_id String,
    tenant_id String,
    received_at DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/dead_letters_local', '{replica}')
PARTITION BY toYYYYMM(received_at)
ORDER BY (log_epoch, topic, partition, offset, element_index)
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS dead_letters ON CLUSTER '{cluster}'
(
    log_epoch LowCardinality(String),
    topic LowCardinality(String),
    partition Int32,
    offset Int64,
    element_index Int32,
    reason LowCardinality(String),
    message String,
    raw_payload String,
    payload_bytes UInt32,
    request_id String,
    tenant_id String,
    received_at DateTime64(3, 'UTC')
)
ENGINE = Distributed('{cluster}', currentDatabase(), dead_letters_local, cityHash64(log_epoch, topic, partition, offset));

INSERT INTO schema_migrations (name, checksum)
SELECT '002_dead_letters.sql', 'cluster:deploy/clickhouse/cluster/002_dead_letters.sql'
WHERE (SELECT count() FROM schema_migrations WHERE name = '002_dead_letters.sql') = 0;
