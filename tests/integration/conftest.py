"""Integration tests run the real `spendstream` command: the embedded Kafka-protocol
broker (tansu), the Faust worker, and ClickHouse through chdb."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = pytest.mark.integration


def spendstream(
    *args: str, stdin: bytes | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def query_json(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    result = spendstream("query", sql, "--data-dir", str(data_dir), "--format", "json")
    assert result.returncode == 0, result.stderr.decode()
    return list(orjson.loads(result.stdout))


def write_ndjson(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path
