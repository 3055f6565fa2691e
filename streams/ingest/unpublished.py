"""Ledger rows whose costed events may never have been published: looked up when the
consumer is assigned a usage partition, published again when their messages come back.

A batch's costed events go out only after its ledger write (streams/ingest/pipeline.py):
the spend tables count what the ledger holds, not rows it then refuses. A worker that
dies between the two (SIGKILL, a crash) leaves ledger rows with no costed event and
their offsets uncommitted. The partition's next owner reads those messages again, and
the de-duplication filter, rebuilt from the ledger, knows their ids: dropped as
duplicates, they would never reach the spend tables, whose totals would stay below the
ledger's. So, at assignment, the consumer reads the ledger rows of each assigned
partition at or after its committed offset; when a message comes again, each of its
events ledgered at this very position is published again from its ledger row (the
exact cost, the event's index from the message). An event whose costed row did go out
before the stop has the same source position both times, and the spend tables count a
position once. A duplicate from another position (a producer's retry) is not here and
is dropped as before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from streams.cost.rows import COSTED_FIELDS
from streams.ledger.remote import DirectReader, Reader

# (source topic, partition, offset, request_id) -> the ledger row's costed fields
Unpublished = dict[tuple[str, int, int, str], dict[str, Any]]

_SQL = f"""
SELECT {", ".join(COSTED_FIELDS)}
FROM usage_ledger
WHERE source_topic = %(topic)s
  AND source_partition = %(partition)s
  AND source_offset >= %(start)s
  AND source_offset < %(end)s
  AND ingested_at >= fromUnixTimestamp64Milli(%(since_ms)s)
"""


def load_unpublished(
    client: Any, topic: str, windows: dict[int, tuple[int, int]], since: datetime
) -> Unpublished:
    """The ledger rows of `topic`'s partitions within their windows (partition ->
    [committed offset, the most a worker can have written past it)), ingested since
    `since` (blocking: run it on the ClickHouse thread). `client`: clickhouse-connect's,
    or a peer's remote client."""
    reader: Reader = client if getattr(client, "remote", False) else DirectReader(client)
    found: Unpublished = {}
    for partition, (start, end) in windows.items():
        parameters = {
            "topic": topic,
            "partition": partition,
            "start": start,
            "end": end,
            "since_ms": int(since.timestamp() * 1000),
        }
        result = reader.query(_SQL, parameters)
        for values in result.result_rows:
            row = dict(zip(COSTED_FIELDS, values, strict=True))
            found[(topic, partition, int(row["source_offset"]), str(row["request_id"]))] = row
    return found
