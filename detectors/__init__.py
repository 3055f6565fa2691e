"""Pure detector classes: no Kafka, no network, no clock reads. See `Finding`."""

from typing import TYPE_CHECKING, Any

from detectors.cardinality import CardinalityOverflowDetector
from detectors.contract import ContractDetector, TenantBudget
from detectors.finding import Finding, Severity
from detectors.retry_storm import RetryStormDetector
from detectors.rolling_median import RollingMedianDetector
from detectors.run_cost import RunCostDetector
from detectors.spike_cause import SpikeCause, SpikeCauseClassifier
from detectors.stats import WindowStats

if TYPE_CHECKING:
    from detectors.online_anomaly import OnlineAnomalyDetector, RequestSample


def __getattr__(name: str) -> Any:
    # River (and scipy under it) take seconds to import: only the online detector
    # needs them, so `import detectors` stays cheap for everything else.
    if name in ("OnlineAnomalyDetector", "RequestSample"):
        from detectors import online_anomaly

        return getattr(online_anomaly, name)
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")


__all__ = [
    "CardinalityOverflowDetector",
    "ContractDetector",
    "Finding",
    "OnlineAnomalyDetector",
    "RequestSample",
    "RetryStormDetector",
    "RollingMedianDetector",
    "RunCostDetector",
    "Severity",
    "SpikeCause",
    "SpikeCauseClassifier",
    "TenantBudget",
    "WindowStats",
]
