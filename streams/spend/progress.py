"""`CostedProgress`: how far the spend tables have counted each costed partition, kept
in a table of its own, and what to read again when Faust's consumer skips.

Faust's committed offset is not a safe record of what the tables hold. Measured in the
crash case (tests/reliability/test_crash.py, worker logs at INFO): after table
recovery Faust resumes the stream partitions before it seeks them to their committed
offsets, so the first list holds records from both positions; in about one run of
four, one partition then stopped being delivered (offsets 34 to 41 of 42 never reached
the agent; Faust had committed 34) and the in-stream totals stayed below the ledger.
Faust's gap handling can also commit past offsets it never delivered: it counts the
offsets missing from a jump in delivered offsets as acknowledged.

So the agent writes, with the table values of each list and to the same changelog
partition, the next costed offset it expects per partition, and:
- takes an event only if it is that offset (an earlier one was counted already; the
  tables' source-position marks would skip its rows in any case);
- after a jump, or when a partition's log end stays past the expected offset with no
  progress, asks the consumer to read again from the expected offset.

A partition with no record yet takes what Faust delivers first.

A new costed log behind the same address (the embedded in-memory broker restarted under
a running worker: another cluster id, offsets from 0 again) makes every expected offset
one of the old log: `restart` sets each to the new log's first offset.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class Positioned(Protocol):
    @property
    def message(self) -> Any: ...  # .partition and .offset, as a Faust event's message


@dataclass
class Admitted:
    """One list's events in order: those to count, and partitions to read again."""

    events: list[Any] = field(default_factory=list)
    rewind: dict[int, int] = field(default_factory=dict)  # partition -> offset to read from


class CostedProgress:
    def __init__(self, table: MutableMapping[str, Any]) -> None:
        # key: costed partition (str, as JSON keys are); value: next offset to count
        self.table = table

    def expected(self, partition: int) -> int | None:
        value = self.table.get(str(partition))
        return None if value is None else int(value)

    def admit(self, events: Sequence[Positioned]) -> Admitted:
        """The events that continue each partition without a hole. An event before the
        expected offset is dropped (counted already). One past it is held back (not
        counted); if nothing in the list filled the hole up to it, the partition is to
        be read again from the expected offset."""
        admitted = Admitted()
        expected: dict[int, int | None] = {}
        beyond: dict[int, int] = {}  # partition -> highest offset held back
        for event in events:
            partition, offset = event.message.partition, event.message.offset
            if partition not in expected:
                expected[partition] = self.expected(partition)
            want = expected[partition]
            if want is None or offset == want:
                admitted.events.append(event)
                expected[partition] = offset + 1
            elif offset > want:
                beyond[partition] = max(offset, beyond.get(partition, offset))
        for partition, highest in beyond.items():
            want = expected[partition]
            if want is not None and highest >= want:
                admitted.rewind[partition] = want
        return admitted

    def restart(self, starts: dict[int, int]) -> None:
        """partition -> the first offset of a new log: expected next, whatever the old
        log's record said; the caller writes each to its changelog partition."""
        for partition, offset in starts.items():
            self.table[str(partition)] = offset

    @staticmethod
    def reached(events: Sequence[Positioned]) -> dict[int, int]:
        """partition -> the next offset to expect once `events` (admitted) are counted;
        the caller writes each to the table and its changelog partition."""
        return {event.message.partition: event.message.offset + 1 for event in events}

    def stalled(self, ends: dict[int, int], previous: dict[int, int | None]) -> dict[int, int]:
        """Partitions whose log end is past the expected offset while the expected
        offset has not moved since `previous` (the last check): partition -> offset."""
        stuck = {}
        for partition, end in ends.items():
            want = self.expected(partition)
            if want is not None and end > want and previous.get(partition) == want:
                stuck[partition] = want
        return stuck
