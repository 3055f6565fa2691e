"""`Finding`: what a detector reports when a condition holds for a key and window.

Detectors return findings; the alerting edge (`streams/alerting/`) turns them into
`schemas.alert.Alert` rows, pages, and resolves. A finding's fingerprint (detector,
key, window) is the incident identity, so the same condition seen again in the
same window is the same incident, not a new page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Finding:
    detector: str  # e.g. "rolling_median"
    key: str  # e.g. "tenant:acme" or "workflow:summarize"
    window_start: datetime
    window_end: datetime
    severity: Severity
    summary: str  # one line a human reads first
    value: Decimal  # the observed figure (USD, or a count for non-spend detectors)
    threshold: Decimal  # the figure it was compared with
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return f"{self.detector}|{self.key}|{self.window_start.isoformat()}"
