"""`until_done` repeats a failing step, backing off, and never swallows a cancel."""

from __future__ import annotations

import asyncio
import doctest
import logging
from datetime import UTC, datetime

import pytest

from streams import retrying
from streams.retrying import BROKER_WRITES, Backoff, parse_retry_after, until_done

log = logging.getLogger("test_retrying")


def test_a_failing_step_is_repeated_until_it_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    failures: list[Exception] = []

    async def step() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("broker did not answer")

    fast = Backoff(initial=0.01, maximum=0.02, jitter=0)
    with caplog.at_level(logging.WARNING, logger="test_retrying"):
        asyncio.run(until_done(step, log, "table write", fast, on_failure=failures.append))
    assert len(calls) == 3
    assert [str(exc) for exc in failures] == ["broker did not answer"] * 2
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "table write failed (ConnectionError: broker did not answer); retrying in 0.0s",
        "table write failed (ConnectionError: broker did not answer); retrying in 0.0s",
    ]
    # The first failure of a run carries its traceback, the repeats are one line.
    assert [bool(r.exc_info) for r in caplog.records] == [True, False]
    assert caplog.records[0].exc_info[0] is ConnectionError  # type: ignore[index]


def test_the_backoff_doubles_up_to_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(retrying.asyncio, "sleep", no_sleep)
    calls: list[int] = []

    async def step() -> None:
        calls.append(1)
        if len(calls) <= 7:
            raise OSError("refused")

    asyncio.run(until_done(step, log, "publish"))
    assert BROKER_WRITES.jitter == 0
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_cancel_is_not_retried() -> None:
    calls: list[int] = []

    async def step() -> None:
        calls.append(1)
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(until_done(step, log, "publish"))
    assert calls == [1]


def test_module_doctests_pass() -> None:
    # Every example runs (an example deleted or no longer collected fails here too).
    assert doctest.testmod(retrying) == (0, 2)  # (failed, attempted)


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Sun, 06 Dec 2026 12:01:00 GMT", now) == 60.0
    assert parse_retry_after("Sun, 06 Dec 2026 11:00:00 GMT", now) == 0.0  # already past
    assert parse_retry_after("-5", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
