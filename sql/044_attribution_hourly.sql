-- Spend and traffic per UTC hour for every attribution dimension but the tenant
-- (tenant_hourly has it): one table and one materialized view for the five, so that
-- the ledger's writer pays for one more view on each insert, not five. Each ledger
-- row is counted once per dimension (ARRAY JOIN):
--   dimension   value          detail
--   team        team_id        ''
--   workflow    workflow_id    workflow_name
--   model       model          provider
--   user        user_id        ''
--   feature     feature_name   ''
-- Ordered by hour first: the dashboard's hour (and the same hour a week earlier)
-- reads two hours of it. Hourly detail is kept as long as tenant_hourly's (400 days,
-- `spendstream retention --hourly-days` moves both).
-- Exact under re-delivery: see 022_ledger_day_check.sql and docs/analyst.md.

CREATE TABLE IF NOT EXISTS attribution_hourly_state
(
    hour DateTime('UTC'),
    dimension LowCardinality(String),
    tenant_id LowCardinality(String),
    value String,
    detail LowCardinality(String),
    requests SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    retries SimpleAggregateFunction(sum, UInt64),
    input_tokens SimpleAggregateFunction(sum, UInt64),
    output_tokens SimpleAggregateFunction(sum, UInt64),
    cost_usd SimpleAggregateFunction(sum, Decimal(38, 18))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, dimension, tenant_id, value, detail)
TTL hour + INTERVAL 400 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS attribution_hourly_mv TO attribution_hourly_state AS
SELECT
    hour,
    attribution.1 AS dimension,
    tenant_id,
    attribution.2 AS value,
    attribution.3 AS detail,
    sum(requests) AS requests,
    sum(errors) AS errors,
    sum(retries) AS retries,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_usd) AS cost_usd
FROM ledger_facts
ARRAY JOIN [
    ('team', toString(team_id), ''),
    ('workflow', toString(workflow_id), toString(workflow_name)),
    ('model', toString(model), toString(provider)),
    ('user', user_id, ''),
    ('feature', toString(feature_name), '')
] AS attribution
GROUP BY hour, dimension, tenant_id, value, detail;

-- The same rollup from the deduplicated ledger: backfill and dirty-day source.
CREATE VIEW IF NOT EXISTS attribution_hourly_recompute AS
SELECT
    hour,
    attribution.1 AS dimension,
    tenant_id,
    attribution.2 AS value,
    attribution.3 AS detail,
    sum(requests) AS requests,
    sum(errors) AS errors,
    sum(retries) AS retries,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_usd) AS cost_usd
FROM ledger_facts_final
ARRAY JOIN [
    ('team', toString(team_id), ''),
    ('workflow', toString(workflow_id), toString(workflow_name)),
    ('model', toString(model), toString(provider)),
    ('user', user_id, ''),
    ('feature', toString(feature_name), '')
] AS attribution
GROUP BY hour, dimension, tenant_id, value, detail;

INSERT INTO attribution_hourly_state
SELECT * FROM attribution_hourly_recompute
WHERE (SELECT count() FROM attribution_hourly_state) = 0;

-- The re-pricing deltas by the same attribution, with cost_corrections' own columns
-- (timestamp, delta_cost_usd), read FINAL.
CREATE VIEW IF NOT EXISTS attribution_corrections AS
SELECT
    timestamp,
    attribution.1 AS dimension,
    tenant_id,
    attribution.2 AS value,
    attribution.3 AS detail,
    delta_cost_usd
FROM cost_corrections FINAL
ARRAY JOIN [
    ('team', toString(team_id), ''),
    ('workflow', toString(workflow_id), toString(workflow_name)),
    ('model', toString(model), toString(provider)),
    ('user', user_id, ''),
    ('feature', toString(feature_name), '')
] AS attribution;

-- Clean days from the rollup, dirty days recomputed from the deduplicated ledger.
-- The IN set is built before reading and used for index analysis: with no
-- dirty day the recompute branch reads nothing from the ledger.
-- Re-pricing deltas are added so every total is the corrected one.
CREATE VIEW IF NOT EXISTS attribution_hourly AS
SELECT
    hour,
    dimension,
    tenant_id,
    value,
    detail,
    sum(requests) AS requests,
    sum(errors) AS errors,
    sum(retries) AS retries,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_usd) AS cost_usd
FROM
(
    SELECT
        hour, dimension, tenant_id, value, detail, requests, errors, retries, input_tokens,
        output_tokens, cost_usd
    FROM attribution_hourly_state
    WHERE toDate(hour) NOT IN (SELECT day FROM ledger_dirty_days)
    UNION ALL
    SELECT
        hour, dimension, tenant_id, value, detail, requests, errors, retries, input_tokens,
        output_tokens, cost_usd
    FROM attribution_hourly_recompute
    WHERE toDate(hour) IN (SELECT day FROM ledger_dirty_days)
    UNION ALL
    SELECT
        toDateTime(toStartOfHour(timestamp), 'UTC') AS hour,
        dimension,
        tenant_id,
        value,
        detail,
        toUInt64(0) AS requests,
        toUInt64(0) AS errors,
        toUInt64(0) AS retries,
        toUInt64(0) AS input_tokens,
        toUInt64(0) AS output_tokens,
        sum(delta_cost_usd) AS cost_usd
    FROM attribution_corrections
    GROUP BY hour, dimension, tenant_id, value, detail
)
GROUP BY hour, dimension, tenant_id, value, detail;
