"""`python -m bench.run_all --only X` replaces X's rows, details, sections, run lines and
raw result lines in BENCHMARKS.md and keeps the rest, hand-written text included
(`bench.sections.merge`), on documents written by `bench.run_all.document` from result
lines, without running a benchmark."""

from __future__ import annotations

from typing import Any

from bench.run_all import Run, document, ran, rows_for, runs_in
from bench.sections import merge


def result(module: str, data: dict[str, Any], revision: str, kept: bool = False) -> Run:
    data = {**data, "revision": revision, "date": "2026-12-07T03:00:00+00:00"}
    return Run(f"bench.{module}", [], 0, data, "", "1.00 1.00 1.00", "1.10 1.00 1.00", kept)


def cold_start(seconds: float, revision: str, kept: bool = False) -> Run:
    return result("cold_start", {"seconds": seconds, "pass": seconds <= 10}, revision, kept)


def dashboard(ms: float, revision: str) -> Run:
    endpoints = {"movers?period=week": {"median": ms, "max": ms + 9, "cpu_median": ms - 1}}
    data = {"rows": 10_000_000, "slowest_median_ms": ms, "slowest": "movers?period=week"}
    return result("dashboard_endpoints", {**data, "endpoints_ms": endpoints}, revision)


def hot_path(us: float, revision: str) -> Run:
    stages = {"decode": [us, us - 0.5]}
    data = {
        "stages_us_per_event_wall_cpu": stages,
        "events": 20_000,
        "batch": 2_000,
        "ceiling_events_per_s_one_core": 9_007,
    }
    return result("hot_path", data, revision)


def written(runs: list[Run]) -> str:
    rows = [row for run in runs for row in rows_for(run)]
    return document(rows, runs, "full", "2026-12-07T03:00:00+00:00", "1.00 1.00 1.00")


def line_of(text: str, start: str) -> str:
    (line,) = [line for line in text.split("\n") if line.startswith(start)]
    return line


HAND_SECTION = "## Reading of T5 (written by hand)\n\nThe cold start ran on an idle machine.\n\n"
HAND_NOTE = "- (by hand) 9.1 s on an idle machine, 9.8 s at load 6\n"


def existing() -> str:
    """A full run's document, then edited by hand: a section and a note in T5."""
    text = written([cold_start(9.1, "aaa"), dashboard(97.2, "aaa"), hot_path(4.0, "aaa")])
    text = text.replace("### T5 cold start\n\n", "### T5 cold start\n\n" + HAND_NOTE)
    return text.replace("## Runs\n", HAND_SECTION + "## Runs\n")


def test_only_replaces_what_ran_and_keeps_the_rest() -> None:
    before = existing()
    # What `--only dashboard_endpoints hot_path` writes: the kept runs and the new ones.
    runs = [cold_start(9.1, "aaa", kept=True), dashboard(150.5, "bbb"), hot_path(7.5, "bbb")]
    after = _merge(before, runs)

    # The hand-written section and note stay, and so does T5's row.
    assert HAND_SECTION in after and HAND_NOTE in after
    assert line_of(after, "| T5 ") == line_of(before, "| T5 ")
    # T8's row and details, the hot path's section, the run lines and raw lines are new.
    assert "150.5 ms" in line_of(after, "| T8 ") and "97.2" not in line_of(after, "| T8 ")
    assert "movers?period=week 150.5 / 159.5 (149.5)" in after
    assert "97.2 /" not in after
    assert "| decode | 7.5 | 7.0 |" in after and "| decode | 4.0 |" not in after
    assert line_of(after, "- `python -m bench.dashboard_endpoints`").count("revision bbb") == 1
    revisions = {run.module: run.data["revision"] for run in runs_in(after) if run.data}
    assert revisions == {
        "bench.cold_start": "aaa",
        "bench.dashboard_endpoints": "bbb",
        "bench.hot_path": "bbb",
    }
    assert len(runs_in(after)) == 3
    # Nothing else moved: the document is the old one with those lines changed.
    assert len(after.split("\n")) == len(before.split("\n"))
    assert after.index("| T5 ") < after.index("| T8 ") < after.index("## Details")
    # Running the same again changes nothing.
    assert _merge(after, runs) == after


def test_a_benchmark_not_in_the_document_yet_is_added_beside_its_kind() -> None:
    before = written([dashboard(97.2, "aaa")])
    kept = dashboard(97.2, "aaa")
    kept.kept = True
    runs = [kept, cold_start(8.0, "ccc")]
    after = _merge(before, runs)
    assert "| T5 cold start |" in after and "### T5 cold start" in after
    assert after.index("| T8 ") < after.index("| T5 ") < after.index("## Details")
    assert after.index("### T8 ") < after.index("### T5 ") < after.index("## Runs")
    modules = {run.module for run in runs_in(after)}
    assert modules == {"bench.dashboard_endpoints", "bench.cold_start"}


def _merge(before: str, runs: list[Run]) -> str:
    return merge(before, written(runs), ran(runs))
