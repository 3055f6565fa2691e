"""The ClickHouse cluster variant (deploy/clickhouse/cluster/) stays in step with sql/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.ledger.migrations import split_statements

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "deploy" / "clickhouse" / "cluster"
# Tables with a cluster variant: the ledger and the dead letters.
VARIANTS = {"001_usage_ledger.sql": "usage_ledger", "002_dead_letters.sql": "dead_letters"}


def create_statements(path: Path) -> dict[str, str]:
    """Table name -> CREATE TABLE statement, for every CREATE TABLE in the file."""
    out = {}
    for statement in split_statements(path.read_text()):
        code = "\n".join(
            line for line in statement.splitlines() if not line.strip().startswith("--")
        )
        match = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", code)
        if match:
            out[match.group(1)] = code
    return out


def columns(create: str, with_indexes: bool = True) -> list[str]:
    body = create[create.index("(") + 1 : create.index("\n)")]
    lines = [line.strip().rstrip(",") for line in body.splitlines() if line.strip()]
    return [line for line in lines if with_indexes or not line.startswith("INDEX ")]


def clause(create: str, name: str) -> str:
    match = re.search(rf"^{name} (.+)$", create, re.M)
    assert match, f"no {name}"
    return match.group(1).strip()


@pytest.mark.parametrize("file_name", sorted(VARIANTS))
def test_local_table_matches_the_single_node_table(file_name: str) -> None:
    table = VARIANTS[file_name]
    single = create_statements(ROOT / "sql" / file_name)[table]
    cluster = create_statements(CLUSTER / file_name)
    local = cluster[f"{table}_local"]
    assert columns(local) == columns(single)
    for name in ("PARTITION BY", "ORDER BY"):
        assert clause(local, name) == clause(single, name)
    assert "ENGINE = ReplicatedReplacingMergeTree(" in local
    assert "ON CLUSTER '{cluster}'" in local
    assert "'{replica}'" in local and "{shard}" in local


@pytest.mark.parametrize("file_name", sorted(VARIANTS))
def test_distributed_table_keeps_the_name_and_shards_by_the_dedupe_key(file_name: str) -> None:
    table = VARIANTS[file_name]
    single = create_statements(ROOT / "sql" / file_name)[table]
    distributed = create_statements(CLUSTER / file_name)[table]
    assert columns(distributed) == columns(single, with_indexes=False)
    engine = clause(distributed, "ENGINE =")
    match = re.fullmatch(
        r"Distributed\('\{cluster\}', currentDatabase\(\), (\w+), cityHash64\((.+)\)\)", engine
    )
    assert match, engine
    assert match.group(1) == f"{table}_local"
    # Every copy of a row must land on one shard, where the replacing engine merges it:
    # the sharding key may only use sort-key columns.
    sort_key = clause(single, "ORDER BY").strip("()")
    sort_columns = {c.strip() for c in sort_key.split(",")}
    assert {c.strip() for c in match.group(2).split(",")} <= sort_columns


def test_migration_ledger_is_replicated_on_every_node_and_each_file_records_itself() -> None:
    ledger = create_statements(CLUSTER / "000_schema_migrations.sql")["schema_migrations"]
    assert "ReplicatedMergeTree('/clickhouse/tables/all/" in ledger
    assert "'{shard}-{replica}'" in ledger
    for file_name in VARIANTS:
        text = (CLUSTER / file_name).read_text()
        assert f"SELECT '{file_name}'" in text
        assert f"WHERE name = '{file_name}'" in text
