"""Write RELIABILITY.md from the JSON lines the suite's `Tally.report()` appends.

    python -m tests.reliability.report RESULTS.jsonl [--out RELIABILITY.md] [--command CMD]

`make reliability` runs the whole suite with SPENDSTREAM_RELIABILITY_REPORT set, then
this: the table is always the latest run's, with the command that produced it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

FIXED = ("case", "in", "out", "lost", "double_counted")


def machine() -> str:
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kib / 1024 / 1024:.1f} GiB"
    return f"{os.cpu_count()} cores{memory}, Python {platform.python_version()}"


def render(records: list[dict[str, object]], command: str, outcome: str) -> str:
    lines = [
        "# Reliability results",
        "",
        "Written by `make reliability` (`tests/reliability/report.py`) from the latest run;",
        "each row is one fault-injection case of `tests/reliability/` (see",
        "docs/reliability.md for what each case injects and proves).",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        f"- pytest: {outcome}",
        "",
        "| Fault | Events in | Out | Lost | Double-counted | Details |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for record in records:
        details = "; ".join(f"{k}: {v}" for k, v in record.items() if k not in FIXED)
        lines.append(
            f"| {record['case']} | {record['in']:,} | {record['out']:,} | {record['lost']:,} "
            f"| {record['double_counted']:,} | {details} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=Path("RELIABILITY.md"))
    parser.add_argument("--command", default="make reliability")
    parser.add_argument("--outcome", default="", help="pytest's summary line")
    args = parser.parse_args()
    if not args.results.exists():
        print(f"no results at {args.results}: did the suite run?", file=sys.stderr)
        return 1
    records = [orjson.loads(line) for line in args.results.read_bytes().splitlines() if line]
    args.out.write_text(render(records, args.command, args.outcome or "see the CI log"))
    print(f"{args.out}: {len(records)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
