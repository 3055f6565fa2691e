"""Reporting periods: ISO weeks, calendar months and date ranges, all in UTC."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from streams.errors import ConfigError

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Period:
    """Days `start` … `end` inclusive."""

    label: str
    start: date
    end: date

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]

    @property
    def end_exclusive(self) -> date:
        return self.end + timedelta(days=1)


def iso_week(text: str) -> Period:
    match = _WEEK.match(text)
    if not match:
        raise ConfigError(f"week {text!r} is not an ISO week like 2026-W47")
    year, week = int(match[1]), int(match[2])
    try:
        monday = date.fromisocalendar(year, week, 1)
    except ValueError:
        raise ConfigError(f"week {text!r} does not exist") from None
    return Period(text, monday, monday + timedelta(days=6))


def week_of(day: date) -> Period:
    year, week, _ = day.isocalendar()
    return iso_week(f"{year}-W{week:02d}")


def last_complete_week(today: date | None = None) -> Period:
    today = today or datetime.now(UTC).date()
    return week_of(today - timedelta(days=7))


def week_to_date(today: date | None = None) -> Period:
    """The current ISO week, Monday to today: what `report weekly` shows by default."""
    today = today or datetime.now(UTC).date()
    week = week_of(today)
    return Period(week.label, week.start, today)


def previous_week(period: Period) -> Period:
    """The same weekdays one week earlier: a week to date compares with its like."""
    earlier = week_of(period.start - timedelta(days=7))
    return Period(earlier.label, period.start - timedelta(days=7), period.end - timedelta(days=7))


def month(text: str) -> Period:
    match = _MONTH.match(text)
    if not match or not 1 <= int(match[2]) <= 12:
        raise ConfigError(f"month {text!r} is not a month like 2026-11")
    first = date(int(match[1]), int(match[2]), 1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return Period(text, first, following - timedelta(days=1))


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"date {text!r} is not a date like 2026-11-01") from None


def date_range(start: str, end: str) -> Period:
    first, last = parse_date(start), parse_date(end)
    if last < first:
        raise ConfigError(f"--to {end} is before --from {start}")
    return Period(f"{first}..{last}", first, last)
