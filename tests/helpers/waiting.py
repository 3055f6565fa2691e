"""Waiting for a condition, with a timeout that is not a test failure of its own kind.

A timeout raises `WaitTimeout`, never `AssertionError`: a strict xfail that expects an
AssertionError (the bug it pins) must not be satisfied by a condition that simply
never came true.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(Exception):
    """The condition was still false when the wait ran out."""


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.25) -> T:
    """Call `predicate` until it returns a true value, and return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


async def wait_until(
    condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.01
) -> None:
    """`wait_for` for a test's event loop: the loop keeps running while it waits.
    `condition` may be a coroutine function (a check that queries something)."""
    deadline = time.monotonic() + timeout
    while True:
        met = condition()
        if inspect.isawaitable(met):
            met = await met
        if met:
            return
        if time.monotonic() > deadline:
            raise WaitTimeout(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
