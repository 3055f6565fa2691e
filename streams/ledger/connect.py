"""ClickHouse connections: open a client for `chdb:///path` or `http(s)://…`.

The embedded engine (chdb) lets one process own a data path. We take an
advisory lock beside it first, so a second process gets a clear error instead
of chdb's opaque one, and the lock dies with its process (SIGKILL included).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from pydantic import SecretStr

from streams.data_dir import private_dir
from streams.errors import ConfigError, DataDirInUseError


@dataclass
class ClickHouseHandle:
    """A client plus, for chdb, the lock that proves this process owns the path."""

    client: Client
    url: str
    _lock_file: IO[str] | None = None

    @property
    def embedded(self) -> bool:
        return self._lock_file is not None

    @property
    def remote(self) -> bool:
        """ClickHouse reached through the worker that owns the embedded data dir."""
        return bool(getattr(self.client, "remote", False))

    def close(self) -> None:
        self.client.close()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def ensure_data_dir_free(url: str) -> None:
    """Raise DataDirInUseError if another process owns this embedded data dir; cheap:
    takes and releases the lock without starting the engine."""
    parsed = urlparse(url)
    if parsed.scheme == "chdb":
        lock = _lock_data_path(Path(parsed.path))
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


# An owner killed a moment ago (a `dev` SIGKILLed takes its workers with it) frees the
# lock as the kernel tears it down, some milliseconds after its parent is reaped.
OWNER_EXIT_GRACE_S = 2.0


def _lock_data_path(path: Path) -> IO[str]:
    private_dir(path.parent)
    private_dir(path)
    lock_file = open(path.parent / f".{path.name}.lock", "a+")  # noqa: SIM115 - held open on purpose
    if not _flock_within(lock_file, OWNER_EXIT_GRACE_S):
        lock_file.seek(0)
        owner = lock_file.read().strip() or "another process"
        lock_file.close()
        raise DataDirInUseError(
            f"data dir {path.parent} is in use by {owner}; stop it or pass another --data-dir"
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"pid {os.getpid()}")
    lock_file.flush()
    return lock_file


def _flock_within(lock_file: IO[str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def open_clickhouse(url: str, password: SecretStr | None = None) -> ClickHouseHandle:
    """Open `chdb:///abs/path` (embedded) or `http(s)://user@host:port/database`."""
    parsed = urlparse(url)
    if parsed.scheme == "chdb":
        path = Path(parsed.path)
        lock = _lock_data_path(path)
        try:
            client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        except Exception:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
            raise
        return ClickHouseHandle(client=client, url=url, _lock_file=lock)
    if parsed.scheme in ("http", "https"):
        kwargs: dict[str, Any] = {
            "host": parsed.hostname or "localhost",
            "port": parsed.port or (8443 if parsed.scheme == "https" else 8123),
            "secure": parsed.scheme == "https",
            "username": parsed.username or "default",
            "database": parsed.path.lstrip("/") or "default",
        }
        secret = password.get_secret_value() if password else (parsed.password or "")
        client = clickhouse_connect.get_client(password=secret, **kwargs)
        return ClickHouseHandle(client=client, url=url)
    if parsed.scheme == "spendstream+http":
        # The peers of `spendstream dev --workers N` reach the owner worker's ClickHouse
        # through it; the worker opens that URL itself (streams/runtime/resources.py).
        raise ConfigError(f"{url}: only a worker started by `spendstream dev` reaches this")
    raise ConfigError(
        f"unsupported ClickHouse URL scheme {parsed.scheme!r}: use chdb:// or http(s)://"
    )


def open_session_client(handle: ClickHouseHandle, password: SecretStr | None = None) -> Client:
    """A second client (its own ClickHouse session) in the process that holds `handle`.

    Read-only queries run here: on chdb, `readonly=1` sent with a refused query
    sticks to the session, and must never reach the ledger writer's session."""
    parsed = urlparse(handle.url)
    if getattr(handle.client, "remote", False):
        return handle.client
    if parsed.scheme == "chdb":
        return clickhouse_connect.get_client(dsn=f"chdb://{parsed.path}")
    return open_clickhouse(handle.url, password).client


@contextmanager
def clickhouse_session(url: str, password: SecretStr | None = None) -> Iterator[ClickHouseHandle]:
    handle = open_clickhouse(url, password)
    try:
        yield handle
    finally:
        handle.close()
