"""Fixtures shared by every test directory: the embedded broker, embedded ClickHouse
(chdb) and the price catalog; the per-test time limits; where hypothesis keeps its
examples. Helpers that tests import live in tests/helpers/.

chdb runs one engine per process and refuses a second data path while one is open,
so each test module opens its own path and closes it when the module ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

from streams.cost.catalog import CatalogPrices
from streams.embedded.broker import EmbeddedBroker
from streams.ledger.connect import ClickHouseHandle, open_clickhouse
from streams.ledger.migrations import apply_migrations
from streams.settings import chdb_url_for

# Hypothesis keeps its example database in .hypothesis/ of the working directory by
# default; under .pytest_cache it stays out of the repository root.
settings.register_profile(
    "spendstream",
    database=DirectoryBasedExampleDatabase(
        Path(__file__).resolve().parent.parent / ".pytest_cache" / "hypothesis"
    ),
)
settings.load_profile("spendstream")

# A test whose module starts the real stack (a worker's start and group join take
# ~35 s, several in some modules) pays that in its setup, which the limit includes.
STACK_TIMEOUT_S = 900
STACK_MARKERS = ("integration", "reliability", "containers")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        starts_stack = any(item.get_closest_marker(name) for name in STACK_MARKERS)
        if starts_stack and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(STACK_TIMEOUT_S))


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The embedded Kafka-protocol broker (tansu, memory storage) on a free port, shared
    by the tests that need only a broker: each uses topics (and groups) of its own."""
    with EmbeddedBroker() as running:
        yield running


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
