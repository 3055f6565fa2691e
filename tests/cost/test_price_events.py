"""price_events (a batch, each price resolved once) gives the rows price_event gives one
by one: the same columns, the same exact Decimals with the same digits, on random
batches and on a replay through the pipeline with duplicates and bad lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.usage_event import UsageEvent
from schemas.validated_event import ValidatedEvent
from streams.cost.catalog import CatalogPrices
from streams.cost.rows import SourcePosition, price_event, price_events
from streams.ingest.decoding import decode_message
from streams.ingest.dedupe import RequestIdFilter
from streams.ingest.pipeline import IngestPipeline, UsageMessage
from streams.ledger.connect import ClickHouseHandle
from streams.ledger.sink import ClickHouseExecutor, ClickHouseLedgerSink
from tests.cost.test_rows import override_catalog

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
INGESTED = NOW + timedelta(seconds=5)
# Flat, tiered (input tokens beyond 200,000), 1-hour cache writes, an override that
# changes on a date, and models no catalog knows (estimated or unpriced).
MODELS = [
    ("openai", "gpt-4o-mini"),
    ("OpenAI", "GPT-4o-mini"),
    ("google", "gemini-2.5-pro"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("acme-llm", "house-model"),
    ("deepseek", "deepseek-chat"),  # off-peak prices by time of day
    ("openai", "gpt-4o-mini-2099-preview"),
    ("nobody", "nothing"),
]
OVERRIDES = (
    {"provider": "acme-llm", "model": "house-model", "input": "0.5", "output": "1.5"},
    {
        "provider": "acme-llm",
        "model": "house-model",
        "input": "0.7",
        "output": "2.1",
        "effective_from": "2026-03-02",
    },
)


BOUNDARY_SECONDS = [
    int((NOW - moment).total_seconds()) + offset
    for moment in (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, 16, 30, tzinfo=UTC))
    for offset in (-61, -1, 0, 1, 59, 60)
]


@st.composite
def usage_events(draw: Any) -> dict[str, Any]:
    provider, model = draw(st.sampled_from(MODELS))
    input_tokens = draw(st.integers(min_value=0, max_value=400_000))
    cached = draw(st.integers(min_value=0, max_value=input_tokens))
    write = draw(st.integers(min_value=0, max_value=input_tokens - cached))
    output = draw(st.integers(min_value=0, max_value=50_000))
    # Times near a change of price (the override's date, deepseek's off-peak hours at
    # 16:30 UTC) in most batches, any time in the last five days in the others.
    seconds = draw(
        st.sampled_from(BOUNDARY_SECONDS) | st.integers(min_value=0, max_value=5 * 86_400)
    )
    return {
        "request_id": draw(st.uuids()).hex,
        "timestamp": (NOW - timedelta(seconds=seconds)).isoformat(),
        "tenant_id": draw(st.sampled_from(["acme", "globex"])),
        "provider": provider,
        "model": model,
        "input_tokens": input_tokens,
        "cached_tokens": cached,
        "cache_write_tokens": write,
        "cache_write_1h_tokens": draw(st.integers(min_value=0, max_value=write)),
        "output_tokens": output,
        "reasoning_tokens": draw(st.integers(min_value=0, max_value=output)),
        "service_tier": draw(st.sampled_from(["", "", "", "flex", "PRIORITY", "standard"])),
        "batch": draw(st.booleans()) and draw(st.booleans()),
    }


def exact(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each row's values as text: equal Decimals with other digits would differ."""
    return [{name: repr(value) for name, value in row.items()} for row in rows]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(usage_events(), min_size=1, max_size=40))
def test_a_batch_is_priced_as_its_events_one_by_one(
    catalog: CatalogPrices, fields: list[dict[str, Any]]
) -> None:
    events = [UsageEvent.model_validate(f, context={"now": NOW}) for f in fields]
    positions = [SourcePosition("spendstream.usage", i % 3, 100 + i, i) for i in range(len(events))]
    one_by_one = override_catalog(catalog, *OVERRIDES)
    expected = [
        price_event(one_by_one, e, p, INGESTED) for e, p in zip(events, positions, strict=True)
    ]
    batched = override_catalog(catalog, *OVERRIDES)
    structs = [ValidatedEvent.of(e) for e in events]
    assert exact(price_events(batched, structs, positions, INGESTED)) == exact(expected)
    # A pydantic event and its struct price alike.
    assert exact(price_events(batched, events, positions, INGESTED)) == exact(expected)


def test_every_kind_of_price_is_in_the_random_batches(catalog: CatalogPrices) -> None:
    """The models above cover priced, tiered, estimated and unpriced rows."""
    prices = override_catalog(catalog, *OVERRIDES)
    statuses = set()
    for provider, model in MODELS:
        event = UsageEvent.model_validate(
            {
                "request_id": "r",
                "timestamp": NOW,
                "tenant_id": "t",
                "provider": provider,
                "model": model,
                "input_tokens": 300_000,
            },
            context={"now": NOW},
        )
        row = price_event(prices, event, SourcePosition("t", 0, 0), INGESTED)
        statuses.add(row["cost_status"])
    assert statuses == {"priced", "estimated", "unpriced"}
    assert prices.resolve("google", "gemini-2.5-pro", NOW) is not None
    assert prices.resolve("google", "gemini-2.5-pro", NOW).tiers  # type: ignore[union-attr]


@pytest.fixture
async def executor(ledger_db: ClickHouseHandle) -> Any:
    pool = ClickHouseExecutor(ledger_db.client)
    yield pool
    pool.shutdown()


async def test_a_replay_with_duplicates_and_bad_lines_prices_as_the_model_path(
    catalog: CatalogPrices, executor: ClickHouseExecutor
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)  # the ledger keeps `ingested_at` to the ms
    fields = [
        {
            "request_id": f"r{i % 150}",  # 50 ids come twice
            "timestamp": (now - timedelta(minutes=7 * i)).isoformat(),
            "tenant_id": f"t{i % 4}",
            "provider": MODELS[i % len(MODELS)][0],
            "model": MODELS[i % len(MODELS)][1],
            "input_tokens": 1_000 * i,
            "cached_tokens": 10 * i,
            "output_tokens": 7 * i,
            "service_tier": ["", "flex", "priority"][i % 3],
        }
        for i in range(200)
    ]
    lines = [orjson.dumps(f) for f in fields[:60]]
    lines += [b"{not json", b"[]", orjson.dumps({**fields[0], "input_tokens": -1})]
    lines += [orjson.dumps(fields[i : i + 20]) for i in range(60, 200, 20)]
    lines.append(orjson.dumps([fields[3], 7, {**fields[4], "timestamp": "yesterday"}]))
    messages = [UsageMessage(line, "spendstream.usage", 1, n) for n, line in enumerate(lines)]
    pipeline = IngestPipeline(
        override_catalog(catalog, *OVERRIDES),
        RequestIdFilter(),
        ClickHouseLedgerSink(executor),
        log_epoch="test",
        clock=lambda: now,
    )
    batch = pipeline.prepare(messages)

    one_by_one = override_catalog(catalog, *OVERRIDES)
    expected, seen, reasons = [], set(), []
    for message in messages:
        decoded = decode_message(message.value, now)
        reasons += [r.reason for r in decoded.rejections]
        for index, event in enumerate(decoded.events):
            if event.request_id in seen:
                continue
            seen.add(event.request_id)
            position = SourcePosition(message.topic, message.partition, message.offset, index)
            expected.append(price_event(one_by_one, event, position, now))
    assert len(expected) == 150
    assert exact(batch.rows) == exact(expected)
    assert [letter["reason"] for letter in batch.dead_letters] == reasons
    expected_reasons = {"malformed_json", "empty_batch", "token_count_out_of_range"}
    expected_reasons |= {"not_an_object", "timestamp_invalid"}
    assert sorted(reasons) == sorted(expected_reasons)


def test_calls_either_side_of_a_price_change_in_one_batch_keep_their_own_prices(
    catalog: CatalogPrices,
) -> None:
    fields = [
        {
            "request_id": f"r{n}",
            "timestamp": (NOW - timedelta(seconds=seconds)).isoformat(),
            "tenant_id": "acme",
            "provider": provider,
            "model": model,
            "input_tokens": 250_000 if n % 2 else 1_000,
            "output_tokens": 100,
            "service_tier": tier,
        }
        for n, ((provider, model), seconds, tier) in enumerate(
            (m, s, t) for m in MODELS for s in BOUNDARY_SECONDS for t in ("", "flex")
        )
    ]
    events = [UsageEvent.model_validate(f, context={"now": NOW}) for f in fields]
    positions = [SourcePosition("spendstream.usage", 0, i) for i in range(len(events))]
    one_by_one = override_catalog(catalog, *OVERRIDES)
    expected = [
        price_event(one_by_one, e, p, INGESTED) for e, p in zip(events, positions, strict=True)
    ]
    assert len({row["cost_usd"] for row in expected if row["model"] == "deepseek-chat"}) > 1
    assert len({row["cost_usd"] for row in expected if row["model"] == "house-model"}) > 1
    batched = override_catalog(catalog, *OVERRIDES)
    assert exact(price_events(batched, events, positions, INGESTED)) == exact(expected)
