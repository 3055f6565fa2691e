"""Who may call the worker's HTTP API, and with which token.

Three credentials, each accepted only as `Authorization: Bearer <token>` and only
on its own paths:

- the analyst token: `POST /v1/query`, `GET /v1/limits/{tenant}`, the dashboard;
- the peer token: `POST /v1/ledger/insert` and `/v1/ledger/query`, used by the
  peers of `dev --workers N` and by nothing else;
- an ingest key (`ssk_…`, `spendstream keys create`): `/v1/events`, `/v1/traces`,
  and `GET /v1/limits/{tenant}` for the key's own tenant (a gateway enforcing caps
  already holds one).

A fourth secret, `alert_link`, is never sent: it signs the per-alert links of alert
messages that acknowledge that one alert (streams/alerting/acknowledgements.py).

Authentication is on by default: a token not configured (`SPENDSTREAM_ANALYST_TOKEN`,
`SPENDSTREAM_PEER_TOKEN`) is generated at the first start and kept in
`<data_dir>/tokens.json` (mode 0600), where the CLI commands that go through the
worker read it. Rotate a token by deleting its entry (or the file) and restarting
the worker, or by configuring a new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import SecretStr

from streams.data_dir import private_dir
from streams.errors import ConfigError

if TYPE_CHECKING:  # the store is passed in: http_ingest imports `bearer_token` from here
    from streams.http_ingest.keys import IngestKeyStore

TOKENS_FILE = "tokens.json"
TOKEN_NAMES = ("analyst", "peer", "alert_link")


def bearer_token(request: Any) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None (a bare token,
    Basic credentials or an empty value are not accepted)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def same_token(given: str | None, expected: SecretStr) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


@dataclass(frozen=True)
class WorkerTokens:
    analyst: SecretStr
    peer: SecretStr
    # Signs the links in alert messages that acknowledge one alert (never sent itself).
    alert_link: SecretStr = field(default_factory=lambda: SecretStr(""))


def tokens_path(data_dir: Path) -> Path:
    return data_dir / TOKENS_FILE


def read_tokens(data_dir: Path) -> dict[str, str]:
    try:
        stored = orjson.loads(tokens_path(data_dir).read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {tokens_path(data_dir)}: {exc}") from None
    return {name: str(stored[name]) for name in TOKEN_NAMES if stored.get(name)}


def ensure_tokens(
    data_dir: Path, analyst: SecretStr | None = None, peer: SecretStr | None = None
) -> tuple[WorkerTokens, bool]:
    """The worker's tokens: configured ones win; missing ones come from the data dir's
    file, generated (and stored 0600) the first time. Returns (tokens, generated)."""
    private_dir(data_dir)
    path = tokens_path(data_dir)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # `dev` and its workers may start together
        stored = read_tokens(data_dir)
        missing = [name for name in TOKEN_NAMES if name not in stored]
        for name in missing:
            stored[name] = secrets.token_urlsafe(32)
        if missing:
            _write_private(path, orjson.dumps(stored, option=orjson.OPT_INDENT_2))
    finally:
        os.close(fd)
    tokens = WorkerTokens(
        analyst=analyst or SecretStr(stored["analyst"]),
        peer=peer or SecretStr(stored["peer"]),
        alert_link=SecretStr(stored["alert_link"]),
    )
    return tokens, bool(missing)


def analyst_token_for(data_dir: Path, configured: SecretStr | str | None) -> str | None:
    """The token a CLI command sends to the worker: the configured one, else the file's."""
    if isinstance(configured, SecretStr):
        return configured.get_secret_value()
    return configured or read_tokens(data_dir).get("analyst")


def usage_hint(data_dir: Path) -> str:
    path = tokens_path(data_dir)
    return (
        f"auth: tokens in {path} (0600); CLI commands read them there; over HTTP send "
        f'-H "Authorization: Bearer <analyst token from {path.name}>"'
    )


def _write_private(path: Path, content: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


class RequestAuth:
    """The checks the worker's views make; `is_analyst` is the one for any page that
    shows spend (the dashboard included)."""

    def __init__(self, tokens: WorkerTokens, key_store: IngestKeyStore | None = None) -> None:
        self.tokens = tokens
        self.key_store = key_store

    def is_analyst(self, request: Any) -> bool:
        return same_token(bearer_token(request), self.tokens.analyst)

    def is_peer(self, request: Any) -> bool:
        return same_token(bearer_token(request), self.tokens.peer)

    def may_read_limits(self, request: Any, tenant_id: str) -> bool:
        """The analyst, or an active ingest key of this very tenant."""
        if self.is_analyst(request):
            return True
        if self.key_store is None:
            return False
        scope = self.key_store.authenticate(bearer_token(request))
        return scope is not None and scope.tenant_id == tenant_id
