"""`Coverage`: which ledger rows each costed partition's changelogs hold, on Kafka.

On the embedded broker every start is a new log epoch, and its start time
(`SPENDSTREAM_LOG_EPOCH_STARTED_AT`) splits the ledger: the rows ingested before it are
the spend tables' base (streams/spend/ledger_state.py), this epoch's costed events are
counted on top. Kafka keeps its changelogs, so a start is no new epoch; but a
changelog lost or truncated, or a new consumer group with changelogs of its own, would
leave the tables empty while the ledger holds every priced call.

So each costed partition's changelog partition holds a mark, written once, when the
tables began counting that partition: `since|<partition>` in the progress table, in
milliseconds, the ledger's `ingested_at` precision. The partition's tables hold the
costed events of the rows ingested at or after its mark; the ledger's rows of its
tenants ingested before it are its base, read again at every start. A partition whose
mark is missing (a new group, a lost changelog, or one truncated from its start, which
loses the mark first: it is the oldest record) begins again: the values recovered for
its tenants are deleted, a mark of now is written, and its base is every row of its
tenants ingested before now. A costed event of a row ingested before its partition's
mark (a new group reads the costed log from its start) is in the base: it is skipped,
and counted in `/stats` as `costed_in_ledger_base`.

A tenant's partition is the costed topic's: the producer's default partitioner
(aiokafka's murmur2 of the tenant key) over `SPENDSTREAM_TOPIC_PARTITIONS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.partitioner import murmur2

from streams.spend.tables import SEP

__all__ = ["Coverage", "costed_partition", "mark_key", "millis", "since_datetime"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLI = timedelta(milliseconds=1)


def costed_partition(tenant_id: str, partitions: int) -> int:
    """The costed partition of a tenant's messages (and of its table keys)."""
    return (murmur2(tenant_id.encode()) & 0x7FFFFFFF) % partitions


def mark_key(partition: int) -> str:
    return f"since{SEP}{partition}"


def millis(at: datetime | str) -> int:
    """Milliseconds since the epoch, in integers (a float's product may round below)."""
    moment = at if isinstance(at, datetime) else datetime.fromisoformat(at)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MILLI


def since_datetime(ms: int) -> datetime:
    return _EPOCH + ms * _MILLI


@dataclass
class Coverage:
    """partition -> its mark (ms): rows ingested before it are the partition's base."""

    since_ms: dict[int, int] = field(default_factory=dict)

    def counted_rows(
        self, partition: int, rows: Iterable[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], int]:
        """The rows the partition's tables count, and how many the base holds already.
        A row without `ingested_at` (published before costed events carried it) is
        counted."""
        since = self.since_ms.get(partition)
        if since is None:
            rows = list(rows)
            return rows, 0
        kept: list[dict[str, Any]] = []
        skipped = 0
        for row in rows:
            ingested = row.get("ingested_at")
            if ingested is not None and millis(ingested) < since:
                skipped += 1
            else:
                kept.append(row)
        return kept, skipped

    def groups(self) -> dict[int, set[int]]:
        """mark (ms) -> the partitions that hold it: one base query set per mark."""
        grouped: dict[int, set[int]] = {}
        for partition, since in self.since_ms.items():
            grouped.setdefault(since, set()).add(partition)
        return grouped
