"""The spend agent: costed events → spend tables → detectors → alerts, on Faust.

Registered on the Faust app by `register_spend_agent`. Costed messages are keyed
by tenant and hold that tenant's rows of one ingest batch; the tables are keyed
by tenant first so their changelogs follow the stream's partitions, and recover
from them after a restart. Alert delivery runs off this path, from a queue.

Only the Faust plumbing is here: taking lists, flushing table writes before offsets
are committed, reading a partition again, the timers and the limits page. What is
done with the rows is `SpendState` (streams/spend/state.py), and what is done with
the findings is the incident policy (streams/spend/incidents.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import faust
import orjson
from faust.types import TP, EventT, StreamT

from schemas.spend_config import SpendConfig
from streams.alerting.acknowledgements import AckLinks
from streams.alerting.wiring import build_alerting
from streams.faust_ext.batched_table import BatchedTable
from streams.faust_ext.progress import forget_old_log, tables_ready
from streams.kafka.admin import ClusterIdentity
from streams.retrying import until_done
from streams.settings import Settings
from streams.spend.coverage import Coverage, costed_partition, mark_key, millis
from streams.spend.monitor import SpendMonitor, warm_up_online
from streams.spend.progress import CostedProgress
from streams.spend.state import SpendState
from streams.spend.tables import LedgerBase, SpendTables, key_tenant

log = logging.getLogger(__name__)

# The agent takes costed messages by the list: each tenant's rows of a list are counted
# at once and each changed key is written to its changelog once, however many messages
# touched it. A list closes when full or after the wait, which bounds the latency added.
TAKE_MAX_MESSAGES = 1000
TAKE_WITHIN_SECONDS = 0.1
# How often the agent compares each costed partition's log end with how far it has
# counted; a partition behind its end with no progress since the last look is read
# again (streams/spend/progress.py).
STALL_CHECK_SECONDS = 5.0


def tenant_rows(
    events: Sequence[EventT],
) -> tuple[dict[tuple[str, int], list[dict[str, Any]]], int]:
    """The costed rows of `events` by tenant and costed partition, in order, each source
    position once (and how many repeated one): a batch re-published after an ingest
    crash may share the list with its first publication, and the tables' marks only
    skip what earlier lists held."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    repeated = 0
    seen: set[tuple[Any, ...]] = set()
    for event in events:
        key = (bytes(event.key or b"").decode(), event.message.partition)
        rows = grouped.setdefault(key, [])
        for row in orjson.loads(event.value):
            position = (
                row.get("source_log", ""),
                row["source_partition"],
                row["source_offset"],
                row.get("source_index", 0),
            )
            if position in seen:
                repeated += 1
                continue
            seen.add(position)
            rows.append(row)
    return grouped, repeated


@dataclass
class ListFlags:
    counting: bool = False  # inside a list: waiting on its table writes is no stall
    needs_index: bool = True  # tables recovered (start, rebalance): index them first
    # On Kafka, tables recovered (start, rebalance): check each costed partition's mark
    # and read its base from the ledger (streams/spend/coverage.py) before counting.
    needs_cover: bool = False
    # The cluster whose costed log the agent's positions and progress record refer to.
    costed_cluster: str | None = None


def register_spend_agent(
    app: faust.App,
    settings: Settings,
    config: SpendConfig,
    embedded: bool,
    before_first_list: Callable[[], Awaitable[None]] | None = None,
    may_read_limits: Callable[[Any, str], bool] = lambda request, tenant_id: False,
    ack_links: AckLinks | None = None,
    covered_base: Callable[[Coverage, bool], Awaitable[LedgerBase]] | None = None,
) -> SpendState:
    """The agent, its timers and `GET /v1/limits/{tenant_id}` on `app`. `before_first_list`
    is awaited once before the first list: the worker wires the alerts table there, so
    that no alert raised at start is missing from it. `may_read_limits(request, tenant)`
    says whether the caller may read the tenant's limits. On Kafka (no log epoch start
    in `settings`), `covered_base(coverage, fresh)` reads the base of the costed
    partitions `coverage` names from the ledger; `fresh`: a mark was written just now,
    so the rows priced before it must be ledgered first."""

    def table(name: str) -> BatchedTable:
        return BatchedTable(app.Table(name, default=None, partitions=settings.topic_partitions))

    warm_up_online()
    batched = [table("spend_hourly"), table("spend_totals"), table("run_cost")]
    tables = SpendTables(*batched)
    progress_table = table("costed_progress")
    progress = CostedProgress(progress_table)
    flags = ListFlags()
    state = SpendState(
        config=config,
        tables=tables,
        monitor=SpendMonitor(config),
        alerting=build_alerting(config, embedded=embedded, ack_links=ack_links),
    )
    if not settings.in_memory_broker:
        if covered_base is None:
            raise ValueError("on Kafka the spend agent needs covered_base")
        state.coverage = Coverage()  # no partition known yet: /v1/limits answers 503
        flags.needs_cover = True
    costed_topic = app.topic(settings.costed_topic, value_serializer="raw", key_serializer="raw")
    identity: ClusterIdentity | None = None  # made on the worker's loop, at first use
    # A list is counted, or the costed log followed to a new one, never both at once:
    # a list's progress record written after a restart would name the old log's offsets.
    one_at_a_time = asyncio.Lock()

    async def durably(*flushes: Callable[[], Awaitable[None]]) -> None:
        # Retried in place, never raised: a failed flush keeps its records for the next
        # try, and a crashed agent would leave the list's events unacknowledged.
        async def flush_all() -> None:
            # Every flush settled before a retry: one still in flight has taken its
            # records, and a retry would find nothing to send and call them durable.
            results = await asyncio.gather(*(f() for f in flushes), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

        await until_done(flush_all, log, "spend table changelog write")

    async def read_again(partition: int, offset: int, why: str) -> None:
        log.warning("costed partition %d: %s; reading again from offset %d", partition, why, offset)
        state.rewinds += 1
        await app.consumer.seek(TP(settings.costed_topic, partition), offset)

    @app.agent(costed_topic, name="spend")
    async def spend(stream: StreamT[bytes]) -> None:
        await state.alerting.queue.start()
        # The cluster whose costed log this start's positions and progress refer to.
        await until_done(note_costed_cluster, log, "broker cluster id")
        if before_first_list is not None:
            await before_first_list()
        # Faust acks a taken list's events only after this body is done with it, so
        # their offsets are committed after the table writes are durable.
        taken = cast("faust.Stream[bytes]", stream).take_events(
            TAKE_MAX_MESSAGES, within=TAKE_WITHIN_SECONDS
        )
        async for events in taken:
            flags.counting = True
            try:
                async with one_at_a_time:
                    await count(events)
            finally:
                flags.counting = False

    async def count(events: Sequence[EventT]) -> None:
        """One taken list: its admitted events into the tables, then the progress record."""
        # Nothing is counted before the base from the ledger is in: the detectors'
        # history and every total start from it.
        await state.state_ready.wait()
        if flags.needs_cover:
            await until_done(cover, log, "spend state rebuild from the ledger")
        if flags.needs_index:
            # Tables recovered from their changelogs (at start or after a
            # rebalance): learn which keys each tenant owns before expiring any.
            tables.rebuild_index()
            flags.needs_index = False
        admitted = progress.admit(events)
        grouped, repeated = tenant_rows(admitted.events)
        state.skipped_redelivered += repeated
        for (tenant_id, partition), rows in grouped.items():
            if state.coverage is not None:
                rows, in_base = state.coverage.counted_rows(partition, rows)
                state.in_ledger_base += in_base
                state.rows_seen += in_base
                if not rows:
                    continue
            for table in batched:  # each key's record goes to its tenant's partition
                table.writing_to(partition)
            state.apply(tenant_id, rows)
        # One flush per list, every partition's records at once: a flush per tenant
        # waited a broker round trip (the producer's linger and more) per tenant.
        await durably(*(partial(table.flush, app) for table in batched))
        state.incidents.saw_new_calls()
        # After the values: a crash between the two counts the list again, and the
        # values' source-position marks skip what they already hold.
        for partition, offset in progress.reached(admitted.events).items():
            progress_table.writing_to(partition)[str(partition)] = offset
        await durably(partial(progress_table.flush, app))
        for partition, offset in admitted.rewind.items():
            await read_again(partition, offset, "a message was skipped")

    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        flags.needs_index = True
        flags.needs_cover = state.coverage is not None

    def drop_partition(partition: int) -> int:
        """Delete the recovered values of the partition's tenants (a changelog without
        its mark holds an unknown part of them); the caller flushes the tombstones."""
        dropped = 0
        for name, table in zip(("hourly", "totals", "runs"), batched, strict=True):
            table.writing_to(partition)
            for key in list(table):
                tenant_id = key_tenant(name, key)
                if costed_partition(tenant_id, settings.topic_partitions) == partition:
                    del table[key]
                    dropped += 1
        return dropped

    async def cover() -> None:
        """Each assigned costed partition's mark (written now where missing), then the
        base of those partitions from the ledger, unless it is the one held already."""
        partitions = sorted(
            tp.partition for tp in app.consumer.assignment() if tp.topic == settings.costed_topic
        )
        if not partitions:
            # No tenant's tables here (yet): limits stay 503 rather than read as $0.
            return
        marks: dict[int, int] = {}
        fresh = False
        for partition in partitions:
            mark = progress_table.get(mark_key(partition))
            if mark is None:
                dropped = drop_partition(partition)
                mark = millis(datetime.now(UTC))
                progress_table.writing_to(partition)[mark_key(partition)] = mark
                flushes = (*batched, progress_table)
                await durably(*(partial(table.flush, app) for table in flushes))
                log.warning(
                    "costed partition %d: its changelog holds no mark (a new consumer group, "
                    "or a changelog lost or truncated); its spend state begins again from "
                    "the ledger's rows ingested before now (%d recovered values dropped)",
                    partition,
                    dropped,
                )
                fresh = True
            marks[partition] = int(mark)
        coverage = Coverage(marks)
        held = state.coverage
        if held is None or held.since_ms != marks or not state.limits_ready.is_set():
            state.limits_ready.clear()
            assert covered_base is not None
            base = await covered_base(coverage, fresh)
            state.cover(base, coverage)
            log.info(
                "spend state of costed partitions %s read from the ledger: %d rows below "
                "their marks",
                partitions,
                base.rows,
            )
        flags.needs_cover = False
        flags.needs_index = True

    @app.timer(1.0)
    async def cover_assigned() -> None:
        # An idle worker gets no list: its limits must not wait for one.
        if not flags.needs_cover or not tables_ready(app) or not state.state_ready.is_set():
            return
        async with one_at_a_time:
            if not flags.needs_cover:
                return
            try:
                await cover()
            except Exception as exc:  # a timer that raises stops the worker: try next time
                log.warning("spend state rebuild from the ledger failed (%s); retrying", exc)

    app.on_partitions_assigned.connect(on_assigned)

    async def on_shutdown(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # After the consumer stopped (no list can raise an alert now): alerts queued are
        # delivered for a few seconds, the rest recorded as not delivered; and no task
        # is left for the worker's last wait on pending tasks.
        await state.alerting.queue.stop()
        if identity is not None:
            await identity.stop()

    app.on_before_shutdown.connect(on_shutdown)

    @app.timer(15.0)
    async def resolve_cleared() -> None:
        state.resolve_cleared(datetime.now(UTC))

    last_expected: dict[int, int | None] = {}

    async def costed_cluster() -> str:
        nonlocal identity
        if identity is None:
            identity = ClusterIdentity(settings.kafka_bootstrap, "spendstream-spend-identity")
        await identity.start()  # once: it returns at once when started
        return await identity.cluster_id()

    async def note_costed_cluster() -> None:
        flags.costed_cluster = await costed_cluster()

    async def follow_costed_log(partitions: list[TP]) -> bool:
        """True if the broker is another cluster than at the last look: a new costed log
        (the embedded in-memory broker restarted under this worker), whose offsets start
        again below the ones the agent holds. Every assigned partition is then read from
        the new log's start; the tables' marks, per source log, skip only what they
        counted of it."""
        known = flags.costed_cluster
        try:
            cluster = await costed_cluster()
            if known is None or cluster == known:
                flags.costed_cluster = cluster
                return False
            starts = await app.consumer.earliest_offsets(*partitions)
        except Exception as exc:  # a timer that raises stops the worker: look next time
            log.warning("costed log identity unavailable (%s); checking again later", exc)
            return False
        flags.costed_cluster = cluster
        for tp, offset in starts.items():
            progress_table.writing_to(tp.partition)
            progress.restart({tp.partition: offset})
        await durably(partial(progress_table.flush, app))
        forget_old_log(app, starts)
        for tp, offset in starts.items():
            await app.consumer.seek(tp, offset)
        log.warning(
            "the broker is another cluster (%s, was %s): a new costed log; reading "
            "costed partitions %s from its start",
            cluster,
            known,
            sorted(tp.partition for tp in starts),
        )
        return True

    @app.timer(STALL_CHECK_SECONDS)
    async def read_stalled_partitions_again() -> None:
        if not tables_ready(app):
            last_expected.clear()
            return
        if flags.counting:
            return  # a list's writes are pending (a slow broker): reading again would not help
        partitions = [tp for tp in app.consumer.assignment() if tp.topic == settings.costed_topic]
        if not partitions:
            return
        async with one_at_a_time:
            if await follow_costed_log(partitions):
                last_expected.clear()
                return
        try:
            ends = await app.consumer.highwaters(*partitions)
        except Exception as exc:  # a timer that raises stops the worker: look next time
            log.warning("costed log ends unavailable (%s); checking again later", exc)
            return
        stalled = progress.stalled({tp.partition: end for tp, end in ends.items()}, last_expected)
        last_expected.clear()
        last_expected.update({tp.partition: progress.expected(tp.partition) for tp in partitions})
        for partition, offset in stalled.items():
            await read_again(partition, offset, "behind its log end with no progress")

    @app.page("/v1/limits/{tenant_id}")
    async def limits(web: Any, request: Any, tenant_id: str) -> Any:
        if not may_read_limits(request, tenant_id):
            body = {"error": "the analyst token or an ingest key of this tenant is required"}
            return web.json(body, status=401, headers={"WWW-Authenticate": "Bearer"})
        # Until the tables are recovered from their changelogs and their base read from
        # the ledger a total would be partial (0 right after a start): a gateway
        # enforcing caps must not read it as spend.
        if not (tables_ready(app) and state.limits_ready.is_set()):
            body = {
                "tenant_id": tenant_id,
                "status": "recovering",
                "message": "in-stream spend state is being rebuilt; retry shortly",
            }
            return web.json(body, status=503, headers={"Retry-After": "1"})
        return web.json(state.limits(tenant_id, datetime.now(UTC)))

    return state
