"""Fixtures for the analyst tests: the root conftest's migrated chdb, emptied."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.client import Client

from streams.ledger.connect import ClickHouseHandle


def empty_tables(client: Client) -> Client:
    tables = client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND engine LIKE '%MergeTree' AND name != 'schema_migrations'"
    ).result_rows
    for (name,) in tables:
        client.command(f"TRUNCATE TABLE {name}")
    return client


@pytest.fixture
def ch(chdb_migrated: ClickHouseHandle) -> Client:
    """The module's ClickHouse with every table emptied."""
    return empty_tables(chdb_migrated.client)


@pytest.fixture(scope="module")
def module_ch(chdb_migrated: ClickHouseHandle) -> Client:
    """The module's ClickHouse, emptied once: for tests that only read a shared ledger."""
    return empty_tables(chdb_migrated.client)
