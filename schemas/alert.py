"""Alerts and their delivery attempts: the rows of `alerts` and `alert_deliveries`.

These models are the column specification: `sql/010_alerts.sql` declares the
same columns in the same order, and the writer (`streams.alerting.alerts_table`)
inserts `ALERT_COLUMNS` / `DELIVERY_COLUMNS`.

An alert row is written for each state an incident enters (triggered, resolved,
or snoozed: held back by an operator's snooze, recorded and never delivered; an
escalation to a higher severity is another triggered row under the same
fingerprint); a delivery row for each attempt to hand that state to a channel, so
the table answers "was on-call paged, when, and after how many tries?".
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["info", "warning", "critical"]
# snoozed: a finding an operator's snooze held back, recorded and never delivered.
AlertState = Literal["triggered", "resolved", "snoozed"]
AlertUnit = Literal["usd", "count"]
DeliveryAction = Literal["trigger", "resolve"]
DeliveryOutcome = Literal["delivered", "retrying", "failed"]

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

# PagerDuty rejects a dedup_key longer than this.
MAX_DEDUP_KEY_LENGTH = 255


class Alert(BaseModel):
    """One state of one incident, as paged and as stored."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str  # detector|key|window_start of the finding that opened the incident
    detector: str
    key: str
    tenant_id: str = ""
    team_id: str = ""
    workflow_id: str = ""
    severity: Severity
    state: AlertState
    summary: str
    value: Decimal
    threshold: Decimal
    baseline: Decimal | None = None
    unit: AlertUnit = "usd"
    cause: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    query: str = ""  # ClickHouse SQL an analyst runs to see what the alert saw
    window_start: datetime
    window_end: datetime
    triggered_at: datetime
    resolved_at: datetime | None = None
    recorded_at: datetime  # when the lifecycle decided this state

    @property
    def dedup_key(self) -> str:
        """The PagerDuty dedup_key: the fingerprint, hashed only if PagerDuty would reject it."""
        if len(self.fingerprint) <= MAX_DEDUP_KEY_LENGTH:
            return self.fingerprint
        return "sha256:" + hashlib.sha256(self.fingerprint.encode()).hexdigest()

    @property
    def action(self) -> DeliveryAction:
        return "trigger" if self.state == "triggered" else "resolve"


class AlertDelivery(BaseModel):
    """One attempt to hand one alert state to one channel."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str
    channel: str  # "console", "slack:warning", "slack:critical", "pagerduty:critical"
    action: DeliveryAction
    attempt: int  # 1-based, counts every HTTP attempt for (fingerprint, channel, action)
    outcome: DeliveryOutcome
    status_code: int | None = None
    reason: str = ""
    next_attempt_at: datetime | None = None
    attempted_at: datetime


ALERT_COLUMNS: list[str] = list(Alert.model_fields)
DELIVERY_COLUMNS: list[str] = list(AlertDelivery.model_fields)


def to_jsonable(value: Any) -> Any:
    """Evidence as JSON: Decimal stays exact (as a string), datetimes become RFC 3339."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [to_jsonable(v) for v in items]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, BaseModel):
        return to_jsonable(value.model_dump())
    return str(value)


def evidence_json(evidence: dict[str, Any]) -> str:
    return json.dumps(to_jsonable(evidence), sort_keys=True, separators=(",", ":"))
