"""The pricing file: overrides (negotiated, private or self-hosted models) that win
over the public catalog. Prices are USD per million tokens."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# The ledger's unit-price columns are Decimal(38, 12).
PricePerMTok = Annotated[Decimal, Field(ge=0, le=1_000_000, decimal_places=12, allow_inf_nan=False)]


class PriceEntry(BaseModel):
    """One override. `model` is matched case-insensitively and exactly.

    `service_tier` and `batch` restrict the entry to calls served in that tier or
    through a batch API; an entry without them prices every call of the model
    that no more specific entry prices. `cache_write_1h` prices 1-hour cache
    writes (defaults to `cache_write`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]
    effective_from: date | None = None
    service_tier: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    batch: bool = False
    input: PricePerMTok
    cached_input: PricePerMTok | None = None
    cache_write: PricePerMTok | None = None
    cache_write_1h: PricePerMTok | None = None
    output: PricePerMTok
    reasoning: PricePerMTok | None = None


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]


class PricingFile(BaseModel):
    """`estimate_fallbacks`: for a call to a model with no price and no priced model
    of the same provider and family, the model its estimate is priced as, per
    provider (`"*"` for any provider)."""

    model_config = ConfigDict(extra="forbid")

    prices: list[PriceEntry] = Field(default_factory=list)
    estimate_fallbacks: dict[str, ModelRef] = Field(default_factory=dict)
