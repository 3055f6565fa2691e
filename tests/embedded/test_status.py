"""What `spendstream dev` prints: an alert row read back from the alerts table as one
readable line, and the status line's figures."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from streams.embedded.status import LedgerFigures, alert_line, alert_of, status_line

AT = datetime(2026, 12, 6, 14, 2, tzinfo=UTC)
ROW = {  # as /v1/query returns a row of `alerts` (Decimal(38, 18), evidence as JSON text)
    "fingerprint": "rolling_median|tenant:acme|2026-12-06T13:00",
    "detector": "rolling_median",
    "key": "tenant:acme/workflow:answer-question",
    "tenant_id": "acme",
    "team_id": "",
    "workflow_id": "answer-question",
    "severity": "critical",
    "state": "triggered",
    "summary": "spent $2.54 in the hour from 2026-12-06 13:00 UTC, 12.7x its usual hourly $0.20",
    "value": Decimal("2.540000000000000000"),
    "threshold": Decimal("1.000000000000000000"),
    "baseline": Decimal("0.200000000000000000"),
    "unit": "usd",
    "cause": "retry_storm",
    "evidence": '{"cause_explanation": "requests 31.4x, users 0.7x"}',
    "query": "SELECT 1",
    "window_start": AT,
    "window_end": AT,
    "triggered_at": AT,
    "resolved_at": None,
    "recorded_at": AT,
}


def test_an_alert_row_is_one_line_with_severity_key_dollars_and_cause() -> None:
    line = alert_line(alert_of(ROW))
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("2026-12-06 14:02 ALERT [CRITICAL] rolling_median ")
    assert "tenant:acme/workflow:answer-question" in line
    assert "($2.54 vs threshold $1.00)" in line
    assert "cause: Retry storm (requests 31.4x, users 0.7x)." in line


def test_a_snoozed_row_reads_as_held_back_not_as_a_page() -> None:
    line = alert_line(alert_of({**ROW, "state": "snoozed"}))
    assert line.startswith("2026-12-06 14:02 ALERT [SNOOZED CRITICAL] rolling_median ")


def test_the_status_line_shows_the_ledgers_figures() -> None:
    figures = LedgerFigures(Decimal("89.4512"), Decimal("889.5"), 219_226, 3, 6)
    assert status_line(0.8, figures, healthy=True) == (
        "spend today $89.45 | month to date $889.50 | ledger rows 219,226 | "
        "dead letters 3 | open incidents 6 | 0.8 events/s | ok"
    )
    assert status_line(0.0, None, healthy=False).endswith("0.0 events/s | DEGRADED")
