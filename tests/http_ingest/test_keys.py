"""Scoped ingest keys: the store (`streams.http_ingest.keys`) and the
`spendstream keys` commands (`streams.cli.keys`), run through argparse."""

from __future__ import annotations

import argparse
import doctest
import json
import os
import re
import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr

import streams.http_ingest.keys
from streams.cli.keys import add_keys_commands
from streams.errors import ConfigError
from streams.http_ingest.keys import IngestKeyStore, KeyNotFoundError, KeyScope

TOKEN = re.compile(r"ssk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@pytest.fixture
def store(tmp_path: Path) -> IngestKeyStore:
    return IngestKeyStore(tmp_path / "data" / "ingest_keys.json")


def test_module_examples() -> None:
    # Every example runs (an example deleted or no longer collected fails here too).
    assert doctest.testmod(streams.http_ingest.keys) == (0, 6)  # (failed, attempted)


def test_a_created_key_authenticates_with_its_scope(store: IngestKeyStore) -> None:
    key, token = store.create("acme", team_id="search", project="rerank")

    assert isinstance(token, SecretStr)
    match = TOKEN.fullmatch(token.get_secret_value())
    assert match is not None  # 43 urlsafe base64 characters = 256 bits
    assert match.group(1) == key.key_id
    assert store.authenticate(token) == KeyScope(key.key_id, "acme", "search", "rerank")
    assert store.authenticate(token.get_secret_value()) == key.scope
    assert store.authenticate(f"  {token.get_secret_value()}  ") == key.scope


def test_only_a_hash_of_the_secret_is_stored_in_a_private_file(store: IngestKeyStore) -> None:
    _, token = store.create("acme")
    secret = token.get_secret_value().rsplit("_", 1)[-1]
    text = store.path.read_text()

    assert secret not in text
    [stored] = json.loads(text)["keys"]
    assert re.fullmatch(r"[0-9a-f]{64}", stored["secret_sha256"])
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_wrong_malformed_and_missing_keys_do_not_authenticate(store: IngestKeyStore) -> None:
    key, token = store.create("acme")
    _, other = store.create("acme")
    other_secret = other.get_secret_value().rsplit("_", 1)[-1]

    for bad in [
        f"ssk_{key.key_id}_{other_secret}",  # a real secret, under the wrong id
        f"ssk_{key.key_id}_",
        f"ssk_{key.key_id}",
        f"ssk_0000000000000000_{other_secret}",
        token.get_secret_value().upper(),
        token.get_secret_value() + "x" * 200,
        "",
        None,
    ]:
        assert store.authenticate(bad) is None, bad


def test_a_revoked_key_no_longer_authenticates(store: IngestKeyStore) -> None:
    key, token = store.create("acme")
    revoked = store.revoke(key.key_id)

    assert revoked.revoked_at is not None and not revoked.active
    assert store.authenticate(token) is None
    assert [k.key_id for k in store.list()] == [key.key_id]  # still listed
    assert store.revoke(key.key_id).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(KeyNotFoundError):
        store.revoke("0000000000000000")


def test_a_serving_store_sees_keys_written_by_another_process(store: IngestKeyStore) -> None:
    serving = IngestKeyStore(store.path)
    assert serving.authenticate("ssk_x_y") is None  # file absent: no keys yet

    # `spendstream keys create/revoke` run with their own store instance.
    key, token = IngestKeyStore(store.path).create("acme")
    assert serving.authenticate(token) == key.scope
    IngestKeyStore(store.path).revoke(key.key_id)
    assert serving.authenticate(token) is None


def test_concurrent_writers_lose_no_key(store: IngestKeyStore) -> None:
    tokens: list[SecretStr] = []
    lock = threading.Lock()

    def create_some() -> None:
        writer = IngestKeyStore(store.path)  # one instance per writer, as separate processes
        for _ in range(10):
            _, token = writer.create("acme")
            with lock:
                tokens.append(token)

    threads = [threading.Thread(target=create_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    reader = IngestKeyStore(store.path)
    assert len(reader.list()) == 40
    assert all(reader.authenticate(token) is not None for token in tokens)


def test_a_corrupt_file_is_an_error_for_commands_but_not_for_serving(
    store: IngestKeyStore,
) -> None:
    _, token = store.create("acme")
    serving = IngestKeyStore(store.path)
    assert serving.authenticate(token) is not None
    store.path.write_text("{not json")

    assert serving.authenticate(token) is not None  # keeps the keys it last read
    with pytest.raises(ConfigError, match="corrupt"):
        IngestKeyStore(store.path).list()


def test_a_key_needs_a_tenant(store: IngestKeyStore) -> None:
    with pytest.raises(ConfigError, match="tenant"):
        store.create("  ")
    with pytest.raises(ConfigError, match="control"):
        store.create("ac\nme")


# -- spendstream keys ... ---------------------------------------------------


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spendstream")
    add_keys_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_keys_create_prints_the_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        ["keys", "create", "--tenant", "acme", "--team", "search", "--data-dir", str(tmp_path)]
    )
    out, err = capsys.readouterr()

    assert code == 0
    token = out.strip()
    assert TOKEN.fullmatch(token)
    assert (out + err).count(token) == 1
    assert "not shown again" in err
    scope = IngestKeyStore(tmp_path / "ingest_keys.json").authenticate(token)
    assert scope is not None and (scope.tenant_id, scope.team_id) == ("acme", "search")


def test_keys_list_shows_scopes_but_no_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_file = str(tmp_path / "keys.json")
    run(["keys", "create", "--tenant", "acme", "--project", "rerank", "--keys-file", keys_file])
    token = capsys.readouterr().out.strip()
    secret = token.rsplit("_", 1)[-1]
    stored_hash = json.loads(Path(keys_file).read_text())["keys"][0]["secret_sha256"]

    assert run(["keys", "list", "--keys-file", keys_file]) == 0
    table = capsys.readouterr().out
    assert run(["keys", "list", "--json", "--keys-file", keys_file]) == 0
    listed = json.loads(capsys.readouterr().out)

    key_id = TOKEN.fullmatch(token).group(1)  # type: ignore[union-attr]
    assert key_id in table and "acme" in table and "rerank" in table and "active" in table
    assert [(k["key_id"], k["project"], k["revoked_at"]) for k in listed] == [
        (key_id, "rerank", None)
    ]
    for output in (table, json.dumps(listed)):
        assert token not in output and secret not in output and stored_hash not in output


def test_keys_revoke_makes_the_key_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["keys", "create", "--tenant", "acme", "--data-dir", str(tmp_path)])
    token = capsys.readouterr().out.strip()
    key_id = TOKEN.fullmatch(token).group(1)  # type: ignore[union-attr]
    store = IngestKeyStore(tmp_path / "ingest_keys.json")
    assert store.authenticate(token) is not None

    assert run(["keys", "revoke", key_id, "--data-dir", str(tmp_path)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert store.authenticate(token) is None

    assert run(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    assert "revoked" in capsys.readouterr().out


def test_keys_revoke_of_an_unknown_id_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["keys", "revoke", "0123456789abcdef", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spendstream: no ingest key") and err.count("\n") == 1


def test_keys_use_the_workers_data_dir_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDSTREAM_DATA_DIR", str(tmp_path / "worker"))
    assert run(["keys", "create", "--tenant", "acme"]) == 0
    token = capsys.readouterr().out.strip()
    assert IngestKeyStore(tmp_path / "worker" / "ingest_keys.json").authenticate(token)
