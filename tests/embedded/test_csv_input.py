"""CSV backfill input (`streams.embedded.csv_input`): rows become the event dicts, and
the JSON lines, that `replay` publishes."""

from __future__ import annotations

import doctest
import io
from pathlib import Path

import orjson
import pytest

import streams.embedded.csv_input
from streams.embedded.csv_input import (
    CsvFormatError,
    events_from_csv,
    is_csv_path,
    read_csv_events,
    read_csv_lines,
)
from streams.errors import ConfigError
from streams.ingest.decoding import decode_message

HEADER = "request_id,timestamp,tenant_id,provider,model,input_tokens,cached_tokens,output_tokens"


def events(text: str) -> list[dict[str, object]]:
    return list(events_from_csv(io.StringIO(text, newline="")))


def test_module_examples() -> None:
    # Every example runs (an example deleted or no longer collected fails here too).
    assert doctest.testmod(streams.embedded.csv_input) == (0, 3)  # (failed, attempted)


def test_rows_become_events_with_integer_counts() -> None:
    rows = events(
        f"{HEADER},latency_ms,reported_cost_usd\n"
        "r1,2025-06-01T12:00:00Z,acme,openai,gpt-4o-mini,1200,1000,80,350,0.0012\n"
        "r2,1748779200000,acme,anthropic,claude-sonnet-4-5,10,,5,,\n"
    )
    assert rows == [
        {
            "request_id": "r1",
            "timestamp": "2025-06-01T12:00:00Z",
            "tenant_id": "acme",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 1200,
            "cached_tokens": 1000,
            "output_tokens": 80,
            "latency_ms": 350,
            "reported_cost_usd": "0.0012",
        },
        # Empty cells are left out; digits in `timestamp` are epoch milliseconds.
        {
            "request_id": "r2",
            "timestamp": 1748779200000,
            "tenant_id": "acme",
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "input_tokens": 10,
            "output_tokens": 5,
        },
    ]


def test_tags_from_a_json_column_and_from_tag_columns() -> None:
    rows = events(
        f"{HEADER},tags,tags.env,tags.region\n"
        'r1,2025-06-01T12:00:00Z,acme,openai,gpt-4o,1,0,1,"{""env"": ""dev"", ""app"": ""x""}",'
        "prod,\n"
        "r2,2025-06-01T12:00:00Z,acme,openai,gpt-4o,1,0,1,,,eu\n"
        "r3,2025-06-01T12:00:00Z,acme,openai,gpt-4o,1,0,1,,,\n"
    )
    assert rows[0]["tags"] == {"env": "prod", "app": "x"}  # the tags.env column wins
    assert rows[1]["tags"] == {"region": "eu"}
    assert "tags" not in rows[2]


def test_cells_that_are_not_whole_numbers_are_left_for_validation() -> None:
    [row] = events(f'{HEADER}\nr1,2025-06-01T12:00:00Z,acme,openai,gpt-4o,"1,200",12.5,-3\n')
    assert (row["input_tokens"], row["cached_tokens"], row["output_tokens"]) == (
        "1,200",
        "12.5",
        -3,
    )
    # ... and the worker's decoder dead-letters the row with a reason.
    assert decode_message(orjson.dumps(row)).rejections[0].reason == "schema_violation"


def test_csv_lines_are_what_the_decoder_accepts(tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text(
        "\ufeff" + f"{HEADER},team_id,tags.project\n"  # spreadsheet exports start with a BOM
        "r1,2025-06-01T12:00:00Z,acme,openai,gpt-4o-mini,1200,1000,80,search,rerank\n"
        "\n"
        "r2,2025-06-01T12:00:00Z,acme,openai,gpt-4o-mini,-1,,,,\n",
        encoding="utf-8",
    )
    lines = list(read_csv_lines([str(path)]))
    assert len(lines) == 2  # the blank row is skipped

    good, bad = (decode_message(line) for line in lines)
    [event] = good.events
    assert (event.request_id, event.team_id, event.tags) == ("r1", "search", {"project": "rerank"})
    assert (event.input_tokens, event.cached_tokens, event.output_tokens) == (1200, 1000, 80)
    assert bad.rejections[0].reason == "token_count_out_of_range"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{HEADER},tenant\n", "unknown column"),
        ("request_id,timestamp,tenant_id,provider,model\n", "input_tokens"),
        (f"{HEADER},model\n", "repeated"),
        (f"{HEADER}\nr1,2025-06-01T12:00:00Z,acme,openai,gpt-4o,1,0,1,extra\n", "9 cells"),
    ],
)
def test_a_badly_shaped_file_fails_before_anything_is_published(text: str, message: str) -> None:
    with pytest.raises(CsvFormatError, match=message):
        events(text)


def test_short_rows_read_missing_cells_as_empty() -> None:
    [row] = events(f"{HEADER}\nr1,2025-06-01T12:00:00Z,acme,openai,gpt-4o,7\n")
    assert row["input_tokens"] == 7 and "output_tokens" not in row


def test_an_empty_file_has_no_events_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    assert events("") == []
    with pytest.raises(ConfigError, match="not found"):
        list(read_csv_events([str(tmp_path / "absent.csv")]))


def test_csv_paths_are_told_by_their_suffix() -> None:
    assert is_csv_path("backfill/usage.CSV") and not is_csv_path("usage.ndjson")
