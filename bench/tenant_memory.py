"""T9 in process: the spend agent's memory per active tenant, and where it goes.

    python -m bench.tenant_memory [--tenants 1000000] [--events 1] [--no-online]

No broker, no ClickHouse: `SpendState` as the worker builds it (the default
configuration, River's online detector included unless --no-online; plain dicts for
the Faust tables, which at run time store the same values in a dict), fed as the
spend agent feeds it, one costed message per tenant. The events are those of
RELIABILITY.md's case "cardinality, 100000 distinct tenants": one team, workflow and
model each, no user, no workflow run, every tenant in the current hour.
`--warm` tenants (12,000) are fed first, then `--tenants` more; the figures are the
growth over those (and over as many again, traced). The warm-up fills the detectors'
bounded state (rolling median 10,000 keys, four a tenant; retry storm 2,000; River
1,000 tenants and 2,000 open minutes; burn rate and cardinality 10,000), as a million
tenants fill it long before the last: the growth is then what each further tenant
costs, the figure "per tenant at 1,000,000 tenants" asks for (RELIABILITY.md's case
warms up the same way). With `--warm 200` the detectors' filling counts too:

- `bytes_per_tenant_traced`: memory Python allocated and still holds (tracemalloc),
  what compaction changes; `bytes_per_tenant_rss`: the process's resident growth;
- `by_structure`: each structure's deep size per tenant (objects shared between
  structures counted once, in the first that holds them);
- `top_lines`: the source lines holding the most of the growth (tracemalloc).

The worker also grows per tenant outside `SpendState` (the de-duplication filter,
ClickHouse, Faust's changelog buffers): RELIABILITY.md's RSS case measures it all.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tracemalloc
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.common import emit, loadavg

PAGE = os.sysconf("SC_PAGE_SIZE")
WARM_TENANTS = 12_000
# A usage broker's cluster id, as costed events name their source log.
SOURCE_LOG = "Yq3dPYFyTq-5nJqZlX1Okw"
PARTITIONS = 6


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def costed_message(tenant: str, offset: int, events: int, at: datetime) -> list[dict[str, Any]]:
    """One costed message of `tenant`, decoded as the agent decodes it (orjson)."""
    rows = [
        {
            "request_id": f"{tenant}-{offset}-{i}",
            "timestamp": at.isoformat(),
            "tenant_id": tenant,
            "team_id": "attack",
            "user_id": None,
            "feature_name": None,
            "workflow_id": "w",
            "workflow_run_id": None,
            "environment": None,
            "provider": "openai",
            "model": "gpt-4o-mini",
            "input_tokens": 1000,
            "output_tokens": 100,
            "cached_tokens": 0,
            "request_count": 1,
            "latency_ms": None,
            "status_code": None,
            "retry_count": 0,
            "retry_of": None,
            "cost_usd": "0.000210000000000000",
            "cost_status": "priced",
            "estimated_cost_usd": "0",
            "source_partition": offset % PARTITIONS,
            "source_offset": offset,
            "source_index": i,
            "source_log": SOURCE_LOG,
        }
        for i in range(events)
    ]
    return list(orjson.loads(orjson.dumps(rows)))


def deep_size(obj: Any, seen: set[int]) -> int:
    """Bytes of `obj` and everything it reaches not in `seen` (classes and modules
    excluded: they are shared by every instance)."""
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type) or type(item).__name__ == "module":
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            if hasattr(item, "__dict__") and not callable(item):
                stack.append(vars(item))
            for name in getattr(type(item), "__slots__", ()):
                if hasattr(item, name):
                    stack.append(getattr(item, name))
    return total


def structures(state: Any) -> Iterable[tuple[str, Any]]:
    tables, monitor = state.tables, state.monitor
    yield "tables.hourly", tables.hourly
    yield "tables.totals", tables.totals
    yield "tables.runs", tables.runs
    yield "tables._tenants", tables._tenants
    yield "monitor.rolling", monitor.rolling
    yield "monitor.retry_storm", monitor.retry_storm
    yield "monitor.contract", monitor.contract
    yield "monitor.run_cost", monitor.run_cost
    yield "monitor.cardinality", monitor.cardinality
    yield "monitor.unpriced", monitor.unpriced
    yield "monitor.burn_rate", monitor.burn_rate
    yield "monitor.online", monitor.online
    yield "monitor._minutes", monitor._minutes
    yield "incidents", state.incidents


def feed(state: Any, tenants: range, events: int, at: datetime, prefix: str) -> None:
    for i in tenants:
        state.apply(f"{prefix}{i:07d}", costed_message(f"{prefix}{i:07d}", i, events, at))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # The target's own scale: ~5 minutes and ~2.5 GiB here.
    parser.add_argument("--tenants", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="2,000 tenants")
    parser.add_argument("--events", type=int, default=1, help="events per tenant")
    parser.add_argument(
        "--traced", type=int, default=20_000, help="tenants fed after, under tracemalloc"
    )
    parser.add_argument("--warm", type=int, default=WARM_TENANTS, help="tenants fed first")
    parser.add_argument("--no-online", action="store_true", help="River's detector off")
    parser.add_argument("--top", type=int, default=12, help="source lines listed")
    args = parser.parse_args()
    if args.quick:
        args.tenants = args.traced = 2_000
    load_before = loadavg()

    from schemas.spend_config import SpendConfig
    from streams.alerting.wiring import build_alerting
    from streams.spend.monitor import SpendMonitor
    from streams.spend.state import SpendState
    from streams.spend.tables import SpendTables

    config = SpendConfig.model_validate(
        {"detectors": {"online": {"enabled": False}}} if args.no_online else {}
    )
    state = SpendState(
        config,
        SpendTables({}, {}, {}),
        SpendMonitor(config),
        build_alerting(config, embedded=True, console_stream=open(os.devnull, "w")),  # noqa: SIM115
    )
    at = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(minutes=5)
    feed(state, range(args.warm), args.events, at, "warm-")
    gc.collect()
    # Untraced first (tracemalloc's own records would count in the RSS), then `--traced`
    # tenants more under tracemalloc, for the bytes Python holds and where.
    rss_before = rss_bytes()
    seen: set[int] = set()
    sizes_before = {name: deep_size(obj, seen) for name, obj in structures(state)}
    del seen
    feed(state, range(args.tenants), args.events, at, "tenant-")
    gc.collect()
    rss_after = rss_bytes()
    seen = set()
    sizes_after = {name: deep_size(obj, seen) for name, obj in structures(state)}
    del seen
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    traced_before = tracemalloc.get_traced_memory()[0]
    feed(state, range(args.traced), args.events, at, "traced-")
    gc.collect()
    traced_after = tracemalloc.get_traced_memory()[0]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()

    n = args.tenants
    by_structure = {
        name: round((sizes_after[name] - sizes_before[name]) / n)
        for name in sizes_after
        if sizes_after[name] != sizes_before[name]
    }
    top = after.compare_to(before, "lineno")[: args.top]
    result = {
        "bench": "tenant_memory",
        "tenants": n,
        "events_per_tenant": args.events,
        "warm_tenants": args.warm,
        "online_detector": not args.no_online,
        "traced_tenants": args.traced,
        "bytes_per_tenant_traced": round((traced_after - traced_before) / args.traced),
        "bytes_per_tenant_rss": round((rss_after - rss_before) / n),
        "by_structure": dict(sorted(by_structure.items(), key=lambda kv: -kv[1])),
        "top_lines": [
            f"{round(stat.size_diff / args.traced)} B/tenant "
            f"{stat.traceback[0].filename.split('/work/')[-1]}:{stat.traceback[0].lineno}"
            for stat in top
        ],
        "million_tenants_gib": round((rss_after - rss_before) / n * 1e6 / 1024**3, 2),
    }
    emit(result, load_before)


if __name__ == "__main__":
    main()
