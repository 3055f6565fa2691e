"""Scoped ingest keys: who may write usage over HTTP, and as whom.

A key looks like `ssk_<key_id>_<secret>`: `key_id` (16 hex characters) names
the key in listings and logs, `secret` carries 256 bits of entropy. Only the
SHA-256 of the secret is stored. A slow password hash would add nothing: the
secret is random, not chosen by a person, so it cannot be guessed from a
dictionary, and a fast hash keeps `authenticate` cheap on every request.

The store is one JSON file (default `<data_dir>/ingest_keys.json`, mode 0600)
shared by processes: `spendstream keys create` writes it while the worker
serves from it, so writers hold an exclusive lock on a sidecar `.lock` file and
replace the file atomically, and readers reload it when it changes.

>>> import tempfile, pathlib
>>> store = IngestKeyStore(pathlib.Path(tempfile.mkdtemp()) / "keys.json")
>>> key, token = store.create("acme", team_id="search")
>>> store.authenticate(token).team_id
'search'
>>> _ = store.revoke(key.key_id)
>>> store.authenticate(token) is None
True
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from streams.errors import ConfigError

log = logging.getLogger("spendstream.ingest_keys")

KEY_PREFIX = "ssk_"
KEYS_FILENAME = "ingest_keys.json"
FILE_VERSION = 1
MAX_FIELD_LENGTH = 256
# Longer than any key this module issues; caps the work an attacker can cause.
MAX_TOKEN_LENGTH = 128
# Compared against when the key id is unknown, so that path costs the same.
_DUMMY_HASH = hashlib.sha256(b"spendstream-unknown-key").hexdigest()


class KeyNotFoundError(ConfigError):
    """`keys revoke` named a key id the store does not hold."""


@dataclass(frozen=True)
class KeyScope:
    """What an authenticated request may write: events of this tenant, and of
    this team and project when the key names them."""

    key_id: str
    tenant_id: str
    team_id: str = ""
    project: str = ""


@dataclass(frozen=True)
class IngestKey:
    """A stored key without its secret (what `keys list` shows)."""

    key_id: str
    tenant_id: str
    team_id: str
    project: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def scope(self) -> KeyScope:
        return KeyScope(self.key_id, self.tenant_id, self.team_id, self.project)


@dataclass(frozen=True)
class _StoredKey:
    key: IngestKey
    secret_sha256: str


def keys_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / KEYS_FILENAME


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _clean(value: str | None, field: str, *, required: bool = False) -> str:
    text = (value or "").strip()
    if required and not text:
        raise ConfigError(f"{field} must not be empty")
    if len(text) > MAX_FIELD_LENGTH:
        raise ConfigError(f"{field} is longer than {MAX_FIELD_LENGTH} characters")
    if not text.isprintable():
        raise ConfigError(f"{field} must not contain control characters")
    return text


def split_token(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    if not token.startswith(KEY_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        return None
    key_id, sep, secret = token[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


class IngestKeyStore:
    """The key file at `path`; see the module doc for the sharing rules."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._keys: dict[str, _StoredKey] = {}
        self._signature: tuple[int, int, int] | None = None

    @classmethod
    def for_data_dir(cls, data_dir: Path | str) -> IngestKeyStore:
        return cls(keys_path(data_dir))

    def __repr__(self) -> str:
        return f"IngestKeyStore({str(self.path)!r})"

    # -- reading -----------------------------------------------------------

    def authenticate(self, token: str | SecretStr | None) -> KeyScope | None:
        """The scope of an active key, or None for a missing, malformed,
        unknown or revoked one."""
        if token is None:
            return None
        text = token.get_secret_value() if isinstance(token, SecretStr) else token
        parts = split_token(text.strip())
        self._refresh()
        if parts is None:
            return None
        key_id, secret = parts
        stored = self._keys.get(key_id)
        expected = stored.secret_sha256 if stored is not None else _DUMMY_HASH
        matches = hmac.compare_digest(expected, _hash_secret(secret))
        if stored is None or not matches or not stored.key.active:
            return None
        return stored.key.scope

    def list(self) -> builtins.list[IngestKey]:
        """Every key, revoked ones included, oldest first."""
        self._refresh(strict=True)
        return sorted((s.key for s in self._keys.values()), key=lambda k: k.created_at)

    def get(self, key_id: str) -> IngestKey | None:
        self._refresh(strict=True)
        stored = self._keys.get(key_id)
        return stored.key if stored is not None else None

    def _stat_signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        # os.replace gives a new inode, so a rewrite within one mtime tick is seen too.
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self, *, strict: bool = False) -> None:
        signature = self._stat_signature()
        if signature == self._signature:
            return
        try:
            self._keys = self._read()
        except ConfigError:
            if strict:
                raise
            # The worker keeps serving with the keys it last read: refusing
            # every request because of a hand-edited file would be worse.
            log.warning("cannot read ingest key file %s; keeping the keys last read", self.path)
            return
        self._signature = signature

    def _read(self) -> dict[str, _StoredKey]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot read ingest key file {self.path}: {exc}") from exc
        try:
            document = orjson.loads(raw)
            return {s.key.key_id: s for s in (_decode(item) for item in document["keys"])}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"ingest key file {self.path} is corrupt: {exc}") from exc

    # -- writing -----------------------------------------------------------

    def create(
        self,
        tenant_id: str,
        team_id: str | None = None,
        project: str | None = None,
        *,
        now: datetime | None = None,
    ) -> tuple[IngestKey, SecretStr]:
        """A new key and its token; the token is not stored and cannot be shown again."""
        tenant = _clean(tenant_id, "tenant", required=True)
        team = _clean(team_id, "team")
        proj = _clean(project, "project")
        secret = secrets.token_urlsafe(32)
        with self._locked() as keys:
            key_id = secrets.token_hex(8)
            while key_id in keys:
                key_id = secrets.token_hex(8)
            key = IngestKey(key_id, tenant, team, proj, now or datetime.now(UTC))
            keys[key_id] = _StoredKey(key, _hash_secret(secret))
        return key, SecretStr(f"{KEY_PREFIX}{key_id}_{secret}")

    def revoke(self, key_id: str, *, now: datetime | None = None) -> IngestKey:
        """Revoke a key (idempotent: an already revoked key keeps its first date)."""
        with self._locked() as keys:
            stored = keys.get(key_id.strip())
            if stored is None:
                raise KeyNotFoundError(f"no ingest key with id {key_id!r}")
            if stored.key.active:
                stored = replace(
                    stored, key=replace(stored.key, revoked_at=now or datetime.now(UTC))
                )
                keys[stored.key.key_id] = stored
            return stored.key

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, _StoredKey]]:
        """The keys as on disk, under the writers' lock; written back on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            keys = self._read()
            yield keys
            self._write(keys)
            self._keys = keys
            self._signature = self._stat_signature()
        finally:
            os.close(fd)  # also releases the lock

    def _write(self, keys: dict[str, _StoredKey]) -> None:
        document = {
            "version": FILE_VERSION,
            "keys": [_encode(s) for s in sorted(keys.values(), key=lambda s: s.key.created_at)],
        }
        # mkstemp creates the file 0600, so the hashes are never readable by others.
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise


def _encode(stored: _StoredKey) -> dict[str, Any]:
    key = stored.key
    return {
        "key_id": key.key_id,
        "secret_sha256": stored.secret_sha256,
        "tenant_id": key.tenant_id,
        "team_id": key.team_id,
        "project": key.project,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def _decode(item: dict[str, Any]) -> _StoredKey:
    revoked = item.get("revoked_at")
    key = IngestKey(
        key_id=str(item["key_id"]),
        tenant_id=str(item["tenant_id"]),
        team_id=str(item.get("team_id") or ""),
        project=str(item.get("project") or ""),
        created_at=datetime.fromisoformat(item["created_at"]),
        revoked_at=datetime.fromisoformat(revoked) if revoked else None,
    )
    digest = str(item["secret_sha256"])
    if len(digest) != 64:
        raise ValueError(f"key {key.key_id} has no valid secret_sha256")
    return _StoredKey(key, digest)
