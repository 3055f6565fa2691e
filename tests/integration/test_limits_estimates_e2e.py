"""`GET /v1/limits/{tenant}` with calls to a model with no price, on the real stack
(embedded broker, worker child process, chdb), in both modes of `limits.estimates`:
`count` adds the estimate to the budget check; `unknown` fails closed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers.stack import RunningStack, analyst_headers
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

CONFIG = """\
tenants:
  acme: {monthly_budget_usd: 0.01}
limits: {estimates: MODE}
detectors: {online: {enabled: false}, unpriced_model: {min_requests: 2}}
"""


def events() -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    common = {"timestamp": now, "tenant_id": "acme", "provider": "openai"}
    # gpt-4o-mini: 10,000 x 0.15 + 1,000 x 0.60 = 0.0021 known; gpt-9o-mini has no
    # price and is estimated from its closest relative.
    return [
        {**common, "request_id": "lim-priced", "model": "gpt-4o-mini", "input_tokens": 10_000,
         "output_tokens": 1_000},
        *(
            {**common, "request_id": f"lim-est-{i}", "model": "gpt-9o-mini",
             "input_tokens": 10_000, "output_tokens": 1_000}
            for i in range(2)
        ),
    ]  # fmt: skip


@pytest.fixture(params=["count", "unknown"], scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningStack, str]]:
    mode = request.param
    directory = tmp_path_factory.mktemp(f"limits-{mode}")
    config = directory / "config.yaml"
    config.write_text(CONFIG.replace("MODE", mode))
    running = RunningStack(directory / "data", {"SPENDSTREAM_CONFIG_FILE": str(config)})
    try:
        yield running, mode
    finally:
        running.stop()


def limits(running: RunningStack) -> dict[str, Any] | None:
    response = httpx.get(
        f"{running.url}/v1/limits/acme",
        headers=analyst_headers(running.settings.data_dir),
        timeout=5,
    )
    body = response.json()
    return body if response.status_code == 200 and body["unpriced_requests"] == 2 else None


def test_limits_show_and_judge_estimates(stack: tuple[RunningStack, str]) -> None:
    running, mode = stack
    response = httpx.post(f"{running.url}/v1/events", content=orjson.dumps(events()), timeout=60)
    assert response.status_code == 202, response.text
    body = wait_for(lambda: limits(running))
    assert Decimal(body["month_to_date_usd"]) == Decimal("0.0021")
    estimated = Decimal(body["estimated_usd"])
    # The in-stream tables count the costed events once the ledger holds them.
    ledger = wait_for(
        lambda: (
            (
                rows := running.query(
                    "SELECT sum(estimated_cost_usd) FROM usage_ledger FINAL "
                    "WHERE cost_status = 'estimated'"
                )
            )
            and rows[0][0] > 0
            and rows
        )
    )
    assert estimated == ledger[0][0] > 0
    assert body["estimates"] == mode
    if mode == "count":
        # 0.0021 alone is under the 0.01 budget; with the estimate it is judged as
        # the sum, and the remaining amount is what the sum leaves.
        counted = Decimal("0.0021") + estimated
        expected = (
            "over"
            if counted >= Decimal("0.01")
            else "warn"
            if counted >= Decimal("0.008")
            else "ok"
        )
        assert body["status"] == expected
        assert Decimal(body["remaining_usd"]) == max(Decimal(0), Decimal("0.01") - counted)
    else:
        assert (body["status"], body["remaining_usd"]) == ("unknown", None)
    alerts = wait_for(
        lambda: running.query("SELECT key FROM alerts WHERE detector = 'unpriced_model'") or None
    )
    assert alerts[0][0] == "tenant:acme/model:gpt-9o-mini"
