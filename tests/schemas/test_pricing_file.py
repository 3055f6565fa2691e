"""The pricing file: its model (`schemas.pricing`) and loading it (`load_pricing_file`).

Every problem with the file must surface as one ConfigError line that says where.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.pricing import PriceEntry, PricingFile
from streams.cost.catalog import load_pricing_file
from streams.errors import ConfigError

EXAMPLE = """\
prices:
  - provider: openai
    model: gpt-4o-mini        # matched case-insensitively, exactly
    effective_from: 2026-01-01 # optional; the latest entry not after the event's timestamp wins
    input: 0.15
    cached_input: 0.075       # optional, defaults to input
    cache_write: 0.1875       # optional, defaults to input
    output: 0.60
    reasoning: 0.60           # optional, defaults to output
  - provider: self-hosted
    model: llama-3-70b
    input: 0
    output: 0
"""


def entry(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"provider": "openai", "model": "m", "input": "1", "output": "2"}
    data.update(fields)
    return data


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_pricing_file(write(tmp_path, text))
    return str(caught.value)


def test_documented_example_loads_with_exact_decimals(tmp_path: Path) -> None:
    pricing = load_pricing_file(write(tmp_path, EXAMPLE))
    first, second = pricing.prices
    # YAML reads 0.075 as a float; the Decimal must still be the written value.
    assert first == PriceEntry(
        provider="openai",
        model="gpt-4o-mini",
        effective_from=date(2026, 1, 1),
        input=Decimal("0.15"),
        cached_input=Decimal("0.075"),
        cache_write=Decimal("0.1875"),
        output=Decimal("0.60"),
        reasoning=Decimal("0.60"),
    )
    assert (second.cached_input, second.cache_write, second.reasoning) == (None, None, None)
    assert second.effective_from is None
    assert second.input == Decimal(0)


def test_empty_file_means_no_overrides(tmp_path: Path) -> None:
    assert load_pricing_file(write(tmp_path, "")).prices == []
    assert load_pricing_file(write(tmp_path, "prices: []\n")).prices == []


def test_missing_file_is_one_line_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_pricing_file(missing)
    message = str(caught.value)
    assert "\n" not in message
    assert str(missing) in message
    assert "not found" in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "prices:\n  - provider: openai\n    model: x\n    input: -1\n    output: 1\n",
            "prices.0.input",
        ),
        (
            "prices:\n  - provider: openai\n    model: x\n    input: 1\n    output: 1\n"
            "    inptu: 2\n",
            "prices.0.inptu",
        ),
        (
            "prices:\n  - provider: a\n    model: x\n    input: 1\n    output: 1\n"
            "  - provider: b\n    model: y\n    input: 1\n",
            "prices.1.output",
        ),
        (
            "prices:\n  - provider: a\n    model: x\n    input: 1\n    output: .nan\n",
            "prices.0.output",
        ),
        (
            "prices:\n  - provider: a\n    model: x\n    input: 1\n    output: 1\n"
            "    effective_from: someday\n",
            "prices.0.effective_from",
        ),
        ("pricing:\n  - provider: a\n", "pricing"),
    ],
    ids=["negative", "unknown-field", "missing-output", "nan", "bad-date", "unknown-top-level"],
)
def test_invalid_entry_is_one_line_naming_the_field(tmp_path: Path, text: str, where: str) -> None:
    message = load_error(tmp_path, text)
    assert "\n" not in message
    assert f": {where}: " in message
    assert "prices.yaml" in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("prices:\n  - provider: openai\n    model: [unclosed\n", "line 4 column 1"),
        ("prices:\n\t- provider: a\n", "line 2 column 1"),
    ],
    ids=["unclosed-flow", "tab-indent"],
)
def test_bad_yaml_is_one_line_naming_the_file_line_and_column(
    tmp_path: Path, text: str, where: str
) -> None:
    message = load_error(tmp_path, text)
    assert message.startswith(f"pricing file {tmp_path / 'prices.yaml'}: {where}: ")
    assert "\n" not in message


def test_a_key_written_twice_is_refused_with_its_place(tmp_path: Path) -> None:
    # Which of two prices was meant is unknown: as in the alerting configuration.
    text = "prices:\n  - provider: openai\n    model: gpt-4o\n    input: 2.5\n    input: 25\n"
    message = load_error(tmp_path, text)
    assert message.endswith(": line 5 column 5: duplicate key 'input'")


def test_entry_model_rejects_empty_names_and_non_finite_prices() -> None:
    for bad in (entry(provider=""), entry(model=""), entry(input="Infinity"), entry(output="-0.1")):
        with pytest.raises(ValidationError):
            PriceEntry.model_validate(bad)


def test_entry_model_forbids_unknown_fields_and_is_immutable() -> None:
    with pytest.raises(ValidationError) as caught:
        PriceEntry.model_validate(entry(cached=1))
    assert caught.value.errors()[0]["type"] == "extra_forbidden"
    parsed = PriceEntry.model_validate(entry())
    with pytest.raises(ValidationError):
        parsed.input = Decimal(3)  # type: ignore[misc]


def test_pricing_file_model_forbids_unknown_top_level_keys() -> None:
    with pytest.raises(ValidationError):
        PricingFile.model_validate({"prices": [], "currency": "EUR"})
