"""`spendstream dev`: the embedded stack in the foreground, with an optional simulator
and a one-line live status. Ctrl-C stops every child cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from types import FrameType

from streams.cost.catalog import load_pricing_file
from streams.embedded.processes import free_port, port_free
from streams.embedded.simulate import TrafficGenerator, publish_traffic
from streams.embedded.stack import EmbeddedStack, WorkerProcess, raise_worker_failed
from streams.errors import SpendstreamError
from streams.ledger.connect import ensure_data_dir_free
from streams.ledger.remote import WORKER_FILE
from streams.settings import Settings
from streams.spend.config import load_config


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


def _status_line(workers: list[WorkerProcess], previous: int, elapsed: float) -> tuple[str, int]:
    stats = [s for s in (w.stats() for w in workers) if s]
    events = sum(int(s["events"]) for s in stats)
    ledgered = sum(int(s["ledgered"]) for s in stats)
    dead = sum(sum(s["dead_letters"].values()) for s in stats)
    alerts = sum(int(s.get("alerts_triggered", 0)) for s in stats)
    rate = (events - previous) / elapsed if elapsed > 0 else 0.0
    healthy = all(s["healthy"] for s in stats) if stats else False
    line = (
        f"{rate:8.1f} events/s | ledger rows {ledgered:>9} | dead letters {dead:>6} | "
        f"alerts {alerts:>3} | {'ok' if healthy else 'DEGRADED'}"
    )
    return line, events


def web_port_for(settings: Settings) -> int:
    """The documented port (SPENDSTREAM_WEB_PORT, `--port`), or a free one, said in one
    line, when something else listens there (another stack, on a shared machine)."""
    if port_free(settings.web_host, settings.web_port):
        return settings.web_port
    port = free_port()
    print(
        f"spendstream dev: port {settings.web_port} is in use; the worker listens on "
        f"{port} instead (commands find it through {settings.data_dir / WORKER_FILE})",
        flush=True,
    )
    return port


def run_dev(settings: Settings, simulate: bool, rate: float, workers: int = 1) -> int:
    if settings.pricing_file is not None:
        load_pricing_file(settings.pricing_file)
    load_config(settings)
    ensure_data_dir_free(settings.resolved_clickhouse_url)  # one clear line if not
    stack = EmbeddedStack(settings)
    simulator: Simulator | None = None
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous_handlers = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        stack.start_broker()
        started = stack.start_workers(max(1, workers), web_port_for(settings))
        urls = ", ".join(f"http://127.0.0.1:{w.web_port}" for w in started)
        print(
            f"spendstream dev: broker {stack.bootstrap}, data {settings.data_dir}, "
            f"worker{'s' if len(started) > 1 else ''} {urls} (Ctrl-C to stop)",
            flush=True,
        )
        if simulate:
            simulator = Simulator(stack.bootstrap, settings.usage_topic, rate)
            simulator.start()
        tty = sys.stdout.isatty()
        previous, last = 0, time.monotonic()
        while not stopping:
            time.sleep(1.0)
            for w in stack.workers:
                if w.process.poll() is not None and not stopping:
                    raise_worker_failed(settings.data_dir, w.process.returncode)
            broker = stack.broker.process
            if broker is not None and broker.poll() is not None and not stopping:
                # Its log lived in memory: messages not yet consumed are gone, and a new
                # broker would start offsets again at 0 under running workers. Stop; the
                # next `dev` starts a new broker with a new log epoch (docs/reliability.md).
                raise SpendstreamError(
                    f"embedded broker exited with code {broker.returncode}: its in-memory "
                    "log is gone (messages not yet consumed are lost); run spendstream dev again"
                )
            now = time.monotonic()
            line, previous = _status_line(stack.workers, previous, now - last)
            last = now
            print(f"\r{line}" if tty else line, end="" if tty else "\n", flush=True)
        print("\nstopping…", flush=True)
        return 0
    finally:
        if simulator is not None:
            simulator.stop()
        stack.stop()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
