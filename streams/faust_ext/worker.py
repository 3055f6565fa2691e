"""`StoppingWorker`: a Faust worker that drains, then is gone within seconds of SIGTERM
or SIGINT.

Drain. On the first stop signal the app's `drain` is awaited before Faust stops a
service (the runtime's drain ledgers what the broker holds, bounded by its own wait:
streams/runtime/drain.py); the deadline below counts from its end at the latest.

Faust stops its services one by one, and some wait on the broker: with the broker
gone (the embedded one dies with `dev`), stopping the Kafka consumer and producer
can wait for ever, and the worker holds the embedded data dir all that time. The
ingest service bounds its own final write (`STOP_WRITE_SECONDS`); past
`STOP_DEADLINE_SECONDS` after the first stop signal the process exits anyway. That is
no worse than SIGKILL, which the pipeline is built to survive: offsets are committed
only after the ledger write, and the kernel releases the data dir's lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import Any

import faust

log = logging.getLogger(__name__)

STOP_DEADLINE_SECONDS = 15.0
FORCED_EXIT_CODE = 3
LOOP_CLOSE_SECONDS = 0.1


class StoppingWorker(faust.Worker):
    _deadline: threading.Timer | None = None

    def __init__(self, *args: Any, drain_seconds: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drain_seconds = drain_seconds

    def _schedule_shutdown(self, signal: Any) -> None:
        if self._deadline is None:
            # The drain bounds its own wait; this covers a loop that never gets there.
            self._set_deadline(STOP_DEADLINE_SECONDS + self.drain_seconds)
        super()._schedule_shutdown(signal)

    def _set_deadline(self, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = threading.Timer(seconds, _exit_now, (seconds,))
        self._deadline.daemon = True
        self._deadline.start()

    # PRIVATE (mode-streaming 0.7.1): `Worker._schedule_shutdown` runs this as the stop's future on
    # the first signal; a second signal finds it running and does nothing.
    async def _stop_on_signal(self, signal: Any) -> None:
        drain = getattr(self.app, "drain", None)
        if drain is not None:
            await drain()
            self._set_deadline(STOP_DEADLINE_SECONDS)  # the services' stop, from now
        await super()._stop_on_signal(signal)

    # PRIVATE (mode-streaming 0.7.1): `Worker._shutdown_loop` runs this on the loop
    # before closing it, so that callbacks the services' stop scheduled (transports
    # closing) run; mode sleeps 1 s, a second of every stop (`dev`, `replay`) spent
    # idle once every service has stopped. A few loop turns are what those callbacks need.
    async def _sentinel_task(self) -> None:
        await asyncio.sleep(LOOP_CLOSE_SECONDS)


def _exit_now(seconds: float) -> None:
    log.error("worker still stopping %.0fs after the stop began: exiting now", seconds)
    sys.stderr.flush()
    os._exit(FORCED_EXIT_CODE)
