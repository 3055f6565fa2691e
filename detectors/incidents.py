"""Open incidents per key, shared by the detectors whose condition can clear.

One incident, one page: while an incident is open for a key, further breaches
(the same hour again, or later hours) extend it instead of opening a new one, so
its findings keep one fingerprint (it carries the incident's first hour). A
breach reports a finding only when the incident opens or its severity rises.

An incident clears at `now` when no breach was recorded in the hour of `now`
and either a whole hour without a breach has passed since the last breach, or
at least `resolve_after` of the next hour has passed and the detector says that
hour, projected to a full hour at its rate so far, no longer breaches. The
projection matters because hourly buckets hold running totals: a fresh hour is
always small, so "below the threshold" alone would resolve a live incident.

>>> from datetime import datetime, timedelta, UTC
>>> from decimal import Decimal
>>> from detectors.finding import Finding
>>> def make(start: int) -> Finding:
...     return Finding("demo", "tenant:acme", hour_start(start), hour_start(start + 1),
...                    "warning", "demo", Decimal(9), Decimal(5))
>>> book = IncidentBook(max_open=10)
>>> h = epoch_hour(datetime(2024, 5, 6, 10, tzinfo=UTC))
>>> book.breach("tenant:acme", h, "warning", make) is not None   # opens: report it
True
>>> book.breach("tenant:acme", h, "warning", make) is None       # same incident: silent
True
>>> def quiet(hour: int, elapsed_fraction: float) -> bool:
...     return False
>>> book.is_cleared("tenant:acme", hour_start(h + 1) + timedelta(minutes=5),
...                 timedelta(minutes=15), quiet)
False
>>> book.is_cleared("tenant:acme", hour_start(h + 1) + timedelta(minutes=20),
...                 timedelta(minutes=15), quiet)
True
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from detectors.finding import Finding, Severity
from detectors.history import HOUR, as_utc, epoch_hour, hour_start

SEVERITY_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "critical": 2}

# (hour, fraction of that hour elapsed) -> does the hour, projected to a full
# hour at its rate so far, still breach?
StillBreaching = Callable[[int, float], bool]


@dataclass
class Incident:
    start_hour: int
    last_breach_hour: int
    severity: Severity
    finding: Finding  # the last finding reported for this incident


class IncidentBook:
    """The open incident of each key, at most `max_open` (oldest evicted)."""

    def __init__(self, max_open: int) -> None:
        self.max_open = max_open
        self._open: OrderedDict[str, Incident] = OrderedDict()

    def get(self, key: str) -> Incident | None:
        return self._open.get(key)

    def keys(self) -> list[str]:
        return list(self._open)

    def pop(self, key: str) -> Incident | None:
        return self._open.pop(key, None)

    def breach(
        self, key: str, hour: int, severity: Severity, make: Callable[[int], Finding]
    ) -> Finding | None:
        """Record a breach of `key` in `hour`; `make(start_hour)` builds the finding.

        Returns the finding when the incident opens or escalates, else None.
        """
        incident = self._open.get(key)
        if incident is None:
            finding = make(hour)
            self._open[key] = Incident(hour, hour, severity, finding)
            if len(self._open) > self.max_open:
                self._open.popitem(last=False)
            return finding
        incident.last_breach_hour = max(incident.last_breach_hour, hour)
        if SEVERITY_RANK[severity] <= SEVERITY_RANK[incident.severity]:
            return None
        finding = make(incident.start_hour)
        incident.severity = severity
        incident.finding = finding
        return finding

    def is_cleared(
        self, key: str, now: datetime, resolve_after: timedelta, still_breaching: StillBreaching
    ) -> bool:
        """Whether `key` has no open incident, or its condition has cleared at `now`."""
        incident = self._open.get(key)
        if incident is None:
            return True
        now_hour = epoch_hour(now)
        if now_hour <= incident.last_breach_hour:
            return False
        if now_hour > incident.last_breach_hour + 1:
            return True
        elapsed = as_utc(now) - hour_start(now_hour)
        if elapsed < resolve_after or elapsed <= timedelta(0):
            return False  # too little of the hour to project from
        return not still_breaching(now_hour, elapsed / HOUR)

    def close_cleared(
        self,
        now: datetime,
        resolve_after: timedelta,
        still_breaching: Callable[[str, int, float], bool],
    ) -> list[Finding]:
        """Close every incident cleared at `now`; return the last finding of each."""
        closed = []
        for key in self.keys():
            if self.is_cleared(key, now, resolve_after, partial(still_breaching, key)):
                incident = self._open.pop(key)
                closed.append(incident.finding)
        return closed
