-- Rejected input: one row per rejected message, or per rejected element of an
-- array message (element_index >= 0). Keyed by the message's position in the
-- log so a re-delivered message replaces its earlier dead letter; log_epoch names
-- the log (a new in-memory embedded broker restarts offsets at 0).
-- Columns mirror schemas.ledger.DeadLetterRow, in the same order.
CREATE TABLE IF NOT EXISTS dead_letters
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
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (log_epoch, topic, partition, offset, element_index)
SETTINGS non_replicated_deduplication_window = 1000;
