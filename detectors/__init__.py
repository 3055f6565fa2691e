"""Pure detector classes: no Kafka, no network, no clock reads. See `Finding`."""

from detectors.contract import ContractDetector, TenantBudget
from detectors.finding import Finding, Severity
from detectors.online_anomaly import OnlineAnomalyDetector, RequestSample
from detectors.retry_storm import RetryStormDetector
from detectors.rolling_median import RollingMedianDetector
from detectors.run_cost import RunCostDetector
from detectors.spike_cause import SpikeCause, SpikeCauseClassifier
from detectors.stats import WindowStats

__all__ = [
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
