"""QueryService on embedded chdb: guarded queries on the reader session, bounded by the
limits, answered as JSON, and never in the way of the ledger writer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streams.ledger.connect import ClickHouseHandle, open_session_client
from streams.ledger.query_guard import QueryLimits
from streams.ledger.query_service import QueryService
from streams.ledger.sink import ClickHouseExecutor, ClickHouseLedgerSink
from tests.ledger.test_sink import rows


@pytest.fixture
def service(ledger_db: ClickHouseHandle) -> Iterator[QueryService]:
    client = ledger_db.client
    client.command("CREATE TABLE IF NOT EXISTS slow_probe (n UInt64) ENGINE = Memory")
    client.command("TRUNCATE TABLE slow_probe")
    client.command("INSERT INTO slow_probe SELECT number FROM numbers(3000)")
    reader = open_session_client(ledger_db)
    queries = QueryService(reader, QueryLimits(max_seconds=10))
    queries.load_objects()
    yield queries
    queries.shutdown()
    reader.close()


def body(sql: str, **parameters: Any) -> bytes:
    return orjson.dumps({"sql": sql, "parameters": parameters})


async def test_a_select_is_answered_with_types(service: QueryService) -> None:
    answer = await service.answer(
        body("SELECT count() AS c FROM slow_probe WHERE n < {k:UInt64}", k=10)
    )
    assert answer.status == 200
    assert orjson.loads(answer.body) == {"columns": ["c"], "types": ["uint64"], "rows": [[10]]}


@pytest.mark.parametrize(
    "request_body",
    [b"SELECT 1", b"", b"[]", b'{"sql": 5}', b'{"sql": "SELECT 1", "parameters": [1]}'],
)
async def test_a_body_that_is_not_a_query_request_is_a_400(
    service: QueryService, request_body: bytes
) -> None:
    assert (await service.answer(request_body)).status == 400


async def test_percent_parameters_are_checked_as_bound(service: QueryService) -> None:
    # clickhouse-connect binds %(name)s into the text: the guard sees what runs.
    ok = await service.answer(body("SELECT count() FROM slow_probe WHERE n < %(k)s", k=5))
    assert ok.status == 200 and orjson.loads(ok.body)["rows"] == [[5]]
    injected = await service.answer(body("SELECT %(x)s", x="1; DROP TABLE slow_probe"))
    assert orjson.loads(injected.body)["rows"] == [["1; DROP TABLE slow_probe"]]


async def test_a_slow_query_stops_at_its_limit_and_never_holds_ledger_writes(
    service: QueryService, ledger_db: ClickHouseHandle
) -> None:
    slow = asyncio.create_task(
        service.answer(
            body(
                "SELECT sum(cityHash64(a.n, b.n, c.n, d.n)) "
                "FROM slow_probe a, slow_probe b, slow_probe c, slow_probe d"
            )
        )
    )
    await asyncio.sleep(0.5)  # the query is running on the reader's thread
    executor = ClickHouseExecutor(ledger_db.client)
    try:
        sink = ClickHouseLedgerSink(executor)
        for batch in range(3):
            await sink.write(rows(f"during-slow-{batch}", 50))
            assert not slow.done(), f"a ledger write waited for the query: {slow.result()}"
        answer = await slow
        assert answer.status == 400 and b"TIMEOUT_EXCEEDED" in answer.body
        count = await executor.run(
            ledger_db.client.query,
            "SELECT count() FROM usage_ledger WHERE request_id LIKE 'during-slow-%'",
        )
        assert count.result_rows == [(150,)]
    finally:
        executor.shutdown()
