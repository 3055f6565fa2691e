"""The query guard on its own: which SQL an analyst may send, table-driven. The same
probes against a running worker are in tests/reliability/test_security.py."""

from __future__ import annotations

import pytest

from streams.ledger.query_guard import QueryGuard, QueryLimits, QueryRefused

GUARD = QueryGuard({"usage_ledger", "dead_letters", "tenant_daily"})

ALLOWED = [
    "SELECT count() FROM usage_ledger",
    "SELECT count(), sum(cost_usd) FROM usage_ledger FINAL WHERE tenant_id = {t:String}",
    "WITH t AS (SELECT tenant_id FROM usage_ledger) SELECT count() FROM t",
    "SELECT * FROM (SELECT 1 AS x) AS s JOIN usage_ledger USING x",
    "SELECT 1 UNION ALL SELECT count() FROM dead_letters",
    "SELECT toStartOfMonth(timestamp), quantile(0.5)(cost_usd) FROM usage_ledger GROUP BY 1",
    "SELECT name FROM system.tables WHERE database = currentDatabase()",
    "SELECT name, type FROM system.columns WHERE table = 'usage_ledger'",
    "SELECT 1;",
    "SELECT count() FROM usage_ledger AS a LEFT JOIN dead_letters AS b USING request_id "
    "SETTINGS join_use_nulls = 0",
]

REFUSED = {
    "multi-statement": "SELECT 1; INSERT INTO usage_ledger (request_id) VALUES ('x'); SELECT 1",
    "insert": "INSERT INTO usage_ledger SELECT * FROM usage_ledger",
    "alter": "ALTER TABLE usage_ledger DELETE WHERE 1",
    "create": "CREATE TABLE sneaky (a Int32) ENGINE = Memory",
    "drop": "DROP TABLE usage_ledger",
    "file-scalar": "SELECT file('/proc/self/environ')",
    "file-table": "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "file-in-subquery": "SELECT 1 FROM usage_ledger WHERE 'x' IN (SELECT * FROM file('a'))",
    "outfile": "SELECT 1 INTO OUTFILE '/tmp/x' TRUNCATE",
    "url": "SELECT * FROM url('http://127.0.0.1:1/x', 'CSV')",
    "url-in-union": "SELECT 1 UNION ALL SELECT * FROM url('http://x', 'CSV')",
    "remote": "SELECT * FROM remote('127.0.0.1', system.one)",
    "s3": "SELECT * FROM s3('http://x/y.csv')",
    "numbers": "SELECT count() FROM numbers(1e12)",
    "settings": "SELECT 1 SETTINGS readonly = 0",
    "settings-limit": "SELECT 1 SETTINGS join_use_nulls = 0, max_execution_time = 0",
    "format": "SELECT 1 FORMAT JSON",
    "sleep": "SELECT sleep(3)",
    "other-database": "SELECT * FROM other.usage_ledger",
    "unknown-table": "SELECT * FROM ingest_keys",
    "system-users": "SELECT * FROM system.users",
    "identifier-parameter": "SELECT * FROM {t:Identifier}",
    "empty": "   ",
    "not-sql": "hello there",
}


@pytest.mark.parametrize("sql", ALLOWED)
def test_an_analyst_select_passes(sql: str) -> None:
    GUARD.check(sql)


@pytest.mark.parametrize("sql", REFUSED.values(), ids=REFUSED.keys())
def test_everything_else_is_refused(sql: str) -> None:
    with pytest.raises(QueryRefused):
        GUARD.check(sql)


def test_limits_are_clickhouse_settings_that_throw() -> None:
    settings = QueryLimits(max_seconds=5, max_result_rows=10).settings()
    assert settings["max_execution_time"] == 5
    assert settings["max_result_rows"] == 10
    assert settings["result_overflow_mode"] == "throw"
    assert settings["readonly"] == 2
