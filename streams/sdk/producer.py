"""Producers: queue usage events in memory and publish them in the background.

`record()` is the only call on a request path. It validates the event
(prompt/completion text is dropped by the contract), appends it to a bounded
queue and returns at once: it never waits on the network and never raises.
A background task takes batches off the queue (`batch_size` events, or what
arrived within `linger_s`), hands them to a transport (Kafka or HTTP), and
retries transient failures with capped exponential backoff and jitter.

Delivery is at-least-once: a retried batch may arrive twice, which the
pipeline's dedupe by `request_id` absorbs. Events are lost only when the
caller chooses so: the queue is full (`max_queue`), the receiver refuses them
permanently, retries run out, or `close()` times out. Each case is counted in
`stats` and reported to `on_error(exc, count)`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.usage_event import UsageEvent
from streams.sdk.transports import (
    DEFAULT_TOPIC,
    EncodedEvent,
    HttpTransport,
    KafkaTransport,
    Transport,
    TransportError,
)

log = logging.getLogger("spendstream.sdk")

ErrorCallback = Callable[[BaseException, int], None]

_LOG_EVERY_S = 10.0
_ABANDON_GRACE_S = 1.0


class ProducerClosedError(RuntimeError):
    """Reported (never raised) for events recorded after `close()`."""


class QueueFullError(RuntimeError):
    """Reported (never raised) for events refused because the queue is full."""


@dataclass(frozen=True)
class ProducerStats:
    """Counts since the producer was created.

    `recorded` entered the queue; each of them ends as `sent`, `rejected` (the
    receiver refused it) or `failed` (given up), or is still `queued`.
    `invalid` and `dropped` (queue full, or closed) never entered it.
    """

    recorded: int = 0
    invalid: int = 0
    dropped: int = 0
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    retries: int = 0
    queued: int = 0


def encode_event(event: UsageEvent | Mapping[str, Any]) -> EncodedEvent:
    """Validate against the contract and serialize once."""
    if isinstance(event, UsageEvent):
        model = event
    elif isinstance(event, Mapping):
        model = UsageEvent.model_validate(event)
    else:
        raise TypeError(f"expected a UsageEvent or a dict, got {type(event).__name__}")
    data = orjson.dumps(model.model_dump(mode="json", exclude_defaults=True))
    return EncodedEvent(model.request_id, data)


class AsyncSpendstreamProducer:
    """The asyncio producer. Create it, `await start()` (or use `async with`),
    call `record()` from anywhere, `await close()` at shutdown.

    `record()` is a plain (non-async) method and is thread-safe, so it can be
    called from the event loop or from other threads (e.g. a tracing
    exporter); `start`, `flush` and `close` run on the producer's loop.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        batch_size: int = 500,
        linger_s: float = 0.2,
        max_queue: int = 100_000,
        max_retries: int = 8,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 10.0,
        on_error: ErrorCallback | None = None,
    ) -> None:
        if batch_size < 1 or max_queue < 1:
            raise ValueError("batch_size and max_queue must be at least 1")
        self.transport = transport
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.max_queue = max_queue
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.on_error = on_error

        self._queue: deque[EncodedEvent] = deque()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            ("recorded", "invalid", "dropped", "sent", "rejected", "failed", "retries"), 0
        )
        self._enqueued = 0
        self._done = 0
        self._in_flight = 0
        self._urgent = 0
        self._closing = False
        self._closed = False
        self._wake_scheduled = False
        self._last_log: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._abandon: asyncio.Event | None = None
        self._progress: asyncio.Condition | None = None

    @classmethod
    def kafka(
        cls,
        bootstrap_servers: str | Sequence[str],
        topic: str = DEFAULT_TOPIC,
        *,
        max_events_per_message: int = 100,
        producer_config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncSpendstreamProducer:
        transport = KafkaTransport(
            bootstrap_servers,
            topic,
            max_events_per_message=max_events_per_message,
            producer_config=producer_config,
        )
        return cls(transport, **options)

    @classmethod
    def http(
        cls, base_url: str, api_key: Any = None, *, gzip_body: bool = False, **options: Any
    ) -> AsyncSpendstreamProducer:
        return cls(HttpTransport(base_url, api_key, gzip_body=gzip_body), **options)

    # -- caller side -------------------------------------------------------

    def record(self, event: UsageEvent | Mapping[str, Any]) -> bool:
        """Queue one event; True if queued. Never blocks, never raises."""
        try:
            encoded = encode_event(event)
        except Exception as exc:
            self._count("invalid")
            self._report(exc, 1, "invalid usage event not recorded")
            return False
        try:
            if self._closing:
                self._count("dropped")
                self._report(ProducerClosedError("producer is closed"), 1, "event dropped")
                return False
            with self._lock:
                if len(self._queue) >= self.max_queue:
                    full = True
                else:
                    full = False
                    self._queue.append(encoded)
                    self._enqueued += 1
                    self._counts["recorded"] += 1
                queued = len(self._queue)
            if full:
                self._count("dropped")
                self._report(
                    QueueFullError(f"queue full ({self.max_queue} events)"), 1, "event dropped"
                )
                return False
            if queued >= self.batch_size:
                self._wake_soon()
            if self._task is None:
                self._autostart()
            return True
        except Exception as exc:
            log.exception("spendstream producer failed to queue an event")
            self._report(exc, 1, "event dropped", log_it=False)
            return False

    @property
    def stats(self) -> ProducerStats:
        with self._lock:
            return ProducerStats(**self._counts, queued=len(self._queue) + self._in_flight)

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._begin(asyncio.get_running_loop())

    def _begin(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._abandon = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task = loop.create_task(self._run(), name="spendstream-producer")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is delivered or given up.
        False if `timeout` (seconds) passed first."""
        if self._task is None:
            if not self._queue:
                return True
            await self.start()
        assert self._wake is not None and self._progress is not None
        target = self._enqueued
        progress = self._progress
        self._urgent += 1
        self._wake.set()
        try:
            async with progress:
                await asyncio.wait_for(progress.wait_for(lambda: self._done >= target), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._urgent -= 1

    async def close(self, timeout: float | None = 10.0) -> bool:
        """Deliver what is queued (up to `timeout` seconds), then stop.
        True if the queue was worked off in time; events given up on before
        (permanent errors, retries exhausted) are in `stats.failed`."""
        if self._closed:
            return True
        self._closing = True
        complete = True
        if self._task is None and self._queue:
            await self.start()
        task = self._task
        if task is not None:
            assert self._wake is not None and self._abandon is not None
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                complete = False
                # Stop retrying; let a send in progress end on its own for a
                # moment so its events are counted, then cut it off.
                self._abandon.set()
                try:
                    await asyncio.wait_for(asyncio.shield(task), _ABANDON_GRACE_S)
                except TimeoutError:
                    task.cancel()
                    with suppress(asyncio.CancelledError, Exception):
                        await task
        with self._lock:
            left = len(self._queue) + self._in_flight
            self._queue.clear()
            self._in_flight = 0
        if left:
            complete = False
            self._count("failed", left)
            self._report(
                ProducerClosedError(f"closed with {left} undelivered events"), left, "events lost"
            )
        try:
            await self.transport.close()
        except Exception:
            log.warning("spendstream transport did not close cleanly", exc_info=True)
        self._closed = True
        return complete

    async def __aenter__(self) -> AsyncSpendstreamProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- background side ---------------------------------------------------

    def _autostart(self) -> None:
        # Convenience for async code that records before `start()`: begin
        # sending as soon as we are on a running loop.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is None:
            self._begin(loop)

    def _wake_soon(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or self._wake_scheduled:
            return
        self._wake_scheduled = True
        if threading.get_ident() == self._loop_thread:
            wake.set()
        else:
            with suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(wake.set)

    async def _wait(self, seconds: float) -> None:
        assert self._wake is not None
        self._wake.clear()
        self._wake_scheduled = False
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _take(self) -> list[EncodedEvent]:
        with self._lock:
            size = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(size)]
            self._in_flight = size
        return batch

    async def _run(self) -> None:
        try:
            await self.transport.start()
        except Exception as exc:
            # Not fatal: delivery starts the transport again, with retries.
            log.warning("spendstream transport not ready yet: %r", exc)
        assert self._abandon is not None
        while not self._abandon.is_set():
            try:
                if not self._queue:
                    if self._closing:
                        return
                    await self._wait(self.linger_s)
                    continue
                if len(self._queue) < self.batch_size and not (self._closing or self._urgent):
                    await self._wait(self.linger_s)
                batch = self._take()
                if not batch:
                    continue
                try:
                    await self._deliver(batch)
                except Exception as exc:
                    # A bug in a transport: count the batch as lost rather
                    # than leave flush() waiting for it.
                    log.exception("spendstream delivery error")
                    self._give_up(exc, batch)
                with self._lock:
                    self._in_flight = 0
                assert self._progress is not None
                async with self._progress:
                    self._done += len(batch)
                    self._progress.notify_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here must not stop delivery of later events.
                log.exception("spendstream producer loop error")
                await asyncio.sleep(self.linger_s)

    async def _deliver(self, batch: list[EncodedEvent]) -> None:
        pending = batch
        attempt = 0
        while pending:
            try:
                rejected = await self.transport.send(pending)
            except TransportError as exc:
                failed = exc.failed if exc.failed is not None else pending
                self._count("sent", len(pending) - len(failed) - exc.rejected)
                self._count("rejected", exc.rejected)
                pending = failed
                if not pending:
                    return
                if exc.too_large:
                    if len(pending) == 1:
                        self._give_up(exc, pending)
                        return
                    middle = len(pending) // 2
                    await self._deliver(pending[:middle])
                    await self._deliver(pending[middle:])
                    return
                if not exc.retriable:
                    self._give_up(exc, pending)
                    return
                delay = exc.retry_after
                error: BaseException = exc
            except Exception as exc:
                # Unknown failures are treated as transient: giving up on the
                # first surprise would lose events an outage would not.
                delay, error = None, exc
            else:
                self._count("sent", len(pending) - rejected)
                self._count("rejected", rejected)
                return
            if attempt >= self.max_retries:
                self._give_up(error, pending)
                return
            attempt += 1
            self._count("retries")
            if delay is None:
                ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
                delay = ceiling / 2 + random.uniform(0, ceiling / 2)
            self._log_throttled(
                "retry", f"spendstream delivery failed ({error!r}); retry {attempt} in {delay:.2f}s"
            )
            assert self._abandon is not None
            with suppress(TimeoutError):
                await asyncio.wait_for(self._abandon.wait(), delay)
            if self._abandon.is_set():
                self._give_up(error, pending)
                return

    def _give_up(self, exc: BaseException, events: Sequence[EncodedEvent]) -> None:
        self._count("failed", len(events))
        self._report(exc, len(events), "events not delivered")

    # -- bookkeeping -------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._counts[name] += n

    def _report(self, exc: BaseException, count: int, what: str, *, log_it: bool = True) -> None:
        if log_it:
            self._log_throttled(type(exc).__name__, f"spendstream: {what} ({count}): {exc}")
        if self.on_error is not None:
            try:
                self.on_error(exc, count)
            except Exception:
                log.exception("spendstream on_error callback raised")

    def _log_throttled(self, kind: str, message: str) -> None:
        # One line per kind per interval: a broker outage must not turn into
        # a log line per event on the caller's hot path.
        now = time.monotonic()
        if now - self._last_log.get(kind, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[kind] = now
            log.warning(message)


class SpendstreamProducer:
    """The thread-based producer for synchronous code.

    It runs an `AsyncSpendstreamProducer` on its own event loop in a daemon
    thread, so `record()` costs a validation and a queue append on the
    caller's thread. `flush()` and `close()` block up to their timeout; an
    interpreter exit closes the producer (up to `exit_timeout_s`).
    """

    def __init__(
        self, transport: Transport, *, exit_timeout_s: float = 5.0, **options: Any
    ) -> None:
        self._producer = AsyncSpendstreamProducer(transport, **options)
        self._exit_timeout_s = exit_timeout_s
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="spendstream-producer", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._producer.start(), self._loop).result(timeout=5)
        atexit.register(self._close_at_exit)

    @classmethod
    def kafka(
        cls,
        bootstrap_servers: str | Sequence[str],
        topic: str = DEFAULT_TOPIC,
        *,
        max_events_per_message: int = 100,
        producer_config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> SpendstreamProducer:
        transport = KafkaTransport(
            bootstrap_servers,
            topic,
            max_events_per_message=max_events_per_message,
            producer_config=producer_config,
        )
        return cls(transport, **options)

    @classmethod
    def http(
        cls, base_url: str, api_key: Any = None, *, gzip_body: bool = False, **options: Any
    ) -> SpendstreamProducer:
        return cls(HttpTransport(base_url, api_key, gzip_body=gzip_body), **options)

    @property
    def transport(self) -> Transport:
        return self._producer.transport

    @property
    def stats(self) -> ProducerStats:
        return self._producer.stats

    def record(self, event: UsageEvent | Mapping[str, Any]) -> bool:
        """Queue one event; True if queued. Never blocks, never raises."""
        return self._producer.record(event)

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything recorded so far is delivered or given up, or
        `timeout` seconds passed (then False)."""
        if self._closed:
            return self.stats.queued == 0
        if threading.get_ident() == self._thread.ident:
            # Blocking the producer's own loop on itself would deadlock.
            return False
        try:
            future = asyncio.run_coroutine_threadsafe(self._producer.flush(timeout), self._loop)
            return future.result(timeout + 1.0)
        except Exception:
            log.warning("spendstream flush did not complete", exc_info=True)
            return False

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued (up to `timeout` seconds) and stop the
        thread. True if the queue was worked off in time (see
        `AsyncSpendstreamProducer.close`)."""
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self._close_at_exit)
        try:
            future = asyncio.run_coroutine_threadsafe(self._producer.close(timeout), self._loop)
            complete = future.result(timeout + 5.0)
        except Exception:
            log.warning("spendstream producer did not close cleanly", exc_info=True)
            complete = False
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._loop.close()
        return complete

    def _close_at_exit(self) -> None:
        self.close(self._exit_timeout_s)

    def __enter__(self) -> SpendstreamProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
