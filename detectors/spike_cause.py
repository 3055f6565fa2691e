"""`SpikeCauseClassifier`: why did this window cost more than its baseline?

`classify(window, baseline) -> SpikeCause` compares an anomalous window with
its baseline (both `WindowStats`; the baseline a typical window of the same
length, e.g. `WindowStats.median_of(previous hours)` or
`RetryStormDetector.baseline(...)`). It returns a label, a one-line
explanation and the ratios behind it; `SpikeCause.annotate(finding)` puts them
in a finding's evidence for the alert to carry.

Cost splits exactly into four factors, each the signature of one cause:

    cost = users x requests/user x tokens/request x cost/token

- `genuine_adoption`: users grew (and requests with them) while the cost per
  request stayed flat (within `flat`);
- `retry_storm`: requests per user (or requests, without user ids) grew and the
  retry or error rate surged with them (at least `min_factor` times its baseline,
  rates below `rate_floor` counted as the floor): the same work, failing and retried.
  More requests per user with no retries or errors is not a retry storm;
- `prompt_expansion`: tokens per request grew, with input tokens per request up;
- `model_substitution`: cost per token grew (a pricier model for the same
  work) and the model mix shifted by at least `min_mix_shift` (total variation
  distance of request shares, 0..1).

The label goes to the factor that grew most, among those at least `min_factor`
whose side condition holds; otherwise `unexplained` (with all the ratios in the explanation).

>>> from decimal import Decimal
>>> baseline = WindowStats(cost=Decimal(10), requests=1000, distinct_users=100,
...     input_tokens=1_000_000, output_tokens=200_000, model_mix={"gpt-4o-mini": 1000})
>>> swap = WindowStats(cost=Decimal(160), requests=1000, distinct_users=100,
...     input_tokens=1_000_000, output_tokens=200_000, model_mix={"gpt-4o": 1000})
>>> result = SpikeCauseClassifier().classify(swap, baseline)
>>> result.cause, result.ratios["cost_per_token"], result.ratios["model_mix_shift"]
('model_substitution', 16.0, 1.0)
>>> print(result.explanation)  # doctest: +NORMALIZE_WHITESPACE
cost 16.0x: cost per token 16.0x, tokens per request 1.0x,
model mix shifted 100% (gpt-4o-mini 100% -> gpt-4o 100%)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from detectors.finding import Finding
from detectors.stats import WindowStats

Cause = Literal[
    "model_substitution", "prompt_expansion", "retry_storm", "genuine_adoption", "unexplained"
]


@dataclass(frozen=True)
class SpikeCause:
    cause: Cause
    explanation: str
    ratios: dict[str, float] = field(default_factory=dict)

    def annotate(self, finding: Finding) -> Finding:
        """A copy of `finding` whose evidence carries this cause (`cause`, as alerts read it)."""
        evidence = {
            **finding.evidence,
            "cause": self.cause,
            "cause_explanation": self.explanation,
            "cause_ratios": self.ratios,
        }
        return replace(finding, evidence=evidence)


def mix_shift(window: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    """Total variation distance between two model mixes' shares: 0 same, 1 disjoint."""
    total_w, total_b = sum(window.values()), sum(baseline.values())
    if not total_w or not total_b:
        return 0.0
    models = set(window) | set(baseline)
    return 0.5 * sum(abs(window.get(m, 0) / total_w - baseline.get(m, 0) / total_b) for m in models)


def _top_model(mix: Mapping[str, float]) -> str:
    total = sum(mix.values())
    if not total:
        return "none"
    model = max(mix, key=lambda m: mix[m])
    return f"{model} {mix[model] / total:.0%}"


class SpikeCauseClassifier:
    """Label a spend spike by the factor of cost that grew most."""

    def __init__(
        self,
        min_factor: float = 1.5,
        flat: float = 1.25,
        min_mix_shift: float = 0.2,
        rate_floor: float = 0.01,
    ) -> None:
        self.min_factor = min_factor
        self.flat = flat
        self.min_mix_shift = min_mix_shift
        self.rate_floor = rate_floor

    def classify(self, window: WindowStats, baseline: WindowStats) -> SpikeCause:
        if window.requests <= 0 or baseline.requests <= 0 or baseline.cost <= 0:
            return SpikeCause("unexplained", "no baseline to compare with")
        r = self.ratios(window, baseline)
        users_known = "users" in r
        amplification = r["requests_per_user"] if users_known else r["requests"]
        rates_surged = (
            max(
                window.retry_rate / max(baseline.retry_rate, self.rate_floor),
                window.error_rate / max(baseline.error_rate, self.rate_floor),
            )
            >= self.min_factor
        )

        # (factor, cause, side condition), tried from the largest factor down.
        candidates: list[tuple[float, Cause, bool]] = [
            # A retry storm needs retries or errors to have surged (a retry counts a
            # repeated retry_of): more requests per user alone is not one.
            (amplification, "retry_storm", rates_surged),
            (
                r.get("tokens_per_request", 0.0),
                "prompt_expansion",
                r.get("input_tokens_per_request", 0.0) >= self.min_factor,
            ),
            (
                r.get("cost_per_token", 0.0),
                "model_substitution",
                r["model_mix_shift"] >= self.min_mix_shift,
            ),
            (
                r.get("users", 0.0),
                "genuine_adoption",
                r["requests"] >= self.min_factor and r["cost_per_request"] <= self.flat,
            ),
        ]
        for factor, cause, holds in sorted(candidates, key=lambda c: c[0], reverse=True):
            if factor >= self.min_factor and holds:
                return SpikeCause(cause, self._explain(cause, r, window, baseline), r)
        return SpikeCause("unexplained", self._explain("unexplained", r, window, baseline), r)

    def ratios(self, window: WindowStats, baseline: WindowStats) -> dict[str, float]:
        """Window / baseline ratios (a ratio is left out when its baseline is zero)."""
        r = {
            "cost": float(window.cost / baseline.cost),
            "requests": window.requests / baseline.requests,
            "cost_per_request": float(window.cost / baseline.cost)
            * baseline.requests
            / window.requests,
            "retry_rate": window.retry_rate,
            "baseline_retry_rate": baseline.retry_rate,
            "error_rate": window.error_rate,
            "baseline_error_rate": baseline.error_rate,
            "model_mix_shift": mix_shift(window.model_mix, baseline.model_mix),
        }
        if window.distinct_users and baseline.distinct_users:
            r["users"] = window.distinct_users / baseline.distinct_users
            r["requests_per_user"] = r["requests"] / r["users"]
        tokens_w = window.input_tokens + window.output_tokens
        tokens_b = baseline.input_tokens + baseline.output_tokens
        if tokens_w and tokens_b:
            r["tokens_per_request"] = (tokens_w / window.requests) / (tokens_b / baseline.requests)
            r["cost_per_token"] = r["cost_per_request"] / r["tokens_per_request"]
        if baseline.input_tokens:
            r["input_tokens_per_request"] = (window.input_tokens / window.requests) / (
                baseline.input_tokens / baseline.requests
            )
        if baseline.output_tokens:
            r["output_tokens_per_request"] = (window.output_tokens / window.requests) / (
                baseline.output_tokens / baseline.requests
            )
        return r

    def _explain(
        self, cause: Cause, r: dict[str, float], window: WindowStats, baseline: WindowStats
    ) -> str:
        head = f"cost {r['cost']:.1f}x: "
        if cause == "retry_storm":
            users = f", users {r['users']:.1f}x" if "users" in r else ""
            return head + (
                f"requests {r['requests']:.1f}x{users}, "
                f"retries {baseline.retry_rate:.1%} -> {window.retry_rate:.1%}, "
                f"errors {baseline.error_rate:.1%} -> {window.error_rate:.1%}"
            )
        if cause == "prompt_expansion":
            return head + (
                f"input tokens per request {r['input_tokens_per_request']:.1f}x, "
                f"cost per request {r['cost_per_request']:.1f}x, requests {r['requests']:.1f}x"
            )
        if cause == "model_substitution":
            return head + (
                f"cost per token {r['cost_per_token']:.1f}x, "
                f"tokens per request {r['tokens_per_request']:.1f}x, "
                f"model mix shifted {r['model_mix_shift']:.0%} "
                f"({_top_model(baseline.model_mix)} -> {_top_model(window.model_mix)})"
            )
        if cause == "genuine_adoption":
            return head + (
                f"users {r['users']:.1f}x, requests {r['requests']:.1f}x, "
                f"cost per request {r['cost_per_request']:.2f}x"
            )
        parts = [
            f"{name.replace('_', ' ')} {r[name]:.1f}x"
            for name in ("users", "requests_per_user", "tokens_per_request", "cost_per_token")
            if name in r
        ]
        return head + "no single driver (" + ", ".join(parts or ["no detail"]) + ")"
