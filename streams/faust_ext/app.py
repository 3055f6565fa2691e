"""`SpendstreamApp`: the Faust app, adjusted where the embedded broker or the
throughput targets need it.

Log-end offsets for table recovery, read from a fetch response. Faust recovers a
table by reading its changelog up to the high-water mark that ListOffsets(latest)
answers. The embedded broker answers the base offset of the last
record batch plus one: a changelog whose last batch holds 37 records reports 75 for a
log that ends at 111, the tables come back without their last updates, and in-stream
totals fall below the ledger for good (reliability finding 1). A Fetch response of
the same broker carries the right high-water mark, so the mark ListOffsets gave is
checked by fetching from just below it. On a broker that answers right, the fetch
confirms the same number.

Fetch wait. The embedded broker holds a Fetch for its whole max wait even when records
arrive meanwhile (measured: 1.23 s from send to receive with Faust's fixed 1,500 ms,
37 ms with 100 ms). Each costed message would wait that long before the spend agent
and its detectors see it, so the worker's consumer asks for `FETCH_MAX_WAIT_MS`. A
busy consumer never waits: records are already there when it fetches.

Early ingest. The ingest service needs no table, so it starts with the app instead of
after table recovery (`SpendstreamApp.ingest`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerT
from mode import ServiceT

K = TypeVar("K", bound=tuple[str, int])

FETCH_SECONDS = 5.0
FETCH_MAX_WAIT_MS = 100
log = logging.getLogger(__name__)


async def fetched_log_ends(bootstrap: str, listed: Mapping[K, int | None]) -> dict[K, int | None]:
    """`listed`: partition → the end offset ListOffsets answered. Returns the larger of
    it and the high-water mark of a fetch from just below it."""
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
        for tp, partition in probe.items():
            fetched, current = consumer.highwater(partition), ends[tp]
            if fetched is not None and current is not None and fetched > current:
                ends[tp] = fetched
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

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ShortWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ShortWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes fetch_max_wait_ms=1500 with no setting to change it; aiokafka
        # reads the attribute when the consumer starts, which is after this.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class LogEndTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[ConsumerT]] = LogEndConsumer


class SpendstreamApp(faust.App):
    """A Faust app whose table recovery reads changelogs to their true end, and whose
    ingest service starts with the app instead of after table recovery."""

    ingest: ServiceT | None = None

    def _new_transport(self) -> Any:
        return LogEndTransport(self.conf.broker_consumer, self)

    def on_init_dependencies(self) -> Iterable[ServiceT]:
        # `app.service` would start it after the tables recover (seconds: a group join
        # and the changelog reads). Ingest needs no table: the ledger and the costed
        # topic do not wait for them. Last, so the producer it publishes with is up.
        dependencies = list(super().on_init_dependencies())
        return [*dependencies, self.ingest] if self.ingest is not None else dependencies
