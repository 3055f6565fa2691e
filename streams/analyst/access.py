"""How the analyst commands reach ClickHouse.

Reads go through `streams.ledger.remote.open_reader`, the one way every command
reads (through the running worker when one owns the data dir, else directly).
Commands that write (`reprice`, `retention --raw-days`) go through
`streams.ledger.remote.open_writer`: through the running worker too, else directly.
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from streams.errors import ConfigError
from streams.ledger.remote import Reader


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
