"""Static checks of docker-compose.yml and the files it mounts (no Docker engine needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"

ONE_SHOT = {"topic-init", "migrate"}
WORKERS = {"worker-1", "worker-2"}
# Services that need a secret, and so read the env file.
NEEDS_SECRETS = {"clickhouse", "migrate", "grafana"} | WORKERS
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|WEBHOOK|ROUTING_KEY|API_KEY|PRIVATE", re.I)
# A pinned tag names a version: 3.9.1, v3.5.0, 25.8.8.26, 3.11.13-slim-bookworm.
PINNED_TAG = re.compile(r"^v?\d+\.\d+(\.\d+)*([-.][\w.-]+)?$")


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def image_tag(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def test_the_stack_has_the_services_the_design_names() -> None:
    names = set(services())
    assert {"kafka", "clickhouse", "prometheus", "grafana"} | ONE_SHOT | WORKERS <= names


def test_every_image_is_pinned_to_a_version() -> None:
    for name, svc in services().items():
        if "build" in svc:
            # Built here; its local tag must still not be `latest`.
            tag = image_tag(svc.get("image", ""))
            assert tag not in ("", "latest"), f"{name}: give the built image a version tag"
            continue
        image = svc.get("image", "")
        tag = image_tag(image)
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"
        assert PINNED_TAG.match(tag), f"{name}: tag {tag!r} of {image!r} is not a version"


def test_kafka_is_apache_kafka_in_kraft_mode() -> None:
    kafka = services()["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in yaml.safe_dump(kafka).lower()
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_one_shot_steps_are_marked_and_everything_else_restarts() -> None:
    for name, svc in services().items():
        assert "restart" in svc, f"{name}: say whether it restarts"
        one_shot = str(svc["restart"]) == "no"
        assert one_shot == (name in ONE_SHOT), f"{name}: restart {svc['restart']!r}"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in services().items():
        if name in ONE_SHOT:
            continue
        check = svc.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        assert check.get("test"), f"{name}: healthcheck has no test"
        assert check["test"] != ["NONE"], f"{name}: healthcheck is NONE"


def test_dependencies_wait_for_health_and_for_the_one_shot_steps() -> None:
    svcs = services()
    for name, svc in svcs.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in svcs, f"{name} depends on unknown service {dep}"
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond == {"condition": expected}, f"{name} -> {dep}: {cond}"
    for worker in WORKERS:
        deps = svcs[worker]["depends_on"]
        assert {"kafka", "clickhouse", "topic-init", "migrate"} <= set(deps)


def parse_port(entry: Any) -> tuple[str | None, str]:
    """(host ip, description) of one `ports` entry, short or long syntax."""
    if isinstance(entry, dict):
        return entry.get("host_ip"), str(entry)
    text = str(entry).split("/", 1)[0]
    parts = text.rsplit(":", 2)
    if len(parts) == 3:
        return parts[0].strip("[]"), str(entry)
    return None, str(entry)


def test_every_published_port_binds_localhost_only() -> None:
    for name, svc in services().items():
        assert svc.get("network_mode") != "host", f"{name}: host networking"
        for entry in svc.get("ports") or []:
            host_ip, text = parse_port(entry)
            assert host_ip == "127.0.0.1", f"{name}: port {text} is not bound to 127.0.0.1"


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, svc in services().items():
        env = svc.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.partition("=")[::2] for e in env)
        for key, value in items:
            if SECRET_NAME.search(key):
                raise AssertionError(f"{name}: secret {key}={value!r} belongs in the env file")
    text = COMPOSE_FILE.read_text()
    assert not re.search(
        r"(?i)(password|secret|token)\s*[:=]\s*['\"]?\w", text.replace("${", "")
    ), "a secret-looking literal in docker-compose.yml"


def test_services_with_secrets_read_them_from_the_uncommitted_env_file() -> None:
    for name in NEEDS_SECRETS:
        env_file = services()[name].get("env_file")
        assert env_file, f"{name}: no env_file"
        files = [env_file] if isinstance(env_file, str) else env_file
        assert files == ["${SPENDSTREAM_ENV_FILE:-.env}"], f"{name}: env_file {files}"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored, ".env must be git-ignored"


def test_env_example_covers_every_secret_and_holds_no_real_one() -> None:
    values = env_example()
    needed = {
        "CLICKHOUSE_PASSWORD",
        "SPENDSTREAM_CLICKHOUSE_PASSWORD",
        "CLICKHOUSE_GRAFANA_PASSWORD",
        "GF_SECURITY_ADMIN_PASSWORD",
        "SPENDSTREAM_ALERTS__SLACK_WEBHOOK_URL",
        "SPENDSTREAM_ALERTS__PAGERDUTY_ROUTING_KEY",
    }
    assert needed <= set(values)
    for key, value in values.items():
        if SECRET_NAME.search(key):
            assert value == "" or value.startswith("change-me"), f"{key} holds a value"
    # Every ${VAR} the compose file reads has a line in the example.
    text = COMPOSE_FILE.read_text()
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)(?::?-[^}]*)?\}", text))
    optional = {"SPENDSTREAM_ENV_FILE", "KAFKA_CLUSTER_ID"}
    assert referenced - optional <= set(values), referenced - optional - set(values)


def test_every_bind_mounted_host_path_exists() -> None:
    for name, svc in services().items():
        for volume in svc.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    topic_script = ROOT / "deploy" / "kafka" / "create-topics.sh"
    assert os.access(topic_script, os.R_OK)


def test_workers_form_one_consumer_group_and_prometheus_scrapes_each() -> None:
    svcs = services()
    first, *rest = (svcs[w] for w in sorted(WORKERS))
    for other in rest:
        for key in ("image", "command", "environment", "build"):
            assert other[key] == first[key], f"workers differ in {key}"
    env = first["environment"]
    assert env["SPENDSTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["SPENDSTREAM_CLICKHOUSE_URL"].startswith("http://")
    assert env["SPENDSTREAM_WEB_HOST"] == "0.0.0.0"
    assert svcs["migrate"]["image"] == first["image"]
    assert svcs["migrate"]["command"] == ["migrate"]

    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "spendstream")
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    port = env["SPENDSTREAM_WEB_PORT"]
    assert targets == {f"{w}:{port}" for w in WORKERS}
    assert job["metrics_path"] == "/metrics"


def test_topic_init_creates_the_three_main_topics() -> None:
    script = (ROOT / "deploy" / "kafka" / "create-topics.sh").read_text()
    for topic in ("spendstream.usage", "spendstream.costed", "spendstream.usage.dlq"):
        assert topic in script
    assert "--if-not-exists" in script
    partitions = services()["topic-init"]["environment"]["TOPIC_PARTITIONS"]
    assert partitions == services()["worker-1"]["environment"]["SPENDSTREAM_TOPIC_PARTITIONS"]


def compose_command() -> list[str] | None:
    """`docker compose` or `docker-compose`, whichever runs here (neither needs an engine
    to parse a file)."""
    candidates: list[list[str]] = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        probe = subprocess.run(
            [*command, "version"], capture_output=True, text=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return command
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {**os.environ, "SPENDSTREAM_ENV_FILE": str(ENV_EXAMPLE.relative_to(ROOT))}
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
