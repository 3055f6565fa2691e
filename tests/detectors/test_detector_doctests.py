"""Runs the docstring examples of every detector module: they are the API's first tests."""

import doctest
import importlib

import pytest

MODULES = [
    "detectors.history",
    "detectors.stats",
    "detectors.incidents",
    "detectors.rolling_median",
    "detectors.contract",
    "detectors.run_cost",
    "detectors.retry_storm",
    "detectors.online_anomaly",
    "detectors.spike_cause",
    "detectors.unpriced_model",
    "detectors.decomposition",
    "detectors.burn_rate",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
