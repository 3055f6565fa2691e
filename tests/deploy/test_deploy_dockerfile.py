"""Static checks of the Dockerfile and .dockerignore."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PINNED_TAG = re.compile(r"^\d+\.\d+\.\d+(-[\w.-]+)?$")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_base_images_are_pinned_python_3_11_slim() -> None:
    stages: set[str] = set()
    froms = [args for word, args in instructions() if word == "FROM"]
    assert froms
    for args in froms:
        parts = args.split()
        image = next(p for p in parts if not p.startswith("--"))
        if "AS" in (p.upper() for p in parts):
            stages.add(parts[-1])
        if image in stages:
            continue
        name, _, tag = image.partition(":")
        assert name == "python", image
        assert tag.startswith("3.11.") and "slim" in tag, image
        assert PINNED_TAG.match(tag), f"{image} is not pinned to a patch version"


def test_runs_as_an_unprivileged_user() -> None:
    users = [args for word, args in instructions() if word == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    # USER comes after the last RUN of the final stage: nothing later runs as root.
    words = [word for word, _ in instructions()]
    last_from = max(i for i, w in enumerate(words) if w == "FROM")
    last_user = max(i for i, w in enumerate(words) if w == "USER")
    assert last_user > last_from
    assert "RUN" not in words[last_user:]


def test_healthcheck_asks_the_worker_health_endpoint_without_curl() -> None:
    checks = [args for word, args in instructions() if word == "HEALTHCHECK"]
    assert len(checks) == 1
    check = checks[0]
    assert not check.upper().startswith("NONE")
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    assert "/health" in command[2] and "urllib.request" in command[2]
    assert "curl" not in check


def test_entrypoint_is_the_cli_and_the_default_is_the_worker() -> None:
    words = dict(instructions())
    assert json.loads(words["ENTRYPOINT"]) == ["spendstream"]
    assert json.loads(words["CMD"]) == ["worker"]


def test_the_build_copies_exactly_what_the_distribution_needs() -> None:
    copied = []
    for word, args in instructions():
        if word == "COPY" and "--from" not in args:
            copied.extend(args.split()[:-1])
    for source in copied:
        if source.endswith("*"):
            continue  # optional (README.md*)
        assert (ROOT / source).exists(), f"COPY {source}: missing"
    assert {"pyproject.toml", "streams", "detectors", "schemas", "sql"} <= set(copied)


def test_dockerignore_is_an_allow_list_that_keeps_secrets_out() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start from nothing and allow what the build needs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "streams", "detectors", "schemas", "sql"}
