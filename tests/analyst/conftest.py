"""Fixtures for the analyst tests: an embedded ClickHouse (chdb) with every migration.

chdb runs one engine per process and refuses a second data path while one is
open, so each test module opens its own path and closes it when the module ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from streams.ledger.connect import ClickHouseHandle, apply_migrations, chdb_url_for, open_clickhouse


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def _chdb(data_dir: Path) -> Iterator[ClickHouseHandle]:
    handle = open_clickhouse(chdb_url_for(data_dir))
    try:
        apply_migrations(handle.client)
        yield handle
    finally:
        handle.close()


def empty_tables(client: Client) -> Client:
    tables = client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND engine LIKE '%MergeTree' AND name != 'schema_migrations'"
    ).result_rows
    for (name,) in tables:
        client.command(f"TRUNCATE TABLE {name}")
    return client


@pytest.fixture
def ch(_chdb: ClickHouseHandle) -> Client:
    """The module's ClickHouse with every table emptied."""
    return empty_tables(_chdb.client)


@pytest.fixture(scope="module")
def module_ch(_chdb: ClickHouseHandle) -> Client:
    """The module's ClickHouse, emptied once: for tests that only read a shared ledger."""
    return empty_tables(_chdb.client)
