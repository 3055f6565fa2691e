"""ClickHouse access on embedded chdb: migrations, the ledger DDL, the data-dir lock."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from schemas.ledger import CORRECTION_COLUMNS, DEAD_LETTER_COLUMNS, LEDGER_COLUMNS
from streams.errors import ConfigError, DataDirInUseError, MigrationChangedError
from streams.ledger.connect import ClickHouseHandle, open_clickhouse
from streams.ledger.migrations import (
    MIGRATIONS_TABLE,
    apply_migrations,
    migration_files,
    split_statements,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class MigrationRun:
    handle: ClickHouseHandle
    first: list[str]
    second: list[str]
    tables_after_first: list[str]
    tables_after_second: list[str]


def _tables(handle: ClickHouseHandle) -> list[str]:
    rows = handle.client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name"
    ).result_rows
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def migrations(chdb_fresh: ClickHouseHandle) -> MigrationRun:
    # Applied here, on an empty database, so the first run's result is observable.
    first = apply_migrations(chdb_fresh.client)
    after_first = _tables(chdb_fresh)
    second = apply_migrations(chdb_fresh.client)
    return MigrationRun(chdb_fresh, first, second, after_first, _tables(chdb_fresh))


def _columns(handle: ClickHouseHandle, table: str) -> list[tuple[str, str]]:
    rows = handle.client.query(
        "SELECT name, type FROM system.columns "
        "WHERE database = currentDatabase() AND table = {table:String} ORDER BY position",
        parameters={"table": table},
    ).result_rows
    return [(name, type_) for name, type_ in rows]


def test_first_run_applies_every_numbered_file_in_order(migrations: MigrationRun) -> None:
    names = [name for name, _ in migration_files()]
    assert names == sorted(names)
    assert names[:2] == ["001_usage_ledger.sql", "002_dead_letters.sql"]
    assert migrations.first == names


def test_migrations_are_idempotent(migrations: MigrationRun) -> None:
    assert migrations.second == []
    assert migrations.tables_after_second == migrations.tables_after_first
    recorded = migrations.handle.client.query(
        f"SELECT name, checksum FROM {MIGRATIONS_TABLE} ORDER BY name"
    ).result_rows
    assert recorded == [
        (name, hashlib.sha256(sql.encode()).hexdigest()) for name, sql in migration_files()
    ]


def test_usage_ledger_columns_match_the_ledger_row_model(migrations: MigrationRun) -> None:
    names = [name for name, _ in _columns(migrations.handle, "usage_ledger")]
    assert tuple(names) == LEDGER_COLUMNS


def test_dead_letters_columns_match_the_dead_letter_model(migrations: MigrationRun) -> None:
    names = [name for name, _ in _columns(migrations.handle, "dead_letters")]
    assert tuple(names) == DEAD_LETTER_COLUMNS


def test_cost_corrections_columns_match_the_correction_model(migrations: MigrationRun) -> None:
    names = [name for name, _ in _columns(migrations.handle, "cost_corrections")]
    assert tuple(names) == CORRECTION_COLUMNS


def test_money_columns_are_decimal_38_18(migrations: MigrationRun) -> None:
    types = dict(_columns(migrations.handle, "usage_ledger"))
    money = [name for name in LEDGER_COLUMNS if name.startswith("cost_") and name.endswith("_usd")]
    assert money == [
        "cost_input_usd",
        "cost_cached_input_usd",
        "cost_cache_write_usd",
        "cost_output_usd",
        "cost_reasoning_usd",
        "cost_usd",
    ]
    assert {name: types[name] for name in money} == dict.fromkeys(money, "Decimal(38, 18)")
    assert types["reported_cost_usd"] == "Nullable(Decimal(38, 18))"
    prices = [name for name in LEDGER_COLUMNS if name.endswith("_per_mtok")]
    assert all(types[name].startswith("Decimal(") for name in prices)


def test_a_second_open_of_the_data_dir_is_refused(chdb_fresh: ClickHouseHandle) -> None:
    with pytest.raises(DataDirInUseError) as caught:
        open_clickhouse(chdb_fresh.url)
    message = str(caught.value)
    assert "\n" not in message
    assert "in use by pid" in message


def test_another_process_is_refused_the_data_dir(chdb_fresh: ClickHouseHandle) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from streams.ledger.connect import open_clickhouse
        from streams.errors import DataDirInUseError
        try:
            open_clickhouse({chdb_fresh.url!r})
        except DataDirInUseError as exc:
            print(exc)
            sys.exit(3)
        sys.exit(0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert "is in use by pid" in result.stdout


def test_unsupported_url_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported ClickHouse URL scheme 'mysql'"):
        open_clickhouse("mysql://localhost/db")


def test_split_statements_splits_on_semicolons_at_line_ends() -> None:
    sql = textwrap.dedent(
        """\
        -- header comment
        CREATE TABLE a
        (
            x Int32 -- inline
        )
        ENGINE = Memory;

        CREATE VIEW b AS SELECT ';' AS s FROM a;
        INSERT INTO a VALUES (1)
        """
    )
    assert split_statements(sql) == [
        "-- header comment\nCREATE TABLE a\n(\n    x Int32 -- inline\n)\nENGINE = Memory",
        "CREATE VIEW b AS SELECT ';' AS s FROM a",
        "INSERT INTO a VALUES (1)",
    ]


def test_split_statements_drops_comment_only_chunks() -> None:
    assert split_statements("-- nothing here;\n\n-- still nothing\n") == []
    assert split_statements("") == []


def test_an_edited_applied_migration_is_one_clear_error(migrations: MigrationRun) -> None:
    files = migration_files()
    name, sql = files[3]
    edited = [*files[:3], (name, sql + "\n-- edited after release\n"), *files[4:]]
    with pytest.raises(MigrationChangedError) as caught:
        apply_migrations(migrations.handle.client, edited)
    message = str(caught.value)
    assert message.startswith(f"migration {name} was edited after it was applied")
    assert "new numbered file" in message and "\n" not in message
    # Refused before anything ran: the untouched files still apply as nothing to do.
    assert apply_migrations(migrations.handle.client) == []


def test_a_new_file_applies_after_the_checked_ones(migrations: MigrationRun) -> None:
    extra = ("999_test_extra.sql", "CREATE TABLE IF NOT EXISTS test_extra (a Int8) ENGINE = Memory")
    client = migrations.handle.client
    assert apply_migrations(client, [*migration_files(), extra]) == ["999_test_extra.sql"]
    assert apply_migrations(client, [*migration_files(), extra]) == []
    client.command("DROP TABLE test_extra")
    client.command(f"DELETE FROM {MIGRATIONS_TABLE} WHERE name = '999_test_extra.sql'")
