"""Shared by the benchmarks: machine facts, load, result lines, realistic events,
and CPU time of child processes (from /proc)."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def machine() -> dict[str, Any]:
    return {
        "uname": " ".join(platform.uname()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "python": platform.python_version(),
    }


def machine_short() -> str:
    m = machine()
    return f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB, Python {m['python']}"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def command_line() -> str:
    module = sys.modules["__main__"].__spec__
    name = module.name if module is not None else sys.argv[0]
    return shlex.join(["python", "-m", name, *sys.argv[1:]])


def revision() -> str:
    """HEAD's short hash, "+dirty" when streams/, schemas/, detectors/ or sql/ differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "streams", "schemas", "detectors", "sql"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{'+dirty' if dirty else ''}"


REVISION_AT_START = revision()


def emit(result: dict[str, Any], load_before: str) -> None:
    """Print the one JSON result line every benchmark ends with."""
    at_end = revision()
    line = {
        **result,
        "revision": REVISION_AT_START
        if at_end == REVISION_AT_START
        else f"{REVISION_AT_START} (changed to {at_end} during the run)",
        "machine": machine_short(),
        "command": command_line(),
        "date": now_iso(),
        "load_before": load_before,
        "load_after": loadavg(),
    }
    print(orjson.dumps(line, default=str).decode(), flush=True)


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def last_error(data_dir: Path) -> str:
    """The last error line of a data dir's worker.log (an agent crash leaves the worker
    process up, so the log is the only trace)."""
    log = data_dir / "worker.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if "[ERROR]" in line or "Error" in line]
    return (errors[-1] if errors else (lines[-1] if lines else "no worker log")).strip()[:400]


def spendstream_command() -> list[str]:
    script = Path(sys.executable).parent / "spendstream"
    return [str(script)] if script.exists() else [sys.executable, "-m", "streams.cli"]


# --- events -------------------------------------------------------------------------


def events(count: int, seed: int = 6, spread: timedelta = timedelta(hours=1)) -> Iterator[dict]:
    """Distinct realistic events (`spendstream simulate`'s generator), timestamps spread
    evenly over the last `spread` (never in the future)."""
    from streams.embedded.simulate import TrafficGenerator

    generator = TrafficGenerator(seed=seed)
    start = datetime.now(UTC) - spread - timedelta(minutes=1)
    step = spread / max(1, count)
    for i in range(count):
        yield generator.event(start + step * i)


def single_messages(count: int, seed: int = 6) -> list[bytes]:
    return [orjson.dumps(event) for event in events(count, seed)]


def batched_messages(count: int, per_message: int = 100, seed: int = 6) -> list[bytes]:
    out: list[bytes] = []
    chunk: list[dict] = []
    for event in events(count, seed):
        chunk.append(event)
        if len(chunk) == per_message:
            out.append(orjson.dumps(chunk))
            chunk = []
    if chunk:
        out.append(orjson.dumps(chunk))
    return out


# --- CPU time of processes ----------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (not its children), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class CpuTrace:
    """(monotonic time, CPU seconds) samples of some processes, to get the CPU share of
    each one over a window found afterwards."""

    pids: dict[str, int]
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def sample(self) -> None:
        now = time.monotonic()
        for name, pid in self.pids.items():
            value = cpu_seconds(pid)
            if value is not None:
                self.samples.setdefault(name, []).append((now, value))

    def share(self, name: str, start: float, end: float) -> float | None:
        """CPU seconds per wall second over [start, end] (1.0 = one core busy)."""
        points = self.samples.get(name, [])
        before = [p for p in points if p[0] <= start]
        after = [p for p in points if p[0] >= end]
        if not before or not after or after[0][0] <= before[-1][0]:
            return None
        (t0, c0), (t1, c1) = before[-1], after[0]
        return round((c1 - c0) / (t1 - t0), 2)


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (from /proc, children listed by parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def run_module(module: str, args: list[str], timeout: float) -> tuple[int, str, str]:
    """Run `python -m module args` from the repository root; (code, stdout, stderr)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return -1, out, f"timed out after {timeout:.0f} s"
    return done.returncode, done.stdout, done.stderr
