"""Every command of the README's CLI table gives the same result with the stack running
as with it stopped: the same data dir, copied, goes through the same sequence of
commands twice, once while a worker owns it (writes through its peer endpoints and
its broker, reads through /v1/query) and once opened directly. Outputs and the
ledgers they leave must be equal.

`dev` and `worker` are the stack itself; `simulate` has no broker to publish to when
no stack runs, so it runs only against the running one (found by itself).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cli.main import main
from streams.ledger.connect import clickhouse_session
from streams.ledger.remote import DirectReader, running_stack
from streams.settings import chdb_url_for
from tests.analyst import ledger_data as data
from tests.helpers.stack import RunningStack, write_ndjson
from tests.helpers.waiting import wait_for
from tests.integration.test_reads_through_worker import COMMANDS as READ_COMMANDS

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.date()


def usage_event(i: int) -> bytes:
    return orjson.dumps(
        {
            "request_id": f"both-ways-{i:04d}",
            "timestamp": (NOW - timedelta(minutes=i)).isoformat(),
            "tenant_id": f"tenant-{i % 3}",
            "team_id": "search",
            "provider": "openai",
            "model": "gpt-4o",
            "input_tokens": 1000 + i,
            "output_tokens": 200,
        }
    )


def inputs(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    lines = [usage_event(i) for i in range(40)] + [b"not json"]
    return {
        "events": write_ndjson(root / "events.ndjson", lines),
        "pricing": data.pricing_file(root, data.NEW_PRICES),
    }


Step = tuple[str, Callable[[dict[str, Path]], tuple[str, ...]]]

DAYS = ("--from", str(TODAY - timedelta(days=2)), "--to", str(TODAY))
# The raw cut falls in the gap between the analyst data's last day and the replayed
# events: a cut inside the data would move between the two runs (it is taken from the
# clock at each run) and drop a row from one copy only.
RAW_DAYS = (TODAY - data.LAST_DAY).days - 1
# In order: each write is followed by reads that see what it did.
WRITE_STEPS: list[Step] = [
    ("migrate", lambda f: ("migrate",)),
    ("replay", lambda f: ("replay", str(f["events"]))),
    ("replay again (duplicates)", lambda f: ("replay", str(f["events"]))),
    ("reprice", lambda f: ("reprice", *DAYS, "--pricing", str(f["pricing"]))),
    ("reprice again", lambda f: ("reprice", *DAYS, "--pricing", str(f["pricing"]))),
    ("retention --raw-days", lambda f: ("retention", "--raw-days", str(RAW_DAYS))),
    ("retention --hourly-days", lambda f: ("retention", "--hourly-days", "200")),
    ("keys create", lambda f: ("keys", "create", "--tenant", "acme", "--team", "search")),
    ("keys list", lambda f: ("keys", "list", "--json")),
    (
        "query corrections",
        lambda f: ("query", "SELECT count(), sum(delta_cost_usd) FROM cost_corrections FINAL"),
    ),
    # This week named, not taken from the clock: a run on each side of midnight would
    # title its report with another day.
    (
        "report weekly this week",
        lambda f: ("report", "weekly", "--week", f"{TODAY:%G-W%V}", "--format", "md"),
    ),
    ("whatif", lambda f: ("whatif", *DAYS, "--swap", "gpt-4o=gpt-4o-mini")),
]


def run(argv: tuple[str, ...], data_dir: Path) -> tuple[int, str, str]:
    printed, errors = io.StringIO(), io.StringIO()
    with redirect_stdout(printed), redirect_stderr(errors):
        code = main([*argv, "--data-dir", str(data_dir)])
    return code, printed.getvalue(), errors.getvalue()


def comparable(name: str, code: int, out: str, err: str, data_dir: Path) -> object:
    """What must be equal both ways: keys are new secrets and times each run."""
    out, err = out.replace(str(data_dir), "DATA"), err.replace(str(data_dir), "DATA")
    if name == "keys create":
        return code, len(out.strip()) > 20, re.sub(r"key [0-9a-f]+ ", "key ID ", err)
    if name == "keys list":
        keys = orjson.loads(out)
        return code, [(k["tenant_id"], k["team_id"], k["revoked_at"]) for k in keys]
    return code, out, err


def run_sequence(data_dir: Path, files: dict[str, Path], out_root: Path) -> dict[str, object]:
    results: dict[str, object] = {}
    for name, argv in WRITE_STEPS:
        code, out, err = run(argv(files), data_dir)
        assert code == 0, f"{name}: {err}"
        results[name] = comparable(name, code, out, err, data_dir)
    (key,) = orjson.loads(run(("keys", "list", "--json"), data_dir)[1])
    code, out, err = run(("keys", "revoke", key["key_id"]), data_dir)
    results["keys revoke"] = (code, out.split(" at ")[0].replace(key["key_id"], "ID"), err)
    for name, argv_of, read in READ_COMMANDS:
        out_dir = out_root / name.replace(" ", "-")
        out_dir.mkdir(parents=True)
        code, out, err = run(argv_of(out_dir), data_dir)
        assert code in (0, 1) and not err, f"{name}: {err}"
        results[name] = (code, read(out_dir, out))
    return results


def ledger_state(data_dir: Path) -> dict[str, Any]:
    with clickhouse_session(chdb_url_for(data_dir)) as handle:
        reader = DirectReader(handle.client)

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return reader.query(sql).result_rows

        return {
            "ledger": rows(
                "SELECT request_id, cost_usd, cost_status FROM usage_ledger FINAL ORDER BY ALL"
            ),
            "dead letters": rows("SELECT reason, raw_payload FROM dead_letters FINAL ORDER BY ALL"),
            "corrections": rows(
                "SELECT correction_id, request_id, delta_cost_usd, reason "
                "FROM cost_corrections FINAL ORDER BY ALL"
            ),
            "tables": rows(
                "SELECT name, engine_full FROM system.tables "
                "WHERE database = currentDatabase() ORDER BY name"
            ),
            "migrations": rows("SELECT name FROM schema_migrations ORDER BY name"),
        }


def test_every_cli_command_gives_the_same_result_with_the_stack_running_or_stopped(
    tmp_path: Path,
) -> None:
    # Two data dirs built alike (a chdb data dir cannot be copied: its metadata links).
    running_dir = data.write_data_dir(tmp_path / "running")
    stopped_dir = data.write_data_dir(tmp_path / "stopped")
    files = inputs(tmp_path / "inputs")

    stack = RunningStack(running_dir)
    try:
        assert wait_for(lambda: running_stack(running_dir)) is not None
        through_stack = run_sequence(running_dir, files, tmp_path / "out-running")
        (before,) = stack.query("SELECT count() FROM usage_ledger")
        # simulate finds the running stack's broker by itself (no --bootstrap).
        simulate = ("simulate", "--rate", "200", "--duration", "1", "--seed", "3")
        code, out, err = run(simulate, running_dir)
        assert code == 0 and out.startswith("published "), err
        published = int(out.split()[1])
        assert published > 0
        wait_for(
            lambda: stack.query("SELECT count() FROM usage_ledger") == [(before[0] + published,)]
        )
    finally:
        stack.stop()
    assert running_stack(running_dir) is None
    direct = run_sequence(stopped_dir, files, tmp_path / "out-stopped")

    for name in direct:
        assert through_stack[name] == direct[name], name
    # The sequence did something worth comparing.
    replayed = orjson.loads(direct["replay"][1])  # type: ignore[index]
    assert replayed["ledgered"] == 40 and replayed["dead_lettered"] == 1
    again = orjson.loads(direct["replay again (duplicates)"][1])  # type: ignore[index]
    assert again["ledgered"] == 0 and again["duplicates"] == 40
    assert "40 corrections" in str(direct["reprice"][1])  # type: ignore[index]
    assert ": 0 corrections" in str(direct["reprice again"][1])  # type: ignore[index]

    running_state, stopped_state = ledger_state(running_dir), ledger_state(stopped_dir)
    simulated = running_state["ledger"][len(stopped_state["ledger"]) :]
    assert len(running_state["ledger"]) == len(stopped_state["ledger"]) + published, simulated
    running_state["ledger"] = [r for r in running_state["ledger"] if r in stopped_state["ledger"]]
    assert running_state == stopped_state
    assert f"toIntervalDay({RAW_DAYS})" in str(direct["retention --raw-days"][1])  # type: ignore[index]
