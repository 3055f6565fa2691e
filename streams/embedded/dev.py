"""`spendstream dev`: the embedded stack in the foreground, with an optional simulator
and a one-line live status. Ctrl-C stops every child cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING

import orjson

from streams.auth import analyst_token_for, usage_hint
from streams.cost.catalog import load_pricing_file
from streams.embedded.simulate import TrafficGenerator, history, parse_span, publish_traffic
from streams.embedded.stack import EmbeddedStack, WorkerProcess, raise_worker_failed
from streams.errors import ConfigError, SpendstreamError
from streams.ledger.connect import ensure_data_dir_free
from streams.ports import free_port, port_free
from streams.settings import Settings
from streams.spend.config import load_config

if TYPE_CHECKING:
    from streams.embedded.status import StackWatcher

# The modules of the status line, the backfill and the stop (pyarrow, Faust, ...: a
# second or more) are imported where they are used: `dev` reaches its broker and
# worker start sooner than if it loaded them first (bench.cold_start).

# History goes in large messages: the worker's cost per message is shared by them all.
BACKFILL_EVENTS_PER_MESSAGE = 500


class Simulator:
    """Publishes synthetic traffic from a background thread with its own event loop."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.stop_event: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self.generator = TrafficGenerator()

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self.stop_event = asyncio.Event()
            await publish_traffic(
                self.bootstrap, self.topic, self.rate, None, self.generator, self.stop_event
            )

        asyncio.run(main())

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout=10)


def _events(workers: list[WorkerProcess]) -> tuple[int, bool] | None:
    """Events ingested by this run's workers and whether every one is healthy; None
    while one does not answer in time (busy with a large batch)."""
    stats = [w.stats() for w in workers]
    if not all(stats):
        return None
    return sum(int(s["events"]) for s in stats if s), all(s["healthy"] for s in stats if s)


def backfill(bootstrap: str, topic: str, span: float, rate: float) -> int:
    """`span` seconds of simulated history up to now, published through the same topic in
    large messages (the workers ledger it, count it and let the detectors learn from it)."""
    from streams.embedded.replay import publish

    events = list(history(span, rate, datetime.now(UTC)))
    messages = [
        orjson.dumps(events[i : i + BACKFILL_EVENTS_PER_MESSAGE], default=str)
        for i in range(0, len(events), BACKFILL_EVENTS_PER_MESSAGE)
    ]
    # One key: one partition, read in order, so the detectors see history in time order.
    asyncio.run(publish(bootstrap, topic, messages, [b"backfill"] * len(messages)))
    return len(events)


def _span(text: str) -> float:
    try:
        return parse_span(text)
    except ValueError as exc:
        raise ConfigError(f"--backfill: {exc}") from None


def web_port_for(settings: Settings) -> int:
    """The documented port (SPENDSTREAM_WEB_PORT, `--port`), or a free one, said in one
    line, when something else listens there (another stack, on a shared machine)."""
    if port_free(settings.web_host, settings.web_port):
        return settings.web_port
    from streams.ledger.remote import WORKER_FILE

    port = free_port()
    print(
        f"spendstream dev: port {settings.web_port} is in use; the worker listens on "
        f"{port} instead (commands find it through {settings.data_dir / WORKER_FILE})",
        flush=True,
    )
    return port


def drain_stop(stack: EmbeddedStack) -> None:
    """A clean stop: the workers refuse HTTP ingest (503 with Retry-After) and ledger
    what the broker holds before they exit; the broker stops after them."""
    from streams.runtime.drain import usage_backlog

    bootstrap, topic = stack.bootstrap, stack.settings.usage_topic
    left = asyncio.run(usage_backlog(bootstrap, topic))
    print(
        f"\nstopping: HTTP ingest answers 503 from now; draining {left:,} usage messages "
        f"into the ledger (at most {stack.settings.stop_drain_seconds:g} s)…",
        flush=True,
    )
    started = time.monotonic()
    stack.stop_workers()
    left = asyncio.run(usage_backlog(bootstrap, topic))
    took = time.monotonic() - started
    if left:
        print(
            f"stopped in {took:.1f} s with {left:,} usage messages not ledgered: the "
            "in-memory broker loses them (raise SPENDSTREAM_STOP_DRAIN_SECONDS to wait longer)",
            flush=True,
        )
    else:
        print(f"stopped in {took:.1f} s: every usage message is ledgered", flush=True)


def run_dev(
    settings: Settings,
    simulate: bool,
    rate: float,
    workers: int = 1,
    backfill_span: str | None = None,
) -> int:
    span = _span(backfill_span) if backfill_span else None
    if settings.pricing_file is not None:
        load_pricing_file(settings.pricing_file)
    load_config(settings)
    ensure_data_dir_free(settings.resolved_clickhouse_url)  # one clear line if not
    stack = EmbeddedStack(settings)
    simulator: Simulator | None = None
    watcher: StackWatcher | None = None
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous_handlers = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        run_started = datetime.now(UTC)
        started = stack.start(max(1, workers), web_port_for(settings))
        urls = ", ".join(f"http://127.0.0.1:{w.web_port}" for w in started)
        print(
            f"spendstream dev: broker {stack.bootstrap}, data {settings.data_dir}, "
            f"worker{'s' if len(started) > 1 else ''} {urls} (Ctrl-C to stop)",
            flush=True,
        )
        print(usage_hint(settings.data_dir), file=sys.stderr, flush=True)
        from streams.embedded.status import SlidingRate, StackWatcher, status_line

        token = analyst_token_for(settings.data_dir, settings.analyst_token)
        watcher = StackWatcher(f"http://127.0.0.1:{started[0].web_port}", token, run_started)
        if span is not None:
            held = watcher.rows_since(datetime.now(UTC) - timedelta(seconds=span))
            if held:
                # A second `make run` on the same data dir must not add a second history.
                print(
                    f"spendstream dev: the ledger already holds {held:,} rows of the last "
                    f"{backfill_span}; no backfill",
                    flush=True,
                )
            else:
                started_at = time.monotonic()
                sent = backfill(stack.bootstrap, settings.usage_topic, span, rate)
                print(
                    f"spendstream dev: {sent:,} events of simulated history ({backfill_span} "
                    f"at {rate:g}/s, weekly rhythm, incidents) published in "
                    f"{time.monotonic() - started_at:.0f} s; the workers ledger them now",
                    flush=True,
                )
        if simulate:
            simulator = Simulator(stack.bootstrap, settings.usage_topic, rate)
            simulator.start()
        tty = sys.stdout.isatty()
        events_per_s = SlidingRate()
        while not stopping:
            time.sleep(1.0)
            # The broker first: a worker that lost its broker exits too, and the one line
            # must name the cause, not the worker's connection error.
            broker = stack.broker.process
            if broker is not None and broker.poll() is not None and not stopping:
                # Its log lived in memory: messages not yet consumed are gone, and a new
                # broker would start offsets again at 0 under running workers. Stop; the
                # next `dev` starts a new broker with a new log epoch (docs/reliability.md).
                # Said at once, below the status line: a worker without its broker takes
                # up to its stop deadline to exit, before the one line below is printed.
                print(
                    "\nthe embedded broker exited: stopping the worker"
                    f"{'s' if len(stack.workers) > 1 else ''}…",
                    flush=True,
                )
                raise SpendstreamError(
                    f"embedded broker exited with code {broker.returncode}: its in-memory "
                    "log is gone (messages not yet consumed are lost); run spendstream dev again"
                )
            for w in stack.workers:
                if w.process.poll() is not None and not stopping:
                    raise_worker_failed(settings.data_dir, w.process.returncode)
            counted = _events(stack.workers)
            if counted is None:
                continue  # the last line stands until the workers answer again
            events, healthy = counted
            line = status_line(
                events_per_s.observe(time.monotonic(), events), watcher.figures(), healthy
            )
            for alert in watcher.new_alert_lines():
                # Above the status line: clear it, print the alert, redraw below.
                print(f"\r\x1b[K{alert}" if tty else alert, flush=True)
            print(f"\r\x1b[K{line}" if tty else line, end="" if tty else "\n", flush=True)
        if simulator is not None:
            simulator.stop()  # before the drain: what it sends next would not be drained
            simulator = None
        drain_stop(stack)
        return 0
    finally:
        if watcher is not None:
            watcher.close()
        if simulator is not None:
            simulator.stop()
        stack.stop()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
