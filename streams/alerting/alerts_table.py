"""Writes alerts and delivery attempts to ClickHouse (`alerts`, `alert_deliveries`).

`add_alert` / `add_delivery` only append to a buffer, so the delivery path never
waits on ClickHouse; `flush()` inserts the buffer (blocking: the worker calls it
every second on its ClickHouse thread). A failed insert keeps the rows for the
next flush, so a ClickHouse outage delays the rows rather than losing them, up to
`max_buffer` rows per table; beyond that the oldest rows are dropped and counted in
`dropped` (logged), because an unbounded buffer would turn a long outage into
an out-of-memory crash of the worker.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from schemas.alert import ALERT_COLUMNS, DELIVERY_COLUMNS, Alert, AlertDelivery, evidence_json
from streams.ledger.remote import Reader

log = logging.getLogger(__name__)

ALERTS_TABLE = "alerts"
DELIVERIES_TABLE = "alert_deliveries"


def read_alerts(reader: Reader, since: datetime) -> list[Alert]:
    """Every alert state recorded since `since`, oldest first (blocking): what a worker
    restores its open incidents and cooldowns from at start."""
    result = reader.query(
        f"SELECT {', '.join(ALERT_COLUMNS)} FROM {ALERTS_TABLE} FINAL "
        "WHERE recorded_at >= fromUnixTimestamp64Milli(%(since_ms)s) ORDER BY recorded_at",
        {"since_ms": int(since.timestamp() * 1000)},
    )
    alerts = []
    for row in result.result_rows:
        values = {
            # ClickHouse's DateTime64(3, 'UTC') comes back naive from chdb.
            column: value.replace(tzinfo=UTC)
            if isinstance(value, datetime) and value.tzinfo is None
            else value
            for column, value in zip(ALERT_COLUMNS, row, strict=True)
        }
        values["evidence"] = orjson.loads(str(values["evidence"] or "{}"))
        alerts.append(Alert.model_validate(values))
    return alerts


def alert_row(alert: Alert) -> list[Any]:
    values = alert.model_dump()
    values["evidence"] = evidence_json(alert.evidence)
    return [values[column] for column in ALERT_COLUMNS]


def delivery_row(delivery: AlertDelivery) -> list[Any]:
    values = delivery.model_dump()
    return [values[column] for column in DELIVERY_COLUMNS]


class AlertsTableWriter:
    """Buffered writer; a `DeliveryRecorder` for `AlertDeliveryQueue`."""

    def __init__(self, client: Client, *, max_buffer: int = 10_000) -> None:
        self.client = client
        self.max_buffer = max_buffer
        self.dropped = 0
        self._alerts: deque[list[Any]] = deque()
        self._deliveries: deque[list[Any]] = deque()
        self._buffer_lock = threading.Lock()
        # One insert at a time: the chdb client is not safe across threads.
        self._client_lock = threading.Lock()

    def add_alert(self, alert: Alert) -> None:
        self._add(self._alerts, alert_row(alert))

    def add_delivery(self, delivery: AlertDelivery) -> None:
        self._add(self._deliveries, delivery_row(delivery))

    def _add(self, buffer: deque[list[Any]], row: list[Any]) -> None:
        with self._buffer_lock:
            buffer.append(row)
            if len(buffer) > self.max_buffer:
                buffer.popleft()
                self.dropped += 1
                log.error(
                    "alerts table buffer full: dropped the oldest row (%d so far)", self.dropped
                )

    @property
    def pending(self) -> int:
        with self._buffer_lock:
            return len(self._alerts) + len(self._deliveries)

    def flush(self) -> int:
        """Insert what is buffered; return the number of rows written. Blocking."""
        written = 0
        with self._client_lock:
            for table, buffer, columns in (
                (ALERTS_TABLE, self._alerts, ALERT_COLUMNS),
                (DELIVERIES_TABLE, self._deliveries, DELIVERY_COLUMNS),
            ):
                with self._buffer_lock:
                    rows = list(buffer)
                    buffer.clear()
                if not rows:
                    continue
                try:
                    self.client.insert(table, rows, column_names=columns)
                except Exception:
                    log.exception("insert into %s failed; %d rows kept for retry", table, len(rows))
                    with self._buffer_lock:
                        buffer.extendleft(reversed(rows))
                        while len(buffer) > self.max_buffer:
                            buffer.popleft()
                            self.dropped += 1
                    continue
                written += len(rows)
        return written
