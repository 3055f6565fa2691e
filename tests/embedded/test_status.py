"""What `spendstream dev` prints: an alert row read back from the alerts table as one
readable line, and the status line's figures."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from streams.embedded.status import (
    RATE_WINDOW_SECONDS,
    LedgerFigures,
    SlidingRate,
    alert_line,
    alert_of,
    status_line,
)

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


def ticks(seconds: int) -> list[tuple[float, int]]:
    """(time, events counted) once a second for 0.9 events/s counted in steps: the
    workers count a batch of 9 events every 10 s, as a low rate reaches them."""
    return [(float(t), 9 * (t // 10)) for t in range(seconds)]


def test_the_rate_at_a_low_steady_rate_holds_instead_of_flickering_to_zero() -> None:
    rate = SlidingRate()
    shown = [rate.observe(at, count) for at, count in ticks(60)]
    settled = shown[int(RATE_WINDOW_SECONDS) :]
    assert all(0.8 <= r <= 1.0 for r in settled), settled
    # Against the last tick alone, the same counts read 9.0 once in ten and 0.0 otherwise.
    per_tick = [b - a for (_, a), (_, b) in zip(ticks(60), ticks(60)[1:], strict=False)]
    assert per_tick.count(0) == 54


def test_the_rate_falls_to_zero_within_the_window_once_events_stop() -> None:
    rate = SlidingRate()
    for at, count in ticks(30):
        rate.observe(at, count)
    stopped = [rate.observe(30.0 + t, 27) for t in range(12)]
    assert stopped[0] > 0 and stopped[-1] == 0.0


def test_a_count_that_goes_back_starts_the_rate_anew() -> None:
    rate = SlidingRate()
    for at, count in ticks(30):
        rate.observe(at, count)
    assert rate.observe(30.0, 0) == 0.0  # a restarted worker counts from 0 again
    assert rate.observe(32.0, 4) == 2.0
