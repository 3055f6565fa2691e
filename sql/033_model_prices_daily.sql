-- The latest unit prices (per MTok: uncached input, cached input, cache write,
-- output, reasoning) each model was priced at per UTC day, from priced ledger rows:
-- the weekly review's cheaper-model section reads this instead of scanning the raw
-- ledger. Re-pricing corrections are not in here; the review adds their new prices.
-- max((timestamp, prices)) is idempotent: a re-delivered request changes nothing,
-- so this rollup needs no duplicate check (022_ledger_day_check.sql) and its
-- backfill no empty-table guard. No TTL, like the other daily rollups.
CREATE TABLE IF NOT EXISTS model_prices_daily
(
    day Date,
    provider LowCardinality(String),
    model LowCardinality(String),
    latest SimpleAggregateFunction(
        max,
        Tuple(
            DateTime64(3, 'UTC'),
            Tuple(Decimal(38, 12), Decimal(38, 12), Decimal(38, 12), Decimal(38, 12), Decimal(38, 12))
        )
    )
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, provider, model)
SETTINGS non_replicated_deduplication_window = 1000;

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
GROUP BY day, provider, model;

INSERT INTO model_prices_daily
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
GROUP BY day, provider, model;
