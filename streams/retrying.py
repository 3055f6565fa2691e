"""`until_done`: repeat an idempotent step until it succeeds, backing off, logging each
failure. The worker's writes are never dropped: a failed publish or table flush is
tried again, and the offsets behind it stay uncommitted until it succeeds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


async def until_done(
    step: Callable[[], Awaitable[object]],
    log: logging.Logger,
    what: str,
    on_failure: Callable[[], None] | None = None,
) -> None:
    delay = RETRY_FIRST_SECONDS
    while True:
        try:
            await step()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if on_failure is not None:
                on_failure()
            log.exception("%s failed; retrying in %.1fs", what, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
