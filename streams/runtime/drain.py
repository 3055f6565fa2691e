"""A clean stop loses nothing: before the worker stops, it ledgers what the broker holds.

On SIGTERM/SIGINT the worker (streams/faust_ext/worker.py) awaits `ShutdownDrain`
before Faust stops a service. From then on HTTP ingest answers 503 with Retry-After,
and the ingest consumer goes on consuming, pricing and ledgering until the ingest
group has committed every usage message that was in the log when the stop began, on
the partitions this worker holds, or until `stop_drain_seconds` have passed. Offsets
are committed only after the ledger write, so a committed message is ledger or
dead-letter rows. The embedded broker keeps its log in memory: a message not drained
is gone with it, so the number left is said in one line.

Log ends come from a fetch (`fetched_log_ends`): the embedded broker's ListOffsets
answers short once records arrive in batches, and a burst sent just before the stop
is exactly what a short end would leave behind.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Collection

from streams.faust_ext.app import fetched_log_ends
from streams.http_ingest import IngestHandler
from streams.ingest.consumer import UsageConsumer
from streams.kafka.group_progress import GroupProgressReader
from streams.kafka.topics import INGEST_GROUP
from streams.settings import Settings

POLL_SECONDS = 0.2


class UsageBacklog:
    """How many usage messages the ingest group has not committed, against the log
    ends read once at `start` (a stop drains what was there, not what comes after)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.reader = GroupProgressReader(bootstrap, INGEST_GROUP, topic)
        self.ends: dict[int, int] = {}

    async def start(self, partitions: Collection[int] | None = None) -> int:
        await self.reader.start()
        listed = await self.reader.listed_ends(partitions)
        fetched = await fetched_log_ends(
            self.bootstrap, {(self.topic, p): end for p, end in listed.items()}
        )
        self.ends = {p: int(end or 0) for (_, p), end in fetched.items()}
        return await self.left()

    async def left(self) -> int:
        return (await self.reader.read(self.ends)).lag

    async def stop(self) -> None:
        await self.reader.stop()


async def usage_backlog(bootstrap: str, topic: str) -> int:
    """Usage messages in the log that the ingest group has not committed (all partitions)."""
    backlog = UsageBacklog(bootstrap, topic)
    try:
        return await backlog.start()
    finally:
        await backlog.stop()


def _say(line: str) -> None:
    print(f"spendstream worker: {line}", file=sys.stderr, flush=True)


class ShutdownDrain:
    def __init__(
        self,
        settings: Settings,
        consumer: UsageConsumer,
        http: IngestHandler,
        ledger_healthy: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.http = http
        # False while a ledger write fails: nothing can drain then, so the stop goes on
        # at once (the queued batches' offsets stay uncommitted).
        self.ledger_healthy = ledger_healthy

    async def __call__(self) -> int:
        """Refuse new HTTP ingest, then ledger what the broker holds for this worker;
        returns the usage messages left (0 when all are ledgered)."""
        self.http.stopping = True
        seconds = self.settings.stop_drain_seconds
        topic = self.settings.usage_topic
        if seconds <= 0:
            return 0
        started = time.monotonic()
        backlog = UsageBacklog(self.settings.kafka_bootstrap, topic)
        left = -1
        try:
            async with asyncio.timeout(seconds):
                while self.http.in_flight:  # admitted before the stop: let them publish
                    await asyncio.sleep(0.05)
                # A worker stopped while it joins its group holds nothing yet, and will.
                await self.consumer.joined.wait()
                assigned = self.consumer.assignment()
                held = sorted(tp.partition for tp in assigned if tp.topic == topic)
                if not held or not self.ledger_healthy():
                    return 0
                left = await backlog.start(held)
                if left:
                    _say(f"draining {left:,} usage messages into the ledger (≤ {seconds:g} s)…")
                while left and self.ledger_healthy():
                    await asyncio.sleep(POLL_SECONDS)
                    left = await backlog.left()
        except TimeoutError:
            pass
        except Exception as exc:  # a broker gone: nothing more can be read from it
            _say(f"drain stopped: {exc!r}")
        finally:
            await backlog.stop()
        if left and not self.ledger_healthy():
            _say("the ledger is failing writes: nothing more can be drained")
        if left == 0:
            _say(f"drained: every usage message is ledgered ({time.monotonic() - started:.1f} s)")
        else:
            what = f"{left:,} usage messages" if left > 0 else "the usage messages still held"
            _say(
                f"gave up draining after {time.monotonic() - started:.1f} s: {what} not "
                "ledgered (an in-memory broker loses them; Kafka delivers them again)"
            )
        return max(left, 0)
