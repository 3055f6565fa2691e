"""The spend configuration file: tenants, workflow thresholds, detectors, routing.

One YAML file, validated at start. A bad file raises `ConfigFileError` with one
line that names the file and the field, e.g.

    config.yaml: tenants.acme.monthly_budget_usd: Input should be a valid decimal

Every model forbids unknown fields, so a typo ("montly_budget_usd") is an
error rather than a budget that silently never alerts. Secrets (Slack webhook
URLs and tokens, PagerDuty routing keys) are `SecretStr`, and any string may be
written as `${ENV_VAR}` so the secrets need not live in the file.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from decimal import Decimal
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from schemas.errors import ConfigFileError
from schemas.yaml_file import load_yaml

PositiveUsd = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
NonNegativeUsd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
Ratio = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]

Severity = Literal["info", "warning", "critical"]

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com"
SLACK_API_URL = "https://slack.com/api/"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantConfig(_Strict):
    contracted_hourly_budget_usd: PositiveUsd | None = None
    monthly_budget_usd: PositiveUsd | None = None
    # The tenant's own spend floor for rolling_median and retry_storm: an hour spending
    # less never pages it (the detectors' spend_floor_usd otherwise).
    spend_floor_usd: NonNegativeUsd | None = None

    @model_validator(mode="after")
    def _has_a_setting(self) -> TenantConfig:
        if (
            self.contracted_hourly_budget_usd is None
            and self.monthly_budget_usd is None
            and self.spend_floor_usd is None
        ):
            raise ValueError(
                "give contracted_hourly_budget_usd, monthly_budget_usd, spend_floor_usd, or several"
            )
        return self


class WorkflowsConfig(_Strict):
    """Run-cost thresholds: one workflow run costing more than this alerts."""

    default_run_threshold_usd: PositiveUsd = Decimal("10")
    run_threshold_usd: dict[str, PositiveUsd] = Field(default_factory=dict)

    def run_threshold_for(self, workflow_id: str) -> Decimal:
        return self.run_threshold_usd.get(workflow_id, self.default_run_threshold_usd)


# Seconds or an ISO 8601 duration ("PT15M"): how long into the next hour a cleared
# condition must stay cleared before the detector reports it resolved.
ResolveAfter = Annotated[timedelta, Field(gt=timedelta(0))]


class _DetectorParams(_Strict):
    """Field names and types are the detector constructor's arguments, so a section
    passes straight through; `kwargs()` leaves out the settings that are the worker's."""

    def kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude={"enabled", "checkpoint_interval_seconds"})


class RollingMedianParams(_DetectorParams):
    k: Ratio = Decimal(5)  # warning when this hour > k x the usual hourly spend
    critical_k: Ratio = Decimal(10)  # critical above critical_k x
    lookback_days: int = Field(default=7, ge=1, le=31)
    spend_floor_usd: NonNegativeUsd = Decimal(1)  # an hour below this never alerts
    min_baseline_usd: NonNegativeUsd = Decimal("0.20")  # a near-zero median is not "usual"
    min_history_hours: int = Field(default=24, ge=1)  # a tenant's first day has no baseline
    max_keys: int = Field(default=10_000, ge=1)
    resolve_after: ResolveAfter = timedelta(minutes=15)
    # Judge the hour at its projection once this much of it passed and it has spent
    # project_min_ratio x the usual hour (a small sample projects wildly).
    project_after: ResolveAfter = timedelta(minutes=10)
    project_min_ratio: Ratio = Decimal("1.5")

    @model_validator(mode="after")
    def _critical_above_warning(self) -> RollingMedianParams:
        if self.critical_k < self.k:
            raise ValueError("critical_k must be at least k")
        return self


class ContractParams(_DetectorParams):
    monthly_thresholds: list[Ratio] = Field(
        default_factory=lambda: [Decimal("0.5"), Decimal("0.8"), Decimal("1")], min_length=1
    )
    forecast: bool = True  # alert when the month-to-date run rate predicts crossing 100 %
    forecast_min_days: int = Field(default=3, ge=1, le=28)
    hourly_severity: Severity = "warning"
    forecast_severity: Severity = "warning"
    resolve_after: ResolveAfter = timedelta(minutes=15)

    @model_validator(mode="after")
    def _ascending(self) -> ContractParams:
        if list(self.monthly_thresholds) != sorted(set(self.monthly_thresholds)):
            raise ValueError("monthly_thresholds must be distinct and ascending")
        return self


class RunCostParams(_DetectorParams):
    """Thresholds are under `workflows`; this is how far above one a run turns critical."""

    critical_factor: Ratio = Decimal(3)
    max_runs: int = Field(default=100_000, ge=1)


class RetryStormParams(_DetectorParams):
    surge_factor: Ratio = Decimal(3)  # retry/error rate vs its usual
    amplification: Ratio = Decimal(3)  # requests per user vs usual
    min_retries: int = Field(default=20, ge=0)
    min_errors: int = Field(default=20, ge=0)
    min_requests: int = Field(default=100, ge=1)
    rate_floor: float = Field(default=0.01, gt=0, le=1)
    spend_floor_usd: NonNegativeUsd = Decimal(1)  # an hour spending less never alerts
    lookback_days: int = Field(default=7, ge=1, le=31)
    min_history_hours: int = Field(default=24, ge=1)
    max_keys: int = Field(default=2_000, ge=1)
    severity: Severity = "warning"
    resolve_after: ResolveAfter = timedelta(minutes=15)


OnlineFeature = Literal[
    "log_cost", "log_input_tokens", "log_output_tokens", "log_latency_ms", "log_retries"
]


DEFAULT_ONLINE_FEATURES: tuple[OnlineFeature, ...] = (
    "log_cost",
    "log_input_tokens",
    "log_output_tokens",
    "log_latency_ms",
)


class OnlineParams(_DetectorParams):
    enabled: bool = True
    quantile: float = Field(default=0.999, gt=0, lt=1)
    grace_period: int = Field(default=1000, ge=0)  # samples learned before any score counts
    features: list[OnlineFeature] = Field(
        default_factory=lambda: list(DEFAULT_ONLINE_FEATURES), min_length=1
    )
    n_trees: int = Field(default=10, ge=1)
    height: int = Field(default=6, ge=1)
    window_size: int = Field(default=250, ge=1)
    limit: float = Field(default=10.0, gt=0)
    max_tenants: int = Field(default=1_000, ge=1)
    severity: Severity = "info"
    seed: int = 42
    checkpoint_interval_seconds: int = Field(default=60, ge=1)


class CardinalityParams(_DetectorParams):
    """A tenant's workflows (teams, models) overflowing the spend tables' cap of distinct
    values: the first overflow alerts; it resolves once the overflowing hours expire."""

    enabled: bool = True
    severity: Severity = "warning"
    max_keys: int = Field(default=10_000, ge=1)  # open (tenant, dimension) incidents kept


class UnpricedModelParams(_DetectorParams):
    """A model with no price carrying real traffic: alerts once it reaches
    `min_requests` calls; resolves after `resolve_after_hours` without such calls."""

    enabled: bool = True
    min_requests: int = Field(default=10, ge=1)
    severity: Severity = "warning"
    resolve_after_hours: int = Field(default=24, ge=1)
    max_keys: int = Field(default=10_000, ge=1)


class BurnRateParams(_DetectorParams):
    """A monthly budget gone before the month ends at both windows' rate (SLO-style
    multi-window burn rate); factors are multiples of the even pace (budget / hours)."""

    enabled: bool = True
    short_window: ResolveAfter = timedelta(hours=1)
    long_window: ResolveAfter = timedelta(hours=6)
    short_factor: Ratio = Decimal("14.4")
    long_factor: Ratio = Decimal(6)
    critical_within: ResolveAfter = timedelta(days=1)
    max_tenants: int = Field(default=10_000, ge=1)


class SpikeCauseParams(_DetectorParams):
    min_factor: float = Field(default=1.5, gt=1)
    flat: float = Field(default=1.25, gt=1)
    min_mix_shift: float = Field(default=0.2, gt=0, le=1)
    rate_floor: float = Field(default=0.01, gt=0, le=1)


class DetectorsConfig(_Strict):
    rolling_median: RollingMedianParams = Field(default_factory=RollingMedianParams)
    contract: ContractParams = Field(default_factory=ContractParams)
    run_cost: RunCostParams = Field(default_factory=RunCostParams)
    retry_storm: RetryStormParams = Field(default_factory=RetryStormParams)
    online: OnlineParams = Field(default_factory=OnlineParams)
    cardinality: CardinalityParams = Field(default_factory=CardinalityParams)
    unpriced_model: UnpricedModelParams = Field(default_factory=UnpricedModelParams)
    spike_cause: SpikeCauseParams = Field(default_factory=SpikeCauseParams)
    burn_rate: BurnRateParams = Field(default_factory=BurnRateParams)


class AlertingConfig(_Strict):
    cooldown_minutes: int = Field(default=60, ge=0)  # minimum gap between two pages of one key
    queue_size: int = Field(default=1000, ge=1)  # per channel; overflow is recorded as failed
    backoff_initial_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url: str, *, https_only: bool) -> None:
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and not https_only and _is_loopback(parsed.hostname):
        return  # a local test receiver
    allowed = "https://" if https_only else "https:// (http:// only to localhost)"
    raise ValueError(f"must be an {allowed} URL")


class SlackTarget(_Strict):
    """An incoming-webhook URL, or a bot token and channel for chat.postMessage."""

    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    channel: str | None = None
    api_base_url: str = SLACK_API_URL

    @model_validator(mode="after")
    def _one_kind(self) -> SlackTarget:
        bot = self.token is not None or self.channel is not None
        if (self.webhook_url is None) == (not bot):
            raise ValueError("give either webhook_url, or token and channel")
        if bot and (self.token is None or not self.channel):
            raise ValueError("chat.postMessage needs both token and channel")
        if self.webhook_url is not None:
            try:
                _check_url(self.webhook_url.get_secret_value(), https_only=False)
            except ValueError as exc:
                # The URL is the secret: name the field, never echo the value.
                raise ValueError(f"webhook_url {exc}") from None
        else:
            _check_url(self.api_base_url, https_only=False)
        return self


class PagerDutyTarget(_Strict):
    routing_key: SecretStr
    # pagerduty.EventsApiV2Client refuses anything but https://.
    base_url: str = PAGERDUTY_EVENTS_URL
    verify_tls: bool = True

    @model_validator(mode="after")
    def _valid(self) -> PagerDutyTarget:
        if not self.routing_key.get_secret_value().strip():
            raise ValueError("routing_key is empty")
        try:
            _check_url(self.base_url, https_only=True)
        except ValueError as exc:
            raise ValueError(f"base_url {exc}") from None
        return self


class WarningRoute(_Strict):
    """Warnings go to Slack only; there is deliberately no pagerduty field."""

    slack: SlackTarget | None = None


class CriticalRoute(_Strict):
    """Critical alerts page PagerDuty and post to Slack (this Slack, else the warning one)."""

    slack: SlackTarget | None = None
    pagerduty: PagerDutyTarget | None = None


class RoutingConfig(_Strict):
    console: bool | None = None  # None: print alerts when running the embedded default
    warning: WarningRoute = Field(default_factory=WarningRoute)
    critical: CriticalRoute = Field(default_factory=CriticalRoute)


class LimitsConfig(_Strict):
    """How `/v1/limits` and the budget detectors treat calls to models with no price.

    `count`: their estimates (docs/pricing.md) count toward the month's spend.
    `unknown`: fail closed: a tenant with such calls this month is reported with
    status `unknown` (a gateway enforcing caps should treat it as over).
    """

    estimates: Literal["count", "unknown"] = "count"


class SpendConfig(_Strict):
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    workflows: WorkflowsConfig = Field(default_factory=WorkflowsConfig)
    detectors: DetectorsConfig = Field(default_factory=DetectorsConfig)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _interpolate(value: Any, loc: tuple[str | int, ...], source: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, str(k)), source) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), source) for i, v in enumerate(value)]
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigFileError(
                    f"{source}: {_format_loc(loc)}: environment variable {name} is not set"
                )
            return os.environ[name]

        return _ENV_REF.sub(lookup, value)
    return value


def _error_line(source: str, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    loc = _format_loc(tuple(first["loc"]))
    return f"{source}: {loc or '(top level)'}: {message}{more}"


def parse_spend_config(data: Any, source: str = "<config>") -> SpendConfig:
    """Validate an already-loaded mapping (after `${VAR}` substitution)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{source}: the top level must be a mapping")
    data = _interpolate(data, (), source)
    try:
        return SpendConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(_error_line(source, exc)) from None


def load_spend_config(path: str | Path) -> SpendConfig:
    """Read and validate the YAML file; raise ConfigFileError naming the file and field."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{source}: file not found") from None
    except OSError as exc:
        raise ConfigFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        data = load_yaml(text, source)
    except ValueError as exc:
        raise ConfigFileError(str(exc)) from None
    return parse_spend_config(data, source)
