"""`OnlineAnomalyDetector`: River models per tenant over per-request features.

Per tenant, a `preprocessing.StandardScaler` feeds `anomaly.HalfSpaceTrees`,
wrapped in `anomaly.QuantileFilter` (the filter protects the whole pipeline, so
an anomaly teaches neither the scaler nor the trees). Higher score = more
anomalous; a sample is anomalous when its score reaches the `quantile` of the
tenant's past scores. Parameter names follow `schemas.spend_config.OnlineParams`.

- `score_one(tenant_id, sample) -> float`, `learn_one(tenant_id, sample)`;
- `update(tenant_id, at, sample) -> Finding | None`: score, then learn; a
  finding at most once per tenant per event-time hour (window = that hour), and
  none during the tenant's first `grace_period` samples (HalfSpaceTrees scores
  0 for its whole first window, and the quantile needs scores to settle);
- `checkpoint() -> bytes` / `restore(data)`: pickle of the per-tenant models.
  No worker path calls them: the worker's models start empty at each start
  (`checkpoint_interval_seconds` in the configuration is read by nothing).
  Only restore bytes this application wrote: unpickling runs code.

Features (`RequestSample.features`), always all of them, because HalfSpaceTrees
fixes its feature set from the first sample: log of cost in micro-USD, log of
input and output tokens, log of latency. The scaled features (z-scores) are
given to the trees with limits of +-`limit`, wide enough that normal traffic
is spread over many splits and an outlier lands in a near-empty region.

Retries are left out of the default set (`ALL_FEATURES` has them): measured
on synthetic traffic, a feature that is 0 for 98 % of calls and 1 for 2 %
scores every ordinary retried call as rarer than the 99.5 % quantile, which
then hides real outliers in cost or tokens. Retry surges are
`RetryStormDetector`'s job.

State: at most `max_tenants` tenants, the least recently seen evicted (it
starts again with a new grace period). A tenant's model is a fixed size.

>>> from datetime import datetime, UTC
>>> from decimal import Decimal
>>> import random
>>> rng = random.Random(7)
>>> detector = OnlineAnomalyDetector(grace_period=500)
>>> at = datetime(2024, 5, 6, 10, tzinfo=UTC)
>>> for _ in range(1500):
...     tokens = int(rng.lognormvariate(7.3, 0.3))
...     detector.learn_one("acme", RequestSample(cost=Decimal(tokens) * Decimal("0.000003"),
...                        input_tokens=tokens, output_tokens=tokens // 5,
...                        latency_ms=rng.lognormvariate(6.7, 0.3)))
>>> normal = RequestSample(cost=Decimal("0.0045"), input_tokens=1500, output_tokens=300,
...                        latency_ms=800)
>>> detector.update("acme", at, normal) is None
True
>>> runaway = RequestSample(cost=Decimal("4.50"), input_tokens=150_000, output_tokens=300,
...                         latency_ms=800)
>>> detector.update("acme", at, runaway).key
'tenant:acme'
>>> restored = OnlineAnomalyDetector(grace_period=500)
>>> restored.restore(detector.checkpoint())
>>> restored.score_one("acme", runaway) == detector.score_one("acme", runaway)
True
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from river import anomaly, preprocessing

from detectors.finding import Finding, Severity
from detectors.history import epoch_hour, hour_start

FEATURES = ("log_cost", "log_input_tokens", "log_output_tokens", "log_latency_ms")
ALL_FEATURES = (*FEATURES, "log_retries")
_CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class RequestSample:
    """One costed request, as the detector sees it."""

    cost: Decimal
    input_tokens: int
    output_tokens: int = 0
    latency_ms: float | None = None  # None counts as 0; send it always or never
    retries: int = 0

    def features(self, names: Sequence[str] = FEATURES) -> dict[str, float]:
        every = {
            "log_cost": math.log1p(float(self.cost) * 1e6),
            "log_input_tokens": math.log1p(self.input_tokens),
            "log_output_tokens": math.log1p(self.output_tokens),
            "log_latency_ms": math.log1p(self.latency_ms or 0.0),
            "log_retries": math.log1p(self.retries),
        }
        return {name: every[name] for name in names}


@dataclass
class _TenantModel:
    model: Any  # anomaly.QuantileFilter (River is untyped)
    seen: int = 0
    reported_hour: int | None = None


class OnlineAnomalyDetector:
    """Per-tenant StandardScaler -> HalfSpaceTrees behind a QuantileFilter."""

    name = "online_anomaly"

    def __init__(
        self,
        quantile: float = 0.999,
        grace_period: int = 1000,
        features: Sequence[str] = FEATURES,
        n_trees: int = 10,
        height: int = 6,
        window_size: int = 250,
        limit: float = 10.0,
        max_tenants: int = 1_000,
        severity: Severity = "info",
        seed: int = 42,
    ) -> None:
        unknown = set(features) - set(ALL_FEATURES)
        if unknown:
            raise ValueError(f"unknown features: {sorted(unknown)}")
        self.quantile = quantile
        self.grace_period = grace_period
        self.features = tuple(features)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.limit = limit
        self.max_tenants = max_tenants
        self.severity = severity
        self.seed = seed
        self._tenants: OrderedDict[str, _TenantModel] = OrderedDict()

    def __contains__(self, tenant_id: object) -> bool:
        """Whether a model is held for this tenant."""
        return tenant_id in self._tenants

    def score_one(self, tenant_id: str, sample: RequestSample) -> float:
        """The anomaly score in [0, 1]; 0.0 for a tenant with no model yet."""
        state = self._tenants.get(tenant_id)
        if state is None:
            return 0.0
        return float(state.model.score_one(sample.features(self.features)))

    def threshold(self, tenant_id: str) -> float | None:
        """The tenant's current score threshold (its `quantile` of scores), if any yet."""
        state = self._tenants.get(tenant_id)
        return None if state is None else state.model.quantile.get()

    def learn_one(self, tenant_id: str, sample: RequestSample) -> None:
        state = self._state(tenant_id)
        state.model.learn_one(sample.features(self.features))
        state.seen += 1

    def update(self, tenant_id: str, at: datetime, sample: RequestSample) -> Finding | None:
        state = self._state(tenant_id)
        x = sample.features(self.features)
        score = float(state.model.score_one(x))
        anomalous = state.seen >= self.grace_period and bool(state.model.classify(score))
        threshold = state.model.quantile.get()
        state.model.learn_one(x)
        state.seen += 1
        h = epoch_hour(at)
        if not anomalous or state.reported_hour == h:
            return None
        state.reported_hour = h
        return Finding(
            detector=self.name,
            key=f"tenant:{tenant_id}",
            window_start=hour_start(h),
            window_end=hour_start(h + 1),
            severity=self.severity,
            summary=(
                f"tenant {tenant_id}: unusual request (${sample.cost:,.4f}, "
                f"{sample.input_tokens} in / {sample.output_tokens} out tokens), "
                f"anomaly score {score:.3f} above its {self.quantile:.1%} quantile {threshold:.3f}"
            ),
            value=Decimal(f"{score:.4f}"),
            threshold=Decimal(f"{threshold:.4f}"),
            evidence={
                "unit": "count",  # value and threshold are scores in [0, 1], not dollars
                "score": score,
                "score_threshold": threshold,
                "cost_usd": sample.cost,
                "input_tokens": sample.input_tokens,
                "output_tokens": sample.output_tokens,
                "latency_ms": sample.latency_ms,
                "retries": sample.retries,
                "samples_seen": state.seen,
            },
        )

    def checkpoint(self) -> bytes:
        """The per-tenant models, for `restore` (not called by the worker yet)."""
        return pickle.dumps(
            {"format": _CHECKPOINT_FORMAT, "features": self.features, "tenants": self._tenants}
        )

    def restore(self, data: bytes) -> None:
        """Replace all tenant models with those of a `checkpoint()`."""
        saved = pickle.loads(data)
        if not isinstance(saved, dict) or saved.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError("not an OnlineAnomalyDetector checkpoint")
        if tuple(saved["features"]) != self.features:
            raise ValueError(f"checkpoint features {saved['features']} differ from {self.features}")
        tenants: OrderedDict[str, _TenantModel] = saved["tenants"]
        while len(tenants) > self.max_tenants:
            tenants.popitem(last=False)
        self._tenants = tenants

    def _state(self, tenant_id: str) -> _TenantModel:
        state = self._tenants.get(tenant_id)
        if state is None:
            state = _TenantModel(self._new_model())
            self._tenants[tenant_id] = state
            if len(self._tenants) > self.max_tenants:
                self._tenants.popitem(last=False)
        else:
            self._tenants.move_to_end(tenant_id)
        return state

    def _new_model(self) -> Any:
        trees = anomaly.HalfSpaceTrees(
            n_trees=self.n_trees,
            height=self.height,
            window_size=self.window_size,
            limits={name: (-self.limit, self.limit) for name in self.features},
            seed=self.seed,
        )
        return anomaly.QuantileFilter(preprocessing.StandardScaler() | trees, q=self.quantile)
