"""`spendstream replay` end to end: duplicates, bad lines, unknown models, overrides,
and a second replay into the same data dir."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers.stack import query_json, spendstream, write_ndjson

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def event(i: int, **overrides: Any) -> dict[str, Any]:
    base = {
        "request_id": f"req-{i:05d}",
        "timestamp": (NOW - timedelta(minutes=i)).isoformat(),
        "tenant_id": f"tenant-{i % 3}",
        "team_id": "search",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1000 + i,
        "cached_tokens": 200,
        "output_tokens": 100,
        "prompt": "this text must never be stored",
    }
    base.update(overrides)
    return base


# Hand-computed: gpt-4o-mini at 0.15 input / 0.075 cached / 0.60 output per MTok.
def gpt4o_mini_cost(i: int) -> Decimal:
    return (
        Decimal(1000 + i - 200) * Decimal("0.15")
        + Decimal(200) * Decimal("0.075")
        + Decimal(100) * Decimal("0.60")
    ) / Decimal(1_000_000)


PRICING = """
prices:
  - provider: acme-hosted
    model: Llama-Private-70B
    input: 0.50
    output: 1.50
    reasoning: 3.00
"""

VALID = 40
BAD_LINES = [
    b"{not json",
    b'{"request_id": "x"}',
    b"[1, 2]",
    orjson.dumps(event(999, input_tokens=-5)),
    orjson.dumps(event(998, cached_tokens=5000)),
    orjson.dumps(event(997, timestamp=(NOW + timedelta(days=3)).isoformat())),
]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("replay")
    data_dir = root / "data"
    pricing = root / "pricing.yaml"
    pricing.write_text(PRICING)
    lines = [orjson.dumps(event(i)) for i in range(VALID)]
    lines += [orjson.dumps(event(i)) for i in range(10)]  # duplicates, same request_id
    # One message holding an array: two new events and one duplicate.
    lines.append(orjson.dumps([event(100), event(101), event(0)]))
    lines.append(orjson.dumps(event(200, model="unknown-model-x")))
    lines.append(
        orjson.dumps(
            event(
                300,
                provider="acme-hosted",
                model="llama-private-70b",
                input_tokens=2000,
                cached_tokens=0,
                output_tokens=1000,
                reasoning_tokens=400,
            )
        )
    )
    lines += BAD_LINES
    path = write_ndjson(root / "events.ndjson", lines)
    first = spendstream("replay", str(path), "--data-dir", str(data_dir), "--pricing", str(pricing))
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    second = spendstream(
        "replay", str(path), "--data-dir", str(data_dir), "--pricing", str(pricing)
    )
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    return {
        "data_dir": data_dir,
        "lines": len(lines),
        "first": orjson.loads(first.stdout.strip().splitlines()[-1]),
        "second": orjson.loads(second.stdout.strip().splitlines()[-1]),
    }


def expected_total() -> Decimal:
    total = sum((gpt4o_mini_cost(i) for i in [*range(VALID), 100, 101]), Decimal(0))
    # Override: (2000 in * 0.50) + (600 out * 1.50) + (400 reasoning * 3.00) per MTok.
    total += (Decimal(2000) * Decimal("0.50") + 600 * Decimal("1.50") + 400 * Decimal(3)) / 10**6
    return total


def test_first_replay_reports_every_line(replayed: dict[str, Any]) -> None:
    first = replayed["first"]
    assert first["read"] == replayed["lines"]
    assert first["ledgered"] == VALID + 2 + 1 + 1  # + array's two new, unknown model, override
    assert first["duplicates"] == 10 + 1
    assert first["dead_lettered"] == len(BAD_LINES) + 1  # the [1, 2] array: one per element
    assert first["unpriced"] == 1
    assert Decimal(first["total_cost_usd"]) == expected_total()


def test_second_replay_adds_nothing_for_repeated_ids(replayed: dict[str, Any]) -> None:
    second = replayed["second"]
    assert second["ledgered"] == 0
    assert second["unpriced"] == 0
    assert Decimal(second["total_cost_usd"]) == 0
    assert second["duplicates"] == VALID + 10 + 3 + 1 + 1
    # A bad line is rejected again in a new run of the broker: a new dead letter.
    assert second["dead_lettered"] == len(BAD_LINES) + 1


def test_ledger_rows_are_exact(replayed: dict[str, Any]) -> None:
    rows = query_json(
        replayed["data_dir"],
        "SELECT request_id, cost_usd, cost_status, price_source, price_input_per_mtok "
        "FROM usage_ledger FINAL ORDER BY request_id",
    )
    by_id = {row["request_id"]: row for row in rows}
    assert len(by_id) == len(rows) == VALID + 4
    assert Decimal(by_id["req-00007"]["cost_usd"]) == gpt4o_mini_cost(7)
    assert by_id["req-00007"]["price_source"].startswith("genai-prices")
    assert Decimal(by_id["req-00007"]["price_input_per_mtok"]) == Decimal("0.15")
    assert by_id["req-00200"]["cost_status"] == "unpriced"
    assert Decimal(by_id["req-00200"]["cost_usd"]) == 0
    assert by_id["req-00300"]["price_source"] == "override:pricing.yaml"
    (count,) = query_json(replayed["data_dir"], "SELECT count() AS n FROM usage_ledger")
    assert int(count["n"]) == VALID + 4  # no duplicate inserted, even before merges


def test_dead_letters_carry_reasons_and_payloads(replayed: dict[str, Any]) -> None:
    rows = query_json(
        replayed["data_dir"],
        "SELECT reason, element_index, raw_payload, topic FROM dead_letters FINAL "
        "ORDER BY received_at, partition, offset, element_index",
    )
    reasons = sorted(row["reason"] for row in rows)
    expected = sorted(
        [
            "malformed_json",
            "missing_field",
            "not_an_object",
            "not_an_object",
            "token_count_out_of_range",
            "token_breakdown_inconsistent",
            "timestamp_in_future",
        ]
        * 2
    )
    assert reasons == expected
    assert {row["topic"] for row in rows} == {"spendstream.usage"}
    assert any(row["raw_payload"] == "{not json" for row in rows)
    assert sorted(r["element_index"] for r in rows if r["reason"] == "not_an_object") == [
        0,
        0,
        1,
        1,
    ]


def test_prompt_text_is_never_stored(replayed: dict[str, Any]) -> None:
    columns = query_json(
        replayed["data_dir"],
        "SELECT name, type FROM system.columns WHERE table = 'usage_ledger'",
    )
    names = {column["name"] for column in columns}
    assert names.isdisjoint({"prompt", "completion", "messages", "input", "output"})
    # No free-text column could hold it either: every String column is an id or label.
    (hits,) = query_json(
        replayed["data_dir"],
        "SELECT count() AS n FROM usage_ledger WHERE "
        "arrayExists(x -> position(x, 'never be stored') > 0, mapValues(tags)) "
        "OR position(request_id, 'never') > 0",
    )
    assert int(hits["n"]) == 0


def test_query_is_read_only(replayed: dict[str, Any]) -> None:
    result = spendstream(
        "query", "DROP TABLE usage_ledger", "--data-dir", str(replayed["data_dir"])
    )
    assert result.returncode != 0
    assert len(result.stderr.decode().strip().splitlines()) == 1
    (count,) = query_json(replayed["data_dir"], "SELECT count() AS n FROM usage_ledger")
    assert int(count["n"]) == VALID + 4


def test_missing_pricing_file_is_one_line(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "e.ndjson", [orjson.dumps(event(1))])
    result = spendstream(
        "replay", str(path), "--data-dir", str(tmp_path / "d"), "--pricing", "/nope.yaml"
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert lines == ["spendstream: pricing file not found: /nope.yaml"]


def test_data_dir_in_use_is_one_line(tmp_path: Path) -> None:
    from streams.ledger.connect import open_clickhouse
    from streams.settings import chdb_url_for

    data_dir = tmp_path / "busy"
    handle = open_clickhouse(chdb_url_for(data_dir))
    try:
        path = write_ndjson(tmp_path / "e.ndjson", [orjson.dumps(event(1))])
        result = spendstream("replay", str(path), "--data-dir", str(data_dir))
    finally:
        handle.close()
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "is in use by pid" in lines[0]


def test_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, SPENDSTREAM_KAFKA_BOOTSTRAP="127.0.0.1:1")
    result = spendstream("worker", "--data-dir", str(tmp_path / "d"), env=env, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spendstream: Kafka broker 127.0.0.1:1")


def test_replay_of_a_csv_file_then_of_stdin(tmp_path: Path) -> None:
    """`replay file.csv` reads a spreadsheet export; `replay -` reads NDJSON piped in.
    Both reach the ledger, each line counted once in the summary."""
    data_dir = tmp_path / "data"
    csv = tmp_path / "usage.csv"
    csv.write_text(
        "request_id,timestamp,tenant_id,team_id,provider,model,input_tokens,cached_tokens,"
        "output_tokens\n"
        + "".join(
            f"csv-{i},{(NOW - timedelta(minutes=i)).isoformat()},tenant-{i % 2},search,openai,"
            f"gpt-4o-mini,{1000 + i},200,100\n"
            for i in range(5)
        )
        + "csv-bad,not-a-time,tenant-0,search,openai,gpt-4o-mini,10,0,1\n"
    )
    from_csv = spendstream("replay", str(csv), "--data-dir", str(data_dir))
    assert from_csv.returncode == 0, from_csv.stderr.decode()[-2000:]
    summary = orjson.loads(from_csv.stdout.strip().splitlines()[-1])
    assert (summary["read"], summary["ledgered"], summary["dead_lettered"]) == (6, 5, 1)
    assert Decimal(summary["total_cost_usd"]) == sum(
        (gpt4o_mini_cost(i) for i in range(5)), Decimal(0)
    )

    piped = (
        b"".join(orjson.dumps(event(i, request_id=f"stdin-{i}")) + b"\n" for i in range(3))
        + orjson.dumps(event(0, request_id="csv-0"))
        + b"\n"
    )  # already ledgered from the CSV
    from_stdin = spendstream("replay", "-", "--data-dir", str(data_dir), stdin=piped)
    assert from_stdin.returncode == 0, from_stdin.stderr.decode()[-2000:]
    summary = orjson.loads(from_stdin.stdout.strip().splitlines()[-1])
    assert (summary["read"], summary["ledgered"], summary["duplicates"]) == (4, 3, 1)

    rows = query_json(
        data_dir,
        "SELECT request_id, tenant_id, cost_usd FROM usage_ledger FINAL ORDER BY request_id",
    )
    assert [r["request_id"] for r in rows] == [f"csv-{i}" for i in range(5)] + [
        f"stdin-{i}" for i in range(3)
    ]
    assert {r["request_id"]: Decimal(r["cost_usd"]) for r in rows}["stdin-2"] == gpt4o_mini_cost(2)
    dead = query_json(data_dir, "SELECT reason, raw_payload FROM dead_letters FINAL")
    assert [d["reason"] for d in dead] == ["timestamp_invalid"]
    assert "csv-bad" in dead[0]["raw_payload"]
