"""`BatchedTable`: a Faust table whose changelog records are sent once per list of
costed messages, not once per assignment.

Assigning to a Faust table queues one changelog record in Faust's producer buffer,
which sends them one at a time. The spend agent writes a run, hour and day key per
group of rows: under real-time load (each run's calls arrive seconds apart, so in
different batches) that is about one record per event, more than the buffer drains
("producer buffer full"), and the agent falls behind with every alert it holds.

This mapping writes to the table's store directly and keeps the last value of each
key it changed; `flush` sends those records to the changelog partition of the event
being processed, as Faust would, as whole record batches of Faust's producer (not one
send per record), each to the partition it was written for (`writing_to`), and waits
for the broker's acknowledgement. The spend agent flushes once per list, before the
list's offsets are committed, so an offset is never committed before its table writes
are durable. Keys and values are encoded with Faust's JSON
codec, as the table's own recovery decodes them.

INTERNAL (faust-streaming 0.15.3): writing to `Collection.data` (the store) skips the
changelog that `Table.__setitem__` would send, and `Producer._ensure_producer()` is the
aiokafka producer whose batches `flush` fills; tests/faust_ext fails if the store stops
being a plain mapping that Faust reads back or the producer moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from typing import Any, cast

from faust.serializers import codecs
from faust.types import AppT, TableT

# A changelog record whose value is None is a tombstone: recovery deletes the key.
DELETED = None


class BatchedTable(MutableMapping[str, Any]):
    def __init__(self, table: TableT) -> None:
        self.table = table
        # changelog partition -> key -> its last value written for that partition
        self.pending: dict[int, dict[str, Any]] = {}
        # Where writes go: the partition of the event being processed, as Faust's own
        # tables take it from the current event; the writer sets it (`writing_to`).
        self.partition = 0

    def writing_to(self, partition: int) -> BatchedTable:
        self.partition = partition
        return self

    @property
    def data(self) -> Any:
        # The store, read at each use: Faust replaces it when the table is reset.
        return self.table.data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.pending.setdefault(self.partition, {})[key] = value

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.pending.setdefault(self.partition, {})[key] = DELETED

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    async def flush(self, app: AppT) -> None:
        """Send each changed key's record to the changelog partition it was written
        for, every partition at once; return once the broker has them all."""
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        topic = self.table.changelog_topic.get_topic_name()

        async def send(partition: int, records: dict[str, Any]) -> None:
            try:
                await asyncio.gather(*await _send_in_batches(app, topic, partition, records))
            except BaseException:
                # Kept for the next flush (a key written since keeps its newer value):
                # the store already holds these values, and recovery must find them.
                self.pending[partition] = {**records, **self.pending.get(partition, {})}
                raise

        # Every partition settled before an error is raised: one delivered is not sent
        # again, one failed keeps its records.
        results = await asyncio.gather(
            *(send(partition, records) for partition, records in pending.items()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


async def _send_in_batches(
    app: AppT, topic: str, partition: int, records: dict[str, Any]
) -> list[asyncio.Future[Any]]:
    """The records as few record batches of one partition, through the producer Faust
    started: a batch costs the producer about 1 µs a record where a send of each costs
    about 8 (aiokafka 0.14, the embedded broker; a list's run records number about one
    per workflow run). Returns the batches' delivery futures."""
    # INTERNAL (faust-streaming 0.15.3): `Producer._ensure_producer()`, the started
    # aiokafka producer behind `app.producer.send`, with its batch size and linger.
    producer = cast(Any, app.producer)._ensure_producer()
    sent: list[asyncio.Future[Any]] = []
    batch = producer.create_batch()
    for key, value in records.items():
        key_bytes = codecs.dumps("json", key)
        value_bytes = None if value is DELETED else codecs.dumps("json", value)
        if batch.append(key=key_bytes, value=value_bytes, timestamp=None) is not None:
            continue
        if batch.record_count():
            sent.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            if batch.append(key=key_bytes, value=value_bytes, timestamp=None) is not None:
                continue
        # Larger than a batch: sent alone, so the producer says what is wrong with it.
        sent.append(await producer.send(topic, value_bytes, key=key_bytes, partition=partition))
    if batch.record_count():
        sent.append(await producer.send_batch(batch, topic, partition=partition))
    return sent
