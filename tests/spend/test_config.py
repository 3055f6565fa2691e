"""`load_config`, the worker's edge for the spend configuration file: a bad file is the
CLI's one-line `ConfigError`, though the schema layer raises its own error."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import Settings
from streams.spend.config import load_config


def test_a_bad_file_is_a_config_error_naming_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "spend.yaml"
    path.write_text("tenants:\n  acme:\n    montly_budget_usd: 5\n")
    with pytest.raises(
        ConfigError, match=r"spend\.yaml: tenants\.acme\.montly_budget_usd: unknown"
    ):
        load_config(Settings(data_dir=tmp_path, config_file=path))


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found$"):
        load_config(Settings(data_dir=tmp_path, config_file=tmp_path / "nope.yaml"))


def test_no_file_is_the_default_configuration(tmp_path: Path) -> None:
    assert load_config(Settings(data_dir=tmp_path)).tenants == {}
