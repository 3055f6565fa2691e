"""Schema migrations: the numbered `sql/NNN_*.sql` files, applied once each, in order.

Applied names and checksums are kept in the `schema_migrations` table; an applied
file edited since is refused (`MigrationChangedError`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources

from clickhouse_connect.driver.client import Client

from streams.errors import MigrationChangedError

MIGRATIONS_TABLE = "schema_migrations"


def migration_files() -> list[tuple[str, str]]:
    """(file name, SQL text) of every numbered `sql/NNN_*.sql`, in order."""
    files = sorted(
        (entry.name, entry.read_text())
        for entry in resources.files("sql").iterdir()
        if entry.name.endswith(".sql") and entry.name[:3].isdigit()
    )
    return files


def split_statements(sql: str) -> list[str]:
    """Split a DDL file on `;` at line ends; `--` comments are kept with their statement."""
    statements, current = [], []
    for line in sql.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if _has_code(statement):
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if _has_code(tail):
        statements.append(tail)
    return statements


def _has_code(statement: str) -> bool:
    return any(
        line.strip() and not line.strip().startswith("--") for line in statement.splitlines()
    )


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def apply_migrations(client: Client, files: Sequence[tuple[str, str]] | None = None) -> list[str]:
    """Apply every pending `sql/` file once, in order; return the names applied.

    An applied file is known by its name and the checksum of its text: one edited
    after it ran would never run again, so it stops the migration, before anything
    is applied, with one line naming it (put the change in a new numbered file)."""
    files = migration_files() if files is None else files
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name String, checksum String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY name"
    )
    recorded = client.query(f"SELECT name, checksum FROM {MIGRATIONS_TABLE}").result_rows
    done = {str(name): str(digest) for name, digest in recorded}
    for name, sql in files:
        if name in done and done[name] != checksum(sql):
            raise MigrationChangedError(
                f"migration {name} was edited after it was applied (checksum "
                f"{done[name][:12]}… recorded, {checksum(sql)[:12]}… now): restore it and "
                "put the change in a new numbered file"
            )
    applied = []
    for name, sql in files:
        if name in done:
            continue
        for statement in split_statements(sql):
            client.command(statement)
        # A plain INSERT statement: client.insert() first reads the table's structure.
        client.command(
            f"INSERT INTO {MIGRATIONS_TABLE} (name, checksum) VALUES (%(name)s, %(checksum)s)",
            parameters={"name": name, "checksum": checksum(sql)},
        )
        applied.append(name)
    return applied
