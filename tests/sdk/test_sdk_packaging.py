"""A producer installs the SDK alone: its wheel installed in a clean venv brings only
its own dependencies, and records an event into an HTTP receiver on 127.0.0.1.

Offline, whatever the network: the SDK's wheel is built without build isolation by this
interpreter, its dependencies are packed as wheels from the distributions installed
here (a wheel is a zip of the files its RECORD lists, platform tags from its WHEEL
file), and the clean venv installs from that directory alone (`--no-index`, no pip
configuration)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

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
    # PIP_CONFIG_FILE=/dev/null: no index or find-links of this machine's pip configuration.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False,
        env=env,
    )  # fmt: skip


def required_distributions(requirements: list[str]) -> set[str]:
    """The installed distributions these requirements need, transitively (no extras)."""
    needed: set[str] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = metadata.distribution(requirement.name).metadata["Name"]
        if name.lower() not in needed:
            needed.add(name.lower())
            pending += [Requirement(r) for r in metadata.requires(name) or []]
    return needed


def pack_installed(name: str, wheelhouse: Path) -> Path:
    """A wheel of an installed distribution: the files of its RECORD inside site-packages
    (no bytecode, no scripts; pip writes those itself)."""
    dist = metadata.distribution(name)
    site = Path(str(dist.locate_file("")))
    tag = re.search(r"^Tag: (\S+)$", dist.read_text("WHEEL") or "", re.MULTILINE)
    assert tag is not None, name
    stem = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    target = wheelhouse / f"{stem}-{dist.version}-{tag.group(1)}.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in dist.files or []:
            path = str(file)
            if path.startswith("..") or "__pycache__" in path or path.endswith(".pyc"):
                continue
            if path.endswith(("INSTALLER", "REQUESTED", "direct_url.json")):
                continue
            wheel.write(site / path, path)
    return target


def test_the_sdk_declares_no_worker_dependency() -> None:
    project = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["project"]
    names = {requirement.split(">")[0].split("=")[0] for requirement in project["dependencies"]}
    assert names == {"pydantic", "orjson", "httpx", "aiokafka"}


def test_a_clean_venv_with_only_the_sdk_records_an_event(
    tmp_path: Path, ingest_server: Any
) -> None:
    wheelhouse = tmp_path / "wheels"
    built = run(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
        "--no-build-isolation", "--wheel-dir", wheelhouse, ROOT / "sdk",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    project = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["project"]
    for name in required_distributions(project["dependencies"]):
        pack_installed(name, wheelhouse)
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run(
        python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", wheelhouse,
        "spendstream-sdk",
    )  # fmt: skip
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
