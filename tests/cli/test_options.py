"""One --data-dir option for every command, with one default: SPENDSTREAM_DATA_DIR,
else ./.spendstream."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streams.cli.main import LEAN_COMMANDS, build_parser
from streams.cli.options import DATA_DIR_HELP, settings_from


def data_dir_options(parser: argparse.ArgumentParser, path: str = "spendstream") -> dict:
    found = {}
    for action in parser._actions:
        if "--data-dir" in action.option_strings:
            found[path] = action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(data_dir_options(sub, f"{path} {name}"))
    return found


def test_every_command_has_the_same_data_dir_option() -> None:
    options = data_dir_options(build_parser())
    assert {"spendstream query", "spendstream report weekly", "spendstream keys list"} <= set(
        options
    )
    assert len(options) >= 15
    for command, action in options.items():
        assert (action.default, action.help, action.type) == (None, DATA_DIR_HELP, Path), command


@pytest.mark.parametrize(
    "argv", [["report", "weekly"], ["query", "SELECT 1"], ["keys", "list"], ["migrate"]]
)
def test_the_default_is_the_environment_then_dot_spendstream(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    parser = build_parser()
    monkeypatch.delenv("SPENDSTREAM_DATA_DIR", raising=False)
    assert settings_from(parser.parse_args(argv)).data_dir == Path(".spendstream")
    monkeypatch.setenv("SPENDSTREAM_DATA_DIR", str(tmp_path))
    assert settings_from(parser.parse_args(argv)).data_dir == tmp_path
    given = tmp_path / "given"
    assert settings_from(parser.parse_args([*argv, "--data-dir", str(given)])).data_dir == given


@pytest.mark.parametrize("command", sorted(LEAN_COMMANDS))
def test_a_lean_command_parses_the_same_without_the_layers(command: str) -> None:
    """`dev` and `worker` skip the keys, alerts and analyst sub-commands (their imports
    cost the start ~0.8 s): their own options parse as in the whole parser."""
    lean = build_parser(layers=False)
    lean_commands = next(
        a for a in lean._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    assert command in lean_commands and "report" not in lean_commands
    argv = [command, "--data-dir", "/tmp/d"]
    whole = vars(build_parser().parse_args(argv))
    assert vars(lean.parse_args(argv)) == whole
