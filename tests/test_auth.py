"""Tokens: generated once into the data dir (0600) when not configured, configured ones
win, and only `Authorization: Bearer <token>` is accepted."""

from __future__ import annotations

import stat
from pathlib import Path

from multidict import CIMultiDict
from pydantic import SecretStr

from streams.auth import (
    RequestAuth,
    analyst_token_for,
    bearer_token,
    ensure_tokens,
    tokens_path,
)
from streams.http_ingest.keys import IngestKeyStore


class Headers:
    """What the checks read of a request: its headers (aiohttp's multidict)."""

    def __init__(self, authorization: str | None) -> None:
        self.headers = CIMultiDict({"Authorization": authorization} if authorization else {})


def test_tokens_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first, generated = ensure_tokens(data_dir)
    assert generated
    again, generated_again = ensure_tokens(data_dir)
    assert not generated_again
    assert first == again
    assert first.analyst != first.peer
    assert len(first.analyst.get_secret_value()) >= 40
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(tokens_path(data_dir).stat().st_mode) == 0o600
    assert analyst_token_for(data_dir, None) == first.analyst.get_secret_value()


def test_a_configured_token_wins(tmp_path: Path) -> None:
    tokens, _ = ensure_tokens(tmp_path, analyst=SecretStr("configured"))
    assert tokens.analyst.get_secret_value() == "configured"
    assert analyst_token_for(tmp_path, "configured") == "configured"


def test_only_a_bearer_token_is_accepted(tmp_path: Path) -> None:
    tokens, _ = ensure_tokens(tmp_path)
    analyst = tokens.analyst.get_secret_value()
    auth = RequestAuth(tokens)
    assert auth.is_analyst(Headers(f"Bearer {analyst}"))
    assert auth.is_analyst(Headers(f"bearer {analyst}"))
    assert not auth.is_analyst(Headers(analyst))
    assert not auth.is_analyst(Headers(f"Basic {analyst}"))
    assert not auth.is_analyst(Headers("Bearer "))
    assert not auth.is_analyst(Headers(None))
    assert not auth.is_analyst(Headers(f"Bearer {tokens.peer.get_secret_value()}"))
    assert auth.is_peer(Headers(f"Bearer {tokens.peer.get_secret_value()}"))
    assert bearer_token(Headers("Bearer  spaced ")) == "spaced"


def test_limits_take_the_analyst_or_a_key_of_that_tenant(tmp_path: Path) -> None:
    tokens, _ = ensure_tokens(tmp_path)
    store = IngestKeyStore(tmp_path / "ingest_keys.json")
    _, acme = store.create("acme")
    auth = RequestAuth(tokens, store)
    assert auth.may_read_limits(Headers(f"Bearer {acme.get_secret_value()}"), "acme")
    assert not auth.may_read_limits(Headers(f"Bearer {acme.get_secret_value()}"), "globex")
    assert auth.may_read_limits(Headers(f"Bearer {tokens.analyst.get_secret_value()}"), "globex")
    assert not auth.may_read_limits(Headers(None), "acme")
