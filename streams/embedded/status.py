"""What `spendstream dev` shows on its terminal: each alert state as one readable line
(the console channel's words), and a status line with the ledger's own figures.

Read from the ledger through the owner worker's /v1/query, so the figures are the
data dir's (all runs), not this run's counters."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson

from schemas.alert import Alert
from streams.alerting.render import one_line
from streams.errors import SpendstreamError
from streams.ledger.remote import RemoteQueryClient

LEDGER_FIGURES = (
    "SELECT sumIf(cost_usd, toDate(timestamp) = today()), "
    "sumIf(cost_usd, toStartOfMonth(timestamp) = toStartOfMonth(today())), count(), "
    "(SELECT count() FROM dead_letters) FROM usage_ledger"
)
OPEN_INCIDENTS = (
    "SELECT count() FROM (SELECT fingerprint, argMax(state, recorded_at) AS last "
    "FROM alerts GROUP BY fingerprint) WHERE last = 'triggered'"
)
ROWS_SINCE = "SELECT count() FROM usage_ledger WHERE timestamp >= {start:DateTime64(3, 'UTC')}"
NEW_ALERTS = (
    "SELECT * FROM alerts WHERE recorded_at > {since:DateTime64(3, 'UTC')} "
    "ORDER BY recorded_at, fingerprint LIMIT 50"
)


@dataclass(frozen=True)
class LedgerFigures:
    today: Decimal
    month: Decimal
    rows: int
    dead_letters: int
    open_incidents: int


class StackWatcher:
    """Polls the owner worker for the status line's figures and for new alert states."""

    def __init__(self, url: str, token: str | None, since: datetime) -> None:
        self.client = RemoteQueryClient(url, token, timeout=10)
        # Alert states recorded from `since` on (this run's): a restart does not print
        # the data dir's earlier pages again as if they were new; the status line
        # counts the incidents still open, `spendstream alerts` lists them.
        self.since = since

    def rows_since(self, start: datetime, timeout: float = 60.0) -> int:
        """Ledger rows timestamped from `start` on, once the worker has opened ClickHouse."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = self.client.query(ROWS_SINCE, {"start": start})
                return int(result.result_rows[0][0])
            except (SpendstreamError, httpx.HTTPError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise SpendstreamError(f"the worker did not open the ledger: {exc}") from None
                time.sleep(0.5)

    def figures(self) -> LedgerFigures | None:
        try:
            today, month, rows, dead = self.client.query(LEDGER_FIGURES).result_rows[0]
            (incidents,) = self.client.query(OPEN_INCIDENTS).result_rows[0]
        except (SpendstreamError, httpx.HTTPError, OSError, ValueError):
            return None  # not connected yet, or stopping: the line shows dashes
        return LedgerFigures(
            Decimal(today or 0), Decimal(month or 0), int(rows), int(dead), int(incidents)
        )

    def new_alert_lines(self) -> list[str]:
        try:
            result = self.client.query(NEW_ALERTS, {"since": self.since})
        except (SpendstreamError, httpx.HTTPError, OSError, ValueError):
            return []
        lines = []
        for row in result.result_rows:
            alert = alert_of(dict(zip(result.column_names, row, strict=True)))
            self.since = max(self.since, alert.recorded_at)
            lines.append(alert_line(alert))
        return lines

    def close(self) -> None:
        self.client.close()


def alert_of(row: dict[str, Any]) -> Alert:
    evidence = row.get("evidence") or "{}"
    return Alert.model_validate({**row, "evidence": orjson.loads(evidence)})


def alert_line(alert: Alert) -> str:
    """`14:02 ALERT [CRITICAL] run_cost workflow_run:…: … cause: runaway loop.`"""
    return f"{alert.recorded_at:%Y-%m-%d %H:%M} ALERT {one_line(alert)}"


# The span the status line's events/s is measured over.
RATE_WINDOW_SECONDS = 10.0


class SlidingRate:
    """Events per second over the last `window` seconds of a growing count. Per tick
    (one second), a count that grows in steps (the workers' batches) read 0.9, 0.0,
    0.9, 0.0 at a low steady rate.

    >>> rate = SlidingRate(window=10.0)
    >>> [rate.observe(float(t), 5 * (t // 2)) for t in range(4)]
    [0.0, 0.0, 2.5, 1.6666666666666667]
    """

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def observe(self, now: float, count: int) -> float:
        """The rate up to `now` (monotonic seconds), given the count then."""
        samples = self._samples
        if samples and count < samples[-1][1]:
            samples.clear()  # a count that went back (a worker restarted) starts anew
        samples.append((now, count))
        # Keep the newest sample at or before the window's start: the rate spans it all.
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()
        first_at, first = samples[0]
        return (count - first) / (now - first_at) if now > first_at else 0.0


def status_line(rate: float, figures: LedgerFigures | None, healthy: bool) -> str:
    if figures is None:
        ledger = (
            "spend today $- | month to date $- | ledger rows - | dead letters - | open incidents -"
        )
    else:
        ledger = (
            f"spend today ${figures.today:,.2f} | month to date ${figures.month:,.2f} | "
            f"ledger rows {figures.rows:,} | dead letters {figures.dead_letters:,} | "
            f"open incidents {figures.open_incidents}"
        )
    return f"{ledger} | {rate:,.1f} events/s | {'ok' if healthy else 'DEGRADED'}"
