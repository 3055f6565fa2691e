"""The published contract `schemas/usage_event.schema.json` matches the model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.export_schema import SCHEMA_PATH, main, render
from schemas.usage_event import DROPPED_TEXT_FIELDS, UsageEvent

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_file_matches_the_model() -> None:
    # Compared in-process, byte for byte: a stale file fails here even if the
    # --check entry point itself were broken.
    assert SCHEMA_PATH == ROOT / "schemas" / "usage_event.schema.json"
    assert SCHEMA_PATH.read_text() == render(), (
        "schemas/usage_event.schema.json is stale: run `python -m schemas.export_schema`"
    )


def test_check_command_passes_on_the_committed_file() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "schemas.export_schema", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_differing_or_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "schema.json"
    stale.write_text(render().replace('"minLength": 1', '"minLength": 0', 1))
    assert main(["--check", "--path", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["--check", "--path", str(tmp_path / "absent.json")]) == 1


def test_write_then_check_round_trips(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    assert main(["--path", str(target)]) == 0
    assert target.read_text() == render()
    assert main(["--check", "--path", str(target)]) == 0


def test_output_is_deterministic_sorted_two_space_with_trailing_newline() -> None:
    text = render()
    assert text == render()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    parsed = json.loads(text)
    assert text == json.dumps(parsed, indent=2, sort_keys=True) + "\n"
    assert text.splitlines()[1].startswith('  "')


def test_schema_describes_the_contract() -> None:
    schema = json.loads(render())
    assert schema["title"] == "spendstream usage event"
    for name in DROPPED_TEXT_FIELDS:
        assert name in schema["description"]
        assert name not in schema["properties"]
    assert "dropped" in schema["description"]
    assert schema["required"] == [
        "request_id",
        "timestamp",
        "tenant_id",
        "provider",
        "model",
        "input_tokens",
    ]
    assert set(schema["properties"]) == set(UsageEvent.model_fields)
    tokens = schema["properties"]["input_tokens"]
    assert (tokens["type"], tokens["minimum"], tokens["maximum"]) == ("integer", 0, 10_000_000)


def test_schema_timestamp_accepts_text_and_integer_epoch_ms() -> None:
    # The model accepts integer epoch milliseconds; a schema saying "string only"
    # would make schema-validating producers refuse valid events.
    variants = json.loads(render())["properties"]["timestamp"]["anyOf"]
    assert {"type": "string", "format": "date-time"} in variants
    assert any(v.get("type") == "integer" for v in variants)
