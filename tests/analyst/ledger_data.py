"""A small, deterministic ledger for the analyst tests, and the same numbers in Python.

Two ISO weeks (2026-W46 and W47) plus a few days around them, seven tenants with
teams, users, features, workflows and runs, four priced models and one unpriced
one, failed calls, retries, missing latencies, a batched row (request_count 3),
and a spike: tenant "hooli" calls ten times as much on Wednesday 2026-11-18.
Costs are computed with the real cost engine (`streams.cost.catalog.UnitPrices`).
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.ledger import LEDGER_COLUMNS
from streams.analyst.retention import DEFAULT_RAW_DAYS
from streams.cost.catalog import UnitPrices
from streams.ledger.connect import clickhouse_session
from streams.ledger.migrations import apply_migrations
from streams.settings import chdb_url_for
from tests.helpers.retention import keep_rows_of, kept_days

D = Decimal
PRICES: dict[tuple[str, str], UnitPrices] = {
    ("openai", "gpt-4o"): UnitPrices(D("2.5"), D("1.25"), D("2.5"), D("10"), D("10"), "test"),
    ("openai", "gpt-4o-mini"): UnitPrices(
        D("0.15"), D("0.075"), D("0.15"), D("0.6"), D("0.6"), "test"
    ),
    ("anthropic", "claude-sonnet-4"): UnitPrices(
        D("3"), D("0.3"), D("3.75"), D("15"), D("15"), "test"
    ),
    ("anthropic", "claude-haiku-4"): UnitPrices(
        D("0.8"), D("0.08"), D("1"), D("4"), D("4"), "test"
    ),
}
UNPRICED_MODEL = ("acme", "acme-llm-1")
# The catalog after a price change: gpt-4o output (and so reasoning) goes from $10
# to $12 per million tokens, and the unpriced model gains a price.
NEW_PRICES: dict[tuple[str, str], UnitPrices] = {
    **PRICES,
    ("openai", "gpt-4o"): UnitPrices(D("2.5"), D("1.25"), D("2.5"), D("12"), D("12"), "test"),
    UNPRICED_MODEL: UnitPrices(D("1"), D("0.5"), D("1"), D("2"), D("2"), "test"),
}
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne")
FIRST_DAY = date(2026, 10, 30)
LAST_DAY = date(2026, 11, 22)
SPIKE = ("hooli", date(2026, 11, 18))
COST_COLUMNS = (
    "cost_input_usd",
    "cost_cached_input_usd",
    "cost_cache_write_usd",
    "cost_output_usd",
    "cost_reasoning_usd",
)


def pricing_file(directory: Path, prices: dict[tuple[str, str], UnitPrices]) -> Path:
    """`prices` as a pricing file (YAML overrides) for `PriceCatalog.load`."""
    lines = ["prices:"]
    for (provider, model), unit in prices.items():
        lines += [
            f"  - provider: {provider}",
            f"    model: {model}",
            f'    input: "{unit.input}"',
            f'    cached_input: "{unit.cached_input}"',
            f'    cache_write: "{unit.cache_write}"',
            f'    output: "{unit.output}"',
            f'    reasoning: "{unit.reasoning}"',
        ]
    path = directory / "pricing.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_events(seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    day = FIRST_DAY
    while day <= LAST_DAY:
        for tenant_index, tenant in enumerate(TENANTS):
            runs = 1 + tenant_index % 3
            if (tenant, day) == SPIKE:
                runs *= 10
            for run in range(runs):
                events.extend(_run(rng, tenant, tenant_index, day, run))
        day += timedelta(days=1)
    return events


def _run(
    rng: random.Random, tenant: str, tenant_index: int, day: date, run: int
) -> list[dict[str, Any]]:
    workflow = rng.choice(("summarize", "triage"))
    provider, model = (
        [("openai", "gpt-4o"), ("openai", "gpt-4o-mini")]
        if tenant_index % 2 == 0
        else [("anthropic", "claude-sonnet-4"), ("anthropic", "claude-haiku-4")]
    )[rng.randrange(2) if workflow == "triage" else 0]
    if tenant == "wayne" and run == 0 and day.day % 5 == 0:
        provider, model = UNPRICED_MODEL
    run_id = f"{tenant}-{day:%m%d}-{run}"
    start = datetime.combine(day, datetime.min.time(), UTC) + timedelta(
        seconds=rng.randrange(0, 86_000)
    )
    calls = rng.randint(1, 4)
    fails = rng.random() < 0.2
    events: list[dict[str, Any]] = []
    for call in range(calls):
        last = call == calls - 1
        status: int | None = 200
        if last and fails:
            status = rng.choice((500, 429))
        elif rng.random() < 0.1:
            status = None
        input_tokens = rng.randint(100, 20_000)
        cached = rng.randint(0, input_tokens // 2)
        cache_write = rng.randint(0, (input_tokens - cached) // 4) if provider == "anthropic" else 0
        output_tokens = rng.randint(10, 2_000)
        reasoning = rng.randint(0, output_tokens // 3) if model == "gpt-4o" else 0
        event: dict[str, Any] = {
            "request_id": f"req-{run_id}-{call}",
            "timestamp": start + timedelta(seconds=call * 7),
            "tenant_id": tenant,
            "team_id": f"{tenant}-team-{'ab'[run % 2]}",
            "user_id": f"{tenant}-user-{rng.randrange(3)}",
            "feature_name": {"summarize": "digest", "triage": "inbox"}[workflow],
            "workflow_id": f"wf-{workflow}",
            "workflow_run_id": run_id,
            "workflow_name": workflow.title(),
            "environment": "prod" if rng.random() < 0.8 else "staging",
            "provider": provider,
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_tokens": cached,
            "cache_write_tokens": cache_write,
            "reasoning_tokens": reasoning,
            "request_count": 3 if (call == 1 and run == 0 and day.day == 17) else 1,
            "latency_ms": None if rng.random() < 0.1 else rng.randint(80, 9_000),
            "status_code": status,
            "retry_count": 1 if call > 0 and events[-1]["status_code"] not in (200, None) else 0,
            "retry_of": "",
        }
        if event["retry_count"]:
            event["retry_of"] = events[-1]["request_id"]
        events.append(price(event))
    return events


def price(event: dict[str, Any], prices: dict[tuple[str, str], UnitPrices] = PRICES) -> dict:
    unit = prices.get((event["provider"], event["model"]))
    if unit is None:
        breakdown = [D(0)] * 5
        event.update(price_source="", cost_status="unpriced")
        unit_prices = [D(0)] * 5
    else:
        cost = unit.cost(
            event["input_tokens"],
            event["cached_tokens"],
            event["cache_write_tokens"],
            event["output_tokens"],
            event["reasoning_tokens"],
        )
        breakdown = [cost.input, cost.cached_input, cost.cache_write, cost.output, cost.reasoning]
        event.update(price_source=unit.source, cost_status="priced")
        unit_prices = [unit.input, unit.cached_input, unit.cache_write, unit.output, unit.reasoning]
    event.update(zip(COST_COLUMNS, breakdown, strict=True))
    event["cost_usd"] = sum(breakdown, D(0))
    event.update(
        zip(
            (
                "price_input_per_mtok",
                "price_cached_input_per_mtok",
                "price_cache_write_per_mtok",
                "price_output_per_mtok",
                "price_reasoning_per_mtok",
            ),
            unit_prices,
            strict=True,
        )
    )
    return event


_DEFAULTS: dict[str, Any] = {
    "prompt_template_version": "",
    "api_key_id": "",
    "reported_cost_usd": None,
    "tags": {},
    "source_topic": "spendstream.usage",
    "source_partition": 0,
    "source_offset": 0,
    "cache_write_1h_tokens": 0,
    "service_tier": "",
    "batch": False,
    "price_cache_write_1h_per_mtok": D(0),
    "estimated_cost_usd": D(0),
    "estimate_source": "",
}


def ledger_rows(events: Iterable[dict[str, Any]]) -> list[list[Any]]:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    return [
        [{**_DEFAULTS, "ingested_at": now, **event}[column] for column in LEDGER_COLUMNS]
        for event in events
    ]


def raw_days_kept() -> int:
    """The raw retention of a ledger holding this data (`write_data_dir`)."""
    return kept_days(DEFAULT_RAW_DAYS, datetime.combine(FIRST_DAY, datetime.min.time(), UTC))


def insert(
    client: Client,
    events: Sequence[dict[str, Any]],
    token: str | None = None,
    *,
    expire: bool = False,
) -> None:
    """`events` as ledger rows. The ledger's retention is first lengthened to keep them
    (`keep_rows_of`), unless `expire`: rows past it are then dropped, as in production."""
    if events and not expire:
        keep_rows_of(client, events)
    settings: dict[str, Any] = {"deduplicate_blocks_in_dependent_materialized_views": 1}
    if token is not None:
        settings["insert_deduplication_token"] = token
    client.insert(
        "usage_ledger", ledger_rows(events), column_names=list(LEDGER_COLUMNS), settings=settings
    )


def write_data_dir(path: Path) -> Path:
    """An embedded data dir at `path` with every migration and the test ledger, closed
    again so that a command (or a worker) can open it."""
    with clickhouse_session(chdb_url_for(path)) as handle:
        apply_migrations(handle.client)
        insert(handle.client, make_events(), token="batch-1")
    return path


# The same rules as sql/021_ledger_facts.sql, written independently.
def successful(event: dict[str, Any]) -> bool:
    status = event["status_code"]
    return status is None or 200 <= status <= 299


def retry(event: dict[str, Any]) -> bool:
    return bool(event["retry_of"]) or event["retry_count"] > 0


def totals(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    events = list(events)
    latencies = sorted(e["latency_ms"] for e in events if e["latency_ms"] is not None)
    return {
        "requests": sum(e["request_count"] for e in events),
        "successful_requests": sum(e["request_count"] for e in events if successful(e)),
        "errors": sum(e["request_count"] for e in events if not successful(e)),
        "retries": sum(1 for e in events if retry(e)),
        "input_tokens": sum(e["input_tokens"] for e in events),
        "output_tokens": sum(e["output_tokens"] for e in events),
        "cached_tokens": sum(e["cached_tokens"] for e in events),
        "cache_write_tokens": sum(e["cache_write_tokens"] for e in events),
        "reasoning_tokens": sum(e["reasoning_tokens"] for e in events),
        "cost_usd": sum((e["cost_usd"] for e in events), D(0)),
        "latency_p50_ms": interpolated_quantile(latencies, 0.5),
        "latency_p90_ms": interpolated_quantile(latencies, 0.9),
        "latency_p99_ms": interpolated_quantile(latencies, 0.99),
    }


def interpolated_quantile(values: Sequence[int], level: float) -> float | None:
    """Linear interpolation between closest ranks: what ClickHouse's `quantiles`
    computes while it still holds every value (fewer than 8192)."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    position = level * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def group(
    events: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], tuple[Any, ...]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        groups[key(event)].append(event)
    return {k: totals(v) for k, v in groups.items()}


def day_of(event: dict[str, Any]) -> date:
    return event["timestamp"].date()


def median(values: Sequence[Decimal]) -> Decimal:
    return D(statistics.median(values))
