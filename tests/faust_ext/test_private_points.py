"""Each Faust/aiokafka internal that streams/faust_ext relies on, checked against the
installed libraries (faust-streaming 0.15.3 and aiokafka 0.14.0 when written): a
test here fails when an upgrade moves one, instead of the worker misbehaving."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from faust.tables import TableManager
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.worker import Worker

from streams.faust_ext.app import (
    LogEndConsumer,
    LogEndTransport,
    PromptTableManager,
    ShortWaitConsumerThread,
    SpendstreamApp,
    broker_url,
)
from streams.faust_ext.batched_table import BatchedTable
from streams.faust_ext.progress import forget_old_log, offset_lag, tables_ready
from streams.faust_ext.worker import StoppingWorker
from streams.kafka.tuning import FETCH_MAX_WAIT_MS


def app() -> SpendstreamApp:
    # No broker is contacted: building the transport, consumer and tables is local.
    return SpendstreamApp("faust-ext-probe", broker=broker_url("127.0.0.1:1"), store="memory://")


def test_the_broker_url_selects_our_transport_through_fausts_registry() -> None:
    assert faust.transport.by_url(broker_url("127.0.0.1:9092")) is LogEndTransport
    probe = app()
    assert isinstance(probe.transport, LogEndTransport)
    assert isinstance(probe.producer_transport, LogEndTransport)
    assert probe.transport.Consumer is LogEndConsumer


def test_new_consumer_thread_is_how_faust_makes_the_consumer_thread() -> None:
    method = faust_aiokafka.Consumer._new_consumer_thread
    assert list(inspect.signature(method).parameters) == ["self"]
    assert "self._new_consumer_thread()" in inspect.getsource(ThreadDelegateConsumer.__init__)


def test_create_worker_consumer_still_builds_the_consumer_with_a_fixed_fetch_wait() -> None:
    method = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
    assert list(inspect.signature(method).parameters) == ["self", "transport"]
    caller = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread._create_consumer)
    assert "self._create_worker_consumer(transport)" in caller
    # If Faust grows a setting for it, use the setting instead of this override.
    assert "fetch_max_wait_ms=1500" in inspect.getsource(method)


def test_aiokafka_reads_fetch_max_wait_ms_from_its_attribute_at_start() -> None:
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(
        AIOKafkaConsumer.__init__
    )
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


async def test_the_worker_consumer_asks_for_the_short_fetch_wait() -> None:
    probe = app()
    probe.Table("probe", default=None, partitions=1)
    thread = probe.consumer._thread
    assert isinstance(thread, ShortWaitConsumerThread)
    consumer = thread._create_worker_consumer(probe.transport)
    try:
        assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
    finally:
        await consumer.stop()


async def test_tables_ready_follows_the_table_managers_recovery_event() -> None:
    probe = app()
    completed = probe.tables.recovery.completed  # type: ignore[attr-defined]
    assert isinstance(completed, asyncio.Event)
    assert not tables_ready(probe)
    completed.set()
    assert tables_ready(probe)


def test_offset_lag_reads_the_monitors_offset_maps() -> None:
    probe = app()
    monitor = probe.monitor
    assert isinstance(monitor.tp_end_offsets, dict)
    assert isinstance(monitor.tp_committed_offsets, dict)
    monitor.tp_end_offsets[TP("costed", 0)] = 10
    monitor.tp_end_offsets[TP("costed", 1)] = 3
    monitor.tp_committed_offsets[TP("costed", 0)] = 4
    assert offset_lag(probe) == {("costed", 0): 6, ("costed", 1): 3}


def test_a_batched_write_lands_in_the_tables_store_with_no_changelog_record_yet() -> None:
    probe = app()
    table = probe.Table("probe", default=None, partitions=1)
    batched = BatchedTable(table)
    batched["acme"] = {"usd": "1.5"}
    # Faust reads the value back from the store it recovers into...
    assert table["acme"] == {"usd": "1.5"}
    assert dict(table.data) == {"acme": {"usd": "1.5"}}
    # ...and the record waits for `flush` (no changelog send on assignment).
    assert batched.pending == {0: {"acme": {"usd": "1.5"}}}
    del batched["acme"]
    assert "acme" not in table.data
    assert batched.pending == {0: {"acme": None}}


def test_the_first_stop_signal_runs_stop_on_signal_as_the_stop_future() -> None:
    # StoppingWorker drains inside `_stop_on_signal`: it must be what the first signal
    # schedules, once, and what the worker waits on before its loop closes.
    schedule = inspect.getsource(Worker._schedule_shutdown)
    assert "if not self._signal_stop_time" in schedule
    assert "self._stop_on_signal(signal)" in schedule
    assert list(inspect.signature(Worker._stop_on_signal).parameters) == ["self", "signal"]
    assert "run_until_complete(self._signal_stop_future)" in inspect.getsource(
        Worker.stop_and_shutdown
    )


def test_the_loop_closes_after_the_sentinel_task_which_the_stopping_worker_shortens() -> None:
    # StoppingWorker overrides `_sentinel_task` (mode sleeps 1 s there at every stop):
    # mode must still run it on the loop, once every service has stopped, before closing.
    shutdown = inspect.getsource(Worker._shutdown_loop)
    assert "ensure_future(self._sentinel_task()" in shutdown
    assert shutdown.index("_sentinel_task") < shutdown.index("self.loop.close()")
    assert list(inspect.signature(Worker._sentinel_task).parameters) == ["self"]
    assert inspect.iscoroutinefunction(StoppingWorker._sentinel_task)
    assert StoppingWorker._sentinel_task is not Worker._sentinel_task


def test_forget_old_log_drops_the_consumers_ack_bookkeeping_of_a_partition() -> None:
    """Faust ignores acks below a partition's committed offset: with the old log's
    offset kept, a new log's offsets would never be committed."""
    probe = app()
    consumer: Any = probe.consumer
    tp, other = TP("costed", 0), TP("costed", 1)
    for partition in (tp, other):
        consumer._committed_offset[partition] = 40
        consumer._acked[partition].extend([41, 42])
        consumer._acked_index[partition].update({41, 42})
        consumer._gap[partition].addi(44, 46)
    forget_old_log(probe, [tp])
    assert consumer._committed_offset[tp] is None
    assert not consumer._acked[tp] and not consumer._acked_index[tp] and not consumer._gap[tp]
    assert consumer._committed_offset[other] == 40 and consumer._acked[other] == [41, 42]


def test_fausts_scan_marks_go_through_the_module_attribute_we_replace() -> None:
    """streams/faust_ext/app.py replaces `faust.utils.venusian.attach` (1.1 s of the
    worker's start): Faust must call it through that module, and only a scan
    (`autodiscover`, off here) reads the marks."""
    from faust.app import base
    from faust.utils import venusian

    from streams.faust_ext.app import _no_scan_mark

    assert base.venusian is venusian and venusian.attach is _no_scan_mark
    for decorator in (faust.App.agent, faust.App._task, faust.App.page, faust.App.service):
        assert "venusian.attach(" in inspect.getsource(decorator)
    assert "venusian.Scanner()" in inspect.getsource(faust.App.discover)
    assert app().conf.autodiscover is False


def test_the_table_manager_still_sleeps_a_second_then_starts_what_ours_starts_at_once() -> None:
    """`PromptTableManager.on_start` is Faust's without its first second (T5): the rest
    of Faust's must still be exactly the channels' update and the recovery's start."""
    source = inspect.getsource(TableManager.on_start)
    assert "await self.sleep(1.0)" in source
    ours = inspect.getsource(PromptTableManager.on_start)
    for step in ("await self._update_channels()", "await self.recovery.start()"):
        assert step in source and step in ours
    probe = app()
    assert isinstance(probe.tables, PromptTableManager)
