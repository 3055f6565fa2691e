"""Incidents of replayed history are judged cleared by the history's own clock: a replay
hands the spend agent days of calls in seconds, and judging them by the wall clock
closed every incident at the first resolve tick (its hour long over), so the next hour
of the same breach paged again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams.spend.state import HISTORY_QUIET
from tests.spend.test_cardinality_alert import config, row, runtime

WALL = datetime.now(UTC)
# Two days ago at the top of an hour: history, as `spendstream replay` sends it.
HOUR = (WALL - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def calls(hour: int, offset: int, cost: str) -> list[dict[str, Any]]:
    at = HOUR + timedelta(hours=hour, minutes=20)
    return [row(offset + i, at, cost_usd=cost) for i in range(5)]


def pages(recorded: Any) -> list[tuple[str, str]]:
    return [(a.detector, a.state) for a in recorded.alerts if a.detector == "contract_hourly"]


def test_a_replayed_breach_of_two_hours_pages_once_and_resolves_when_history_clears() -> None:
    rt, recorded = runtime(config(tenants={"acme": {"contracted_hourly_budget_usd": 1}}))
    rt.apply("acme", calls(0, 0, "1.00"))  # $5 in the hour: over the $1/h contract
    rt.resolve_cleared(datetime.now(UTC))  # the resolve timer ticks mid-replay
    rt.apply("acme", calls(1, 100, "1.00"))  # the breach goes on an hour later
    rt.resolve_cleared(datetime.now(UTC))
    assert pages(recorded) == [("contract_hourly", "triggered")]

    rt.apply("acme", calls(3, 200, "0.01"))  # two hours later: back under the contract
    rt.resolve_cleared(datetime.now(UTC))
    assert pages(recorded) == [("contract_hourly", "triggered"), ("contract_hourly", "resolved")]


def test_once_history_stops_arriving_the_wall_clock_resolves() -> None:
    rt, recorded = runtime(config(tenants={"acme": {"contracted_hourly_budget_usd": 1}}))
    rt.apply("acme", calls(0, 0, "1.00"))
    rt.resolve_cleared(datetime.now(UTC))
    assert pages(recorded) == [("contract_hourly", "triggered")]
    # Nothing more arrives: past the quiet period the replay is over, and the wall
    # clock (hours past the breach) resolves it.
    rt.resolve_cleared(datetime.now(UTC) + HISTORY_QUIET + timedelta(seconds=1))
    assert pages(recorded) == [("contract_hourly", "triggered"), ("contract_hourly", "resolved")]
