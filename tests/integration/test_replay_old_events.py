"""`spendstream replay` of events older than the ledger's raw retention (90 days): each
is accounted for. They go into the rollups and not into the raw ledger (its TTL drops
them), and the summary says so with their count and dollars, so that `read` equals
ledgered + rollup_only + duplicates + dead_lettered for single-event lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from tests.helpers.stack import query_json, spendstream, write_ndjson
from tests.integration.test_replay_cli import event, gpt4o_mini_cost

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def test_events_older_than_the_raw_retention_are_counted_in_the_summary(tmp_path: Path) -> None:
    ages = {1: timedelta(days=365), 2: timedelta(days=120), 3: timedelta(days=5)}
    lines = [orjson.dumps(event(i, timestamp=(NOW - age).isoformat())) for i, age in ages.items()]
    lines.append(orjson.dumps(event(3, timestamp=(NOW - ages[3]).isoformat())))  # a duplicate
    path = write_ndjson(tmp_path / "old.ndjson", lines)
    result = spendstream("replay", str(path), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["read"], summary["ledgered"], summary["rollup_only"]) == (4, 1, 2)
    assert (summary["duplicates"], summary["dead_lettered"]) == (1, 0)
    assert summary["read"] == sum(
        summary[k] for k in ("ledgered", "rollup_only", "duplicates", "dead_lettered")
    )
    assert Decimal(summary["total_cost_usd"]) == gpt4o_mini_cost(3)
    assert Decimal(summary["rollup_only_cost_usd"]) == gpt4o_mini_cost(1) + gpt4o_mini_cost(2)
    (daily,) = query_json(
        tmp_path / "data",
        "SELECT count() AS days, toString(sum(cost_usd)) AS cost FROM spend_daily",
    )
    assert Decimal(daily["cost"]) == sum((gpt4o_mini_cost(i) for i in ages), Decimal(0))
