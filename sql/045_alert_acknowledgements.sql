-- The operator's word on alerts (streams/alerting/acknowledgements.py): one row per key
-- an alert's acknowledgement rebased (kind 'ack', with the hourly level acknowledged as
-- normal) and one per snooze (kind 'snooze'). Read back whole at the worker's start.
CREATE TABLE IF NOT EXISTS alert_acknowledgements
(
    alert_id String,
    key String,
    kind LowCardinality(String),
    level Nullable(Decimal(38, 18)),
    since DateTime64(3, 'UTC'),
    until DateTime64(3, 'UTC'),
    by String,
    note String,
    at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (key, kind, at, alert_id);
