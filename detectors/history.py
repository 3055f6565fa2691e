"""Event-time hours and a bounded per-key store of hourly values.

Hours are integers: whole hours since the Unix epoch, UTC. Detectors take the
event time (a `datetime`, naive meaning UTC) and bucket it here, so a replayed or
backfilled event lands in the hour it happened, not in "now".

`HourlyHistory` keeps, for each key, the values of its most recent
`retention_hours` hours (counted back from the newest hour written for that key)
and at most `max_keys` keys, evicting the key written least recently.

>>> from datetime import datetime, UTC
>>> h = epoch_hour(datetime(2024, 5, 6, 10, 42, tzinfo=UTC))
>>> hour_start(h).isoformat()
'2024-05-06T10:00:00+00:00'
>>> history: HourlyHistory[int] = HourlyHistory(retention_hours=3, max_keys=2)
>>> for offset in range(5):
...     _ = history.put("tenant:acme", h + offset, offset)
>>> [value for _, value in history.between("tenant:acme", h, h + 10)]
[2, 3, 4]
>>> history.put("tenant:beta", h, 0), history.put("tenant:gamma", h, 0)
(None, 'tenant:acme')
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Generic, TypeVar

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)

V = TypeVar("V")


def as_utc(ts: datetime) -> datetime:
    """`ts` as an aware UTC datetime; a naive datetime is taken to be UTC (as in events)."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def epoch_hour(ts: datetime) -> int:
    """The hour containing `ts`, as whole hours since the Unix epoch (UTC)."""
    # Integer timedelta division is exact; float timestamps would not be for
    # instants a microsecond before an hour boundary.
    return (as_utc(ts) - EPOCH) // HOUR


def floor_of(floors: Mapping[str, Decimal], key: str, default: Decimal) -> Decimal:
    """The spend floor of `key`: `floors` names keys by their first '/'-separated part,
    so "tenant:acme" covers "tenant:acme/workflow:summarize" (a tenant's own floor)."""
    return floors.get(key.split("/", 1)[0], default)


def hour_start(hour: int) -> datetime:
    """The first instant of an epoch hour, as an aware UTC datetime."""
    return EPOCH + hour * HOUR


@dataclass
class _Series(Generic[V]):
    newest: int
    values: dict[int, V] = field(default_factory=dict)


class HourlyHistory(Generic[V]):
    """Values per key and epoch hour, bounded in hours per key and in keys."""

    def __init__(self, retention_hours: int, max_keys: int) -> None:
        if retention_hours < 1 or max_keys < 1:
            raise ValueError("retention_hours and max_keys must be at least 1")
        self.retention_hours = retention_hours
        self.max_keys = max_keys
        self._series: OrderedDict[str, _Series[V]] = OrderedDict()

    def put(self, key: str, hour: int, value: V) -> str | None:
        """Set `key`'s value at `hour` (replacing any earlier value for that hour).

        A value older than the key's retention is ignored. Returns the key evicted
        to stay within `max_keys`, so callers can drop their own state for it.
        """
        series = self._series.get(key)
        evicted = None
        if series is None:
            series = _Series(newest=hour)
            self._series[key] = series
            if len(self._series) > self.max_keys:
                evicted, _ = self._series.popitem(last=False)
        else:
            self._series.move_to_end(key)
        if hour > series.newest:
            series.newest = hour
            oldest_kept = hour - self.retention_hours + 1
            for old in [h for h in series.values if h < oldest_kept]:
                del series.values[old]
        if hour > series.newest - self.retention_hours:
            series.values[hour] = value
        return evicted

    def get(self, key: str, hour: int) -> V | None:
        series = self._series.get(key)
        return None if series is None else series.values.get(hour)

    def between(self, key: str, start: int, end: int) -> list[tuple[int, V]]:
        """The (hour, value) pairs of `key` with start <= hour < end, oldest first."""
        series = self._series.get(key)
        if series is None:
            return []
        pairs = [(h, v) for h, v in series.values.items() if start <= h < end]
        return sorted(pairs, key=lambda pair: pair[0])

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._series))

    def __contains__(self, key: object) -> bool:
        return key in self._series

    def __len__(self) -> int:
        return len(self._series)
