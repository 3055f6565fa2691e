"""Console: one line per alert state on a text stream (stdout by default).

The embedded default prints every alert so a developer running `spendstream dev`
sees what would have paged without configuring Slack or PagerDuty.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from schemas.alert import Alert
from streams.alerting.notifier import Clock, SendAttempt, utc_now
from streams.alerting.render import one_line


class ConsoleNotifier:
    def __init__(self, stream: TextIO | None = None, *, clock: Clock = utc_now) -> None:
        self.stream = stream
        self.clock = clock
        self._lock = threading.Lock()  # lines from concurrent channels must not interleave

    def send(self, alert: Alert) -> list[SendAttempt]:
        stream = self.stream or sys.stdout
        line = f"{one_line(alert)} [fingerprint {alert.fingerprint}]"
        with self._lock:
            stream.write(line + "\n")
            stream.flush()
        return [SendAttempt(ok=True, status_code=None, reason="printed", at=self.clock())]
