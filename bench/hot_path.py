"""Where a worker's time per event goes, stage by stage, without Kafka or Faust.

    python -m bench.hot_path [--quick]

In one process, on the same realistic events as T1/T2 (N = 20,000; --quick 5,000), in
batches of 2,000 events: decoding and validation as the worker does it
(`streams.ingest.batch_validation.decode_batch` on 2,000 events' messages; the model's
`decode_message` beside it for reference) of 100-event and of single-event messages,
de-duplication (hash, `new_mask`, `mark`), pricing (`price_events`, a batch at a time),
the costed messages (`orjson` of the rows grouped by tenant, as `publish_costed` sends
them) and their decoding plus `SpendTables.apply` and `SpendMonitor.observe` on plain
dicts (what the spend agent does, changelogs aside),
and `ClickHouseLedgerSink.write` into a fresh chdb, once with every migration (the
materialized views fire on each insert) and once with the ledger table alone. Faust's
own per-event cost is the T2 baseline, measured separately. Not a target: a map for
tuning. CPU time of this process is reported beside the wall time. The stages run
under the worker's garbage-collector settings.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.common import batched_messages, emit, loadavg, single_messages

BATCH = 2_000


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def per_event(seconds: float, count: int) -> float:
    return round(seconds / count * 1e6, 2)


def priced_rows(count: int) -> list[dict[str, Any]]:
    """`count` ledger rows as the worker's pipeline builds them from the realistic
    100-event messages (decoded, validated, priced a batch at a time), untimed."""
    from streams.cost.catalog import PriceCatalog
    from streams.cost.rows import SourcePosition, price_events
    from streams.ingest.batch_validation import decode_batch

    now = datetime.now(UTC)
    messages = batched_messages(count, 100)
    step = BATCH // 100
    events = [
        event
        for start in range(0, len(messages), step)
        for message_events, _ in decode_batch(messages[start : start + step], now)
        for event in message_events
    ]
    catalog = PriceCatalog.load()
    positions = [SourcePosition("spendstream.usage", 0, n) for n in range(count)]
    return [
        row
        for start in range(0, count, BATCH)
        for row in price_events(
            catalog, events[start : start + BATCH], positions[start : start + BATCH], now
        )
    ]


def create_ledger_table_only(client: Any) -> None:
    """The ledger table as the migrations leave it (later files add columns), without
    the views and the other tables."""
    from streams.ledger.migrations import migration_files, split_statements

    ledger_ddl = re.compile(r"\s*(CREATE TABLE IF NOT EXISTS|ALTER TABLE) usage_ledger\b")
    for _, sql in migration_files():
        for statement in split_statements(sql):
            if ledger_ddl.search(statement):
                client.command(statement)


def sink_cost(rows: list[dict[str, Any]], all_migrations: bool) -> dict[str, Any]:
    from streams.ledger.connect import clickhouse_session
    from streams.ledger.migrations import apply_migrations
    from streams.ledger.sink import ClickHouseExecutor, ClickHouseLedgerSink
    from streams.settings import chdb_url_for

    data_dir = Path(tempfile.mkdtemp(prefix="bench-sink-"))
    try:
        with clickhouse_session(chdb_url_for(data_dir)) as handle:
            if all_migrations:
                apply_migrations(handle.client)
            else:
                create_ledger_table_only(handle.client)
            executor = ClickHouseExecutor(handle.client)
            sink = ClickHouseLedgerSink(executor)

            async def write_all() -> None:
                for start in range(0, len(rows), BATCH):
                    await sink.write(rows[start : start + BATCH])

            _, wall, cpu = timed(lambda: asyncio.run(write_all()))
            (count,) = handle.client.query("SELECT count() FROM usage_ledger").result_rows[0]
            executor.shutdown()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "rows": int(count),
        "us_per_row_wall": per_event(wall, len(rows)),
        "us_per_row_cpu": per_event(cpu, len(rows)),
        "batches": (len(rows) + BATCH - 1) // BATCH,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="per-event cost of each worker stage")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    load = loadavg()
    count = 5_000 if args.quick else 20_000

    from schemas.spend_config import SpendConfig
    from streams.cost.catalog import PriceCatalog
    from streams.cost.rows import SourcePosition, price_events
    from streams.ingest.batch_validation import decode_batch
    from streams.ingest.decoding import decode_message
    from streams.ingest.dedupe import RequestIdFilter, hash_request_ids
    from streams.ingest.publishing import json_bytes
    from streams.runtime.worker import GC_THRESHOLDS
    from streams.spend.monitor import SpendMonitor
    from streams.spend.tables import SpendTables

    batched = batched_messages(count, 100)
    single = single_messages(count)
    # The worker's collector settings (streams/runtime/worker.py): with Python's default
    # the spend stage cost about 40 % more here than in the worker.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    now = datetime.now(UTC)
    stages: dict[str, Any] = {}

    def decode_all(messages: list[bytes], per_message: int) -> list[Any]:
        step = BATCH // per_message
        return [
            outcome
            for start in range(0, len(messages), step)
            for outcome in decode_batch(messages[start : start + step], now)
        ]

    decoded, wall, cpu = timed(lambda: decode_all(batched, 100))
    stages["decode_validate_100_per_message"] = (per_event(wall, count), per_event(cpu, count))
    _, wall, cpu = timed(lambda: decode_all(single, 1))
    stages["decode_validate_1_per_message"] = (per_event(wall, count), per_event(cpu, count))
    _, wall, cpu = timed(lambda: [decode_message(m, now) for m in batched])
    reference = {
        "model_decode_validate_100_per_message": (per_event(wall, count), per_event(cpu, count))
    }
    events = [event for message_events, _ in decoded for event in message_events]

    dedupe = RequestIdFilter()

    def dedupe_all() -> None:
        for start in range(0, count, BATCH):
            hashes = hash_request_ids(e.request_id for e in events[start : start + BATCH])
            fresh = dedupe.new_mask(hashes)
            dedupe.mark(hashes[fresh], 20_000)

    _, wall, cpu = timed(dedupe_all)
    stages["dedupe"] = (per_event(wall, count), per_event(cpu, count))

    catalog = PriceCatalog.load()
    positions = [SourcePosition("spendstream.usage", 0, n) for n in range(count)]
    price_events(catalog, events[:1], positions[:1], now)  # catalog loaded, as a warm worker

    def price_all() -> list[dict[str, Any]]:
        return [
            row
            for start in range(0, count, BATCH)
            for row in price_events(
                catalog, events[start : start + BATCH], positions[start : start + BATCH], now
            )
        ]

    rows, wall, cpu = timed(price_all)
    stages["price_and_ledger_row"] = (per_event(wall, count), per_event(cpu, count))

    def encode_costed() -> list[tuple[str, bytes]]:
        out = []
        for start in range(0, count, BATCH):
            by_tenant: dict[str, list[dict[str, Any]]] = {}
            for row in rows[start : start + BATCH]:
                by_tenant.setdefault(row["tenant_id"], []).append(row)
            out += [(tenant, json_bytes(part)) for tenant, part in by_tenant.items()]
        return out

    costed, wall, cpu = timed(encode_costed)
    stages["costed_encode"] = (per_event(wall, count), per_event(cpu, count))
    costed_bytes = sum(len(v) for _, v in costed)

    import detectors.online_anomaly  # noqa: F401  (the worker imports River at start)

    tables = SpendTables({}, {}, {})
    monitor = SpendMonitor(SpendConfig())
    spend = {"decode": 0.0, "apply": 0.0, "observe": 0.0}

    def spend_all() -> None:
        for index, (tenant, value) in enumerate(costed):
            started = time.process_time()
            raw = orjson.loads(value)
            for offset, row in enumerate(raw):
                row["source_offset"] = index * BATCH + offset  # distinct, increasing
            decoded = time.process_time()
            result = tables.apply(tenant, raw)
            applied = time.process_time()
            monitor.observe(tables, tenant, result)
            spend["decode"] += decoded - started
            spend["apply"] += applied - decoded
            spend["observe"] += time.process_time() - applied

    _, wall, cpu = timed(spend_all)
    stages["spend_tables_and_detectors"] = (per_event(wall, count), per_event(cpu, count))
    spend_split = {name: per_event(seconds, count) for name, seconds in spend.items()}

    sink_views = sink_cost(rows, all_migrations=True)
    sink_bare = sink_cost(rows, all_migrations=False)
    python_cpu = sum(
        cpu for name, (_, cpu) in stages.items() if name != "decode_validate_1_per_message"
    )
    emit(
        {
            "benchmark": "hot_path",
            "events": count,
            "batch": BATCH,
            "stages_us_per_event_wall_cpu": stages,
            "reference_us_per_event_wall_cpu": reference,
            "costed_bytes_per_event": round(costed_bytes / count),
            "costed_messages": len(costed),
            "spend_cpu_us_per_event_split": spend_split,
            "sink_all_migrations": sink_views,
            "sink_ledger_table_only": sink_bare,
            "python_stages_cpu_us_per_event_100_per_message": round(python_cpu, 2),
            "ceiling_events_per_s_one_core": round(
                1e6 / (python_cpu + sink_views["us_per_row_cpu"])
            ),
        },
        load,
    )


if __name__ == "__main__":
    main()
