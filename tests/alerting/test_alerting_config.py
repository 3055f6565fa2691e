"""The spend configuration file: a good file loads; each bad field stops with one clear line."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from schemas.errors import ConfigFileError
from schemas.spend_config import load_spend_config

GOOD = """\
tenants:
  acme:
    contracted_hourly_budget_usd: "50.00"
    monthly_budget_usd: "20000"
  globex:
    monthly_budget_usd: 1500.25
workflows:
  default_run_threshold_usd: "10"
  run_threshold_usd:
    summarize: "40"
detectors:
  rolling_median: {k: 5, spend_floor_usd: "2.50", lookback_days: 7, resolve_after: 600}
  retry_storm: {resolve_after: PT20M}
  contract: {monthly_thresholds: [0.5, 0.8, 1.0]}
alerting:
  cooldown_minutes: 30
routing:
  warning:
    slack: {webhook_url: "https://hooks.slack.com/services/T0/B0/warnsecret"}
  critical:
    slack: {token: "${TEST_SLACK_TOKEN}", channel: "#spend-oncall"}
    pagerduty: {routing_key: "${TEST_PD_KEY}"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SLACK_TOKEN", "xoxb-test-token-secret")
    monkeypatch.setenv("TEST_PD_KEY", "R0UTINGKEYSECRET")


def test_good_file_loads_with_decimal_money_and_secret_strings(tmp_path: Path) -> None:
    config = load_spend_config(write(tmp_path, GOOD))
    acme = config.tenants["acme"]
    assert acme.contracted_hourly_budget_usd == Decimal("50.00")
    assert acme.monthly_budget_usd == Decimal("20000")
    assert config.tenants["globex"].monthly_budget_usd == Decimal("1500.25")
    assert config.tenants["globex"].contracted_hourly_budget_usd is None
    assert config.workflows.run_threshold_for("summarize") == Decimal("40")
    assert config.workflows.run_threshold_for("other") == Decimal("10")
    assert config.detectors.rolling_median.spend_floor_usd == Decimal("2.50")
    assert config.detectors.retry_storm.surge_factor == Decimal(3)  # defaults fill the rest
    assert config.alerting.cooldown_minutes == 30
    critical = config.routing.critical
    assert critical.pagerduty is not None and critical.slack is not None
    assert critical.pagerduty.routing_key.get_secret_value() == "R0UTINGKEYSECRET"
    assert critical.slack.token is not None
    assert critical.slack.token.get_secret_value() == "xoxb-test-token-secret"
    shown = repr(config) + str(config.model_dump())
    for secret in ("warnsecret", "R0UTINGKEYSECRET", "xoxb-test-token-secret"):
        assert secret not in shown


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    config = load_spend_config(write(tmp_path, ""))
    assert config.tenants == {}
    assert config.detectors.rolling_median.k == Decimal(5)
    assert config.routing.console is None


BAD_FIELDS = [
    (
        "tenants:\n  acme:\n    monthly_budget_usd: lots\n",
        "tenants.acme.monthly_budget_usd: Input should be a valid decimal",
    ),
    (
        "tenants:\n  acme:\n    contracted_hourly_budget_usd: -5\n",
        "tenants.acme.contracted_hourly_budget_usd: Input should be greater than 0",
    ),
    (
        "tenants:\n  acme: {}\n",
        "tenants.acme: give contracted_hourly_budget_usd, monthly_budget_usd, "
        "spend_floor_usd, or several",
    ),
    (
        "tenants:\n  acme:\n    montly_budget_usd: 100\n",
        "tenants.acme.montly_budget_usd: unknown field",
    ),
    (
        "workflows:\n  run_threshold_usd:\n    summarize: 0\n",
        "workflows.run_threshold_usd.summarize: Input should be greater than 0",
    ),
    (
        "detectors:\n  rolling_median:\n    k: five\n",
        "detectors.rolling_median.k: Input should be a valid decimal",
    ),
    (
        "detectors:\n  rolling_median:\n    resolve_after: soon\n",
        "detectors.rolling_median.resolve_after: "
        "Input should be a valid timedelta, invalid digit in duration",
    ),
    (
        "detectors:\n  rolling_median:\n    k: 5\n    critical_k: 4\n",
        "detectors.rolling_median: critical_k must be at least k",
    ),
    (
        "detectors:\n  online:\n    features: [log_cost, log_vibes]\n",
        "detectors.online.features[1]: Input should be 'log_cost', 'log_input_tokens', "
        "'log_output_tokens', 'log_latency_ms' or 'log_retries'",
    ),
    (
        "detectors:\n  contract:\n    monthly_thresholds: [0.8, 0.5]\n",
        "detectors.contract: monthly_thresholds must be distinct and ascending",
    ),
    (
        "detectors:\n  contract:\n    monthly_thresholds: [0.5, nope]\n",
        "detectors.contract.monthly_thresholds[1]: Input should be a valid decimal",
    ),
    (
        "alerting:\n  cooldown_minutes: -1\n",
        "alerting.cooldown_minutes: Input should be greater than or equal to 0",
    ),
    (
        "routing:\n  warning:\n    pagerduty: {routing_key: abc}\n",
        "routing.warning.pagerduty: unknown field",
    ),
    (
        "routing:\n  critical:\n    pagerduty: {routing_key: abc, base_url: 'http://pd.local'}\n",
        "routing.critical.pagerduty: base_url must be an https:// URL",
    ),
    (
        "routing:\n  critical:\n    pagerduty: {routing_key: ''}\n",
        "routing.critical.pagerduty: routing_key is empty",
    ),
    (
        "routing:\n  warning:\n    slack: {channel: '#x'}\n",
        "routing.warning.slack: chat.postMessage needs both token and channel",
    ),
    (
        "routing:\n  warning:\n    slack: {}\n",
        "routing.warning.slack: give either webhook_url, or token and channel",
    ),
    (
        "routing:\n  warning:\n    slack: {webhook_url: 'ftp://hooks/T0/B0/hooksecret'}\n",
        "routing.warning.slack: webhook_url must be an https:// (http:// only to localhost) URL",
    ),
    (
        "routing:\n  console: maybe\n",
        "routing.console: Input should be a valid boolean, unable to interpret input",
    ),
    ("tenants: [acme]\n", "tenants: Input should be a valid dictionary"),
    ("- just\n- a list\n", "the top level must be a mapping"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FIELDS, ids=[e for _, e in BAD_FIELDS])
def test_bad_field_is_one_line_naming_file_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        load_spend_config(path)
    message = str(caught.value)
    assert message == f"{path}: {expected}"
    assert "\n" not in message
    assert "hooksecret" not in message


def test_several_bad_fields_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    text = "tenants:\n  acme: {monthly_budget_usd: x}\nalerting: {cooldown_minutes: -1}\n"
    with pytest.raises(ConfigFileError, match=r"monthly_budget_usd: .* \(and 1 more\)$"):
        load_spend_config(write(tmp_path, text))


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigFileError, match=r"config\.yaml: line 2 column 10: mapping values are not"
    ):
        load_spend_config(write(tmp_path, "tenants:\n  acme: x: y\n"))


def test_duplicate_key_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    text = "tenants:\n  acme: {monthly_budget_usd: 1}\n  acme: {monthly_budget_usd: 2}\n"
    with pytest.raises(ConfigFileError, match=r"line 3 column 3: duplicate key 'acme'"):
        load_spend_config(write(tmp_path, text))


def test_missing_environment_variable_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_PD_KEY")
    with pytest.raises(ConfigFileError) as caught:
        load_spend_config(write(tmp_path, GOOD))
    assert str(caught.value).endswith(
        "config.yaml: routing.critical.pagerduty.routing_key: "
        "environment variable TEST_PD_KEY is not set"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"nope\.yaml: file not found$"):
        load_spend_config(tmp_path / "nope.yaml")


def test_documented_example_is_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The configuration reference in docs/alerting.md loads as written."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "alerting.md"
    block = re.search(r"```yaml\n(.*?)```", docs.read_text(), re.S)
    assert block is not None, "docs/alerting.md has no yaml example"
    for name in re.findall(r"\$\{(\w+)\}", block.group(1)):
        example = "https://hooks.slack.com/services/T0/B0/x" if "URL" in name else "example"
        monkeypatch.setenv(name, example)
    config = load_spend_config(write(tmp_path, block.group(1)))
    assert config.tenants


def test_detector_parameters_construct_the_real_detectors(tmp_path: Path) -> None:
    """Each detector section's field names are its constructor's arguments."""
    from detectors import (
        ContractDetector,
        OnlineAnomalyDetector,
        RetryStormDetector,
        RollingMedianDetector,
        RunCostDetector,
        SpikeCauseClassifier,
    )

    config = load_spend_config(write(tmp_path, GOOD))
    params = config.detectors
    rolling = RollingMedianDetector(**params.rolling_median.kwargs())
    assert rolling.spend_floor_usd == Decimal("2.50")
    assert rolling.resolve_after == timedelta(minutes=10)
    contract = ContractDetector(config.tenants, **params.contract.kwargs())
    assert contract.budgets["acme"].monthly_budget_usd == Decimal("20000")
    run_cost = RunCostDetector(
        run_threshold_usd=config.workflows.run_threshold_usd,
        default_run_threshold_usd=config.workflows.default_run_threshold_usd,
        **params.run_cost.kwargs(),
    )
    assert run_cost.threshold_for("summarize") == Decimal("40")
    storm = RetryStormDetector(**params.retry_storm.kwargs())
    assert (storm.surge_factor, storm.resolve_after) == (3.0, timedelta(minutes=20))
    assert OnlineAnomalyDetector(**params.online.kwargs()).quantile == 0.999
    assert SpikeCauseClassifier(**params.spike_cause.kwargs()).min_factor == 1.5
