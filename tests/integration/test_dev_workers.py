"""`spendstream dev --workers 2`: two workers in one consumer group on the embedded
broker share the partitions, and the totals are exact."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from streams.cost.catalog import PriceCatalog
from streams.embedded.replay import publish
from streams.embedded.simulate import TrafficGenerator
from streams.ports import free_port
from tests.helpers.stack import analyst_headers, children_running, write_ndjson
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


def test_dev_with_two_workers_shares_partitions_and_totals_are_exact(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "dev",
            "--workers",
            "2",
            "--data-dir",
            str(data_dir),
            "--port",
            str(free_port()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert dev.stdout is not None
        banner = dev.stdout.readline().decode()
        match = re.search(r"broker (\S+), .* workers (\S+), (\S+) \(", banner)
        assert match, banner
        bootstrap, owner, peer = match.group(1).rstrip(","), match.group(2), match.group(3)

        def stats(url: str) -> dict:
            return dict(httpx.get(f"{url}/stats", timeout=5).json())

        # The group has settled when the four partitions are split between the two.
        wait_for(
            lambda: (
                len(stats(owner)["assigned"]) + len(stats(peer)["assigned"]) == 4
                and stats(peer)["assigned"]
            ),
            timeout=90,
        )
        generator = TrafficGenerator(seed=11)
        now = datetime.now(UTC)
        events = [generator.event(now) for _ in range(2000)]
        # Keyed by request_id like the SDK: duplicates land where their first copy did.
        lines = [orjson.dumps(e) for e in events] + [orjson.dumps(e) for e in events[:300]]
        keys = [e["request_id"].encode() for e in events + events[:300]]
        asyncio.run(publish(bootstrap, "spendstream.usage", lines, keys))

        wait_for(lambda: stats(owner)["ledgered"] + stats(peer)["ledgered"] == 2000, timeout=120)
        owner_stats, peer_stats = stats(owner), stats(peer)
        assert owner_stats["messages"] > 0 and peer_stats["messages"] > 0  # partitions shared
        assert owner_stats["messages"] + peer_stats["messages"] == len(lines)
        assert owner_stats["duplicates"] + peer_stats["duplicates"] == 300

        catalog = PriceCatalog.load(None)
        expected = Decimal(0)
        for e in events:
            prices = catalog.resolve(e["provider"], e["model"], now)
            assert prices is not None
            expected += prices.cost(
                e["input_tokens"], e["cached_tokens"], 0, e["output_tokens"], e["reasoning_tokens"]
            ).total
        body = orjson.dumps({"sql": "SELECT count(), sum(cost_usd) FROM usage_ledger"})
        answer = httpx.post(
            f"{owner}/v1/query", content=body, headers=analyst_headers(data_dir), timeout=30
        ).json()
        count, total = answer["rows"][0]
        assert int(count) == 2000
        assert Decimal(total) == expected

        # `spendstream replay` through this stack accounts for every line: the peer's
        # dropped duplicates are counted with the owner's.
        more = [generator.event(now) for _ in range(600)]
        replayed = [orjson.dumps(e) for e in more] + [orjson.dumps(e) for e in more[:150]]
        path = write_ndjson(tmp_path / "more.ndjson", replayed)
        replay = subprocess.run(
            [sys.executable, "-m", "streams.cli", "replay", str(path), "--data-dir", str(data_dir)],
            capture_output=True,
            timeout=300,
        )
        assert replay.returncode == 0, replay.stderr.decode()
        out = orjson.loads(replay.stdout.decode().strip().splitlines()[-1])
        assert out["read"] == 750
        assert (out["ledgered"], out["duplicates"], out["dead_lettered"]) == (600, 150, 0)
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(timeout=60)
    assert code == 0
    assert not list((data_dir / "peers").glob("*.json"))  # the peer withdrew on its stop


def test_dev_stops_with_one_line_when_the_embedded_broker_dies(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dev = subprocess.Popen(
        [
            *(sys.executable, "-m", "streams.cli", "dev", "--data-dir", str(data_dir)),
            *("--port", str(free_port())),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert dev.stdout is not None
        assert "broker" in dev.stdout.readline().decode()
        [broker] = wait_for(lambda: children_running(dev.pid, "broker"), timeout=30)
        os.kill(broker, signal.SIGKILL)
        code = dev.wait(timeout=60)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
    assert dev.stderr is not None
    errors = dev.stderr.read().decode().strip().splitlines()
    assert code != 0
    assert errors and "embedded broker exited" in errors[-1], errors
    assert "in-memory log is gone" in errors[-1]
    # Said on the terminal at once, not only after the worker's stop.
    assert dev.stdout is not None
    assert "the embedded broker exited: stopping the worker…" in dev.stdout.read().decode()
    # The worker was stopped with the stack, not left behind.
    assert children_running(dev.pid, "worker") == []
