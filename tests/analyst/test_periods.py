"""ISO weeks and months as the reports read them."""

from __future__ import annotations

from datetime import date

import pytest

from streams.analyst.periods import (
    iso_week,
    last_complete_week,
    month,
    previous_week,
    week_to_date,
)
from streams.errors import ConfigError


def test_iso_weeks_run_monday_to_sunday_across_years() -> None:
    week = iso_week("2026-W47")
    assert (week.start, week.end, len(week.days)) == (date(2026, 11, 16), date(2026, 11, 22), 7)
    assert previous_week(iso_week("2027-W01")).label == "2026-W53"
    assert iso_week("2026-W53").end == date(2027, 1, 3)


def test_last_complete_week_on_a_sunday_is_the_week_before() -> None:
    assert last_complete_week(date(2026, 11, 22)).label == "2026-W46"
    assert last_complete_week(date(2026, 11, 23)).label == "2026-W47"


def test_months_end_on_their_last_day() -> None:
    assert (month("2026-02").end, month("2026-12").end_exclusive) == (
        date(2026, 2, 28),
        date(2027, 1, 1),
    )


@pytest.mark.parametrize("text", ["2026-W54", "2026W47", "2025-W53"])
def test_impossible_weeks_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        iso_week(text)


def test_the_default_week_is_this_week_to_date_compared_with_the_same_days() -> None:
    week = week_to_date(date(2026, 12, 3))  # a Thursday
    assert (week.label, week.start, week.end) == ("2026-W49", date(2026, 11, 30), date(2026, 12, 3))
    before = previous_week(week)
    assert (before.label, before.start, before.end) == (
        "2026-W48",
        date(2026, 11, 23),
        date(2026, 11, 26),
    )
