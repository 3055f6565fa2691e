"""What each materialized view costs the ledger's insert, per row (issue 21, part 4).

    python -m bench.insert_views [--batches 10] [--rounds 3]

The same ledger rows as bench.hot_path (realistic 100-event messages, decoded and
priced, `--batches` batches of 2,000), into one fresh chdb with every migration
applied. The views are then dropped and put back one configuration at a time: the
ledger table alone; the ledger_facts fan-out (a Null table) alone; every view; every
view but one, for each view. A view's cost is what removing it saves from "every
view" (for ledger_facts_mv: every view that reads ledger_facts). Each configuration
inserts the same prebuilt Arrow batches as the sink does (`insert_arrow`, the sink's
settings, a fresh deduplication token), with every MergeTree table emptied first.
The configurations run `--rounds` times, in a new order each round; each round also
inserts the same rows in inserts of 500 and of 8,000 rows into the ledger alone and
with every view (what is paid per insert, what per row). Medians; a view's saving is
the median of its round-by-round differences. Wall and CPU time (the whole process:
chdb runs in it) per row.

The sink's own Python work before ClickHouse sees a batch (month chunks, the
deduplication token, the Arrow table from the row dicts) is timed apart.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import emit, loadavg
from bench.hot_path import BATCH, per_event, priced_rows, timed

FACTS_VIEW = "ledger_facts_mv"


def views(client: Any) -> dict[str, tuple[str, str]]:
    """Every materialized view: name -> (its CREATE statement, the table it reads)."""
    found = client.query(
        "SELECT name, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND engine = 'MaterializedView' ORDER BY name"
    ).result_rows
    out = {}
    for name, create in found:
        source = re.search(r"\bFROM (?:\w+\.)?(\w+)", create.split(" AS SELECT", 1)[1])
        out[name] = (create, source.group(1) if source else "")
    return out


def configurations(found: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    """Configuration name -> the views it has: the ledger table alone, the ledger_facts
    fan-out alone (its Null table, nothing reading it), every view, and every view but
    one (for each view: `all but X`; without ledger_facts_mv nothing that reads
    ledger_facts fires either)."""
    every = sorted(found)
    out = {"ledger table alone": [], f"{FACTS_VIEW} alone": [FACTS_VIEW], "all views": every}
    for name in every:
        out[f"all but {name}"] = [view for view in every if view != name]
    return out


def stored_tables(client: Any) -> list[str]:
    return [
        name
        for (name,) in client.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND engine LIKE '%MergeTree'"
        ).result_rows
    ]


def insert_once(
    client: Any, batches: list[Any], tag: str, present: list[str], found: dict[str, Any]
) -> tuple[float, float]:
    """Wall and CPU seconds to insert `batches` with only the views `present`."""
    from streams.ledger.sink import INSERT_SETTINGS

    for name in present:
        client.command(found[name][0])
    for table in stored_tables(client):
        client.command(f"TRUNCATE TABLE {table}")
    wall, cpu = time.perf_counter(), time.process_time()
    for index, batch in enumerate(batches):
        settings = dict(INSERT_SETTINGS, insert_deduplication_token=f"{tag}-{index}")
        client.insert_arrow("usage_ledger", batch, settings=settings)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for name in present:
        client.command(f"DROP VIEW {name} SYNC")
    return wall, cpu


def python_cost(rows: list[dict[str, Any]], schema: Any) -> dict[str, tuple[float, float]]:
    """The sink's Python per row before `insert_arrow`: as `ClickHouseLedgerSink.write`
    does it for one batch."""
    from streams.ledger.arrow import to_arrow
    from streams.ledger.isolation import month_of, partition_chunks
    from streams.ledger.sink import dedup_token

    chunks = [rows[start : start + BATCH] for start in range(0, len(rows), BATCH)]
    stages: dict[str, tuple[float, float]] = {}

    def months() -> None:
        for chunk in chunks:
            list(partition_chunks(list(enumerate(chunk)), lambda p: month_of("timestamp")(p[1])))

    def tokens() -> None:
        for chunk in chunks:
            dedup_token("ledger", [row["request_id"] for row in chunk])

    def arrow() -> None:
        for chunk in chunks:
            to_arrow(chunk, schema)

    for name, fn in (("month_chunks", months), ("dedup_token", tokens), ("to_arrow", arrow)):
        _, wall, cpu = timed(fn)
        stages[name] = (per_event(wall, len(rows)), per_event(cpu, len(rows)))
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description="insert cost of each materialized view")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load = loadavg()

    from schemas.ledger import LEDGER_COLUMNS
    from streams.ledger.arrow import table_schema, to_arrow
    from streams.ledger.connect import clickhouse_session
    from streams.ledger.migrations import apply_migrations
    from streams.settings import chdb_url_for

    rows = priced_rows(args.batches * BATCH)
    count = len(rows)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-insert-views-"))
    samples: dict[str, list[tuple[float, float]]] = {}
    try:
        with clickhouse_session(chdb_url_for(data_dir)) as handle:
            client = handle.client
            apply_migrations(client)
            found = views(client)
            schema = table_schema(client, "usage_ledger", LEDGER_COLUMNS)
            python = python_cost(rows, schema)
            batches = [to_arrow(rows[s : s + BATCH], schema) for s in range(0, count, BATCH)]
            for name in found:
                client.command(f"DROP VIEW {name} SYNC")
            configs = configurations(found)
            # The same rows in smaller and larger inserts too: what is paid per insert
            # (per table written) and what per row.
            sized = {
                size: [to_arrow(rows[s : s + size], schema) for s in range(0, count, size)]
                for size in (BATCH // 4, BATCH * 4)
            }
            order = list(configs)
            for round_ in range(args.rounds):
                # A new order each round: what drifts during a run (the load, the
                # engine's own state) falls on every configuration alike.
                random.Random(round_).shuffle(order)
                for config in order:
                    present = configs[config]
                    tag = f"r{round_}-{config}"
                    samples.setdefault(config, []).append(
                        insert_once(client, batches, tag, present, found)
                    )
                for size, inserts in sized.items():
                    for config in ("ledger table alone", "all views"):
                        tag = f"r{round_}-{size}-{config}"
                        samples.setdefault(f"{config}, {size}-row inserts", []).append(
                            insert_once(client, inserts, tag, configs[config], found)
                        )
            for name in found:  # as the migrations left them
                client.command(found[name][0])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    median = {
        config: (
            per_event(statistics.median(w for w, _ in runs), count),
            per_event(statistics.median(c for _, c in runs), count),
        )
        for config, runs in samples.items()
    }
    # Paired within a round (the load drifts between rounds), then the median.
    everything = samples["all views"]

    def saved(runs: list[tuple[float, float]], part: int) -> float:
        pairs = zip(everything, runs, strict=True)
        return per_event(statistics.median(a[part] - b[part] for a, b in pairs), count)

    view_cost = {
        config.removeprefix("all but "): (saved(runs, 0), saved(runs, 1))
        for config, runs in samples.items()
        if config.startswith("all but ")
    }
    emit(
        {
            "benchmark": "insert_views",
            "rows": count,
            "batch": BATCH,
            "rounds": args.rounds,
            "views_reading": {name: source for name, (_, source) in found.items()},
            "us_per_row_wall_cpu": median,
            "view_cost_us_per_row_wall_cpu": view_cost,
            "sink_python_us_per_row_wall_cpu": python,
        },
        load,
    )


if __name__ == "__main__":
    main()
