-- Estimates for calls to models with no price (docs/pricing.md, "Unpriced spend"):
-- such a row has cost_status = 'estimated', cost_usd 0 and its estimate, from the
-- closest priced model of the same provider and family (or a configured
-- fallback), in estimated_cost_usd; estimate_source names the model and catalog.
-- Known and estimated money stay apart: every rollup sums cost_usd as before.
ALTER TABLE usage_ledger
    ADD COLUMN IF NOT EXISTS estimated_cost_usd Decimal(38, 18),
    ADD COLUMN IF NOT EXISTS estimate_source LowCardinality(String);

-- The estimated spend that no correction has replaced yet, per day and attribution,
-- beside spend_daily (same dimensions). Re-pricing a row (a correction) takes its
-- estimate out: its cost then shows in spend_daily through the correction's delta.
-- Read from the deduplicated ledger: estimated rows are rare (models with no price)
-- and exact under re-delivery this way; like the raw ledger it covers 90 days.
CREATE VIEW IF NOT EXISTS estimated_spend_daily AS
SELECT
    toDate(timestamp) AS day,
    tenant_id,
    team_id,
    feature_name,
    environment,
    workflow_id,
    workflow_name,
    provider,
    model,
    sum(toUInt64(request_count)) AS requests,
    sum(toUInt64(input_tokens)) AS input_tokens,
    sum(toUInt64(output_tokens)) AS output_tokens,
    sum(estimated_cost_usd) AS estimated_cost_usd,
    any(estimate_source) AS estimate_source
FROM usage_ledger FINAL
WHERE cost_status = 'estimated'
  AND request_id NOT IN (SELECT request_id FROM cost_corrections)
GROUP BY day, tenant_id, team_id, feature_name, environment, workflow_id, workflow_name, provider, model;
