"""The real `spendstream` command and the real embedded stack (tansu broker, a Faust
worker child process, ClickHouse through chdb), for tests that run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson


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


class RunningStack:
    """The embedded broker and one worker child process, for tests that talk to both."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        from streams.embedded.stack import EmbeddedStack
        from streams.settings import Settings

        self.settings = Settings(data_dir=data_dir)
        self.stack = EmbeddedStack(self.settings)
        self.stack.start_broker()
        self.worker = self.stack.start_worker(extra_env)
        self.stack.wait_ready(self.worker)
        self.url = f"http://127.0.0.1:{self.worker.web_port}"

    @property
    def bootstrap(self) -> str:
        return self.stack.bootstrap

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        from streams.ledger.remote import RemoteQueryClient

        client = RemoteQueryClient(self.url)
        try:
            return list(client.query(sql).result_rows)
        finally:
            client.close()

    def stop(self) -> None:
        self.stack.stop()
