"""The fault-injection harness: the real embedded stack (tansu broker, a Faust worker
child process, ClickHouse through chdb) with the faults of issue 7 made injectable,
and the bookkeeping every case reports: events in, events out, lost, double-counted.

Nothing here is a mock: faults are real signals (SIGKILL, SIGSTOP), a real broker
process killed and restarted, and the worker's own outage hook
(`SPENDSTREAM_FAULT_SINK_OUTAGE_FILE`), which runs the sink's real retry path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.cost.catalog import PriceCatalog
from streams.embedded.simulate import TrafficGenerator
from streams.kafka.group_progress import GroupProgressReader
from streams.kafka.topics import INGEST_GROUP
from tests.helpers.stack import RunningStack, analyst_headers
from tests.helpers.waiting import WaitTimeout

USAGE_TOPIC = "spendstream.usage"
GROUP = INGEST_GROUP
NOW = datetime.now(UTC).replace(microsecond=0)
MONTH_START = NOW.replace(day=1, hour=0, minute=0, second=0)
_CATALOG = PriceCatalog.load(None)


# -- events -------------------------------------------------------------------


def event_time(rng: random.Random, spread_hours: float = 36.0) -> datetime:
    """A moment in the last `spread_hours`, never before this month: the in-stream
    month totals (`/v1/limits`) and the ledger's month are then the same set."""
    moment = NOW - timedelta(seconds=rng.uniform(0, spread_hours * 3600))
    return max(moment, MONTH_START)


def make_events(n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    """`n` synthetic events (several tenants, teams, workflows, providers, models).
    `prefix` starts every request_id and tenant_id, so that a case sharing a stack
    with others finds its own rows and its own in-stream tenants."""
    generator = TrafficGenerator(seed)
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        event = generator.event(event_time(rng))
        event["request_id"] = f"{prefix}{event['request_id']}"
        event["tenant_id"] = f"{prefix}{event['tenant_id']}"
        event["user_id"] = f"{prefix}{event['user_id']}"
        events.append(event)
    return events


def event_cost(event: dict[str, Any]) -> Decimal:
    """The single-pass expectation of one event's cost, in exact Decimal."""
    prices = _CATALOG.resolve(
        event["provider"], event["model"], datetime.fromisoformat(str(event["timestamp"]))
    )
    assert prices is not None, f"no price for {event['provider']}/{event['model']}"
    return prices.cost(
        event["input_tokens"],
        event.get("cached_tokens", 0),
        event.get("cache_write_tokens", 0),
        event.get("output_tokens", 0),
        event.get("reasoning_tokens", 0),
    ).total


@dataclass(frozen=True)
class Expectation:
    """What a single clean pass over distinct events must produce."""

    ids: frozenset[str]
    cost: Decimal
    cost_by_tenant: dict[str, Decimal]
    requests: int

    @classmethod
    def of(cls, events: Iterable[dict[str, Any]]) -> Expectation:
        by_id = {e["request_id"]: e for e in events}
        by_tenant: dict[str, Decimal] = {}
        total = Decimal(0)
        requests = 0
        for event in by_id.values():
            cost = event_cost(event)
            total += cost
            by_tenant[event["tenant_id"]] = by_tenant.get(event["tenant_id"], Decimal(0)) + cost
            requests += int(event.get("request_count", 1))
        return cls(frozenset(by_id), total, by_tenant, requests)


# -- counting and reporting ----------------------------------------------------


@dataclass
class Tally:
    """events in (distinct valid events offered), out (distinct in the ledger),
    lost (offered, not in the ledger), double-counted (ledger rows or view requests
    beyond one per event, plus ids ledgered that were never offered)."""

    case: str
    events_in: int
    events_out: int
    lost: int
    double_counted: int
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extras = "".join(f", {k} {v}" for k, v in self.extra.items())
        return (
            f"RELIABILITY {self.case}: events in {self.events_in}, out {self.events_out}, "
            f"lost {self.lost}, double-counted {self.double_counted}{extras}"
        )

    def report(self) -> Tally:
        print(self.line())
        path = os.environ.get("SPENDSTREAM_RELIABILITY_REPORT")
        if path:
            record = {
                "case": self.case,
                "in": self.events_in,
                "out": self.events_out,
                "lost": self.lost,
                "double_counted": self.double_counted,
                **{k: str(v) for k, v in self.extra.items()},
            }
            with open(path, "ab") as handle:
                handle.write(orjson.dumps(record) + b"\n")
        return self


# -- the stack -------------------------------------------------------------------


def merge_targets(into: dict[int, int], more: dict[int, int]) -> dict[int, int]:
    for partition, offset in more.items():
        into[partition] = max(into.get(partition, 0), offset)
    return into


async def publish_positions(
    bootstrap: str,
    lines: Sequence[bytes | None],
    *,
    topic: str = USAGE_TOPIC,
    keys: Sequence[bytes | None] | None = None,
    partition: int | None = None,
) -> list[tuple[int, int]]:
    """Publish each line as one message (None: a null value, a tombstone) and return
    each message's (partition, offset) from the broker's acknowledgement."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=4 * 1024 * 1024,
        acks="all",
    )
    await producer.start()
    positions: list[tuple[int, int]] = []
    try:
        pending = []
        for index, line in enumerate(lines):
            key = keys[index] if keys is not None else None
            if line is None and key is None:
                key = b"null-value"  # Kafka needs a key or a value
            pending.append(await producer.send(topic, line, key=key, partition=partition))
            if len(pending) >= 10_000:
                positions += [(m.partition, m.offset) for m in await asyncio.gather(*pending)]
                pending = []
        positions += [(m.partition, m.offset) for m in await asyncio.gather(*pending)]
    finally:
        await producer.stop()
    return positions


def targets_of(positions: Iterable[tuple[int, int]]) -> dict[int, int]:
    targets: dict[int, int] = {}
    for partition, offset in positions:
        targets[partition] = max(targets.get(partition, 0), offset + 1)
    return targets


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class WorkerExited(Exception):
    """The worker process ended while a case waited on it."""


class FaultStack(RunningStack):
    """`RunningStack` plus the fault and accounting helpers of the reliability suite."""

    def __init__(
        self, data_dir: Path, extra_env: dict[str, str] | None = None, *, kafka: bool = False
    ) -> None:
        self.extra_env = dict(extra_env or {})
        self.targets: dict[int, int] = {}
        self.restarts = 0
        try:
            super().__init__(data_dir, self.extra_env, kafka=kafka)
            self._http = httpx.Client(timeout=30, headers=analyst_headers(data_dir))
            self.wait_queryable()
        except BaseException:
            if hasattr(self, "stack"):
                self.stack.stop()
            raise

    # publishing

    def publish(
        self, lines: Sequence[bytes | None], keys: Sequence[bytes | None] | None = None
    ) -> list[tuple[int, int]]:
        positions = asyncio.run(publish_positions(self.bootstrap, lines, keys=keys))
        merge_targets(self.targets, targets_of(positions))
        return positions

    def committed(self) -> int:
        async def read() -> int:
            reader = GroupProgressReader(self.bootstrap, GROUP, USAGE_TOPIC)
            await reader.start()
            try:
                return (await reader.read(self.targets)).committed
            finally:
                await reader.stop()

        return asyncio.run(read())

    def committed_offsets(self) -> dict[int, int | None]:
        """The group's committed offset per usage partition, as the broker answers."""

        async def read() -> dict[int, int | None]:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=GROUP, enable_auto_commit=False
            )
            await consumer.start()
            try:
                await consumer.topics()  # fetches metadata
                partitions = consumer.partitions_for_topic(USAGE_TOPIC) or set()
                return {
                    p: await consumer.committed(TopicPartition(USAGE_TOPIC, p))
                    for p in sorted(partitions)
                }
            finally:
                await consumer.stop()

        return asyncio.run(read())

    def lag(self) -> int:
        return sum(self.targets.values()) - self.committed()

    def wait_consumed(self, timeout: float = 300.0) -> None:
        """Until the consumer group committed every offset published so far."""
        deadline = time.monotonic() + timeout
        while True:
            # Neither is an AssertionError: a strict xfail must not take them for its bug.
            if self.worker.process.poll() is not None:
                raise WorkerExited(
                    f"worker exited with code {self.worker.process.returncode}: {self.log_tail()}"
                )
            lag = self.lag()
            if lag == 0:
                return
            if time.monotonic() > deadline:
                raise WaitTimeout(
                    f"{lag} messages still unconsumed after {timeout}s; {self.stall_report()}"
                )
            time.sleep(0.25)

    def stall_report(self) -> str:
        """Enough to tell a stuck group from a stuck worker without the run's files: the
        group's offsets, what the worker holds and has read, its last warnings, and
        where its coroutines wait (Faust's worker dumps every task's stack to its log on
        SIGUSR1; no dump at all means its event loop is blocked)."""
        stats = self.worker.stats() or {}
        log = self.newest_log()
        before = log.stat().st_size if log else 0
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.worker.process.pid, signal.SIGUSR1)
        size, deadline = -1, time.monotonic() + 20
        while log and size != log.stat().st_size and time.monotonic() < deadline:
            size = log.stat().st_size  # the dump holds every frame's locals: megabytes
            time.sleep(1)
        dump = log.read_bytes()[before:].decode(errors="replace") if log else ""
        frames = (line.strip() for line in dump.splitlines())
        waits = sorted({f for f in frames if f.startswith('File "') and "/streams/" in f})
        return (
            f"published {self.targets}, committed {self.committed_offsets()}; worker "
            f"assigned {stats.get('assigned')}, read {stats.get('messages')}; last warnings: "
            + " | ".join(w[:240] for w in self.logged("WARNING")[-6:])
            + f"; our frames in its task dump ({len(dump)} chars): "
            + " | ".join(w.split("/streams/")[1] for w in waits[:30])
        )

    # worker process

    @property
    def pid(self) -> int:
        return int(self.worker.process.pid)

    def kill_worker(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed, the kernel frees the data dir."""
        process = self.worker.process
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def start_worker(self, extra_env: dict[str, str] | None = None) -> None:
        self.worker = self.stack.start_worker({**self.extra_env, **(extra_env or {})})
        self.stack.wait_ready(self.worker, timeout=120)
        self.url = f"http://127.0.0.1:{self.worker.web_port}"
        self.restarts += 1
        self.wait_queryable()

    def wait_queryable(self, timeout: float = 120.0) -> None:
        """/stats answers before the ledger is open; queries need the ClickHouse handle."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.query("SELECT 1")
                return
            except Exception:
                if self.worker.process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def newest_log(self) -> Path | None:
        """The newest worker's log (each restart writes worker-N.log)."""
        logs = sorted(self.settings.data_dir.glob("worker*.log"), key=lambda p: p.stat().st_mtime)
        return logs[-1] if logs else None

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the newest worker's log."""
        log = self.newest_log()
        if log is None:
            return ""
        text = log.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def logged(self, text: str) -> list[str]:
        """Every worker log line (all restarts) that contains `text`."""
        return [
            line
            for log in sorted(self.settings.data_dir.glob("worker*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if text in line
        ]

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    # worker endpoints

    def get(self, path: str) -> httpx.Response:
        return self._http.get(f"{self.url}{path}")

    def stats(self) -> dict[str, Any]:
        return dict(self.get("/stats").json())

    def health(self) -> tuple[int, dict[str, Any]]:
        response = self.get("/health")
        return response.status_code, dict(response.json())

    def month_to_date(self, tenant_id: str, timeout: float = 90.0) -> Decimal:
        """The tenant's in-stream month total, once the worker's tables are recovered
        (it answers 503 "recovering" until then); NaN, equal to nothing, if they are
        still recovering after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.get(f"/v1/limits/{tenant_id}")
            if response.status_code != 503:
                return Decimal(response.json()["month_to_date_usd"])
            assert response.json()["status"] == "recovering"
            if time.monotonic() > deadline:
                return Decimal("NaN")
            time.sleep(0.2)

    # ledger accounting

    def ledger_rows_by_id(self, like: str = "%") -> dict[str, int]:
        """request_id → rows in `usage_ledger` WITHOUT FINAL (a duplicate row shows)."""
        rows = self.query(
            "SELECT request_id, count() FROM usage_ledger "
            f"WHERE request_id LIKE '{like}' GROUP BY request_id"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def ledger_cost(self, like: str = "%") -> Decimal:
        return Decimal(
            self.query(
                f"SELECT sum(cost_usd) FROM usage_ledger FINAL WHERE request_id LIKE '{like}'"
            )[0][0]
        )

    def ledger_month_by_tenant(self, like: str = "%") -> dict[str, Decimal]:
        rows = self.query(
            "SELECT tenant_id, sum(cost_usd) FROM usage_ledger FINAL "
            "WHERE toStartOfMonth(timestamp) = toStartOfMonth(now64(3, 'UTC')) "
            f"AND tenant_id LIKE '{like}' GROUP BY tenant_id"
        )
        return {str(r[0]): Decimal(r[1]) for r in rows}

    def in_stream_month_by_tenant(self, tenants: Iterable[str]) -> dict[str, Decimal]:
        return {tenant: self.month_to_date(tenant) for tenant in tenants}

    def wait_in_stream(
        self, expected: dict[str, Decimal], timeout: float = 90.0
    ) -> dict[str, Decimal]:
        """The in-stream month totals once they equal `expected`, or the last values
        read (the spend agent trails the ingest agent by a costed message)."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(1.0, deadline - time.monotonic())
            seen = {tenant: self.month_to_date(tenant, left) for tenant in expected}
            if seen == expected or time.monotonic() > deadline:
                return seen
            time.sleep(0.5)

    def view_totals(self) -> dict[str, tuple[Decimal, int | None]]:
        """Every view and rollup state table with a cost column: its total cost and,
        where it has one, its total requests (one query, summed inside the worker)."""
        names = {
            str(r[0]): str(r[1])
            for r in self.query(
                "SELECT name, engine FROM system.tables WHERE database = currentDatabase() "
                "AND (engine LIKE '%View%' OR name LIKE '%\\_daily' OR name LIKE '%\\_hourly' "
                "OR name LIKE '%\\_state')"
            )
        }
        columns: dict[str, set[str]] = {}
        for table, column in self.query(
            "SELECT table, name FROM system.columns WHERE database = currentDatabase() "
            "AND name IN ('cost_usd', 'requests', 'BilledCost', 'dimension')"
        ):
            columns.setdefault(str(table), set()).add(str(column))
        parts = []
        for name, engine in sorted(names.items()):
            have = columns.get(name, set())
            cost = (
                "cost_usd" if "cost_usd" in have else "BilledCost" if "BilledCost" in have else ""
            )
            if engine == "MaterializedView" or not cost:
                continue
            requests = "toInt64(sum(requests))" if "requests" in have else "toInt64(-1)"
            if "dimension" in have:
                # attribution_hourly counts each ledger row once per dimension: each
                # dimension on its own must total the ledger.
                parts.append(
                    f"SELECT concat('{name}[', dimension, ']'), toString(sum({cost})), "
                    f"{requests} FROM {name} GROUP BY dimension"
                )
            else:
                parts.append(f"SELECT '{name}', toString(sum({cost})), {requests} FROM {name}")
        rows = self.query(" UNION ALL ".join(parts))
        return {
            str(name): (Decimal(cost), None if int(requests) < 0 else int(requests))
            for name, cost, requests in rows
        }

    def dirty_days(self) -> int:
        return int(self.query("SELECT count() FROM ledger_dirty_days")[0][0])

    def dead_letters(self) -> dict[tuple[int, int, int], str]:
        """(partition, offset, element_index) → reason, this stack's log epoch, FINAL."""
        rows = self.query(
            "SELECT partition, offset, element_index, reason FROM dead_letters FINAL "
            f"WHERE log_epoch = '{self.stack.log_epoch}' AND topic = '{USAGE_TOPIC}'"
        )
        return {(int(p), int(o), int(e)): str(reason) for p, o, e, reason in rows}

    def stop(self) -> None:
        """Teardown only: SIGKILL the worker (a graceful stop costs seconds and proves
        nothing here), then stop the broker."""
        self._http.close()
        for worker in self.stack.workers:
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGKILL)
                worker.process.wait(timeout=30)
        super().stop()


def tally_ledger(
    case: str, stack: FaultStack, expected: Expectation, like: str = "%", **extra: Any
) -> Tally:
    rows = stack.ledger_rows_by_id(like)
    present = set(rows)
    lost = len(expected.ids - present)
    surplus_rows = sum(n - 1 for n in rows.values())
    unexpected = len(present - expected.ids)
    return Tally(
        case,
        events_in=len(expected.ids),
        events_out=len(present & expected.ids),
        lost=lost,
        double_counted=surplus_rows + unexpected,
        extra=extra,
    )


OUTAGE_FILE_ENV = "SPENDSTREAM_FAULT_SINK_OUTAGE_FILE"


@pytest.fixture
def fault_stack(tmp_path: Path) -> Iterator[Any]:
    """A factory: `fault_stack(env)` starts a fresh stack; all are stopped at the end."""
    started: list[FaultStack] = []

    def start(extra_env: dict[str, str] | None = None, *, kafka: bool = False) -> FaultStack:
        data_dir = tmp_path / f"data-{len(started)}"
        data_dir.mkdir()
        stack = FaultStack(data_dir, extra_env, kafka=kafka)
        started.append(stack)
        return stack

    try:
        yield start
    finally:
        for stack in started:
            stack.stop()


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """One stack for the fast cases that do not break it (a worker start costs ~15 s):
    each case uses its own request_id and tenant prefix and compares deltas. The outage
    hook is armed (the file does not exist until the outage case creates it)."""
    root = tmp_path_factory.mktemp("shared")
    data_dir = root / "data"
    data_dir.mkdir()
    stack = FaultStack(data_dir, {OUTAGE_FILE_ENV: str(root / "sink-outage")})
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def case_stack(request: pytest.FixtureRequest, fault_stack: Any, tmp_path: Path) -> FaultStack:
    """The shared stack for a fast case, a fresh one for a `reliability` case."""
    if request.node.get_closest_marker("reliability") is None:
        stack: FaultStack = request.getfixturevalue("shared_stack")
        assert stack.worker.process.poll() is None, "the shared worker died in an earlier case"
        return stack
    return fault_stack({OUTAGE_FILE_ENV: str(tmp_path / "sink-outage")})


@dataclass(frozen=True)
class Snapshot:
    """Totals before a case, so a case on the shared stack measures its own change."""

    views: dict[str, tuple[Decimal, int | None]]
    stats: dict[str, Any]

    @classmethod
    def take(cls, stack: FaultStack, views: bool = True) -> Snapshot:
        return cls(stack.view_totals() if views else {}, stack.stats())

    def view_deltas(self, after: Snapshot) -> dict[str, tuple[Decimal, int | None]]:
        deltas = {}
        for name, (cost, requests) in after.views.items():
            old_cost, old_requests = self.views.get(name, (Decimal(0), 0))
            deltas[name] = (
                cost - old_cost,
                None if requests is None else requests - (old_requests or 0),
            )
        return deltas

    def stat(self, after: Snapshot, key: str) -> int:
        return int(after.stats[key]) - int(self.stats[key])

    def dead_letters(self, after: Snapshot) -> dict[str, int]:
        before = self.stats["dead_letters"]
        return {
            reason: count - before.get(reason, 0)
            for reason, count in after.stats["dead_letters"].items()
            if count != before.get(reason, 0)
        }
