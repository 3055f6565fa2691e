"""Pure detector classes: no Kafka, no network, no clock reads. See `Finding`."""

from detectors.finding import Finding, Severity

__all__ = ["Finding", "Severity"]
