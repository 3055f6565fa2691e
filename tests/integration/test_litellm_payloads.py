"""Payloads produced by the real LiteLLM library, not written by hand: its
`StandardLoggingPayload` (what a LiteLLM callback or its proxy's logging hooks
receive) from mocked completions (`mock_response=`, no network), through
`spendstream replay --format litellm` and through HTTP ingest. Every one is ledgered at
its exact cost. LiteLLM's `response_cost` is a float (0.00022500000000000002 for
gpt-4o): it once failed the ledger's Arrow insert and stalled the stream (issue 22)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from schemas.normalizers import normalize
from schemas.usage_event import MONEY_QUANTUM
from tests.helpers.stack import RunningStack, query_json, spendstream, write_ndjson
from tests.helpers.waiting import wait_for
from tests.reliability.conftest import event_cost

pytestmark = pytest.mark.integration

MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "anthropic/claude-3-5-sonnet-20240620"]
CANARY = "CANARY-litellm-prompt"
TENANT = "litellm-acme"


@pytest.fixture(scope="module")
def payloads() -> list[dict[str, Any]]:
    # Its bundled price map, not a download.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm  # imported here: LITELLM_LOCAL_MODEL_COST_MAP must be set first
    from litellm.integrations.custom_logger import CustomLogger

    captured: list[dict[str, Any]] = []

    class Capture(CustomLogger):  # type: ignore[misc]
        # LiteLLM passes these by name: other names make it skip the callback silently.
        def log_success_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            captured.append(kwargs["standard_logging_object"])

    previous = litellm.callbacks
    litellm.callbacks = [Capture()]
    try:
        for model in MODELS:
            litellm.completion(
                model=model,
                messages=[{"role": "user", "content": f"{CANARY} question"}],
                mock_response=f"{CANARY} answer",
            )
        deadline = time.monotonic() + 30  # success callbacks run on LiteLLM's thread
        while len(captured) < len(MODELS) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        litellm.callbacks = previous
    assert len(captured) == len(MODELS)
    # As a callback would ship them: JSON.
    return [orjson.loads(orjson.dumps(p, default=str)) for p in captured]


def expected(payloads: list[dict[str, Any]]) -> dict[str, tuple[Decimal, Decimal]]:
    """request_id → (cost from the price catalog, LiteLLM's cost at the ledger's scale)."""
    out = {}
    for payload in payloads:
        event = normalize("litellm", payload, tenant_id=TENANT)
        reported = Decimal(repr(payload["response_cost"])).quantize(MONEY_QUANTUM)
        out[event["request_id"]] = (event_cost(event), reported)
    return out


def ledgered(rows: list[dict[str, Any]]) -> dict[str, tuple[Decimal, Decimal]]:
    return {str(r["request_id"]): (Decimal(r["cost"]), Decimal(r["reported"])) for r in rows}


LEDGER_SQL = (
    "SELECT request_id, toString(cost_usd) AS cost, toString(reported_cost_usd) AS reported "
    f"FROM usage_ledger FINAL WHERE tenant_id = '{TENANT}'"
)


def test_the_real_float_cost_is_there(payloads: list[dict[str, Any]]) -> None:
    # The case of the issue: more digits than Decimal(38, 18) holds.
    costs = [repr(p["response_cost"]) for p in payloads]
    assert any(len(c.split(".")[-1]) > 18 for c in costs if "e" not in c), costs


def test_replay_ledgers_every_litellm_payload(
    payloads: list[dict[str, Any]], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    source = write_ndjson(tmp_path / "litellm.ndjson", [orjson.dumps(p) for p in payloads])
    result = spendstream(
        "replay",
        str(source),
        "--format",
        "litellm",
        "--tenant",
        TENANT,
        "--data-dir",
        str(data_dir),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    summary = orjson.loads(result.stdout.splitlines()[-1])
    assert (summary["ledgered"], summary["dead_lettered"]) == (len(payloads), 0), summary
    assert ledgered(query_json(data_dir, LEDGER_SQL)) == expected(payloads)
    assert CANARY not in str(query_json(data_dir, "SELECT * FROM usage_ledger"))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path / "data")
    try:
        yield running
    finally:
        running.stop()


def test_http_ingest_ledgers_every_litellm_payload(
    payloads: list[dict[str, Any]], stack: RunningStack
) -> None:
    answer = httpx.post(
        f"{stack.url}/v1/events",
        params={"format": "litellm", "tenant_id": TENANT},
        content=orjson.dumps(payloads),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code in (200, 202), answer.text
    assert answer.json()["accepted"] == len(payloads)

    def rows() -> list[tuple[Any, ...]]:
        found = stack.query(LEDGER_SQL)
        return found if len(found) == len(payloads) else []

    found = wait_for(rows, timeout=120)
    assert {str(r[0]): (Decimal(r[1]), Decimal(r[2])) for r in found} == expected(payloads)
    code = httpx.get(f"{stack.url}/health", timeout=10).status_code
    assert code == 200
