"""Grafana assets: provisioning, dashboards, and their queries against the real schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"

# What the worker exposes on /metrics (issue 8, item 4).
WORKER_METRICS = {
    "spendstream_events_in_total",
    "spendstream_events_ledgered_total",
    "spendstream_duplicates_total",
    "spendstream_dead_letters_total",
    "spendstream_sink_batch_seconds",
    "spendstream_sink_batch_rows",
    "spendstream_consumer_lag",
    "spendstream_alerts_total",
    "spendstream_alert_deliveries_total",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def grafana_service() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service: dict[str, Any] = compose["services"]["grafana"]
    return service


def host_path(container_path: str) -> Path:
    """The repository path docker-compose.yml mounts at `container_path` in Grafana."""
    for volume in grafana_service()["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith(".") and (
            container_path == target or container_path.startswith(target.rstrip("/") + "/")
        ):
            return ROOT / source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted from the repository")


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml")):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            assert source["uid"] not in found, f"duplicate data source uid {source['uid']}"
            found[source["uid"]] = source
    return found


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def test_the_four_views_the_design_asks_for_exist() -> None:
    titles = {p["title"] for path in DASHBOARDS for p in panels(load(path))}
    for wanted in (
        "Spend by tenant (hourly)",
        "Spend by team (daily)",
        "Spend by workflow (daily)",
        "Spend by model (daily)",
        "Open incidents",
        "Dead letters by reason",
        "Consumer lag by topic and partition",
    ):
        assert wanted in titles


def test_dashboards_parse_and_have_unique_uids() -> None:
    assert len(DASHBOARDS) >= 3
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    for path in DASHBOARDS:
        board = load(path)
        assert board["title"] and board["panels"], path.name
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), f"{path.name}: duplicate panel ids"
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, f"{panel['title']}: gridPos"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_a_provisioned_datasource_and_a_query(path: Path) -> None:
    sources = provisioned_datasources()
    for panel in panels(load(path)):
        title = panel["title"]
        datasource = panel.get("datasource")
        assert datasource and datasource["uid"] in sources, f"{title}: datasource {datasource}"
        assert sources[datasource["uid"]]["type"] == datasource["type"], title
        assert panel.get("targets"), f"{title}: no query"
        for target in panel["targets"]:
            target_source = target.get("datasource", datasource)
            assert target_source["uid"] in sources, f"{title}: target datasource"
            if target_source["type"] == CLICKHOUSE_PLUGIN:
                assert target.get("rawSql", "").strip(), f"{title}: empty SQL"
                assert target["editorType"] == "sql", title
                # The plugin's formats: 0 time series, 1 table.
                assert target["format"] == (0 if panel["type"] == "timeseries" else 1), title
            else:
                assert target_source["type"] == "prometheus", title
                assert target.get("expr", "").strip(), f"{title}: empty PromQL"


def test_clickhouse_datasource_logs_in_as_the_read_only_user_with_a_secret_from_env() -> None:
    clickhouse = provisioned_datasources()["spendstream-clickhouse"]
    assert clickhouse["type"] == CLICKHOUSE_PLUGIN
    assert clickhouse["jsonData"]["username"] == "grafana"
    password = clickhouse["secureJsonData"]["password"]
    assert re.fullmatch(r"\$\{?[A-Z_]+\}?", password), "the password must come from the env"
    env_name = password.strip("${}")
    users_xml = (ROOT / "deploy" / "clickhouse" / "users.d" / "grafana.xml").read_text()
    assert f'from_env="{env_name}"' in users_xml
    assert "<readonly>2</readonly>" in users_xml and "GRANT SELECT ON default.*" in users_xml
    assert f"\n{env_name}=" in "\n" + (ROOT / "deploy" / "env.example").read_text()

    prometheus = provisioned_datasources()["spendstream-prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"


def test_the_clickhouse_plugin_is_installed_at_a_pinned_version() -> None:
    env = grafana_service()["environment"]
    plugin = env["GF_PLUGINS_PREINSTALL_SYNC"]
    assert re.fullmatch(rf"{CLICKHOUSE_PLUGIN}@\d+\.\d+\.\d+", plugin), plugin
    version = plugin.split("@")[1]
    for path in DASHBOARDS:
        for panel in panels(load(path)):
            for target in panel["targets"]:
                if "rawSql" in target:
                    assert target["pluginVersion"] == version


def test_dashboard_provisioning_points_at_the_dashboard_files() -> None:
    providers = []
    for path in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.y*ml")):
        providers.extend(yaml.safe_load(path.read_text())["providers"])
    assert providers
    for provider in providers:
        directory = host_path(provider["options"]["path"])
        assert directory.is_dir(), directory
        assert sorted(directory.glob("*.json")) == DASHBOARDS
    provisioning = host_path("/etc/grafana/provisioning")
    assert provisioning == GRAFANA / "provisioning"
    home = grafana_service()["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(home).is_file()


def test_prometheus_panels_use_every_worker_metric_and_no_other() -> None:
    used: set[str] = set()
    for path in DASHBOARDS:
        for panel in panels(load(path)):
            for target in panel["targets"]:
                used.update(re.findall(r"\bspendstream_\w+", target.get("expr", "")))
    base = {
        next(
            (
                m[: -len(s)]
                for s in HISTOGRAM_SUFFIXES
                if m.endswith(s) and m[: -len(s)] in WORKER_METRICS
            ),
            m,
        )
        for m in used
    }
    assert base - WORKER_METRICS == set(), f"unknown metrics {base - WORKER_METRICS}"
    assert WORKER_METRICS - base == set(), f"metrics without a panel {WORKER_METRICS - base}"


def test_every_clickhouse_query_runs_on_the_real_schema(tmp_path: Path) -> None:
    """Applies sql/ to embedded ClickHouse (chdb) and runs every dashboard query, with
    the plugin's macros expanded. A subprocess: chdb allows one session per process."""
    script = Path(__file__).with_name("dashboard_sql_check.py")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ch"), *map(str, DASHBOARDS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    assert report["ran"] >= 40


def test_the_live_board_has_the_worker_pages_panels_in_step() -> None:
    """The worker's page (streams/dashboard/static/index.html) and the live board show
    the same sections in the same order, each with its panels."""
    page = (ROOT / "streams" / "dashboard" / "static" / "index.html").read_text()
    sections = [
        re.sub(r"<[^>]+>.*", "", title).strip()
        for title in re.findall(r"<h2 id=\"[\w-]+\">(.*?)</h2>", page)
    ]
    assert sections[0] == "Now" and len(sections) == 7, sections
    board = load(GRAFANA / "dashboards" / "spendstream-live.json")
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == sections
    row_at = [p["type"] == "row" for p in board["panels"]]
    for index, is_row in enumerate(row_at):
        if is_row:
            assert index + 1 < len(row_at) and not row_at[index + 1], board["panels"][index][
                "title"
            ]
    titles = {p["title"] for p in panels(board)}
    for wanted in ("This hour", "Today", "Month to date", "Events in / s", "Ledger rows",
                   "Dead letters", "Incidents: open and last 7 days", "Unpriced calls by model",
                   "Drill-down: workflows of the selected tenants",
                   "Drill-down: models of the selected tenants"):  # fmt: skip
        assert wanted in titles
