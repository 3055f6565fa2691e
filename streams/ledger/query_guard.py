"""What an analyst query may be: one SELECT over the ledger's own tables and views.

The worker runs SQL sent to `POST /v1/query` (and its peers' reads) in the process
that holds every secret it was configured with. ClickHouse's `readonly` alone does
not make that safe: under it the scalar `file()` still reads any file the worker can
read, `url()` still connects anywhere (and ignores `max_execution_time` while it
waits), and clickhouse-connect applies the setting to the last of several statements
only. So the SQL is parsed first (sqlglot, ClickHouse dialect) and refused unless it is:

- exactly one statement, a SELECT (UNION, WITH and subqueries included);
- reading only tables of `allowed_tables`, its own CTEs, or `SAFE_SYSTEM_TABLES`
  (no table functions: `file`, `url`, `remote`, `s3`, `numbers`, …);
- calling no function of `REFUSED_FUNCTIONS` (the scalar `file`, `sleep`, …);
- without `FORMAT` or `INTO OUTFILE` (which the parser refuses), and with a
  `SETTINGS` clause only of `SAFE_QUERY_SETTINGS` (how a join or an aggregate
  reads, never a limit or a privilege).

What passes still runs under `readonly=2` and time, memory, thread and result-size
limits (`query_limits`): defence in depth, and the bound on an expensive SELECT.

>>> guard = QueryGuard(frozenset({"usage_ledger"}))
>>> guard.check("SELECT count() FROM usage_ledger FINAL WHERE tenant_id = {t:String}")
>>> guard.check("SELECT 1; DROP TABLE usage_ledger")
Traceback (most recent call last):
...
streams.ledger.query_guard.QueryRefused: one statement only
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

# Catalog tables an analyst tool needs to find the ledger's objects, columns and parts
# (the dashboard reads which days a part covers).
SAFE_SYSTEM_TABLES = frozenset({"system.one", "system.tables", "system.columns", "system.parts"})

# Scalar functions that reach outside the database or only burn time; table
# functions are refused as a class (only named tables are allowed).
REFUSED_FUNCTIONS = frozenset(
    {
        "file",
        "url",
        "s3",
        "hdfs",
        "sleep",
        "sleepeachrow",
        "getsetting",
        "getserverport",
        "getmacro",
        "filesystemavailable",
        "filesystemcapacity",
        "filesystemunreserved",
        "dictget",
        "dictgetordefault",
        "dictgetornull",
        "joinget",
        "currentprofiles",
        "currentroles",
        "initialqueryid",
        "throwif",
    }
)


# Settings that change what a query means, not what it may do or use.
SAFE_QUERY_SETTINGS = frozenset(
    {
        "join_use_nulls",
        "join_algorithm",
        "aggregate_functions_null_for_empty",
        "cast_keep_nullable",
        "transform_null_in",
        "union_default_mode",
        "prefer_column_name_to_alias",
    }
)


class QueryRefused(ValueError):
    """The SQL is not an analyst SELECT; the message says why, for the caller."""


@dataclass(frozen=True)
class QueryLimits:
    """ClickHouse settings every analyst query runs under."""

    max_seconds: float = 30.0
    max_memory_bytes: int = 2 * 1024**3
    max_result_rows: int = 1_000_000
    max_threads: int = 1

    def settings(self) -> dict[str, Any]:
        # readonly=2 (not 1): on chdb `readonly=1` sticks to the session and then
        # refuses the limits below on the next query; 2 still refuses every write and
        # any change of `readonly` itself, and the guard refuses a SETTINGS clause.
        return {
            "max_execution_time": self.max_seconds,
            "max_memory_usage": self.max_memory_bytes,
            "max_result_rows": self.max_result_rows,
            "result_overflow_mode": "throw",
            "max_threads": self.max_threads,
            "readonly": 2,
        }


class QueryGuard:
    def __init__(self, allowed_tables: Iterable[str]) -> None:
        self.allowed_tables = frozenset(name.lower() for name in allowed_tables)

    def check(self, sql: str) -> None:
        """Return if `sql` is an analyst SELECT, else raise `QueryRefused`."""
        try:
            statements = [s for s in sqlglot.parse(sql, read="clickhouse") if s is not None]
        except SqlglotError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise QueryRefused(f"not a query this endpoint runs: {first[:200]}") from None
        if len(statements) != 1:
            raise QueryRefused("one statement only")
        (statement,) = statements
        if not isinstance(statement, exp.Query):
            raise QueryRefused(f"only SELECT queries are allowed, not {statement.key.upper()}")
        for node in statement.walk():
            self._check_node(node)
        ctes = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
        for table in statement.find_all(exp.Table):
            self._check_table(table, ctes)

    def _check_node(self, node: exp.Expr) -> None:
        if isinstance(node, exp.Select | exp.SetOperation):
            for clause in ("format", "into"):
                if node.args.get(clause):
                    raise QueryRefused(f"{clause.upper()} is not allowed in a query")
            for setting in node.args.get("settings") or ():
                name = setting.this.name if isinstance(setting, exp.EQ) else ""
                if name.lower() not in SAFE_QUERY_SETTINGS:
                    shown = name or setting.sql()[:40]
                    raise QueryRefused(f"SETTINGS {shown} is not allowed in a query")
        elif isinstance(node, exp.DDL | exp.DML | exp.Command | exp.Into):
            raise QueryRefused(f"only SELECT queries are allowed, not {node.key.upper()}")
        elif isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
            if name.lower() in REFUSED_FUNCTIONS:
                raise QueryRefused(f"function {name}() is not allowed")

    def _check_table(self, table: exp.Table, ctes: set[str]) -> None:
        if not isinstance(table.this, exp.Identifier):
            raise QueryRefused(f"table functions are not allowed: {table.this.sql()[:80]}")
        name = table.name.lower()
        database = table.db.lower()
        if not database and (name in self.allowed_tables or name in ctes):
            return
        if f"{database}.{name}" in SAFE_SYSTEM_TABLES:
            return
        shown = f"{database}.{name}" if database else name
        raise QueryRefused(f"table {shown} is not readable here")
