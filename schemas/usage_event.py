"""`UsageEvent`: the canonical usage event, one per model call.

Token semantics are the same for every provider (normalizers convert to them):
`input_tokens` counts all prompt tokens including cache reads and cache writes;
`cached_tokens` and `cache_write_tokens` are parts of it. `output_tokens` counts
all completion tokens including reasoning; `reasoning_tokens` is part of it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_TOKENS_PER_CALL = 10_000_000
MAX_FUTURE_SKEW = timedelta(hours=24)
# No AI API bill predates this; older timestamps are clock or unit errors (1970 from a
# zero epoch). Configurable per pipeline (`timestamp_floor` in the validation context).
DEFAULT_TIMESTAMP_FLOOR = datetime(2020, 1, 1, tzinfo=UTC)
# The ledger's money columns are Decimal(38, 18).
MONEY_QUANTUM = Decimal(1).scaleb(-18)

# Text fields a producer may send by mistake. They are dropped on validation
# (extra="ignore") and never stored; listed so the schema can say so.
DROPPED_TEXT_FIELDS = ("prompt", "completion", "messages", "input", "output")

RequiredStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
OptionalStr = Annotated[str, StringConstraints(strip_whitespace=True, max_length=256)]
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS_PER_CALL, strict=True)]
TOKEN_FIELDS = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "cache_write_1h_tokens",
        "reasoning_tokens",
    }
)
# Lower-cased: providers and the price catalog spell tiers in lower case
# ("flex", "priority"), some SDKs in upper case ("PRIORITY").
ServiceTier = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, max_length=32)]


def _epoch_millis_to_datetime(value: Any) -> Any:
    # bool is an int subclass; True must not become 1970-01-01T00:00:00.001.
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"epoch milliseconds out of range: {value}") from exc
    if isinstance(value, float):
        raise ValueError("timestamp must be RFC 3339 text or integer epoch milliseconds")
    return value


def _to_money_scale(value: Decimal) -> Decimal:
    """Round to the ledger's 18 decimal places: a gateway's float cost such as
    0.00022500000000000002 carries more digits than the column holds."""
    return value.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


ReportedCost = Annotated[
    Decimal,
    Field(ge=0, le=1_000_000_000, allow_inf_nan=False),
    AfterValidator(_to_money_scale),
]
Tags = Annotated[dict[OptionalStr, OptionalStr], Field(max_length=64)]
Timestamp = Annotated[datetime, BeforeValidator(_epoch_millis_to_datetime)]


class UsageEvent(BaseModel):
    """One model call's usage, as producers publish it to `spendstream.usage`.

    >>> e = UsageEvent.model_validate({"request_id": "r1", "timestamp": 1700000000000,
    ...     "tenant_id": "acme", "provider": "openai", "model": "gpt-4o-mini",
    ...     "input_tokens": 1200, "cached_tokens": 1000, "prompt": "secret text"})
    >>> e.timestamp.isoformat(), e.output_tokens, hasattr(e, "prompt")
    ('2023-11-14T22:13:20+00:00', 0, False)
    """

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    request_id: RequiredStr
    timestamp: Timestamp
    tenant_id: RequiredStr
    provider: RequiredStr
    model: RequiredStr
    input_tokens: TokenCount

    output_tokens: TokenCount = 0
    cached_tokens: TokenCount = 0
    cache_write_tokens: TokenCount = 0
    reasoning_tokens: TokenCount = 0
    cache_write_1h_tokens: TokenCount = 0

    service_tier: ServiceTier = ""
    batch: Annotated[bool, Field(strict=True)] = False

    team_id: OptionalStr = ""
    user_id: OptionalStr = ""
    feature_name: OptionalStr = ""
    workflow_id: OptionalStr = ""
    workflow_run_id: OptionalStr = ""
    workflow_name: OptionalStr = ""
    prompt_template_version: OptionalStr = ""
    environment: OptionalStr = ""
    api_key_id: OptionalStr = ""
    request_count: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = 1
    latency_ms: Annotated[int, Field(ge=0, le=86_400_000, strict=True)] | None = None
    status_code: Annotated[int, Field(ge=0, le=999, strict=True)] | None = None
    retry_count: Annotated[int, Field(ge=0, le=1_000_000, strict=True)] = 0
    retry_of: OptionalStr = ""
    reported_cost_usd: ReportedCost | None = None
    tags: Tags = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _timestamp_in_utc_and_not_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        context = info.context or {}
        return timestamp_in_utc_and_bounds(
            value, context.get("now"), context.get("timestamp_floor")
        )

    @model_validator(mode="after")
    def _token_breakdown_consistent(self) -> UsageEvent:
        problem = token_breakdown_problem(
            self.input_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
            self.cache_write_1h_tokens,
            self.output_tokens,
            self.reasoning_tokens,
        )
        if problem:
            raise ValueError(problem)
        return self


# The two checks beyond field types, shared with the compiled batch validator
# (streams.ingest.batch_validation) so both apply the same rule.
def timestamp_in_utc_and_bounds(
    value: datetime, now: datetime | None, floor: datetime | None
) -> datetime:
    """`value` in UTC (a naive time is UTC), or ValueError when more than 24 hours
    after `now` (default: the wall clock) or before `floor` (default: 2020-01-01)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value > (now or datetime.now(UTC)) + MAX_FUTURE_SKEW:
        raise ValueError("timestamp is more than 24 hours in the future")
    floor = floor or DEFAULT_TIMESTAMP_FLOOR
    if value < floor:
        raise ValueError(f"timestamp is too old: before the floor {floor.isoformat()}")
    return value


def token_breakdown_problem(
    input_tokens: int,
    cached_tokens: int,
    cache_write_tokens: int,
    cache_write_1h_tokens: int,
    output_tokens: int,
    reasoning_tokens: int,
) -> str:
    """Why the token parts do not fit in their totals, or "" when they do."""
    if cached_tokens + cache_write_tokens > input_tokens:
        return "cached_tokens + cache_write_tokens exceeds input_tokens"
    if cache_write_1h_tokens > cache_write_tokens:
        return "cache_write_1h_tokens exceeds cache_write_tokens"
    if reasoning_tokens > output_tokens:
        return "reasoning_tokens exceeds output_tokens"
    return ""
