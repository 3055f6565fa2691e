-- One row per workflow run and UTC day: calls, cost and the run's last call (time,
-- successful?), for "cost per successful task". A run that spans midnight has a
-- row per day: take max(last_call) over its days for the run's outcome.
-- last_call is max((timestamp, successful)), idempotent under duplicates; the sums
-- are exact under re-delivery the same way as the other rollups
-- (022_ledger_day_check.sql).
CREATE TABLE IF NOT EXISTS workflow_run_daily_state
(
    day Date,
    tenant_id LowCardinality(String),
    workflow_id LowCardinality(String),
    workflow_name LowCardinality(String),
    workflow_run_id String,
    requests SimpleAggregateFunction(sum, UInt64),
    successful_requests SimpleAggregateFunction(sum, UInt64),
    cost_usd SimpleAggregateFunction(sum, Decimal(38, 18)),
    last_call SimpleAggregateFunction(max, Tuple(DateTime64(3, 'UTC'), UInt8))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, tenant_id, workflow_id, workflow_name, workflow_run_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS workflow_run_daily_mv TO workflow_run_daily_state AS
SELECT
    day,
    tenant_id,
    workflow_id,
    workflow_name,
    workflow_run_id,
    sum(requests) AS requests,
    sum(successful_requests) AS successful_requests,
    sum(cost_usd) AS cost_usd,
    max((timestamp, toUInt8(ledger_facts.successful_requests > 0))) AS last_call
FROM ledger_facts
WHERE workflow_run_id != ''
GROUP BY day, tenant_id, workflow_id, workflow_name, workflow_run_id;

-- The same rollup from the deduplicated ledger: backfill and dirty-day source.
CREATE VIEW IF NOT EXISTS workflow_run_daily_recompute AS
SELECT
    day,
    tenant_id,
    workflow_id,
    workflow_name,
    workflow_run_id,
    sum(requests) AS requests,
    sum(successful_requests) AS successful_requests,
    sum(cost_usd) AS cost_usd,
    max((timestamp, toUInt8(ledger_facts_final.successful_requests > 0))) AS last_call
FROM ledger_facts_final
WHERE workflow_run_id != ''
GROUP BY day, tenant_id, workflow_id, workflow_name, workflow_run_id;

INSERT INTO workflow_run_daily_state
SELECT * FROM workflow_run_daily_recompute
WHERE (SELECT count() FROM workflow_run_daily_state) = 0;

-- Clean days from the rollup, dirty days recomputed, re-pricing deltas added.
CREATE VIEW IF NOT EXISTS workflow_run_daily AS
SELECT
    day,
    tenant_id,
    workflow_id,
    workflow_name,
    workflow_run_id,
    sum(requests) AS requests,
    sum(successful_requests) AS successful_requests,
    sum(cost_usd) AS cost_usd,
    max(last_call).1 AS last_call_at,
    max(last_call).2 AS last_call_successful
FROM
(
    SELECT day, tenant_id, workflow_id, workflow_name, workflow_run_id, requests, successful_requests, cost_usd, last_call
    FROM workflow_run_daily_state
    WHERE day NOT IN (SELECT day FROM ledger_dirty_days)
    UNION ALL
    SELECT day, tenant_id, workflow_id, workflow_name, workflow_run_id, requests, successful_requests, cost_usd, last_call
    FROM workflow_run_daily_recompute
    WHERE day IN (SELECT day FROM ledger_dirty_days)
    UNION ALL
    SELECT
        toDate(timestamp) AS day,
        tenant_id,
        workflow_id,
        workflow_name,
        workflow_run_id,
        toUInt64(0) AS requests,
        toUInt64(0) AS successful_requests,
        sum(delta_cost_usd) AS cost_usd,
        (toDateTime64(0, 3, 'UTC'), toUInt8(0)) AS last_call
    FROM cost_corrections FINAL
    WHERE workflow_run_id != ''
    GROUP BY day, tenant_id, workflow_id, workflow_name, workflow_run_id
)
GROUP BY day, tenant_id, workflow_id, workflow_name, workflow_run_id;
