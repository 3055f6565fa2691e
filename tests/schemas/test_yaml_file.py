"""The one YAML reader: duplicate keys refused, every error with its line and column."""

from __future__ import annotations

import doctest

import pytest

from schemas import yaml_file
from schemas.yaml_file import load_yaml


def test_module_doctests_pass() -> None:
    assert doctest.testmod(yaml_file) == (0, 2)  # (failed, attempted)


def test_a_nested_duplicate_is_found_where_it_is() -> None:
    with pytest.raises(ValueError, match=r"^f\.yaml: line 3 column 5: duplicate key 'k'$"):
        load_yaml("top:\n    k: 1\n    k: 2\n", "f.yaml")


def test_a_syntax_error_names_line_and_column() -> None:
    message = r"^f\.yaml: line 2 column 3: mapping values are not allowed here$"
    with pytest.raises(ValueError, match=message):
        load_yaml("a: 1\n b: 2\n", "f.yaml")
