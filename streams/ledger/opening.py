"""The embedded ledger opened and migrated on a thread from the worker's first moment.

chdb's engine start and the DDL of `sql/` (1.5-2.5 s on a new data dir) run mostly
outside the GIL, and the worker's import of Faust and its own modules takes as long:
started first, they overlap instead of following each other (bench.cold_start).
"""

from __future__ import annotations

import concurrent.futures
import time

from pydantic import SecretStr

from streams.ledger.connect import ClickHouseHandle, ensure_data_dir_free, open_clickhouse
from streams.ledger.migrations import apply_migrations


class LedgerOpening:
    """`open_clickhouse` then `apply_migrations` of a `chdb://` URL, begun at once on a
    thread; `result()` waits for them and raises what they raised."""

    def __init__(self, url: str, password: SecretStr | None) -> None:
        ensure_data_dir_free(url)  # a data dir in use fails the command in one line, here
        # Wall-clock moments, for the worker's start timeline in `/stats`.
        self.started: dict[str, float] = {}
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ledger-open")
        self._future = pool.submit(self._open, url, password)
        pool.shutdown(wait=False)

    def _open(self, url: str, password: SecretStr | None) -> tuple[ClickHouseHandle, list[str]]:
        handle = open_clickhouse(url, password)
        self.started["clickhouse_open"] = time.time()
        try:
            applied = apply_migrations(handle.client)
        except BaseException:
            handle.close()
            raise
        self.started["migrated"] = time.time()
        return handle, applied

    def result(self) -> tuple[ClickHouseHandle, list[str]]:
        """The open handle and the migrations applied."""
        return self._future.result()
