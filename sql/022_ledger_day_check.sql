-- The duplicate detector behind every rollup view. Per UTC day it counts the
-- ledger rows the rollups received (`ledger_rows`) and the distinct request ids
-- among them. A materialized view fires on every inserted block, so a request_id
-- inserted twice in different blocks is counted twice by the rollups; here it
-- makes ledger_rows exceed the distinct count, and the day is "dirty".
-- Rollup views read clean days from their state tables and recompute dirty days
-- from ledger_facts_final (exact). The ids are hashed to UInt64: a hash collision
-- can only lower the distinct count, i.e. make a clean day look dirty (a slower
-- but still exact answer), never hide a duplicate.
-- Created before any rollup so that every row a rollup sees is also counted here.
-- The TTL drops a day's check one day before its raw rows start to expire
-- (raw TTL 90 days, see 040_retention.sql): past that, the rollups are final.
CREATE TABLE IF NOT EXISTS ledger_day_check
(
    day Date,
    ledger_rows SimpleAggregateFunction(sum, UInt64),
    distinct_requests AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY day
TTL day + INTERVAL 89 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS ledger_day_check_mv TO ledger_day_check AS
SELECT day, count() AS ledger_rows, uniqExactState(cityHash64(request_id)) AS distinct_requests
FROM ledger_facts
GROUP BY day;

-- Backfill from an existing ledger, once (the count guard makes a re-run of an
-- interrupted migration harmless).
INSERT INTO ledger_day_check
SELECT day, count() AS ledger_rows, uniqExactState(cityHash64(request_id)) AS distinct_requests
FROM ledger_facts_final
WHERE (SELECT count() FROM ledger_day_check) = 0
GROUP BY day;

CREATE VIEW IF NOT EXISTS ledger_dirty_days AS
SELECT day, sum(ledger_rows) AS ledger_rows, uniqExactMerge(distinct_requests) AS distinct_requests
FROM ledger_day_check
GROUP BY day
HAVING ledger_rows != distinct_requests;
