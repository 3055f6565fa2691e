"""What the Faust app knows of its own progress, read where Faust keeps it (and
forgotten when the log it refers to is gone).

`TableManager.recovery`, the monitor's offset maps and the consumer's acknowledgement
bookkeeping are not in Faust's typed interfaces (`TableManagerT`, `SensorT`,
`ConsumerT`): checked against faust-streaming 0.15.3; tests/faust_ext fails if one
moves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import faust
from faust.types import TP


def tables_ready(app: faust.App) -> bool:
    """Recovered from their changelogs, and no rebalance under way."""
    # INTERNAL (faust-streaming 0.15.3): `TableManager.recovery.completed`, an
    # asyncio.Event set when every table has read its changelog.
    recovered = cast(Any, app.tables).recovery.completed.is_set()
    return bool(recovered and not app.in_recovery and not app.rebalancing)


def offset_lag(app: faust.App) -> dict[tuple[str, int], int]:
    """Messages between the log end and the committed offset, per (topic, partition)
    that Faust's consumer reads (the spend agent's costed topic and the changelogs)."""
    # INTERNAL (faust-streaming 0.15.3): `Monitor.tp_end_offsets` and
    # `Monitor.tp_committed_offsets`, filled by the consumer as it fetches and commits.
    monitor = app.monitor
    committed = monitor.tp_committed_offsets or {}
    return {
        (tp.topic, tp.partition): max(0, end - committed.get(tp, 0))
        for tp, end in (monitor.tp_end_offsets or {}).items()
    }


def forget_old_log(app: faust.App, partitions: Iterable[TP]) -> None:
    """Faust's consumer forgets what it knew of the offsets of `partitions` before a
    new log replaced them behind the same address (an in-memory broker restarted), or
    it would never acknowledge nor commit the new log's offsets below the old committed
    one. The caller then seeks each partition to the new log's start."""
    consumer = cast(Any, app.consumer)
    for tp in partitions:
        # INTERNAL (faust-streaming 0.15.3): `Consumer._committed_offset` (ack() ignores
        # offsets below it), `_acked` and `_acked_index` (acknowledged, not yet
        # committed) and `_gap` (offsets skipped in delivery, counted as acknowledged),
        # per partition; every one a mapping that a partition may be missing from.
        consumer._committed_offset.pop(tp, None)
        consumer._acked.pop(tp, None)
        consumer._acked_index.pop(tp, None)
        consumer._gap.pop(tp, None)
