"""`SpendstreamApp`: the Faust app, adjusted where the embedded broker or the
throughput targets need it.

Log-end offsets for table recovery, read from a fetch response. Faust recovers a
table by reading its changelog up to the high-water mark that ListOffsets(latest)
answers, and waits until it has received the record just below it. The embedded
broker's ListOffsets is not that mark: it answers from the record batches it stores,
not from the partition's high-water mark that its fetches serve up to.
- Short: the base offset of the last batch plus one. A changelog whose last batch
  holds 37 records reports 75 for a log that ends at 111; the tables came back without
  their last updates (reliability finding 2).
- Long: batches a fetch never serves. Records produced into a new broker before their
  topic exists there (a producer that lived through a broker restart sends with the
  old broker's metadata) are stored; the first metadata request that names the topic
  then creates it, which sets the partition's high-water mark back to 0. ListOffsets
  still lists those batches (an end of 1, 59, 204), fetches serve nothing below 0, and
  the recovery waited for ever for records no fetch brings (reliability finding 4).
So the end used is the high-water mark of a fetch from just below the listed end: what
the recovery's own fetches can reach. The listed end stays only where no fetch answers.
On a broker that answers right, the fetch confirms the same number.

Fetch wait. Faust's consumer asks for `FETCH_MAX_WAIT_MS` instead of its fixed
1,500 ms (streams/kafka/tuning.py says why).

Early ingest. The ingest service needs no table, so it starts with the app instead of
after table recovery (`SpendstreamApp.ingest`).

Prompt table start. Faust's table manager sleeps a second before it registers the
changelogs and starts the recovery, and every service after it waits: the app's
group subscription, then the ingest group's join. The tables here are all declared
when the app is built, so `PromptTableManager` starts at once (T5, `bench.cold_start`).

How each adjustment is plugged in: the transport through Faust's transport registry
(`TRANSPORT_SCHEME` in the broker URL) and its `Consumer` class attribute, both
public; the consumer's thread and the aiokafka consumer it creates through private
points, each marked PRIVATE below with the versions it was checked against
(faust-streaming 0.15.3, aiokafka 0.14.0); tests/faust_ext fails if one moves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.tables import TableManager
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT
from faust.utils import venusian as faust_venusian
from mode import ServiceT

from streams.kafka.tuning import FETCH_MAX_WAIT_MS

K = TypeVar("K", bound=tuple[str, int])

FETCH_SECONDS = 5.0
# The broker URL scheme that selects `LogEndTransport` in Faust's transport registry.
TRANSPORT_SCHEME = "spendstream"
log = logging.getLogger(__name__)


def broker_url(bootstrap: str) -> str:
    """The Faust `broker` setting for a Kafka bootstrap list ("host:port,...")."""
    return f"{TRANSPORT_SCHEME}://{bootstrap}"


# bootstrap -> the unserved records the probe last warned about
_unserved_said: dict[str, dict[Any, tuple[int | None, int]]] = {}


async def fetched_log_ends(bootstrap: str, listed: Mapping[K, int | None]) -> dict[K, int | None]:
    """`listed`: partition → the end offset ListOffsets answered. Returns, per partition,
    the high-water mark of a fetch from just below it (the end fetches serve up to,
    above or below the listed one), or the listed end where no fetch answered."""
    ends = dict(listed)
    probe = {tp: TopicPartition(*tp) for tp, end in listed.items() if end}
    if not probe:
        return ends
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
        consumer.assign(list(probe.values()))
        for tp, partition in probe.items():
            consumer.seek(partition, int(listed[tp] or 1) - 1)
        pending = set(probe.values())
        deadline = time.monotonic() + FETCH_SECONDS
        while pending and time.monotonic() < deadline:
            await consumer.getmany(*pending, timeout_ms=500)
            pending = {p for p in pending if consumer.highwater(p) is None}
        if pending:
            # Recovery then stops at the listed end, which can be short (see above).
            log.warning(
                "log-end probe: no fetch answer within %.0fs for %s; using the listed ends",
                FETCH_SECONDS,
                sorted(f"{p.topic}:{p.partition}" for p in pending),
            )
        unserved: dict[K, tuple[int | None, int]] = {}
        for tp, partition in probe.items():
            fetched = consumer.highwater(partition)
            if fetched is None:
                continue
            if fetched < int(listed[tp] or 0):
                unserved[tp] = (listed[tp], fetched)
            ends[tp] = fetched
        if unserved:
            # Said once per state of the log: the spend agent's stall check probes every
            # few seconds, and the same unserved records would fill the log.
            level = logging.DEBUG if unserved == _unserved_said.get(bootstrap) else logging.WARNING
            _unserved_said[bootstrap] = unserved
            log.log(
                level,
                "log-end probe: the broker lists records that its fetches do not serve "
                "(written before the topic existed on a new broker?); reading up to the "
                "served end: %s",
                ", ".join(f"{t}:{p} listed {a}, served {b}" for (t, p), (a, b) in unserved.items()),
            )
    except Exception:
        # Recovery must not crash on a probe: what ListOffsets said is still an answer.
        log.warning("log-end probe failed; using the broker's listed offsets", exc_info=True)
        return dict(listed)
    finally:
        await consumer.stop()
    return ends


class LogEndConsumer(faust_aiokafka.Consumer):
    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        listed = await super().highwaters(*partitions)
        bootstrap = ",".join(f"{url.host}:{url.port}" for url in self.app.conf.broker_consumer)
        ends = await fetched_log_ends(bootstrap, listed)
        return {tp: end for tp, end in ends.items() if end is not None}

    # PRIVATE (faust-streaming 0.15.3): `ThreadDelegateConsumer.__init__` calls
    # `_new_consumer_thread()` for the thread that owns the aiokafka consumer; no
    # setting or class attribute names the thread class.
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ShortWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ShortWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    # PRIVATE (faust-streaming 0.15.3): `_create_worker_consumer(transport)` builds the
    # worker's `AIOKafkaConsumer` with `fetch_max_wait_ms=1500` and no setting to
    # change it.
    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # PRIVATE (aiokafka 0.14.0): `AIOKafkaConsumer.__init__` keeps the argument in
        # `_fetch_max_wait_ms` and `start()` hands it to its `Fetcher`; the consumer is
        # started after this returns.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class LogEndTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[ConsumerT]] = LogEndConsumer


# Faust's transport registry (a name → "module:Class" mapping that Faust also fills
# from the `faust.transports` entry points): a broker URL with this scheme makes
# `App.transport` and `App.producer_transport` a `LogEndTransport`.
TRANSPORTS[TRANSPORT_SCHEME] = f"{__name__}:LogEndTransport"


def _no_scan_mark(*args: Any, **kwargs: Any) -> None:
    """Faust's decorators mark each agent, timer, page and service for venusian's scan
    (`App.discover`, run only with `autodiscover`, which no app here turns on). Each
    mark reads its caller's source frame, and `inspect.getmodule` takes a realpath of
    every loaded module: ~1.1 s for the worker's ~30 decorators, at every start."""


# PRIVATE (faust-streaming 0.15.3): faust.app.base calls `venusian.attach` through
# the `faust.utils.venusian` module (tests/faust_ext/test_private_points.py).
faust_venusian.attach = _no_scan_mark


class PromptTableManager(TableManager):
    async def on_start(self) -> None:
        # PRIVATE (faust-streaming 0.15.3): `TableManager.on_start` is this after a
        # one-second sleep, whose only use is to let tables be declared late (this app
        # declares them all before it starts: a late one raises "Too late to add tables").
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class SpendstreamApp(faust.App):
    """A Faust app whose ingest service starts with the app instead of after table
    recovery, and whose tables start at once. Give it `broker=broker_url(...)` for table
    recovery that reads changelogs to their true end."""

    ingest: ServiceT | None = None
    # Awaited on the first stop signal, before any service stops (StoppingWorker).
    drain: Callable[[], Awaitable[object]] | None = None

    def __init__(self, id: str, **options: Any) -> None:
        super().__init__(id, **{"TableManager": PromptTableManager, **options})

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        # `app.service` would start it after the tables recover (seconds: a group join
        # and the changelog reads). Ingest needs no table: the ledger and the costed
        # topic do not wait for them. Last, so the producer it publishes with is up.
        dependencies = list(super().on_init_dependencies())
        return [*dependencies, self.ingest] if self.ingest is not None else dependencies
