"""T6: `spendstream replay` of 1,000,000 events, wall clock.

    python -m bench.replay_million [--quick]

Writes NDJSON (one event per line, the simulator's generator, about 10 % of the lines
repeating an earlier line: re-deliveries the pipeline must drop), then times the whole
`spendstream replay FILE --data-dir <fresh tmp>` command, start to exit: broker and
worker start, publish, processing, ledger totals. Reports events/s for 100,000 lines
(the foundation issue's figure) and, without --quick, for 1,000,000 (the target).
Checks that ledgered + duplicates = lines read (nothing lost).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    emit,
    events,
    last_error,
    last_json_line,
    loadavg,
    spendstream_command,
)

TARGET_S = 30.0
DUPLICATE_SHARE = 0.10


def write_ndjson(path: Path, count: int, seed: int = 16) -> int:
    """`count` lines, ~10 % of them repeats of one of the previous 10,000 lines; returns
    the number of distinct request ids."""
    rng = random.Random(seed)
    recent: list[bytes] = []
    distinct = 0
    fresh = events(count, seed=seed)
    with path.open("wb") as out:
        for _ in range(count):
            if recent and rng.random() < DUPLICATE_SHARE:
                line = rng.choice(recent)
            else:
                line = orjson.dumps(next(fresh))
                distinct += 1
                recent.append(line)
                if len(recent) > 10_000:
                    recent.pop(0)
            out.write(line + b"\n")
    return distinct


def replay(count: int, timeout: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        path = tmp / "events.ndjson"
        distinct = write_ndjson(path, count)
        started = time.monotonic()
        try:
            done = subprocess.run(
                [*spendstream_command(), "replay", str(path), "--data-dir", str(tmp / "data")],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"lines": count, "error": f"replay did not finish in {timeout:.0f} s"}
        seconds = time.monotonic() - started
        output = last_json_line(done.stdout) or {}
        result: dict[str, Any] = {
            "lines": count,
            "distinct": distinct,
            "wall_s": round(seconds, 1),
            "events_per_s": round(count / seconds),
            "exit_code": done.returncode,
            "replay_output": output,
        }
        if done.returncode != 0 or not output:
            tail = done.stderr.strip()[-400:] or "no output"
            result["error"] = f"replay exited {done.returncode}: {tail}"
            result["worker_log_last_error"] = last_error(tmp / "data")
            return result
        ledgered = int(output.get("ledgered", -1))
        result["nothing_lost"] = ledgered == distinct and (
            ledgered + int(output.get("duplicates", 0)) == count
        )
        if not result["nothing_lost"]:
            result["lost"] = distinct - ledgered
            result["worker_log_last_error"] = last_error(tmp / "data")
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="T6 replay wall clock")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    load = loadavg()
    small = replay(100_000, timeout=1800)
    out: dict[str, Any] = {
        "benchmark": "replay_million",
        "target": f"1,000,000 events through spendstream replay <= {TARGET_S:.0f} s wall",
        "replay_100k": small,
    }
    if args.quick:
        out["seconds"] = None
        out["pass"] = None  # the target's size was not run
    else:
        million = replay(1_000_000, timeout=3600)
        out["replay_1m"] = million
        out["seconds"] = million.get("wall_s")
        out["pass"] = bool(
            "error" not in million and million["wall_s"] <= TARGET_S and million["nothing_lost"]
        )
    emit(out, load)


if __name__ == "__main__":
    main()
