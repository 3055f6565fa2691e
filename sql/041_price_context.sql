-- The price context of each call (docs/pricing.md): the service tier that served it,
-- whether it ran through a batch API, and its 1-hour cache writes (part of
-- cache_write_tokens, priced at their own rate) with that rate. With them a ledger
-- row still holds everything needed to recompute its cost. Added at the end of the
-- table, in the order of schemas.ledger.LedgerRow. The rollups read explicit
-- columns, so they are unaffected. Rows written before this migration read as
-- the standard tier, not batch, no 1-hour writes.
ALTER TABLE usage_ledger
    ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt32,
    ADD COLUMN IF NOT EXISTS service_tier LowCardinality(String),
    ADD COLUMN IF NOT EXISTS batch Bool,
    ADD COLUMN IF NOT EXISTS price_cache_write_1h_per_mtok Decimal(38, 12) DEFAULT price_cache_write_per_mtok;
