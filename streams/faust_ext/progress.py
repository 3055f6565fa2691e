"""What the Faust app knows of its own progress, read where Faust keeps it.

`TableManager.recovery` and the monitor's offset maps are not in Faust's typed
interfaces (`TableManagerT`, `SensorT`): checked against faust-streaming 0.15.3;
tests/faust_ext fails if one moves.
"""

from __future__ import annotations

from typing import Any, cast

import faust


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
