"""Run every ClickHouse query of the Grafana dashboards against the real schema.

Used by test_deploy_grafana.py in a subprocess (chdb allows one session per
process): applies sql/ to an embedded ClickHouse in DATA_DIR through the
project's own migration runner, inserts a few rows, expands the Grafana
ClickHouse plugin's macros the way the plugin does, runs each panel query (with
the tenant variable at "All" and at one tenant) and each variable query, and
runs a query that names a custom variable once per value of it, and prints one JSON
object: {"ran": n, "errors": [...]}.

    python tests/deploy/dashboard_sql_check.py DATA_DIR DASHBOARD.json...
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

FROM_S, TO_S = 1, 4_000_000_000


def expand_macros(sql: str, tenants: list[str] | None) -> str:
    """The plugin's macros, for a time range of (FROM_S, TO_S) seconds; `tenants`
    None is the variable's "All"."""
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)",
        rf"\1 >= toDateTime({FROM_S}) AND \1 <= toDateTime({TO_S})",
        sql,
    )
    sql = re.sub(
        r"\$__dateFilter\((\w+)\)",
        rf"\1 >= toDate(toDateTime({FROM_S})) AND \1 <= toDate(toDateTime({TO_S}))",
        sql,
    )
    sql = re.sub(
        r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)", sql
    )
    sql = re.sub(
        r"\$__conditionalAll\((.*?), \$tenant\)",
        lambda m: "1=1" if tenants is None else m.group(1),
        sql,
    )
    return sql.replace("${tenant:singlequote}", ",".join(f"'{t}'" for t in tenants or []))


SAMPLE_ROWS = [
    """INSERT INTO usage_ledger (request_id, timestamp, tenant_id, team_id, workflow_id,
        workflow_run_id, workflow_name, provider, model, input_tokens, output_tokens,
        request_count, cost_usd, cost_status, ingested_at)
    VALUES
        ('r1', now64(3), 'acme', 'search', 'wf-1', 'run-1', 'Answer', 'openai', 'gpt-4o',
         1000, 200, 1, 0.0125, 'priced', now64(3)),
        ('r2', now64(3), 'beta', '', '', '', '', 'acme-ai', 'private-1', 50, 10, 1, 0,
         'unpriced', now64(3))""",
    """INSERT INTO dead_letters (log_epoch, topic, partition, offset, element_index, reason,
        message, raw_payload, payload_bytes, request_id, tenant_id, received_at)
    VALUES ('kafka', 'spendstream.usage', 0, 7, -1, 'malformed_json', 'Expecting value',
        '{', 1, '', '', now64(3))""",
    """INSERT INTO alerts (fingerprint, detector, key, tenant_id, severity, state, summary,
        value, threshold, unit, cause, window_start, window_end, triggered_at, recorded_at)
    VALUES ('fp-1', 'contract', 'acme', 'acme', 'critical', 'triggered',
        'acme passed 100 % of its monthly budget', 1012.5, 1000, 'usd', 'model_mix',
        now64(3), now64(3), now64(3), now64(3))""",
    """INSERT INTO alert_deliveries (fingerprint, channel, action, attempt, outcome,
        status_code, reason, attempted_at)
    VALUES ('fp-1', 'slack', 'trigger', 3, 'failed', 500, 'server error', now64(3))""",
]


def main(argv: list[str]) -> int:
    from streams.ledger.connect import clickhouse_session
    from streams.ledger.migrations import apply_migrations

    data_dir, dashboards = Path(argv[0]), [Path(p) for p in argv[1:]]
    ran, errors = 0, []
    with clickhouse_session(f"chdb://{data_dir.resolve()}") as handle:
        client = handle.client
        apply_migrations(client)
        for statement in SAMPLE_ROWS:
            client.command(statement)
        for path in dashboards:
            board = json.loads(path.read_text())
            queries = [
                (f"variable {v['name']}", v["query"])
                for v in board.get("templating", {}).get("list", [])
                if v.get("datasource", {}).get("type") == "grafana-clickhouse-datasource"
            ]
            for panel in board["panels"]:
                for target in panel.get("targets", []):
                    if "rawSql" in target:
                        queries.append((f"panel {panel['title']!r}", target["rawSql"]))
            # A custom variable (a column to group by) runs with each of its values.
            custom = [
                (v["name"], [option["value"] for option in v["options"]])
                for v in board.get("templating", {}).get("list", [])
                if v.get("type") == "custom"
            ]
            for where, sql in list(queries):
                for name, values in custom:
                    if f"${{{name}}}" in sql:
                        queries.remove((where, sql))
                        queries += [
                            (f"{where} ({name}={value})", sql.replace(f"${{{name}}}", value))
                            for value in values
                        ]
            for where, sql in queries:
                for tenants in (None, ["acme"]):
                    expanded = expand_macros(sql, tenants)
                    if "$" in expanded:
                        errors.append(f"{path.name}: {where}: unexpanded macro")
                        continue
                    try:
                        client.query(expanded)
                        ran += 1
                    except Exception as exc:  # report every failing query, not the first
                        errors.append(f"{path.name}: {where}: {str(exc).splitlines()[0][:300]}")
    print(json.dumps({"ran": ran, "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
