"""`UnpricedModelDetector`: a model with no price carries real traffic.

A call to a model that neither the pricing file nor the catalog prices is ledgered
with cost 0 (and an estimate, when a relative is priced): until someone adds a
price, its spend is a guess. Feed it every such call:

- `update(tenant_id, provider, model, at, requests, input_tokens, output_tokens,
  estimated) -> Finding | None` counts the model's calls, tokens and estimate so
  far, and reports one finding the first time they reach `min_requests` calls
  (real traffic, not one probe); later calls extend the open incident silently;
- `is_resolved(key, now)` / `close_cleared(now)`: the incident clears once the
  model has had no unpriced call for `resolve_after_hours` (it got a price, or
  its traffic stopped).

State: one entry per (provider, model) seen unpriced, at most `max_keys` (the
oldest forgotten). The finding's key names the tenant whose call crossed the
threshold and the model (`tenant:<id>/model:<model>`, so the alert's query
filters on them); its evidence holds the model's totals over every tenant.

>>> from datetime import datetime, timedelta, UTC
>>> detector = UnpricedModelDetector(min_requests=3)
>>> t0 = datetime(2026, 11, 2, 10, 20, tzinfo=UTC)
>>> detector.update("acme", "openai", "gpt-9", t0, 2, 2000, 100, Decimal("0.01")) is None
True
>>> finding = detector.update("acme", "openai", "gpt-9", t0, 1, 500, 50, Decimal("0.002"))
>>> finding.key, finding.evidence["requests"], finding.evidence["input_tokens"]
('tenant:acme/model:gpt-9', 3, 2500)
>>> detector.update("acme", "openai", "gpt-9", t0, 10, 1, 1, Decimal(0)) is None
True
>>> [f.key for f in detector.close_cleared(t0 + timedelta(hours=25))]
['tenant:acme/model:gpt-9']
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from detectors.finding import Finding, Severity
from detectors.history import epoch_hour, hour_start


@dataclass
class _Model:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: Decimal = Decimal(0)
    tenants: set[str] = field(default_factory=set)
    last_seen: datetime | None = None
    finding: Finding | None = None


class UnpricedModelDetector:
    """Per (provider, model) with no price: the first `min_requests` calls alert."""

    name = "unpriced_model"

    def __init__(
        self,
        min_requests: int = 10,
        severity: Severity = "warning",
        resolve_after_hours: int = 24,
        max_keys: int = 10_000,
    ) -> None:
        self.min_requests = min_requests
        self.severity: Severity = severity
        self.resolve_after_hours = resolve_after_hours
        self.max_keys = max_keys
        self._models: OrderedDict[tuple[str, str], _Model] = OrderedDict()

    def __len__(self) -> int:
        return len(self._models)

    def update(
        self,
        tenant_id: str,
        provider: str,
        model: str,
        at: datetime,
        requests: int,
        input_tokens: int,
        output_tokens: int,
        estimated: Decimal,
    ) -> Finding | None:
        """`requests` calls of `tenant_id` to `model`, which has no price, at `at`."""
        state = self._models.get((provider, model))
        if state is None:
            state = self._models[(provider, model)] = _Model()
            if len(self._models) > self.max_keys:
                self._models.popitem(last=False)
        self._models.move_to_end((provider, model))
        state.requests += requests
        state.input_tokens += input_tokens
        state.output_tokens += output_tokens
        state.estimated += estimated
        state.tenants.add(tenant_id)
        state.last_seen = max(at, state.last_seen) if state.last_seen else at
        if state.finding is not None or state.requests < self.min_requests:
            return None
        hour = epoch_hour(at)
        state.finding = Finding(
            detector=self.name,
            key=f"tenant:{tenant_id}/model:{model}",
            window_start=hour_start(hour),
            window_end=hour_start(hour + 1),
            severity=self.severity,
            summary=(
                f"{provider} model {model} has no price and carried {state.requests:,} "
                f"calls ({state.input_tokens:,} input, {state.output_tokens:,} output tokens) "
                f"so far, estimated at ${state.estimated:.2f}: add it to the pricing file"
            ),
            value=Decimal(state.requests),
            threshold=Decimal(self.min_requests),
            evidence=self._evidence(provider, model, state),
        )
        return state.finding

    def _evidence(self, provider: str, model: str, state: _Model) -> dict[str, object]:
        return {
            "provider": provider,
            "model": model,
            "requests": state.requests,
            "input_tokens": state.input_tokens,
            "output_tokens": state.output_tokens,
            "estimated_cost_usd": str(state.estimated),
            "tenants": sorted(state.tenants)[:20],
            "unit": "count",
        }

    def is_resolved(self, key: str, now: datetime) -> bool:
        for state in self._models.values():
            if state.finding is not None and state.finding.key == key:
                assert state.last_seen is not None
                return now - state.last_seen > timedelta(hours=self.resolve_after_hours)
        return True

    def close_cleared(self, now: datetime) -> list[Finding]:
        """Close every incident cleared at `now`; return the finding each opened with,
        its evidence brought up to date."""
        cleared: list[Finding] = []
        for key, state in list(self._models.items()):
            if state.finding is not None and self.is_resolved(state.finding.key, now):
                provider, model = key
                cleared.append(
                    replace(state.finding, evidence=self._evidence(provider, model, state))
                )
                del self._models[key]
        return cleared
