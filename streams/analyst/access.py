"""The one way the analyst commands reach ClickHouse.

Every command opens its client through `open_reader`, so that how the analyst
layer connects (today: the ClickHouse URL from the environment, or the embedded
data dir; later: through a running worker) changes in this one place.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from clickhouse_connect.driver.client import Client

from streams.errors import ConfigError
from streams.ledger.connect import chdb_url_for, clickhouse_session
from streams.ledger.remote import RemoteQueryClient, running_worker_url

URL_ENV = "SPENDSTREAM_CLICKHOUSE_URL"
DEFAULT_DATA_DIR = ".spendstream"


def clickhouse_url(args: argparse.Namespace) -> str:
    url = os.environ.get(URL_ENV)
    if url:
        return url
    data_dir = Path(getattr(args, "data_dir", None) or DEFAULT_DATA_DIR)
    if not (data_dir / "clickhouse").is_dir():
        # Opening a missing path would create an empty database and report zeros.
        raise ConfigError(f"no ClickHouse data in {data_dir}: pass --data-dir or set {URL_ENV}")
    return chdb_url_for(data_dir)


@contextmanager
def open_reader(args: argparse.Namespace, *, write: bool = False) -> Iterator[Client]:
    """A ClickHouse client for one command. In the embedded default a running worker
    owns the data dir, so reads go through its read-only query endpoint; commands
    that write (`write=True`: reprice, retention) open the data dir themselves and
    say so in one line if the worker holds it."""
    url = clickhouse_url(args)
    if not write and url.startswith("chdb:"):
        data_dir = Path(getattr(args, "data_dir", None) or DEFAULT_DATA_DIR)
        worker_url = running_worker_url(data_dir)
        if worker_url is not None:
            token = os.environ.get("SPENDSTREAM_ANALYST_TOKEN")
            remote = RemoteQueryClient(worker_url, token)
            try:
                yield cast(Client, remote)
            finally:
                remote.close()
            return
    with clickhouse_session(url) as handle:
        yield handle.client


def require_objects(client: Client, *names: str) -> None:
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
