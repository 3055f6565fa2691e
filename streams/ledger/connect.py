"""ClickHouse access: open a client for `chdb:///path` or `http(s)://…`, apply `sql/`.

The embedded engine (chdb) lets one process own a data path. We take an
advisory lock beside it first, so a second process gets a clear error instead
of chdb's opaque one, and the lock dies with its process (SIGKILL included).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from pydantic import SecretStr

from streams.data_dir import private_dir
from streams.errors import ConfigError, DataDirInUseError, MigrationChangedError

MIGRATIONS_TABLE = "schema_migrations"


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


def chdb_url_for(data_dir: Path) -> str:
    return f"chdb://{(data_dir / 'clickhouse').resolve()}"


def _lock_data_path(path: Path) -> IO[str]:
    private_dir(path.parent)
    private_dir(path)
    lock_file = open(path.parent / f".{path.name}.lock", "a+")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
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
        from streams.ledger.peer import PeerClickHouseClient

        token = password.get_secret_value() if password else None
        peer = PeerClickHouseClient(f"http://{parsed.netloc}", token)
        return ClickHouseHandle(client=peer, url=url)  # type: ignore[arg-type]
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


def migration_files() -> list[tuple[str, str]]:
    """(file name, SQL text) of every numbered `sql/NNN_*.sql`, in order."""
    files = sorted(
        (entry.name, entry.read_text())
        for entry in resources.files("sql").iterdir()
        if entry.name.endswith(".sql") and entry.name[:3].isdigit()
    )
    return files


def split_statements(sql: str) -> list[str]:
    """Split a DDL file on `;` at line ends; `--` comments are kept with their statement."""
    statements, current = [], []
    for line in sql.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if _has_code(statement):
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if _has_code(tail):
        statements.append(tail)
    return statements


def _has_code(statement: str) -> bool:
    return any(
        line.strip() and not line.strip().startswith("--") for line in statement.splitlines()
    )


def checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def apply_migrations(client: Client, files: Sequence[tuple[str, str]] | None = None) -> list[str]:
    """Apply every pending `sql/` file once, in order; return the names applied.

    An applied file is known by its name and the checksum of its text: one edited
    after it ran would never run again, so it stops the migration, before anything
    is applied, with one line naming it (put the change in a new numbered file)."""
    files = migration_files() if files is None else files
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name String, checksum String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY name"
    )
    recorded = client.query(f"SELECT name, checksum FROM {MIGRATIONS_TABLE}").result_rows
    done = {str(name): str(digest) for name, digest in recorded}
    for name, sql in files:
        if name in done and done[name] != checksum(sql):
            raise MigrationChangedError(
                f"migration {name} was edited after it was applied (checksum "
                f"{done[name][:12]}… recorded, {checksum(sql)[:12]}… now): restore it and "
                "put the change in a new numbered file"
            )
    applied = []
    for name, sql in files:
        if name in done:
            continue
        for statement in split_statements(sql):
            client.command(statement)
        # A plain INSERT statement: client.insert() first reads the table's structure.
        client.command(
            f"INSERT INTO {MIGRATIONS_TABLE} (name, checksum) VALUES (%(name)s, %(checksum)s)",
            parameters={"name": name, "checksum": checksum(sql)},
        )
        applied.append(name)
    return applied
