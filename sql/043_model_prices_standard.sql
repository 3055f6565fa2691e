-- model_prices_daily (033) keeps each model's latest unit prices of the day for the
-- weekly review's cheaper-model section. Since 041 a call can be priced at a
-- variant (flex, priority, batch): a day whose last call ran at flex would list
-- the model at half its price. The view now takes standard-price calls only
-- (the tier names the catalog prices as standard, not batch; docs/pricing.md).
-- Rows already in the table keep their values (at most the days since 041).
DROP VIEW IF EXISTS model_prices_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS model_prices_daily_mv TO model_prices_daily AS
SELECT
    toDate(timestamp) AS day,
    provider,
    model,
    max((
        timestamp,
        (price_input_per_mtok, price_cached_input_per_mtok, price_cache_write_per_mtok,
         price_output_per_mtok, price_reasoning_per_mtok)
    )) AS latest
FROM usage_ledger
WHERE cost_status = 'priced'
  AND NOT batch
  AND lower(service_tier) IN ('', 'default', 'standard', 'auto', 'on_demand')
GROUP BY day, provider, model;
