"""Fixtures shared by every test directory: embedded ClickHouse (chdb) and the price catalog.

chdb runs one engine per process and refuses a second data path while one is open,
so each test module opens its own path and closes it when the module ends; other
test directories do the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.cost.catalog import CatalogPrices
from streams.ledger.connect import ClickHouseHandle, apply_migrations, chdb_url_for, open_clickhouse


@pytest.fixture(scope="module")
def chdb_fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHandle]:
    """An empty embedded ClickHouse, no migrations applied."""
    handle = open_clickhouse(chdb_url_for(tmp_path_factory.mktemp("chdb")))
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture(scope="module")
def chdb_migrated(chdb_fresh: ClickHouseHandle) -> ClickHouseHandle:
    apply_migrations(chdb_fresh.client)
    return chdb_fresh


@pytest.fixture
def ledger_db(chdb_migrated: ClickHouseHandle) -> ClickHouseHandle:
    # Emptied per test so row counts are each test's own; ledger_day_check is the
    # view-fed table the sink tests read to see what the materialized views received.
    for table in ("usage_ledger", "dead_letters", "ledger_day_check"):
        chdb_migrated.client.command(f"TRUNCATE TABLE IF EXISTS {table}")
    return chdb_migrated


@pytest.fixture(scope="session")
def catalog() -> CatalogPrices:
    # Loading the genai-prices snapshot takes about half a second; its prices are
    # read-only, so one instance serves every test.
    return CatalogPrices()
