"""`spendstream dev`: its options reach the worker, it listens on the documented port
(or says in one line where else), and it announces its addresses in worker.json so
that commands find the running stack by themselves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from streams.embedded.processes import stop
from streams.ledger.remote import RunningStack, running_stack
from streams.ports import free_port, port_free
from tests.helpers.stack import analyst_headers, spendstream, write_ndjson
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

CONFIG = """
tenants:
  acme:
    monthly_budget_usd: "1234.50"
"""
PRICING = """
prices:
  - provider: acme-hosted
    model: private-1
    input: "3.00"
    output: "9.00"
"""


@contextmanager
def dev(data_dir: Path, *options: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`spendstream dev` until its worker announces itself; yields it and its banner."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "dev", "--data-dir", str(data_dir), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        banner = b""
        while b"(Ctrl-C to stop)" not in banner:
            line = process.stdout.readline()
            assert line, process.stderr.read().decode() if process.stderr else ""
            banner += line
        wait_for(lambda: running_stack(data_dir), timeout=60)
        yield process, banner.decode()
    finally:
        stop(process, timeout=60)  # SIGTERM: dev stops its children in order, as on Ctrl-C


def stack_of(data_dir: Path) -> RunningStack:
    stack = running_stack(data_dir)
    assert stack is not None
    return stack


def test_dev_config_and_pricing_reach_the_worker(tmp_path: Path) -> None:
    config, pricing = tmp_path / "alerts.yaml", tmp_path / "pricing.yaml"
    config.write_text(CONFIG)
    pricing.write_text(PRICING)
    data_dir = tmp_path / "data"
    port = free_port()
    options = ("--config", str(config), "--pricing", str(pricing), "--port", str(port))
    with dev(data_dir, *options):
        stack = stack_of(data_dir)
        assert stack.web_port == port

        def limits() -> dict[str, object] | None:
            response = httpx.get(
                f"{stack.url}/v1/limits/acme", headers=analyst_headers(data_dir), timeout=5
            )
            return dict(response.json()) if response.status_code == 200 else None

        assert wait_for(limits)["monthly_budget_usd"] == "1234.50"
        # Priced by the --pricing file only: the built-in catalog does not know the model.
        event = {
            "request_id": "priced-by-dev-pricing",
            "timestamp": "2026-12-01T10:00:00Z",
            "tenant_id": "acme",
            "provider": "acme-hosted",
            "model": "private-1",
            "input_tokens": 1_000_000,
            "output_tokens": 100_000,
        }
        path = write_ndjson(tmp_path / "one.ndjson", [orjson.dumps(event)])
        replayed = spendstream("replay", str(path), "--data-dir", str(data_dir))
        assert replayed.returncode == 0, replayed.stderr.decode()
        totals = orjson.loads(replayed.stdout)
        assert (totals["ledgered"], totals["unpriced"]) == (1, 0)
        assert Decimal(totals["total_cost_usd"]) == Decimal("3.90")


def test_dev_announces_broker_and_web_addresses_and_simulate_finds_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with dev(data_dir, "--port", str(free_port())) as (_, banner):
        stack = stack_of(data_dir)
        assert f"broker {stack.broker}," in banner and stack.url in banner
        assert stack.peer_token and (data_dir / "worker.json").stat().st_mode & 0o077 == 0
        published = spendstream(
            "simulate", "--data-dir", str(data_dir), "--rate", "100", "--duration", "1"
        )
        assert published.returncode == 0, published.stderr.decode()
        sent = int(published.stdout.split()[1])

        def ledgered() -> bool:
            counted = spendstream(
                "query", "SELECT count() FROM usage_ledger", "--data-dir", str(data_dir)
            )
            return counted.returncode == 0 and str(sent) in counted.stdout.decode()

        assert sent > 0 and wait_for(ledgered)


def test_dev_listens_on_6066_by_default_or_says_where_else(tmp_path: Path) -> None:
    data_dir = tmp_path / "default"
    taken = not port_free("127.0.0.1", 6066)  # another stack on this shared machine
    with dev(data_dir) as (_, banner):
        stack = stack_of(data_dir)
    if taken:
        assert f"port 6066 is in use; the worker listens on {stack.web_port} instead" in banner
    else:
        assert stack.web_port == 6066 and "in use" not in banner


def test_dev_falls_back_with_one_line_when_its_port_is_taken(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with dev(data_dir, "--port", str(port)) as (_, banner):
            stack = stack_of(data_dir)
    assert stack.web_port != port
    [line] = [line for line in banner.splitlines() if "in use" in line]
    assert line == (
        f"spendstream dev: port {port} is in use; the worker listens on {stack.web_port} "
        f"instead (commands find it through {data_dir / 'worker.json'})"
    )


def test_worker_with_its_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = dict(os.environ, SPENDSTREAM_WEB_PORT=str(port))
        result = spendstream("worker", "--data-dir", str(tmp_path / "d"), env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        f"spendstream: port {port} on 127.0.0.1 is in use: stop what listens there "
        "or set SPENDSTREAM_WEB_PORT"
    ]
