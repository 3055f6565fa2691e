"""A what-if scenario (`spendstream whatif --scenario FILE`): the levers under which a
period of the ledger is re-priced, without writing anything.

```yaml
substitutions:              # model swaps, optionally for one workflow and/or tenant
  - {from: openai/gpt-4o, to: openai/gpt-4o-mini, workflow_id: classify}
  - {from: claude-opus-4-1, to: claude-sonnet-4-5, tenant_id: acme}
pricing: new-prices.yaml    # a price card (pricing-file format) over the catalog
cache_hit_rate: 0.6         # share of non-cache-write input tokens read from cache
service_tier: flex          # every call served at this tier
batch: true                 # every call through a batch API
```

A model is `provider/model` or a bare `model` (any provider); a bare `to`
keeps the call's provider.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

ModelName = Annotated[str, Field(min_length=1, max_length=256)]


class Substitution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_model: ModelName = Field(alias="from")
    to_model: ModelName = Field(alias="to")
    workflow_id: str | None = None
    tenant_id: str | None = None

    def matches(self, provider: str, model: str, workflow_id: str, tenant_id: str) -> bool:
        wanted_provider, _, wanted_model = self.from_model.lower().rpartition("/")
        return (
            model.lower() == wanted_model
            and (not wanted_provider or provider.lower() == wanted_provider)
            and self.workflow_id in (None, workflow_id)
            and self.tenant_id in (None, tenant_id)
        )

    def target(self, provider: str) -> tuple[str, str]:
        """(provider, model) the call is re-priced as."""
        to_provider, _, to_model = self.to_model.rpartition("/")
        return (to_provider or provider, to_model)


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    substitutions: list[Substitution] = Field(default_factory=list)
    pricing: Path | None = None
    cache_hit_rate: Annotated[Decimal, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    service_tier: Annotated[str, Field(max_length=32)] | None = None
    batch: bool | None = None

    @property
    def reprices_every_call(self) -> bool:
        """Levers that apply to every call, not only to substituted ones."""
        return (
            self.pricing is not None
            or self.cache_hit_rate is not None
            or self.service_tier is not None
            or self.batch is not None
        )

    def describe(self) -> list[str]:
        lines = []
        for swap in self.substitutions:
            scope = [
                f"{name} {value}"
                for name, value in (("workflow", swap.workflow_id), ("tenant", swap.tenant_id))
                if value is not None
            ]
            where = f" ({', '.join(scope)})" if scope else ""
            lines.append(f"{swap.from_model} -> {swap.to_model}{where}")
        if self.pricing is not None:
            lines.append(f"prices from {self.pricing}")
        if self.cache_hit_rate is not None:
            lines.append(f"cache hit rate {self.cache_hit_rate * 100:g}%")
        if self.service_tier is not None:
            lines.append(f"service tier {self.service_tier}")
        if self.batch is not None:
            lines.append("batch" if self.batch else "not batch")
        return lines
