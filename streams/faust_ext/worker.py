"""`StoppingWorker`: a Faust worker that is gone within seconds of SIGTERM or SIGINT.

Faust stops its services one by one, and some wait on the broker: with the broker
gone (the embedded one dies with `dev`), stopping the Kafka consumer and producer
can wait for ever, and the worker holds the embedded data dir all that time. The
ingest service bounds its own final write (`STOP_WRITE_SECONDS`); past
`STOP_DEADLINE_SECONDS` after the first stop signal the process exits anyway. That is
no worse than SIGKILL, which the pipeline is built to survive: offsets are committed
only after the ledger write, and the kernel releases the data dir's lock.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import faust

log = logging.getLogger(__name__)

STOP_DEADLINE_SECONDS = 15.0
FORCED_EXIT_CODE = 3


class StoppingWorker(faust.Worker):
    _deadline: threading.Timer | None = None

    def _schedule_shutdown(self, signal: Any) -> None:
        if self._deadline is None:
            self._deadline = threading.Timer(STOP_DEADLINE_SECONDS, _exit_now)
            self._deadline.daemon = True
            self._deadline.start()
        super()._schedule_shutdown(signal)


def _exit_now() -> None:
    log.error(
        "worker still stopping %.0fs after the stop signal: exiting now", STOP_DEADLINE_SECONDS
    )
    sys.stderr.flush()
    os._exit(FORCED_EXIT_CODE)
