"""Run every benchmark and rewrite BENCHMARKS.md.

    python -m bench.run_all [--quick] [--quick-for NAME ...] [--only NAME ...]
        [--t1-env KEY=VALUE] [--t2-env KEY=VALUE]

--only runs the named benchmarks and replaces only their rows, details, sections and
run lines in the BENCHMARKS.md already there (`bench.sections`); the rest, hand-written
notes included, stays.

Each benchmark runs alone in its own process (`python -m bench.<module>`), one after
the other, and its one JSON result line is parsed. T3 (`bench.alert_latency`) and T7
(`bench.analyst_weekly`) are written by colleagues: they run when their modules exist
and are reported "not present" otherwise. --quick uses the small sizes: good to prove
the harness, not to judge targets whose size is part of the target (T6, T7).
--t1-env/--t2-env add a throughput run with those worker settings, as extra rows
beside the default ones. `bench.hot_path` (not a target) adds a per-stage cost table.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    REPO,
    command_line,
    last_json_line,
    loadavg,
    machine,
    now_iso,
    revision,
    run_module,
)
from bench.sections import Ran, merge, target_of

OUTPUT = REPO / "BENCHMARKS.md"
RAW_HEADING = "## Raw result lines (one per run; `--only` keeps the others from here)"
NAMES = [
    "throughput",
    "alert_latency",
    "dedupe_memory",
    "cold_start",
    "replay_million",
    "analyst_weekly",
    "dashboard_endpoints",
    "restart_limits",
    "alert_scenarios",
    "hot_path",
    "tenant_memory",
]


@dataclass
class Row:
    target: str
    goal: str
    baseline: str = "—"
    measured: str = "—"
    figure: str = "—"
    result: str = "not run"
    command: str = "—"
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    module: str
    args: list[str]
    code: int
    data: dict[str, Any] | None
    stderr: str
    load_before: str
    load_after: str
    kept: bool = False

    def to_json(self) -> str:
        record = {
            "module": self.module,
            "args": self.args,
            "code": self.code,
            "stderr_tail": self.stderr[-2000:],
            "load_before": self.load_before,
            "load_after": self.load_after,
            "data": self.data,
        }
        return orjson.dumps(record, default=str).decode()

    @classmethod
    def from_json(cls, line: str) -> Run:
        r = orjson.loads(line)
        return cls(
            r["module"],
            r["args"],
            r["code"],
            r["data"],
            r["stderr_tail"],
            r["load_before"],
            r["load_after"],
            kept=True,
        )

    @property
    def quick(self) -> bool:
        if "--quick" in self.args:
            return True
        if "--rows" in self.args:
            return int(self.args[self.args.index("--rows") + 1]) < 10_000_000
        return False

    @property
    def command(self) -> str:
        return shlex.join(["python", "-m", self.module, *self.args])

    @property
    def error(self) -> str | None:
        if self.data is not None and self.code == 0:
            return None
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return f"exit {self.code}: {lines[-1][:300] if lines else 'no output'}"


def present(module: str) -> bool:
    return importlib.util.find_spec(f"bench.{module}") is not None


def run(module: str, args: list[str], timeout: float) -> Run:
    before = loadavg()
    code, out, err = run_module(f"bench.{module}", args, timeout)
    data = last_json_line(out)
    if data is None and out.strip():
        data = {"text": out.strip().splitlines()[-1]}
    if data is not None:
        data.setdefault("revision", revision())  # a module that prints one text line
        data.setdefault("date", now_iso())
    return Run(f"bench.{module}", args, code, data, err, before, loadavg())


def verdict(passed: Any, quick_size: bool = False) -> str:
    if passed is None:
        return "n/a (quick size)" if quick_size else "n/a"
    mark = "PASS" if passed else "FAIL"
    return f"{mark}*" if quick_size else mark


def rate(value: Any) -> str:
    return f"{value:,.0f} events/s" if isinstance(value, int | float) else "—"


# --- rows -------------------------------------------------------------------------------


def throughput_rows(result: Run, quick: bool) -> list[Row]:
    rows: list[Row] = []
    data = result.data or {}
    if data.get("profiled"):
        return rows  # the sampler slows the worker: figures come from the run without it
    for key, goal, base_key, base_name, need in (
        ("t1", "≥ 0.5× raw aiokafka + json.loads", "baseline_raw_aiokafka", "aiokafka", 0.5),
        ("t2", "≥ 2× bare Faust agent (defaults)", "baseline_bare_faust", "bare Faust", 2.0),
    ):
        name = "T1 throughput, 100-event messages" if key == "t1" else "T2 throughput, 1 event/msg"
        env_flag = f"--{key}-env"
        if env_flag in result.args:
            env = [result.args[i + 1] for i, a in enumerate(result.args) if a == env_flag]
            name += f" [worker env {', '.join(env)}]"
        elif any(a.startswith("--t") and a.endswith("-env") for a in result.args):
            continue  # this run changed only the other target's settings
        row = Row(name, goal, command=result.command)
        t = data.get(key)
        if t is None:
            row.result = "error"
            row.notes.append(result.error or "no result")
            rows.append(row)
            continue
        base = t.get(base_key, {})
        row.baseline = f"{base_name} {rate(base.get('events_per_s'))}"
        row.measured = rate(t.get("events_per_s"))
        row.figure = f"{t['ratio']:.3f}×" if "ratio" in t else "—"
        if "error" in t:
            row.result = "FAIL (error)"
            row.notes.append(f"{t['events']:,} events: {t['error']}")
        else:
            row.result = verdict(t.get("ratio", 0) >= need)
            row.notes.append(
                f"{t['events']:,} events, worker CPU {t.get('cpu_share_worker')} core, broker "
                f"{t.get('cpu_share_broker')} core; ingest {rate(t.get('ingest_events_per_s'))}, "
                f"spend agent done {t.get('spend_agent_lag_s')} s after ingest; ClickHouse "
                f"writes {t.get('sink_seconds_total')} s in {t.get('sink_batches')} batches; "
                f"ledger rows {t.get('ledger_rows'):,}"
            )
        stats = t.get("worker_stats") or {}
        row.notes.append(
            "worker /stats: "
            + ", ".join(f"{k}={stats[k]}" for k in ("messages", "events", "ledgered") if k in stats)
        )
        if t.get("kafka_topics"):
            row.notes.append(
                "Kafka written: "
                + "; ".join(
                    f"{topic} {v['messages']:,} msgs {v['bytes'] / 1e6:.1f} MB"
                    for topic, v in t["kafka_topics"].items()
                )
            )
        if quick:
            row.result += " (quick)"
        rows.append(row)
    return rows


def alert_row(result: Run | None) -> Row:
    row = Row("T3 alert latency", "p99 ≤ 1 s at half the T1 rate")
    if result is None:
        row.result = "not present"
        row.notes.append("bench/alert_latency.py is not present")
        return row
    row.command = result.command
    data = result.data or {}
    if "p99_s" not in data:
        row.result = "error"
        row.notes.append(result.error or f"no p99_s in output: {str(data)[:200]}")
        return row
    row.measured = f"p99 {data['p99_s']} s (p50 {data.get('p50_s')} s)"
    row.figure = f"{data['p99_s']} s"
    row.notes.append(
        ", ".join(
            f"{key}={data[key]}"
            for key in (
                "trials",
                "timed_out",
                "min_s",
                "max_s",
                "load_events_per_s",
                "worker_ingested_events_per_s",
                "worker_kept_up",
            )
            if key in data
        )
    )
    row.result = verdict(float(data["p99_s"]) <= 1.0)
    return row


def dedupe_row(result: Run, quick: bool) -> Row:
    row = Row("T4 dedupe memory", "≤ 32 B/id RSS, O(1) lookups, recovered", command=result.command)
    data = result.data or {}
    if "bytes_per_id" not in data:
        row.result = "error"
        row.notes.append(result.error or "no result")
        return row
    one, seven, rebuild = data["one_day"], data["seven_days"], data["rebuild"]
    lookup = data.get("lookup_vs_fill", {})
    row.measured = f"{data['bytes_per_id']} B/id RSS over {data['ids']:,} ids"
    row.figure = f"{data['bytes_per_id']} B/id; rebuild {data.get('rebuild_s')} s"
    row.result = verdict(data["pass"], quick)
    row.notes += [
        f"one day: {one.get('bytes_per_id_rss')} B/id RSS "
        f"({one.get('bytes_per_id_arrays')} B/id in the arrays, peak during growth "
        f"{one.get('peak_rss_growth_bytes_per_id')}); 7 days: {seven.get('bytes_per_id_rss')} "
        f"B/id ({seven.get('bytes_per_id_arrays')} in the arrays)",
        f"lookup (hash excluded) {lookup.get('at_10pct', {}).get('lookup_us_per_id')} µs/id "
        f"with 10 % held, {lookup.get('at_100pct', {}).get('lookup_us_per_id')} µs/id with "
        f"100 % (one day); 7 days held: "
        f"{seven.get('lookup_at_100pct_half_present', {}).get('lookup_us_per_id')} µs/id; "
        f"hash {lookup.get('at_100pct', {}).get('hash_us_per_id')} µs/id",
        f"rebuild from a chdb ledger of {rebuild.get('ledger_rows', 0):,} rows: "
        f"{rebuild.get('rebuild_s')} s ({rate(rebuild.get('rebuild_ids_per_s'))}), "
        f"all recovered: {rebuild.get('recovered_all')}",
    ]
    return row


def cold_row(result: Run) -> Row:
    row = Row("T5 cold start", "dev → first ledger row ≤ 5 s", command=result.command)
    data = result.data or {}
    if data.get("seconds") is None:
        row.result = "error"
        row.notes.append(data.get("error") or result.error or "no result")
        return row
    row.measured = f"{data['seconds']} s"
    row.figure = f"{data['seconds']} s"
    row.result = verdict(data["pass"])
    row.notes.append(
        f"first stdout line at {data.get('first_line_s')} s, event published at "
        f"{data.get('published_s')} s, in the ledger at {data.get('first_event_in_ledger_s')} s; "
        f"query through the worker: {data.get('query_output')}; SIGINT exit code "
        f"{data.get('exit_code_after_sigint')}, leftover children {data.get('leftover_children')}"
    )
    return row


def replay_row(result: Run, quick: bool) -> Row:
    row = Row("T6 replay 1M", "1,000,000 events ≤ 30 s wall", command=result.command)
    data = result.data or {}
    small = data.get("replay_100k")
    if small is None:
        row.result = "error"
        row.notes.append(result.error or "no result")
        return row
    million = data.get("replay_1m")
    for label, part in (("100,000", small), ("1,000,000", million)):
        if part is None:
            continue
        line = (
            f"{label} lines: {part.get('wall_s')} s wall, {rate(part.get('events_per_s'))}, "
            f"output {part.get('replay_output')}, nothing lost: {part.get('nothing_lost')}"
        )
        if part.get("lost"):
            line += f" — {part['lost']:,} distinct events LOST; worker log: "
            line += str(part.get("worker_log_last_error"))[:300]
        if part.get("error"):
            line += f" — error: {part['error']}; worker log: {part.get('worker_log_last_error')}"
        row.notes.append(line)
    if million is not None:
        row.measured = f"{million.get('wall_s')} s"
        row.figure = f"{million.get('wall_s')} s"
        row.result = verdict(data.get("pass"))
    else:
        row.measured = f"100k in {small.get('wall_s')} s ({rate(small.get('events_per_s'))})"
        row.result = verdict(None, True)
    return row


def analyst_row(result: Run | None, quick: bool) -> Row:
    row = Row("T7 analyst weekly review", "≤ 0.5 s over 10,000,000 rows")
    if result is None:
        row.result = "not present"
        row.notes.append("bench/analyst_weekly.py is not present")
        return row
    row.command = result.command
    data = result.data or {}
    seconds, rows = data.get("weekly_review_s"), data.get("rows")
    text = data.get("text", "")
    if seconds is None and text:
        found = re.search(r"weekly_review_s=([\d.]+)", text)
        seconds = float(found.group(1)) if found else None
        found = re.search(r"rows=(\d+)", text)
        rows = int(found.group(1)) if found else None
        row.notes.append(text[:300])
    if seconds is None:
        row.result = "error"
        row.notes.append(result.error or f"unparsed output: {str(data)[:200]}")
        return row
    full = rows is not None and int(rows) >= 10_000_000
    row.measured = f"{seconds} s over {int(rows or 0):,} rows"
    row.figure = f"{seconds} s"
    row.result = verdict(float(seconds) <= 0.5 if full else None, not full)
    return row


def dashboard_row(result: Run | None, quick: bool) -> Row:
    row = Row("T8 dashboard endpoints", "≤ 200 ms each over 10,000,000 rows")
    if result is None:
        row.result = "not present"
        return row
    row.command = result.command
    data = result.data or {}
    slowest, rows = data.get("slowest_median_ms"), data.get("rows")
    if slowest is None:
        row.result = "error"
        row.notes.append(result.error or f"unparsed output: {str(data)[:200]}")
        return row
    full = rows is not None and int(rows) >= 10_000_000
    endpoints = data.get("endpoints_ms", {})
    over = sorted(name for name, ms in endpoints.items() if ms["median"] > 200)
    row.measured = f"slowest median {slowest} ms ({data.get('slowest')}) over {int(rows):,} rows"
    row.figure = f"{slowest} ms"
    row.result = verdict(float(slowest) <= 200 if full else None, not full)
    if over:
        row.notes.append(f"{len(over)} of {len(endpoints)} above 200 ms: {', '.join(over)}")
    row.notes.append(
        "median / max wall ms (median CPU ms) per endpoint: "
        + "; ".join(
            f"{name} {ms['median']} / {ms['max']} ({ms.get('cpu_median', '?')})"
            for name, ms in endpoints.items()
        )
    )
    return row


def restart_row(result: Run) -> Row:
    row = Row(
        "T10 restart to exact limits",
        "dev → exact /v1/limits over 7 × 1,000,000 ledger rows ≤ 10 s",
        command=result.command,
    )
    data = result.data or {}
    if data.get("seconds") is None:
        row.result = "error"
        row.notes.append(data.get("error") or result.error or "no result")
        return row
    row.measured = f"{data['seconds']} s over {int(data.get('ledger_rows', 0)):,} rows"
    row.figure = f"{data['seconds']} s"
    row.result = verdict(data["pass"], bool(data.get("quick")))
    row.notes.append(
        f"exact against the ledger: {data.get('exact')} {data.get('mismatches') or ''}; "
        f"ledger filled in {data.get('fill_s')} s; hourly buckets and incidents restored "
        f"{data.get('state_rebuild_s')} s after the restore began"
    )
    return row


def tenant_memory_row(result: Run) -> Row:
    row = Row(
        "T11 memory per active tenant",
        "≤ 2 KiB per tenant (1,000,000 tenants in 2 GiB)",
        command=result.command,
    )
    data = result.data or {}
    if data.get("bytes_per_tenant_rss") is None:
        row.result = "error"
        row.notes.append(result.error or "no result")
        return row
    rss, traced = data["bytes_per_tenant_rss"], data.get("bytes_per_tenant_traced")
    row.measured = (
        f"{rss:,} B RSS per tenant (spend state, {data.get('tenants', 0):,} tenants after "
        f"{data.get('warm_tenants', 0):,})"
    )
    row.figure = f"{rss:,} B"
    row.result = verdict(rss <= 2048)
    row.notes.append(
        f"traced {traced} B/tenant ({data.get('traced_tenants')} tenants more); 1M tenants: "
        f"{data.get('million_tenants_gib')} GiB; by "
        f"structure (B/tenant): {data.get('by_structure')}. The spend state alone: the whole "
        "worker's figure is RELIABILITY.md's 'cardinality, 100000 distinct tenants' case"
    )
    return row


def rows_for(result: Run) -> list[Row]:
    name = result.module.removeprefix("bench.")
    if name == "throughput":
        return throughput_rows(result, result.quick)
    if name == "alert_latency":
        return [alert_row(result)]
    if name == "dedupe_memory":
        return [dedupe_row(result, result.quick)]
    if name == "cold_start":
        return [cold_row(result)]
    if name == "replay_million":
        return [replay_row(result, result.quick)]
    if name == "analyst_weekly":
        return [analyst_row(result, result.quick)]
    if name == "dashboard_endpoints":
        return [dashboard_row(result, result.quick)]
    if name == "restart_limits":
        return [restart_row(result)]
    if name == "alert_scenarios":
        return scenario_rows(result)
    if name == "tenant_memory":
        return [tenant_memory_row(result)]
    return []  # hot_path: a section, not a row


def scenario_rows(result: Run) -> list[Row]:
    """T9: the labelled scenario suite (bench.scenarios), one row per target."""
    data = result.data or {}
    if "precision" not in data:
        row = Row("T9 alert scenarios", "see bench/scenarios.py", command=result.command)
        row.result = "error"
        row.notes.append(result.error or "no result")
        return [row]
    size = f"{data['scenarios']} scenarios, {data['incident_tenants']} incidents, "
    size += f"{data['control_tenants']} control tenants over {data['days']} days"
    quick = result.quick
    rows = []
    for target, goal, measured, passed in (
        ("T9a page precision", "≥ 0.95", data["precision"], (data["precision"] or 0) >= 0.95),
        ("T9b page recall", "≥ 0.95", data["recall"], (data["recall"] or 0) >= 0.95),
        (
            "T9c cause accuracy",
            "≥ 0.9",
            data["cause_accuracy"],
            (data["cause_accuracy"] or 0) >= 0.9,
        ),
        (
            "T9d median time to page (event time)",
            "≤ 15 min",
            f"{data['median_minutes_to_page']} min (p95 {data['p95_minutes_to_page']} min)",
            data["median_minutes_to_page"] is not None and data["median_minutes_to_page"] <= 15,
        ),
        (
            "T9e pages on controls",
            "0",
            f"{data['control_pages']} ({data['control_pages_per_tenant_week']} per tenant-week)",
            data["control_pages"] == 0,
        ),
    ):
        row = Row(target, goal, measured=str(measured), command=result.command)
        row.result = verdict(passed, quick)
        row.notes.append(size)
        if target.startswith("T9b") and data.get("missed"):
            row.notes.append("missed: " + ", ".join(data["missed"]))
        if target.startswith("T9a") and data.get("false_pages"):
            row.notes.append("false pages: " + "; ".join(data["false_pages"]))
        if target.startswith("T9d") and data.get("median_minutes_to_page_by_kind"):
            by_kind = data["median_minutes_to_page_by_kind"].items()
            row.notes.append(
                "median minutes by incident kind: "
                + ", ".join(f"{kind} {minutes}" for kind, minutes in by_kind)
            )
        if target.startswith("T9c") and data.get("wrong_causes"):
            row.notes.append(
                "first pages without the expected cause: " + "; ".join(data["wrong_causes"])
            )
        rows.append(row)
    return rows


def previous_runs() -> list[Run]:
    return runs_in(OUTPUT.read_text()) if OUTPUT.exists() else []


def runs_in(text: str) -> list[Run]:
    """The runs of a BENCHMARKS.md's raw result lines."""
    if RAW_HEADING not in text:
        return []
    block = text.split(RAW_HEADING, 1)[1].split("```")[1]
    runs = []
    for line in block.strip().splitlines():
        try:
            runs.append(Run.from_json(line))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return [r for r in runs if r.module.removeprefix("bench.") in NAMES]


# --- the document -----------------------------------------------------------------------


def hot_path_section(result: Run) -> list[str]:
    data = result.data or {}
    stages = data.get("stages_us_per_event_wall_cpu")
    lines = ["## Where a worker's time per event goes (`bench.hot_path`, no Kafka, no Faust)", ""]
    if not stages:
        return [*lines, f"- error: {result.error}", ""]
    lines += [
        f"`{result.command}`, {data.get('events'):,} events in batches of {data.get('batch')}:",
        "",
        "| Stage | µs/event wall | µs/event CPU |",
        "| --- | --- | --- |",
    ]
    for name, (wall, cpu) in stages.items():
        lines.append(f"| {name} | {wall} | {cpu} |")
    for key in ("sink_all_migrations", "sink_ledger_table_only"):
        sink = data.get(key, {})
        lines.append(
            f"| ClickHouse insert, {key.removeprefix('sink_').replace('_', ' ')} | "
            f"{sink.get('us_per_row_wall')} | {sink.get('us_per_row_cpu')} |"
        )
    lines += [
        "",
        f"- spend agent CPU split (µs/event): {data.get('spend_cpu_us_per_event_split')}; "
        f"{data.get('costed_messages')} costed messages",
        f"- costed messages carry {data.get('costed_bytes_per_event')} bytes per event",
        f"- sum of the stages (100-event messages, with the views): "
        f"{data.get('python_stages_cpu_us_per_event_100_per_message')} µs CPU/event + the insert "
        f"→ at most {data.get('ceiling_events_per_s_one_core'):,} events/s on one core, "
        "before Faust's own per-event cost and the changelog writes",
        "",
    ]
    return lines


def revision_note(runs: list[Run]) -> str:
    seen = sorted({str((run.data or {}).get("revision", "?")) for run in runs})
    return ", ".join(seen) if seen else revision()


def table(rows: list[Row]) -> list[str]:
    out = [
        "| Target | Goal | Baseline (same run) | Measured | Ratio / absolute | Result | Command |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = [r.target, r.goal, r.baseline, r.measured, r.figure, r.result, f"`{r.command}`"]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return out


def document(rows: list[Row], runs: list[Run], sizes: str, started: str, load: str) -> str:
    m = machine()
    lines = [
        "# Benchmarks (issue 6)",
        "",
        f"Written by `{command_line()}` (`make bench` runs it without options).",
        "",
        f"- Date: {started} (UTC), finished {now_iso()}",
        f"- Code: {revision_note(runs)} (each result line below names the revision it ran on)",
        f"- Machine: `{m['uname']}`",
        f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram_gib']} GiB; Python {m['python']}",
        f"- Load average (1/5/15 min) at the start: {load}; per benchmark below. The "
        "machine is shared: with a load above the core count every figure is noisy, "
        "ratios less so (baseline and pipeline measured in the same run, minutes apart).",
        f"- Sizes: {sizes} (* = judged at a smaller size than the target's)",
        "",
        *table(rows),
        "",
        "## Details",
        "",
    ]
    for r in rows:
        lines.append(f"### {r.target}")
        lines.append("")
        lines += [f"- {note}" for note in r.notes] or ["- (no details)"]
        lines.append("")
    profiles = [
        (f"{key.upper()} — `{run.command}`", run.data[key]["profile"])
        for run in runs
        if run.module == "bench.throughput" and run.data
        for key in ("t1", "t2")
        if isinstance(run.data.get(key), dict) and run.data[key].get("profile")
    ]
    if profiles:
        lines += [
            "## Worker profile (stack sampler, measured window)",
            "",
            "From a second throughput run with the sampler on (the figures above are from",
            "the run without it: sampling slows the worker).",
            "",
        ]
        for key, profile in profiles:
            lines += [f"{key}:", "", "```", *profile, "```", ""]
    for run in runs:
        if run.module == "bench.hot_path":
            lines += hot_path_section(run)
    lines += ["## Runs", ""]
    for run in runs:
        kept = " (kept from the previous BENCHMARKS.md)" if run.kept else ""
        lines.append(
            f"- `{run.command}`: exit {run.code}, load {run.load_before} → {run.load_after}, "
            f"revision {(run.data or {}).get('revision', '?')}, "
            f"date {(run.data or {}).get('date', '?')}{kept}"
        )
    lines += ["", RAW_HEADING, "", "```"]
    lines += [run.to_json() for run in runs]
    lines += ["```", ""]
    return "\n".join(lines)


def ran(runs: list[Run]) -> Ran:
    """The target numbers and modules of the runs made now (not kept)."""
    made = [run for run in runs if not run.kept]
    return Ran(
        targets={target_of(row.target) for run in made for row in rows_for(run)},
        modules={run.module for run in made},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="run every benchmark, write BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--quick-for",
        nargs="+",
        default=[],
        metavar="NAME",
        help="run only these benchmarks at the quick size",
    )
    parser.add_argument(
        "--t1-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run T1 with this worker environment (reported as an extra row)",
    )
    parser.add_argument("--t2-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=NAMES,
    )
    args = parser.parse_args()
    started, load = now_iso(), loadavg()
    wanted = set(args.only or [])

    def want(name: str) -> bool:
        return not wanted or name in wanted

    def size(name: str) -> list[str]:
        return ["--quick"] if args.quick or name in args.quick_for else []

    runs = [r for r in previous_runs() if r.module.removeprefix("bench.") not in wanted]
    if not wanted:
        runs = []

    def step(name: str, argv: list[str], timeout: float) -> None:
        print(f"bench: {name} {' '.join(argv)}", flush=True)
        result = run(name, argv, timeout)
        runs.append(result)
        for row in rows_for(result):
            print(f"  {row.target}: {row.measured} {row.figure} {row.result}", flush=True)

    if want("throughput"):
        argv = size("throughput")
        # Figures without the stack sampler (it costs the worker about a quarter of its
        # throughput), then the same run with it, for the profile section only.
        step("throughput", [*argv, "--no-profile"], 5400)
        step("throughput", argv, 5400)
        for key, env in (("t1", args.t1_env), ("t2", args.t2_env)):
            if env:
                extra = [*argv, "--no-profile", "--only", key]
                for item in env:
                    extra += [f"--{key}-env", item]
                step("throughput", extra, 5400)
    if want("alert_latency") and present("alert_latency"):
        # T3's load is half the T1 rate measured in this run (or the last one kept).
        t1 = next(
            (
                r.data["t1"]
                for r in reversed(runs)
                if r.module == "bench.throughput"
                and r.data
                and not r.data.get("profiled")
                and "--only" not in r.args
                and r.data.get("t1", {}).get("events_per_s")
            ),
            None,
        )
        t3_rate = ["--rate", str(int(t1["events_per_s"] / 2))] if t1 else []
        step("alert_latency", [*size("alert_latency"), *t3_rate], 3600)
    if want("dedupe_memory"):
        step("dedupe_memory", size("dedupe_memory"), 3600)
    if want("cold_start"):
        step("cold_start", size("cold_start"), 600)
    if want("replay_million"):
        step("replay_million", size("replay_million"), 7200)
    if want("analyst_weekly") and present("analyst_weekly"):
        _, help_text, _ = run_module("bench.analyst_weekly", ["--help"], 60)
        quick = size("analyst_weekly")
        argv = quick if "--quick" in help_text else (["--rows", "1000000"] if quick else [])
        step("analyst_weekly", argv, 3600)
    if want("dashboard_endpoints"):
        step("dashboard_endpoints", size("dashboard_endpoints"), 3600)
    if want("restart_limits"):
        step("restart_limits", size("restart_limits"), 1800)
    if want("alert_scenarios"):
        step("alert_scenarios", size("alert_scenarios"), 7200)
    if want("hot_path"):
        step("hot_path", size("hot_path"), 1800)
    if want("tenant_memory"):
        step("tenant_memory", size("tenant_memory"), 1800)
    runs.sort(key=lambda r: NAMES.index(r.module.removeprefix("bench.")))
    rows = [row for r in runs for row in rows_for(r)]
    modules = {r.module for r in runs}
    if "bench.alert_latency" not in modules:
        rows.append(alert_row(None))
    if "bench.analyst_weekly" not in modules:
        rows.append(analyst_row(None, False))
    if "bench.dashboard_endpoints" not in modules:
        rows.append(dashboard_row(None, False))
    # T1 … T10, by number (T9a … T9e are the scenario suite's rows).
    rows.sort(key=lambda r: int(re.match(r"T(\d+)", r.target).group(1)))  # type: ignore[union-attr]
    sizes = "QUICK" if args.quick else "full"
    if args.quick_for and not args.quick:
        sizes += f", quick for {', '.join(args.quick_for)}"
    if wanted:
        sizes += f"; this run: {', '.join(sorted(wanted))}, the others kept (see Runs)"
    text = document(rows, runs, sizes, started, load)
    if wanted and OUTPUT.exists():
        # Only what ran is replaced: the other benchmarks' sections and anything
        # written by hand stay as they are.
        text = merge(OUTPUT.read_text(), text, ran(runs))
    OUTPUT.write_text(text)
    print(f"wrote {Path(OUTPUT).relative_to(REPO)}", flush=True)


if __name__ == "__main__":
    main()
