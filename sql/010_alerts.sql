-- Alerts: one row per state an incident enters (triggered, escalated, resolved).
-- Columns mirror schemas.alert.Alert, in the same order. The sort key makes a
-- re-inserted batch (a retried insert after an ambiguous failure) collapse to one
-- row per (fingerprint, state, recorded_at); read with FINAL for exact counts.
CREATE TABLE IF NOT EXISTS alerts
(
    fingerprint String,
    detector LowCardinality(String),
    key String,
    tenant_id LowCardinality(String),
    team_id LowCardinality(String),
    workflow_id LowCardinality(String),
    severity LowCardinality(String),
    state LowCardinality(String),
    summary String,
    value Decimal(38, 18),
    threshold Decimal(38, 18),
    baseline Nullable(Decimal(38, 18)),
    unit LowCardinality(String),
    cause LowCardinality(String),
    evidence String,
    query String,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    triggered_at DateTime64(3, 'UTC'),
    resolved_at Nullable(DateTime64(3, 'UTC')),
    recorded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(recorded_at)
ORDER BY (fingerprint, state, recorded_at)
SETTINGS non_replicated_deduplication_window = 1000;

-- Delivery attempts: one row per HTTP attempt (client-library retries included)
-- to hand one alert state to one channel. Columns mirror
-- schemas.alert.AlertDelivery, in the same order.
CREATE TABLE IF NOT EXISTS alert_deliveries
(
    fingerprint String,
    channel LowCardinality(String),
    action LowCardinality(String),
    attempt UInt32,
    outcome LowCardinality(String),
    status_code Nullable(UInt16),
    reason String,
    next_attempt_at Nullable(DateTime64(3, 'UTC')),
    attempted_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(attempted_at)
ORDER BY (fingerprint, channel, action, attempt, attempted_at)
SETTINGS non_replicated_deduplication_window = 1000;
