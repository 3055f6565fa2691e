-- Retention: raw ledger rows expire after 90 days. The rollups (tenant_daily,
-- spend_daily, ... and cost_corrections) have no TTL and are kept for years,
-- tenant_hourly keeps 400 days of hourly detail, and ledger_day_check expires a
-- day before the raw rows (022_ledger_day_check.sql). To change the raw horizon
-- use `spendstream retention --raw-days N`, which moves both TTLs together.
ALTER TABLE usage_ledger MODIFY TTL toDateTime(timestamp) + INTERVAL 90 DAY;
