"""`spendstream replay`: publish NDJSON lines through the embedded stack, wait until every
line is a ledger or dead-letter row, and report what changed in the ledger."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, BinaryIO

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from streams.analyst.retention import raw_retention_of
from streams.embedded.stack import EmbeddedStack, group_progress, raise_worker_failed
from streams.errors import ConfigError, SpendstreamError
from streams.ledger.connect import clickhouse_session
from streams.ledger.migrations import apply_migrations
from streams.ledger.remote import open_reader, peer_urls, running_stack
from streams.settings import Settings


@dataclass(frozen=True)
class LedgerTotals:
    rows: int
    unpriced: int  # calls to models with no price (estimated or not)
    cost: Decimal
    estimated: Decimal
    dead_letters: int


def ledger_totals(settings: Settings) -> LedgerTotals:
    with open_reader(settings) as client:
        retention = raw_retention_of(client)
        retained = (
            f"toDateTime(timestamp) + INTERVAL {retention.days} DAY > now()" if retention else "1"
        )
        rows, unpriced, cost, estimated = client.query(
            # Only rows within the raw retention: older ones are the TTL's to drop (at
            # insert or at the next merge) and are reported as rollup_only instead.
            "SELECT count(), countIf(cost_status != 'priced'), sum(cost_usd), "
            "sum(estimated_cost_usd) FROM usage_ledger FINAL "
            f"WHERE {retained}"
        ).result_rows[0]
        (dead,) = client.query("SELECT count() FROM dead_letters FINAL").result_rows[0]
    return LedgerTotals(int(rows), int(unpriced), Decimal(cost), Decimal(estimated), int(dead))


def read_lines(paths: list[str]) -> Iterator[bytes]:
    for path in paths:
        if path == "-":
            yield from _lines(sys.stdin.buffer)
            continue
        try:
            with open(path, "rb") as handle:
                yield from _lines(handle)
        except FileNotFoundError:
            raise ConfigError(f"replay file not found: {path}") from None


def _lines(handle: BinaryIO) -> Iterator[bytes]:
    for line in handle:
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line


async def publish(
    bootstrap: str, topic: str, lines: list[bytes], keys: list[bytes] | None = None
) -> dict[int, int]:
    """Publish every line as one message; returns partition → last offset + 1."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=2 * 1024 * 1024,
        acks="all",
    )
    await producer.start()
    targets: dict[int, int] = {}

    async def settle(pending: list[Any]) -> None:
        for metadata in await asyncio.gather(*pending):
            targets[metadata.partition] = max(
                targets.get(metadata.partition, 0), metadata.offset + 1
            )
        pending.clear()

    try:
        pending: list[Any] = []
        for index, line in enumerate(lines):
            key = keys[index] if keys is not None else None
            pending.append(await producer.send(topic, line, key=key))
            if len(pending) >= 10_000:
                await settle(pending)
        await settle(pending)
    finally:
        await producer.stop()
    return targets


EVENTS_PER_MESSAGE = 100
MESSAGE_BYTES = 512 * 1024


def _parsed(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _packed(lines: list[tuple[bytes, bool]]) -> list[bytes]:
    """Messages of up to EVENTS_PER_MESSAGE lines as one JSON array, as a gateway
    batches: the worker's cost per message is then shared by a hundred events. `lines`:
    (line, whether it is a JSON object), each line parsed once by the caller. Only
    objects are packed; any other line goes alone, so that it is dead-lettered with its
    own reason and its bytes as they were."""
    messages: list[bytes] = []
    batch: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if batch:
            messages.append(batch[0] if len(batch) == 1 else b"[" + b",".join(batch) + b"]")
            batch.clear()
            size = 0

    for line, is_object in lines:
        if not is_object or len(line) > MESSAGE_BYTES:
            flush()
            messages.append(line)
            continue
        if len(batch) >= EVENTS_PER_MESSAGE or size + len(line) > MESSAGE_BYTES:
            flush()
        batch.append(line)
        size += len(line) + 1
    flush()
    return messages


def pack_by_tenant(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Messages and their keys: each tenant's lines packed apart, in file order, keyed by
    the tenant. Unkeyed messages would go to partitions at random, and the worker would
    read one partition days ahead of another: a tenant's hours would reach the detectors
    out of event-time order, judged against a baseline missing most of its history, and
    differently on every replay. One key keeps a tenant on one partition, in order."""
    by_tenant: dict[bytes, list[tuple[bytes, bool]]] = {}
    for line in lines:
        event = _parsed(line)
        is_object = isinstance(event, dict)
        tenant = event.get("tenant_id") if is_object else None
        key = str(tenant).encode() if tenant else b""
        by_tenant.setdefault(key, []).append((line, is_object))
    messages: list[bytes] = []
    keys: list[bytes] = []
    for key, tenant_lines in by_tenant.items():
        packed = _packed(tenant_lines)
        messages.extend(packed)
        keys.extend([key] * len(packed))
    return messages, keys


class ProgressBar:
    def __init__(self, total: int) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty()

    def show(self, done: int) -> None:
        if not self.enabled or not self.total:
            return
        width = 30
        filled = int(width * done / self.total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def source_lines(
    paths: list[str], input_format: str = "canonical", ownership: dict[str, str] | None = None
) -> list[bytes]:
    """The messages to publish: NDJSON lines as they are, CSV rows as JSON objects,
    provider-shaped lines normalized to the contract (unmappable lines go as they are,
    and are dead-lettered by the worker with the contract's reason)."""
    from streams.embedded.csv_input import is_csv_path, read_csv_lines

    lines: list[bytes] = []
    for path in paths:
        lines.extend(read_csv_lines([path]) if is_csv_path(path) else read_lines([path]))
    if input_format == "canonical":
        return lines
    from schemas.normalizers import FORMATS, NormalizationError, normalize

    if input_format not in FORMATS:
        raise ConfigError(f"unknown --format {input_format!r}; choose from {', '.join(FORMATS)}")
    out = []
    for line in lines:
        try:
            out.append(
                orjson.dumps(
                    normalize(input_format, orjson.loads(line), **(ownership or {})), default=str
                )
            )
        except (orjson.JSONDecodeError, NormalizationError, TypeError, ValueError):
            out.append(line)
    return out


def wait_for_spend_agent(
    stats: Callable[[], dict[str, Any] | None], check: Callable[[], None], timeout: float
) -> dict[str, Any]:
    """The worker's stats once its spend agent has taken every row it ledgered and every
    alert it raised is recorded: a replay split in two runs then raises the same alerts
    as one run (the next run starts from the ledger, not from this one's in-flight
    events)."""
    deadline = time.monotonic() + timeout
    while True:
        check()
        current = stats() or {}
        done = int(current.get("spend_rows", 0)) >= int(current.get("ledgered", 0))
        if current and done and int(current.get("alerts_pending", 0)) == 0:
            return current
        if time.monotonic() > deadline:
            raise SpendstreamError("replay timed out waiting for the spend agent")
        time.sleep(0.2)


def run_replay(
    settings: Settings,
    paths: list[str],
    timeout: float = 3600.0,
    input_format: str = "canonical",
    ownership: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Through the running stack when one owns the data dir (its broker, its workers),
    else through a stack of its own for the time of the replay. Totals are the ledger's
    before and after: traffic the running stack ingests meanwhile counts too."""
    lines = source_lines(paths, input_format, ownership)
    running = (
        running_stack(settings.data_dir)
        if settings.resolved_clickhouse_url.startswith("chdb:")
        else None
    )
    if running is not None:
        before = ledger_totals(settings)
        # Every worker's counters: the peers of `dev --workers N` drop duplicates too.
        urls = [running.url, *peer_urls(settings.data_dir)]
        stats_before = _summed_stats(urls) or {}
        messages, keys = pack_by_tenant(lines)
        targets = asyncio.run(publish(running.broker, settings.usage_topic, messages, keys))
        _wait_ledgered(settings, running.broker, targets, len(messages), timeout, lambda: None)
        stats = wait_for_spend_agent(partial(_summed_stats, urls), lambda: None, timeout)
        counts = _counted(stats, stats_before)
    else:
        with clickhouse_session(
            settings.resolved_clickhouse_url, settings.clickhouse_password
        ) as ch:  # also proves the data dir is free, with one clear line
            apply_migrations(ch.client)
        before = ledger_totals(settings)
        stack = EmbeddedStack(settings)
        try:
            stack.start_broker()
            worker = stack.start_worker()
            # Packed while the worker loads its modules and opens ClickHouse (seconds):
            # a million lines take about as long.
            messages, keys = pack_by_tenant(lines)

            def check_worker() -> None:
                if worker.process.poll() is not None:
                    raise_worker_failed(settings.data_dir, worker.process.returncode)

            targets = asyncio.run(publish(stack.bootstrap, settings.usage_topic, messages, keys))
            _wait_ledgered(settings, stack.bootstrap, targets, len(messages), timeout, check_worker)
            stats = wait_for_spend_agent(worker.stats, check_worker, timeout)
            counts = _counted(stats, {})
        finally:
            stack.stop()
    after = ledger_totals(settings)
    return {
        "read": len(lines),
        "ledgered": after.rows - before.rows,
        # Older than the ledger's raw retention: in the rollups (and the detectors'
        # history where it reaches), not in the raw ledger, whose TTL drops them.
        "rollup_only": counts["rollup_only"],
        "rollup_only_cost_usd": format(counts["rollup_only_cost_usd"], "f"),
        "duplicates": counts["duplicates"],
        "dead_lettered": after.dead_letters - before.dead_letters,
        "unpriced": after.unpriced - before.unpriced,
        "total_cost_usd": format(after.cost - before.cost, "f"),
        "estimated_cost_usd": format(after.estimated - before.estimated, "f"),
    }


def _stats(url: str) -> dict[str, Any] | None:
    response = httpx.get(f"{url}/stats", timeout=10)
    return dict(response.json()) if response.status_code == 200 else None


# The counters a replay reads, summed over the workers of a running stack.
SUMMED_STATS = (
    "duplicates",
    "rollup_only",
    "rollup_only_cost_usd",
    "ledgered",
    "spend_rows",
    "alerts_pending",
)


def _summed_stats(urls: list[str]) -> dict[str, Any] | None:
    """The workers' counters summed (a costed row may be counted by another worker than
    the one that ledgered it); None while one does not answer."""
    every = [_stats(url) for url in urls]
    if any(stats is None for stats in every):
        return None
    return {
        name: sum((Decimal(str(stats.get(name, 0))) for stats in every if stats), Decimal(0))
        for name in SUMMED_STATS
    }


def _counted(stats: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What the worker counted during the replay: duplicates dropped and rows older
    than the raw retention (its /stats since `before`)."""
    return {
        "duplicates": int(stats.get("duplicates", 0)) - int(before.get("duplicates", 0)),
        "rollup_only": int(stats.get("rollup_only", 0)) - int(before.get("rollup_only", 0)),
        "rollup_only_cost_usd": Decimal(str(stats.get("rollup_only_cost_usd", 0)))
        - Decimal(str(before.get("rollup_only_cost_usd", 0))),
    }


def _wait_ledgered(
    settings: Settings,
    bootstrap: str,
    targets: dict[int, int],
    total: int,
    timeout: float,
    check: Callable[[], None],
) -> None:
    """Until the ingest group has committed past every message published."""
    bar = ProgressBar(total)
    deadline = time.monotonic() + timeout
    while True:
        check()
        progress = asyncio.run(group_progress(bootstrap, settings.usage_topic, targets))
        bar.show(progress.committed)
        if progress.lag == 0:
            break
        if time.monotonic() > deadline:
            raise SpendstreamError(f"replay timed out with {progress.lag} messages pending")
        time.sleep(0.2)
    bar.close()
