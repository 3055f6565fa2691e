"""`CardinalityOverflowDetector`: a tenant's dimension overflowed its cap of distinct values.

The in-stream spend tables track at most `max_values_per_dim` distinct workflows
(teams, models) per tenant; values past the cap are counted under the
`OVERFLOW` bucket, so totals stay exact but those values lose their own line.
That is a cardinality attack or a client minting ids (a run id sent as the
workflow id): someone should know. Feed it each event-time hour in which a
tenant's dimension had values counted under the overflow bucket:

- `update(tenant_id, dim, hour, cap, overflowed) -> Finding | None` reports a
  finding when the (tenant, dimension) incident opens: the first overflow;
  later overflows extend the open incident and report nothing (`overflowed`,
  the requests counted under the bucket in that hour so far, is evidence);
- `is_resolved(key, now)` / `close_cleared(now)`: the incident clears once its
  last overflowing hour is older than `retention_hours`, the spend tables'
  hourly retention: by then every overflow bucket of that incident has expired
  and the tenant's distinct values are counted afresh from what is retained.

State: one entry per open (tenant, dimension), at most `max_keys` (the oldest
forgotten). The finding's key is `tenant:<id>/<dim>:__overflow__`, the spend
tables' own name for the bucket, and its fingerprint carries the first
overflowing hour, so one incident pages once.

>>> from datetime import datetime, timedelta, UTC
>>> detector = CardinalityOverflowDetector(retention_hours=193)
>>> t0 = datetime(2024, 5, 6, 10, 20, tzinfo=UTC)
>>> finding = detector.update("acme", "workflow", t0, cap=1000, overflowed=7)
>>> finding.key, finding.severity, finding.threshold
('tenant:acme/workflow:__overflow__', 'warning', Decimal('1000'))
>>> detector.update("acme", "workflow", t0 + timedelta(hours=2), 1000, 40) is None
True
>>> detector.is_resolved(finding.key, t0 + timedelta(days=8))
False
>>> [f.fingerprint for f in detector.close_cleared(t0 + timedelta(days=9))] == [
...     finding.fingerprint]
True
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from detectors.finding import Finding, Severity
from detectors.history import epoch_hour, hour_start

OVERFLOW = "__overflow__"
# The name of each capped dimension in events (and ledger columns), for messages.
FIELD_NAMES = {"workflow": "workflow_id", "team": "team_id", "model": "model"}


def overflow_key(tenant_id: str, dim: str) -> str:
    return f"tenant:{tenant_id}/{dim}:{OVERFLOW}"


@dataclass
class _Incident:
    first_hour: int
    last_hour: int
    finding: Finding


class CardinalityOverflowDetector:
    """Per (tenant, dimension): the first value past the cap opens an incident."""

    name = "cardinality_overflow"

    def __init__(
        self,
        severity: Severity = "warning",
        max_keys: int = 10_000,
        retention_hours: int = 8 * 24 + 1,
    ) -> None:
        self.severity: Severity = severity
        self.max_keys = max_keys
        self.retention_hours = retention_hours
        self._open: OrderedDict[str, _Incident] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def update(
        self, tenant_id: str, dim: str, hour: datetime, cap: int, overflowed: int
    ) -> Finding | None:
        """Values of `dim` were counted under the overflow bucket in `hour`."""
        key = overflow_key(tenant_id, dim)
        h = epoch_hour(hour)
        incident = self._open.get(key)
        if incident is not None:
            incident.last_hour = max(incident.last_hour, h)
            self._open.move_to_end(key)
            return None
        field_name = FIELD_NAMES.get(dim, dim)
        finding = Finding(
            detector=self.name,
            key=key,
            window_start=hour_start(h),
            window_end=hour_start(h + 1),
            severity=self.severity,
            summary=(
                f"tenant {tenant_id} has more than {cap:,} distinct {field_name} values, "
                f"the cap of the in-stream spend tables: further new {field_name} values "
                f"are counted under the {OVERFLOW!r} bucket"
            ),
            value=Decimal(cap + 1),
            threshold=Decimal(cap),
            evidence={
                "tenant_id": tenant_id,
                "dimension": dim,
                "field": field_name,
                "max_values_per_dim": cap,
                "overflow_bucket": OVERFLOW,
                "overflowed_requests_in_hour": overflowed,
                "resolves_after_hours": self.retention_hours,
                "unit": "count",
            },
        )
        self._open[key] = _Incident(h, h, finding)
        if len(self._open) > self.max_keys:
            self._open.popitem(last=False)
        return finding

    def is_resolved(self, key: str, now: datetime) -> bool:
        """No open incident for `key`, or its last overflowing hour is past retention."""
        incident = self._open.get(key)
        return incident is None or epoch_hour(now) > incident.last_hour + self.retention_hours

    def close_cleared(self, now: datetime) -> list[Finding]:
        """Close every incident cleared at `now`; return the finding each opened with."""
        cleared = [key for key in self._open if self.is_resolved(key, now)]
        return [self._open.pop(key).finding for key in cleared]
