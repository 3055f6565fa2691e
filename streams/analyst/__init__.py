"""The analyst layer: reports, exports, re-pricing and reconciliation over the ClickHouse
rollups declared in `sql/020_*.sql` … `sql/049_*.sql` (see docs/analyst.md)."""
