"""How the analyst commands reach ClickHouse.

Reads go through `streams.ledger.remote.open_reader`, the one way every command
reads (through the running worker when one owns the data dir, else directly).
Commands that write (`reprice`, `retention --raw-days`) open ClickHouse themselves
and say so in one line if a worker holds the embedded data dir.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from clickhouse_connect.driver.client import Client

from streams.errors import ConfigError
from streams.ledger.connect import clickhouse_session
from streams.ledger.remote import Reader, require_data_dir
from streams.settings import Settings


@contextmanager
def open_writer(settings: Settings) -> Iterator[Client]:
    require_data_dir(settings)
    with clickhouse_session(settings.resolved_clickhouse_url, settings.clickhouse_password) as ch:
        yield ch.client


def require_objects(client: Reader | Client, *names: str) -> None:
    """Fail with one line when the analyst migrations have not been applied."""
    rows = client.query(
        "SELECT name FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
        parameters={"names": list(names)},
    ).result_rows
    missing = sorted(set(names) - {row[0] for row in rows})
    if missing:
        raise ConfigError(
            f"ClickHouse has no {', '.join(missing)}: apply the sql/ migrations first"
        )
