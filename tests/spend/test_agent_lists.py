"""The spend agent counts costed messages by the list: `tenant_rows` groups them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from streams.spend.agent import tenant_rows


def costed(tenant: str, partition: int, rows: list[dict[str, Any]]) -> Any:
    return SimpleNamespace(
        key=tenant.encode(),
        value=orjson.dumps(rows),
        message=SimpleNamespace(partition=partition),
    )


def row(offset: int, index: int = 0, source_partition: int = 0) -> dict[str, Any]:
    return {
        "request_id": f"r{source_partition}-{offset}-{index}",
        "source_partition": source_partition,
        "source_offset": offset,
        "source_index": index,
    }


def test_rows_are_grouped_by_tenant_and_costed_partition_in_order() -> None:
    events = [
        costed("acme", 1, [row(1), row(2)]),
        costed("globex", 3, [row(3)]),
        costed("acme", 1, [row(4, source_partition=2)]),
    ]
    grouped, repeated = tenant_rows(events)
    assert repeated == 0
    assert list(grouped) == [("acme", 1), ("globex", 3)]
    assert [r["request_id"] for r in grouped[("acme", 1)]] == ["r0-1-0", "r0-2-0", "r2-4-0"]


def test_a_republished_batch_in_the_same_list_is_counted_once() -> None:
    # After an ingest crash the same batch is published again with the same source
    # positions; both copies can land in one list, which the tables' marks cannot see.
    first = costed("acme", 0, [row(10, 0), row(10, 1)])
    again = costed("acme", 0, [row(10, 0), row(10, 1), row(11, 0)])
    grouped, repeated = tenant_rows([first, again])
    assert repeated == 2
    assert [(r["source_offset"], r["source_index"]) for r in grouped[("acme", 0)]] == [
        (10, 0),
        (10, 1),
        (11, 0),
    ]
