"""`until_done` repeats a failing step, backing off, and never swallows a cancel."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams import retrying
from streams.retrying import until_done

log = logging.getLogger("test_retrying")


def test_a_failing_step_is_repeated_until_it_succeeds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(retrying, "RETRY_FIRST_SECONDS", 0.01)
    calls: list[int] = []
    failures: list[int] = []

    async def step() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("broker did not answer")

    with caplog.at_level(logging.ERROR, logger="test_retrying"):
        asyncio.run(until_done(step, log, "table write", on_failure=lambda: failures.append(1)))
    assert len(calls) == 3
    assert len(failures) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "table write failed; retrying in 0.0s",
        "table write failed; retrying in 0.0s",
    ]
    assert all(r.exc_info and r.exc_info[0] is ConnectionError for r in caplog.records)


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
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_cancel_is_not_retried() -> None:
    calls: list[int] = []

    async def step() -> None:
        calls.append(1)
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(until_done(step, log, "publish"))
    assert calls == [1]
