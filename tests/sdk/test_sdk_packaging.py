"""A producer installs the SDK alone: `pip install ./sdk` in a clean venv brings only
its own dependencies, and records an event into an HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER_ONLY = ("faust", "chdb", "clickhouse_connect", "river", "matplotlib", "pyarrow", "numpy")

RECORD = """
import sys
from streams.sdk import SpendstreamProducer, record_openai, set_default_producer

producer = SpendstreamProducer.http(sys.argv[1], linger_s=0.01)
set_default_producer(producer)
record_openai(
    {"id": "chatcmpl-packaging", "model": "gpt-4o-mini", "created": 1796119200,
     "usage": {"prompt_tokens": 120, "completion_tokens": 30}},
    tenant_id="acme", team_id="search",
)
assert producer.close(timeout=10), producer.stats
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2].split(",")))
assert not loaded, f"the SDK imported worker dependencies: {loaded}"
print("sent", producer.stats.sent)
"""


def run(*argv: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_sdk_declares_no_worker_dependency() -> None:
    project = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["project"]
    names = {requirement.split(">")[0].split("=")[0] for requirement in project["dependencies"]}
    assert names == {"pydantic", "orjson", "httpx", "aiokafka"}


def test_a_clean_venv_with_only_the_sdk_records_an_event(
    tmp_path: Path, ingest_server: Any
) -> None:
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "--quiet", ROOT / "sdk")
    if installed.returncode != 0 and "No matching distribution" in installed.stderr:
        pytest.skip(f"PyPI is not reachable for the SDK's dependencies: {installed.stderr[-300:]}")
    assert installed.returncode == 0, installed.stderr
    # Nothing of the worker came with it.
    listed = run(python, "-m", "pip", "list", "--format=freeze").stdout.lower()
    for name in ("faust-streaming", "chdb", "clickhouse-connect", "river", "matplotlib", "pyarrow"):
        assert f"{name}==" not in listed, name

    recorded = run(python, "-c", RECORD, ingest_server.url, ",".join(WORKER_ONLY), timeout=60)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.strip() == "sent 1"
    [event] = ingest_server.delivered
    assert event["request_id"] == "chatcmpl-packaging"
    assert (event["tenant_id"], event["input_tokens"], event["output_tokens"]) == ("acme", 120, 30)
