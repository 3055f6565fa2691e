"""`spendstream keys create|revoke|list`: manage scoped ingest keys.

The key file is `<data dir>/ingest_keys.json` (data dir from `--data-dir`,
else `SPENDSTREAM_DATA_DIR`, else `.spendstream`), or `--keys-file`. The
worker re-reads it when it changes, so a key works, or stops working, without
a restart.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from streams.analyst.tables import text_table
from streams.cli.options import add_data_dir, settings_from
from streams.errors import SpendstreamError
from streams.http_ingest.keys import IngestKey, IngestKeyStore, keys_path


def add_keys_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add `keys` and its subcommands to the `spendstream` subparsers."""
    help_ = "manage scoped ingest keys for HTTP ingest"
    keys = subparsers.add_parser("keys", help=help_, description=help_)
    sub = keys.add_subparsers(dest="keys_command", required=True)

    help_ = "create a key and print it once"
    create = sub.add_parser("create", help=help_, description=help_)
    create.add_argument("--tenant", required=True, help="tenant the key writes for")
    create.add_argument("--team", help="restrict the key to this team")
    create.add_argument("--project", help="restrict the key to this project (tag `project`)")
    _store_options(create)
    create.set_defaults(func=cmd_keys_create)

    help_ = "revoke a key: requests with it get 401 from then on"
    revoke = sub.add_parser("revoke", help=help_, description=help_)
    revoke.add_argument("key_id", help="the key id shown by `keys list` (not the key itself)")
    _store_options(revoke)
    revoke.set_defaults(func=cmd_keys_revoke)

    help_ = "list keys (ids and scopes, never secrets)"
    list_ = sub.add_parser("list", help=help_, description=help_)
    list_.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    _store_options(list_)
    list_.set_defaults(func=cmd_keys_list)
    return keys


def _store_options(parser: argparse.ArgumentParser) -> None:
    add_data_dir(parser)
    parser.add_argument("--keys-file", help="key file (default: <data dir>/ingest_keys.json)")


def _store(args: argparse.Namespace) -> IngestKeyStore:
    if args.keys_file:
        return IngestKeyStore(args.keys_file)
    # The same data dir as the worker that will read the keys.
    return IngestKeyStore(keys_path(settings_from(args).data_dir))


def _fail(exc: SpendstreamError) -> int:
    print(f"spendstream: {exc}", file=sys.stderr)
    return exc.exit_code


def cmd_keys_create(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        key, token = store.create(args.tenant, team_id=args.team, project=args.project)
    except SpendstreamError as exc:
        return _fail(exc)
    # The key alone on stdout, so `KEY=$(spendstream keys create ...)` works;
    # the explanation on stderr.
    print(token.get_secret_value())
    print(
        f"created ingest key {key.key_id} for {_scope(key)} in {store.path}; "
        "store it now, it is not shown again",
        file=sys.stderr,
    )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    try:
        key = _store(args).revoke(args.key_id)
    except SpendstreamError as exc:
        return _fail(exc)
    assert key.revoked_at is not None
    print(f"revoked ingest key {key.key_id} ({_scope(key)}) at {key.revoked_at.isoformat()}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    try:
        keys = _store(args).list()
    except SpendstreamError as exc:
        return _fail(exc)
    if args.json:
        print(orjson.dumps([_row(k) for k in keys], option=orjson.OPT_INDENT_2).decode())
        return 0
    header = ("KEY_ID", "TENANT", "TEAM", "PROJECT", "CREATED", "STATUS")
    rows = [
        (
            k.key_id,
            k.tenant_id,
            k.team_id or "*",
            k.project or "*",
            _time(k.created_at.isoformat()),
            f"revoked {_time(k.revoked_at.isoformat())}" if k.revoked_at else "active",
        )
        for k in keys
    ]
    print(text_table(header, rows, empty=None))
    return 0


def _row(key: IngestKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "tenant_id": key.tenant_id,
        "team_id": key.team_id,
        "project": key.project,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def _scope(key: IngestKey) -> str:
    parts = [f"tenant {key.tenant_id!r}"]
    if key.team_id:
        parts.append(f"team {key.team_id!r}")
    if key.project:
        parts.append(f"project {key.project!r}")
    return ", ".join(parts)


def _time(iso: str) -> str:
    return iso[:19].replace("T", " ")
